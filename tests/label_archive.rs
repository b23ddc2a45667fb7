//! restore-prep --label-from-archive (issue 13): the sidecar is lost, the label comes from the
//! backup history file PostgreSQL archived at stop. Real servers, real copies taken with tar;
//! run on every major by scripts/test-matrix.sh.

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

use crate::common;
use crate::common::roundtrip::{
    install_bin, restore_copy, run_exe, start_and_wait_promoted, switch_and_wait, tar_create,
};
use crate::common::tool::Tool;
use crate::common::{Cluster, ClusterOpts, TestDir};
use sha2::{Digest, Sha256};

// ---------------------------------------------------------------- helpers

fn s(p: &Path) -> &str {
    p.to_str().expect("utf-8 path")
}

/// Every entry under `root` (not following symlinks): type, mode, owner and content hash.
pub(crate) fn tree(root: &Path) -> BTreeMap<String, String> {
    fn walk(root: &Path, p: &Path, out: &mut BTreeMap<String, String>) {
        let m = fs::symlink_metadata(p).expect("lstat");
        let rel = p.strip_prefix(root).expect("under root").display().to_string();
        let what = if m.file_type().is_symlink() {
            format!("link {}", fs::read_link(p).expect("readlink").display())
        } else if m.is_dir() {
            let mut names: Vec<_> = fs::read_dir(p).expect("readdir").map(|e| e.expect("entry").path()).collect();
            names.sort();
            for n in names {
                walk(root, &n, out);
            }
            "dir".to_string()
        } else {
            format!("{:x}", Sha256::digest(fs::read(p).expect("read")))
        };
        out.insert(rel, format!("{} {:o} {}:{}", what, m.mode(), m.uid(), m.gid()));
    }
    let mut out = BTreeMap::new();
    walk(root, root, &mut out);
    out
}

/// A client program: the matrix build's if it has one, else PostgreSQL 15's.
pub(crate) fn client_tool(name: &str) -> PathBuf {
    let own = common::bindir().join(name);
    if own.exists() {
        own
    } else {
        PathBuf::from("/usr/lib/postgresql/15/bin").join(name)
    }
}

pub(crate) fn pgbench(pg: &Cluster, args: &[&str]) -> Command {
    let mut c = Command::new(client_tool("pgbench"));
    c.args(["-h", "127.0.0.1", "-p", &pg.port.to_string(), "-U", "postgres"]).args(args).arg("postgres");
    c
}

fn major(pg: &Cluster) -> u32 {
    pg.query_scalar("show server_version_num").parse::<u32>().expect("version") / 10000
}

/// One backup of `pg` with pre / tar copy / post; returns the tar file.
fn backup(pg: &Cluster, t: &Tool, dir: &TestDir, id: &str) -> PathBuf {
    t.pre(id, &[("default", pg.conninfo())], &[]).ok();
    let tarfile = dir.path().join(format!("{id}.tar"));
    tar_create(&pg.datadir, &tarfile);
    t.post(id).ok();
    tarfile
}

struct Prep<'a> {
    exe: &'a Path,
    id: &'a str,
    pgdata: &'a Path,
}

impl Prep<'_> {
    /// restore-prep with the given source of WAL and extra flags; no sidecar unless given.
    fn run(&self, extra: &[&str]) -> Output {
        let mut a = vec!["restore-prep", "--backup-id", self.id, "--pgdata", s(self.pgdata), "--archive-mode", "off"];
        a.extend_from_slice(extra);
        run_exe(self.exe, &a)
    }

    /// It must refuse with `msg`, in one line, and change nothing in the data directory.
    fn refused(&self, extra: &[&str], msg: &str) -> String {
        let before = tree(self.pgdata);
        let o = self.run(extra);
        let err = String::from_utf8_lossy(&o.stderr).into_owned();
        assert!(!o.status.success(), "restore-prep should have refused:\n{err}");
        assert!(err.contains(msg), "expected {msg:?} in the error:\n{err}");
        assert_eq!(err.trim().lines().count(), 1, "the refusal must be one line:\n{err}");
        assert_eq!(tree(self.pgdata), before, "restore-prep changed the data directory while refusing");
        err
    }
}

// ---------------------------------------------------------------- the round trip under load

/// TPC-B's invariant: every balance change is in pgbench_history.
pub(crate) fn tpcb_sums(pg: &Cluster) -> (String, String, String, String, String) {
    let q = |sql: &str| pg.query_scalar(sql);
    (
        q("select coalesce(sum(abalance), 0) from pgbench_accounts"),
        q("select coalesce(sum(bbalance), 0) from pgbench_branches"),
        q("select coalesce(sum(tbalance), 0) from pgbench_tellers"),
        q("select coalesce(sum(delta), 0) from pgbench_history"),
        q("select count(*) from pgbench_history"),
    )
}

/// Heap and indexes of the restored cluster are clean: pg_amcheck --heapallindexed from 14
/// (verify_heapam), bt_index_check with heapallindexed on 11-13, bt_index_check on 10.
pub(crate) fn amcheck_clean(pg: &Cluster) {
    let m = major(pg);
    if m >= 14 {
        let o = Command::new(client_tool("pg_amcheck"))
            .args(["-h", "127.0.0.1", "-p", &pg.port.to_string(), "-U", "postgres", "--install-missing"])
            .args(["--heapallindexed", "--all"])
            .output()
            .expect("running pg_amcheck");
        assert!(
            o.status.success(),
            "pg_amcheck found problems ({}):\n{}{}",
            o.status,
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        );
        return;
    }
    pg.execute("create extension if not exists amcheck");
    let call = if m >= 11 { "bt_index_check(c.oid, true)" } else { "bt_index_check(c.oid)" };
    let checked = pg.query_scalar(&format!(
        "select count({call}) from pg_class c join pg_am a on a.oid = c.relam \
         where c.relkind = 'i' and a.amname = 'btree' and c.relname like 'pgbench%'"
    ));
    assert_eq!(checked, "3", "three pgbench indexes checked");
}

/// pgbench load on a checksummed primary; pre, tar copy under load, post; the sidecar is
/// deleted; restore-prep --label-from-archive; start; TPC-B invariants and amcheck.
fn round_trip_without_sidecar(target: &str) {
    let dir = TestDir::new();
    let exe = install_bin(&dir);
    let opts = ClusterOpts { initdb_args: vec!["--data-checksums".into()], ..Default::default() };
    let pg = Cluster::with_opts(dir.path(), "pg", opts);
    assert_eq!(pg.query_scalar("show data_checksums"), "on");
    common::run_checked(&mut pgbench(&pg, &["-i", "-s", "2", "-q"]));
    let mut load: Child = pgbench(&pg, &["-c", "4", "-j", "2", "-T", "600", "-n"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("starting pgbench");
    let t = Tool::new(&dir);
    let id = "lost-sidecar";
    std::thread::sleep(Duration::from_secs(2));
    let tarfile = backup(&pg, &t, &dir, id);
    let label = t.label(id, "default");
    let history_name = t.manifest(id)["nodes"][0]["backup_history_file"].as_str().expect("history file").to_string();
    fs::remove_dir_all(t.backup_dir(id)).expect("deleting the sidecar");
    std::thread::sleep(Duration::from_secs(2));
    let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(load.id() as i32), nix::sys::signal::Signal::SIGINT);
    let _ = load.wait();
    let sums = tpcb_sums(&pg);
    assert_ne!(sums.4, "0", "pgbench committed nothing");
    switch_and_wait(&pg);
    restore_copy(&pg, &tarfile);

    let prep = Prep { exe: &exe, id, pgdata: &pg.datadir };
    let o = prep.run(&["--label-from-archive", "--archive-dir", s(&pg.archive_dir), "--target", target]);
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success(), "restore-prep --label-from-archive: {}", String::from_utf8_lossy(&o.stderr));
    assert!(out.contains(&format!("backup history file {history_name} found")), "{out}");
    assert!(out.contains("wrote backup_label (the label rebuilt from backup history file"), "{out}");
    let installed = fs::read_to_string(pg.datadir.join("backup_label")).expect("backup_label written");
    assert_eq!(installed, label, "the rebuilt label differs from the one pg_backup_stop returned");
    assert_eq!(
        fs::metadata(pg.datadir.join("backup_label")).expect("stat").uid(),
        fs::metadata(&pg.datadir).expect("stat").uid()
    );

    start_and_wait_promoted(&pg);
    let restored = tpcb_sums(&pg);
    let (a, b, tl, d, _) = &restored;
    assert!(a == b && b == tl && tl == d, "TPC-B invariant broken after restore: {restored:?}");
    match target {
        "latest" => assert_eq!(restored, sums, "target latest must restore every committed transaction"),
        _ => assert!(pg.log().contains("recovery stopping after reaching consistency"), "{}", pg.log()),
    }
    amcheck_clean(&pg);
    assert!(!pg.datadir.join("backup_label").exists(), "the server consumes backup_label");
}

#[test]
fn without_sidecar_pgbench_copy_restores_to_latest() {
    round_trip_without_sidecar("latest");
}

#[test]
fn without_sidecar_pgbench_copy_restores_to_backup_end() {
    round_trip_without_sidecar("backup-end");
}

// ---------------------------------------------------------------- refusals

/// A cluster with a table, backup `id` copied with tar and post'ed, a WAL switch archived, and
/// the copy put in place of the data directory (stopped).
struct Fixture {
    dir: TestDir,
    pg: Cluster,
    t: Tool,
    exe: PathBuf,
}

fn fixture(ids: &[&str], copy_of: &str) -> Fixture {
    let dir = TestDir::new();
    let exe = install_bin(&dir);
    let pg = Cluster::new(dir.path(), "pg");
    let t = Tool::new(&dir);
    pg.execute("create table t (id int primary key); insert into t select generate_series(1, 100)");
    let mut copy = None;
    for (i, id) in ids.iter().enumerate() {
        let tar = backup(&pg, &t, &dir, id);
        // New rows every time: WAL to switch away from (a switch with none waits for ever).
        let from = 1000 * (i + 1);
        pg.execute(&format!("insert into t select generate_series({from}, {})", from + 100));
        if *id == copy_of {
            copy = Some(tar);
        }
    }
    switch_and_wait(&pg);
    restore_copy(&pg, &copy.expect("the copy to restore"));
    Fixture { dir, pg, t, exe }
}

impl Fixture {
    fn prep<'a>(&'a self, id: &'a str) -> Prep<'a> {
        Prep { exe: &self.exe, id, pgdata: &self.pg.datadir }
    }
    fn archive(&self) -> &str {
        s(&self.pg.archive_dir)
    }
}

#[test]
fn refuses_a_copy_of_another_backup() {
    let f = fixture(&["tue", "wed"], "tue");
    fs::remove_dir_all(&f.t.sidecar).expect("deleting the sidecars");
    // Wednesday's history file is found, but Tuesday's copy checkpointed before it started.
    f.prep("wed").refused(&["--label-from-archive", "--archive-dir", f.archive()], "does not belong to backup wed");
    // Tuesday's own label is found and fits.
    let o = f.prep("tue").run(&["--label-from-archive", "--archive-dir", f.archive(), "--dry-run"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
}

#[test]
fn refuses_a_history_file_of_another_cluster() {
    let f = fixture(&["same-id"], "same-id");
    // Another cluster made a backup with the same id into its own archive.
    let other = Cluster::new(f.dir.path(), "other");
    let dir2 = TestDir::new();
    let t2 = Tool::new(&dir2);
    backup(&other, &t2, &dir2, "same-id");
    let err = f.prep("same-id").refused(
        &["--label-from-archive", "--archive-dir", s(&other.archive_dir)],
        "belongs to the cluster with system identifier",
    );
    assert!(err.contains(&other.query_scalar("select system_identifier from pg_control_system()")), "{err}");
}

#[test]
fn refuses_when_post_could_not_archive_the_history_file() {
    let dir = TestDir::new();
    let exe = install_bin(&dir);
    let pg = Cluster::new(dir.path(), "pg");
    let t = Tool::new(&dir);
    pg.execute("create table t (id int)");
    t.pre("broken", &[("default", pg.conninfo())], &[]).ok();
    let tarfile = dir.path().join("broken.tar");
    tar_create(&pg.datadir, &tarfile);
    pg.set_archiving_works(false);
    let post = t.with_run("post", "broken", &["--archive-timeout", "3"]);
    let post = post.fails(3, "NOT restorable yet");
    assert!(post.stderr.contains(".backup"), "post names the history file it waits for: {}", post.stderr);
    assert_eq!(t.manifest("broken")["status"], "archive-pending");
    t.abort("broken");
    fs::remove_dir_all(&t.sidecar).expect("deleting the sidecar");
    // Archiving stays broken until the server stops: the history file never reaches the archive.
    restore_copy(&pg, &tarfile);
    let prep = Prep { exe: &exe, id: "broken", pgdata: &pg.datadir };
    let err = prep.refused(
        &["--label-from-archive", "--archive-dir", s(&pg.archive_dir)],
        "no backup history file with LABEL broken",
    );
    assert!(err.contains("post exited 3"), "{err}");
}

#[test]
fn refuses_when_sidecar_and_history_file_disagree() {
    let f = fixture(&["b1"], "b1");
    let name = f.t.manifest("b1")["nodes"][0]["backup_history_file"].as_str().expect("history").to_string();
    let p = f.pg.archive_dir.join(&name);
    let text = fs::read_to_string(&p).expect("history file");
    let edited: String =
        text.lines()
            .map(|l| {
                if l.starts_with("START TIME: ") {
                    "START TIME: 1999-01-01 00:00:00 UTC".to_string()
                } else {
                    l.into()
                }
            })
            .map(|l| l + "\n")
            .collect();
    assert_ne!(edited, text);
    fs::write(&p, edited).expect("editing the history file");
    let side = s(&f.t.sidecar);
    // With the sidecar as the source, and with the archive as the source: both refuse.
    f.prep("b1").refused(&["--sidecar-dir", side, "--archive-dir", f.archive()], "disagree (line 5");
    f.prep("b1").refused(&["--label-from-archive", "--sidecar-dir", side, "--archive-dir", f.archive()], "disagree");
    // Put back, both agree.
    fs::write(&p, text).expect("restoring the history file");
    let o = f.prep("b1").run(&["--sidecar-dir", side, "--archive-dir", f.archive(), "--dry-run"]);
    assert!(String::from_utf8_lossy(&o.stdout).contains("agrees with backup history file"), "{o:?}");
}

#[test]
fn refuses_a_copy_from_a_standby() {
    let dir = TestDir::new();
    let exe = install_bin(&dir);
    let primary = Cluster::new(dir.path(), "primary");
    if major(&primary) > 15 && !common::bindir().join("pg_basebackup").exists() {
        // The matrix builds have no pg_basebackup, and PostgreSQL 15's refuses newer servers.
        crate::common::skip(&format!("PostgreSQL {}: no pg_basebackup for it to make a standby", major(&primary)));
        return;
    }
    let standby = common::standby_of(&primary, dir.path(), "standby");
    let t = Tool::new(&dir);
    primary.execute("create table t (id int); insert into t values (1)");
    t.pre("sb", &[("default", standby.conninfo())], &[]).ok();
    let tarfile = dir.path().join("sb.tar");
    tar_create(&standby.datadir, &tarfile);
    t.post("sb").ok();
    assert_eq!(t.manifest("sb")["nodes"][0]["from_standby"], true);
    restore_copy(&standby, &tarfile);
    let prep = Prep { exe: &exe, id: "sb", pgdata: &standby.datadir };
    let archive = s(&primary.archive_dir);
    // The sidecar is there and says so.
    prep.refused(
        &["--label-from-archive", "--sidecar-dir", s(&t.sidecar), "--archive-dir", archive],
        "BACKUP FROM: standby",
    );
    // Without the sidecar, the copy's pg_control says so.
    fs::remove_dir_all(&t.sidecar).expect("deleting the sidecar");
    prep.refused(&["--label-from-archive", "--archive-dir", archive], "this copy was taken from a standby");
}

// ---------------------------------------------------------------- restore_command

#[test]
fn restore_command_finds_the_history_file_from_pg_control() {
    let f = fixture(&["rc"], "rc");
    let label = f.t.label("rc", "default");
    let name = f.t.manifest("rc")["nodes"][0]["backup_history_file"].as_str().expect("history").to_string();
    fs::remove_dir_all(&f.t.sidecar).expect("deleting the sidecar");
    let cmd = format!("cp {}/%f %p", f.archive());
    let o = f.prep("rc").run(&["--label-from-archive", "--restore-command", &cmd]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(String::from_utf8_lossy(&o.stdout).contains(&format!("backup history file {name} found")), "{o:?}");
    assert_eq!(fs::read_to_string(f.pg.datadir.join("backup_label")).expect("label"), label);
    start_and_wait_promoted(&f.pg);
    assert_eq!(f.pg.query_scalar("select count(*) from t"), "201");
}

#[test]
fn restore_command_with_a_named_history_file_and_planted_links() {
    let f = fixture(&["named"], "named");
    let name = f.t.manifest("named")["nodes"][0]["backup_history_file"].as_str().expect("history").to_string();
    fs::remove_dir_all(&f.t.sidecar).expect("deleting the sidecar");
    let cmd = format!("cp {}/%f %p", f.archive());
    let named = ["--label-from-archive", "--restore-command", &cmd, "--backup-history-file", &name, "--dry-run"];
    let o = f.prep("named").run(&named);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    f.prep("named").refused(
        &[
            "--label-from-archive",
            "--restore-command",
            &cmd,
            "--backup-history-file",
            "000000010000000000000001.00000028.backup",
        ],
        "no backup history file with LABEL named",
    );
    // A restore_command (run as the data directory's owner) that plants a link to a file only
    // root may read: never followed.
    let secret = f.dir.path().join("secret");
    fs::write(&secret, "LABEL: named\n").expect("secret");
    fs::set_permissions(&secret, std::os::unix::fs::PermissionsExt::from_mode(0o600)).expect("chmod");
    let planting = format!("ln -s {} %p", s(&secret));
    f.prep("named").refused(&["--label-from-archive", "--restore-command", &planting], "it must be a regular file");
    // A link planted in the archive directory is not followed either.
    let other = f.dir.mkdir("archive-with-link");
    std::os::unix::fs::symlink(f.pg.archive_dir.join(&name), other.join(&name)).expect("symlink");
    f.prep("named").refused(&["--label-from-archive", "--archive-dir", s(&other)], "it must be a regular file");
}
