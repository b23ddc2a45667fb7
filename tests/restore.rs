//! restore-prep and wal-restore against real servers: back up with pre/post while a live
//! copy is taken with tar, restore the copy, prepare it, start it, and check the rows.

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::Duration;

use crate::common;
use crate::common::roundtrip::{
    install_bin, restore_copy, start_and_wait_promoted, switch_and_wait, tar_create, tar_extract,
};
use crate::common::{Cluster, TestDir};
use sha2::{Digest, Sha256};

// ---------------------------------------------------------------- helpers

fn run(exe: &Path, args: &[&str]) -> Output {
    let mut cmd = Command::new(exe);
    cmd.args(args);
    for (k, _) in std::env::vars() {
        if k.starts_with("PGBH_") {
            cmd.env_remove(k);
        }
    }
    cmd.output().unwrap_or_else(|e| panic!("running {} {:?}: {e}", exe.display(), args))
}

fn text(o: &Output) -> String {
    format!(
        "--- stdout ---\n{}\n--- stderr ---\n{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

fn ok(exe: &Path, args: &[&str]) -> String {
    let o = run(exe, args);
    assert!(o.status.success(), "{:?} failed ({}):\n{}", args, o.status, text(&o));
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

struct Env {
    exe: PathBuf,
    sidecar: PathBuf,
    rundir: PathBuf,
}

impl Env {
    fn new(dir: &TestDir) -> Env {
        let sidecar = dir.path().join("sidecar");
        let rundir = dir.path().join("run");
        fs::create_dir_all(&sidecar).unwrap();
        fs::create_dir_all(&rundir).unwrap();
        Env { exe: install_bin(dir), sidecar, rundir }
    }

    fn pre(&self, pg: &Cluster, id: &str) {
        ok(
            &self.exe,
            &[
                "pre",
                "--backup-id",
                id,
                "--sidecar-dir",
                s(&self.sidecar),
                "--node",
                &format!("default={}", pg.conninfo()),
                "--run-dir",
                s(&self.rundir),
                "--fast",
            ],
        );
    }

    fn post(&self, id: &str) {
        ok(&self.exe, &["post", "--backup-id", id, "--run-dir", s(&self.rundir), "--archive-timeout", "60"]);
    }

    fn prep_args<'a>(&'a self, id: &'a str, pgdata: &'a Path, archive: &'a Path) -> Vec<&'a str> {
        vec![
            "restore-prep",
            "--backup-id",
            id,
            "--sidecar-dir",
            s(&self.sidecar),
            "--pgdata",
            s(pgdata),
            "--archive-dir",
            s(archive),
            "--archive-mode",
            "off",
        ]
    }

    fn prep(&self, id: &str, pgdata: &Path, archive: &Path, extra: &[&str]) -> Output {
        let mut a = self.prep_args(id, pgdata, archive);
        a.extend_from_slice(extra);
        run(&self.exe, &a)
    }
}

/// Every entry under `root` (not following symlinks): type, mode, owner and content hash.
fn tree(root: &Path) -> BTreeMap<String, String> {
    fn walk(root: &Path, p: &Path, out: &mut BTreeMap<String, String>) {
        let m = fs::symlink_metadata(p).unwrap();
        let rel = p.strip_prefix(root).unwrap().display().to_string();
        let what = if m.file_type().is_symlink() {
            format!("link {}", fs::read_link(p).unwrap().display())
        } else if m.is_dir() {
            let mut names: Vec<_> = fs::read_dir(p).unwrap().map(|e| e.unwrap().path()).collect();
            names.sort();
            for n in names {
                walk(root, &n, out);
            }
            "dir".to_string()
        } else {
            format!("{:x}", Sha256::digest(fs::read(p).unwrap()))
        };
        out.insert(rel, format!("{} {:o} {}:{}", what, m.mode(), m.uid(), m.gid()));
    }
    let mut out = BTreeMap::new();
    walk(root, root, &mut out);
    out
}

/// A cluster with a table, one backup `b1` copied with tar, restored in place (stopped).
struct Fixture {
    pg: Cluster,
    env: Env,
    tarfile: PathBuf,
}

fn fixture(dir: &TestDir) -> Fixture {
    let env = Env::new(dir);
    let pg = Cluster::new(dir.path(), "pg");
    pg.execute("create table t (id int primary key); insert into t select generate_series(1, 100);");
    env.pre(&pg, "b1");
    let tarfile = dir.path().join("b1.tar");
    tar_create(&pg.datadir, &tarfile);
    env.post("b1");
    switch_and_wait(&pg);
    restore_copy(&pg, &tarfile);
    Fixture { pg, env, tarfile }
}

/// restore-prep must refuse with `msg` and leave the data directory exactly as it was.
fn assert_refused(f: &Fixture, pgdata: &Path, extra: &[&str], msg: &str) {
    let before = tree(pgdata);
    let o = f.env.prep("b1", pgdata, &f.pg.archive_dir, extra);
    assert!(!o.status.success(), "restore-prep should have refused:\n{}", text(&o));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains(msg), "expected {msg:?} in the error:\n{}", text(&o));
    assert_eq!(err.trim().lines().count(), 1, "the refusal must be one line:\n{err}");
    assert_eq!(tree(pgdata), before, "restore-prep changed the data directory while refusing");
}

// ---------------------------------------------------------------- round trips

fn round_trip(target: &str) {
    let dir = TestDir::new();
    let env = Env::new(&dir);
    let pg = Cluster::new(dir.path(), "pg");
    pg.execute("create table t (id bigint primary key, at timestamptz default now())");

    let committed = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let inserter = {
        let (committed, stop, conninfo) = (committed.clone(), stop.clone(), pg.conninfo());
        thread::spawn(move || {
            let mut c = postgres::Client::connect(&conninfo, postgres::NoTls).unwrap();
            let mut n = 0u64;
            while !stop.load(Ordering::SeqCst) {
                n += 1;
                c.execute("insert into t (id) values ($1)", &[&(n as i64)]).unwrap();
                committed.store(n, Ordering::SeqCst);
            }
        })
    };
    common::wait_until(Duration::from_secs(10), "first inserts", || committed.load(Ordering::SeqCst) > 50);
    env.pre(&pg, "rt");
    let before_pre_returned = committed.load(Ordering::SeqCst);
    let tarfile = dir.path().join("rt.tar");
    tar_create(&pg.datadir, &tarfile);
    env.post("rt");
    let after_post = committed.load(Ordering::SeqCst);
    common::wait_until(Duration::from_secs(10), "more commits after post", || {
        committed.load(Ordering::SeqCst) > after_post + 50
    });
    stop.store(true, Ordering::SeqCst);
    inserter.join().unwrap();
    let total = committed.load(Ordering::SeqCst);
    assert_eq!(pg.query_scalar("select count(*) from t"), total.to_string());
    switch_and_wait(&pg);

    restore_copy(&pg, &tarfile);
    let out = ok(&env.exe, &[&env.prep_args("rt", &pg.datadir, &pg.archive_dir)[..], &["--target", target]].concat());
    assert!(out.contains("wrote backup_label"), "{out}");
    assert!(out.contains("pg_ctl -D"), "{out}");
    assert!(!pg.datadir.join("postmaster.pid").exists());
    assert_eq!(fs::metadata(pg.datadir.join("backup_label")).unwrap().uid(), fs::metadata(&pg.datadir).unwrap().uid());
    assert_eq!(fs::metadata(pg.datadir.join("backup_label")).unwrap().mode() & 0o777, 0o600);

    start_and_wait_promoted(&pg);
    let rows: u64 = pg.query_scalar("select count(*) from t").parse().unwrap();
    let max: u64 = pg.query_scalar("select coalesce(max(id), 0) from t").parse().unwrap();
    assert_eq!(rows, max, "rows are missing in the middle");
    match target {
        "latest" => assert_eq!(rows, total, "every committed row must be restored with target latest"),
        _ => {
            assert!(
                rows >= before_pre_returned,
                "{rows} rows restored, {before_pre_returned} were committed before pre returned"
            );
            assert!(pg.log().contains("recovery stopping after reaching consistency"), "{}", pg.log());
        }
    }
    // Archiving is off in the restored copy: the production archive is untouched.
    assert_eq!(pg.query_scalar("select current_setting('archive_mode')"), "off");
    assert!(!pg.datadir.join("backup_label").exists(), "the server consumes backup_label");
}

#[test]
fn round_trip_latest_restores_every_committed_row() {
    round_trip("latest");
}

#[test]
fn round_trip_backup_end_is_consistent() {
    round_trip("backup-end");
}

// ---------------------------------------------------------------- refusals

#[test]
fn refuses_copy_of_another_cluster() {
    let dir = TestDir::new();
    let f = fixture(&dir);
    let other = Cluster::new(dir.path(), "other");
    other.stop("fast");
    assert_refused(&f, &other.datadir, &[], "this copy is from another cluster or another node");
}

#[test]
fn refuses_while_a_server_runs_on_the_directory() {
    let dir = TestDir::new();
    let f = fixture(&dir);
    // The copy's stale pid file may name a pid reused by another test's server, which
    // PostgreSQL itself refuses to start over: remove it, as restore-prep would.
    let _ = fs::remove_file(f.pg.datadir.join("postmaster.pid"));
    f.pg.start().unwrap();
    let auto = fs::read(f.pg.datadir.join("postgresql.auto.conf")).unwrap();
    let pid = fs::read(f.pg.datadir.join("postmaster.pid")).unwrap();
    let o = f.env.prep("b1", &f.pg.datadir, &f.pg.archive_dir, &[]);
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("is running on"), "{}", text(&o));
    // A running server changes its own files; check the ones restore-prep would touch.
    assert_eq!(fs::read(f.pg.datadir.join("postgresql.auto.conf")).unwrap(), auto);
    assert_eq!(fs::read(f.pg.datadir.join("postmaster.pid")).unwrap(), pid);
    for name in ["backup_label", "recovery.signal", "tablespace_map"] {
        assert!(!f.pg.datadir.join(name).exists(), "{name} was written");
    }
}

#[test]
fn refuses_other_major_version() {
    let dir = TestDir::new();
    let f = fixture(&dir);
    fs::write(f.pg.datadir.join("PG_VERSION"), "14\n").unwrap();
    assert_refused(&f, &f.pg.datadir, &[], "was taken from PostgreSQL 15");
}

#[test]
fn refuses_edited_sidecar_label() {
    let dir = TestDir::new();
    let f = fixture(&dir);
    let label = f.env.sidecar.join("b1/default/backup_label");
    let t = fs::read_to_string(&label).unwrap().replace("START TIME: ", "START TIME: 1");
    fs::write(&label, t).unwrap();
    assert_refused(&f, &f.pg.datadir, &[], "does not match its sha256");
}

#[test]
fn refuses_archive_pending_backup() {
    let dir = TestDir::new();
    let f = fixture(&dir);
    let m = f.env.sidecar.join("b1/manifest.json");
    let t = fs::read_to_string(&m).unwrap().replace("\"complete\"", "\"archive-pending\"");
    fs::write(&m, t).unwrap();
    assert_refused(&f, &f.pg.datadir, &[], "is archive-pending");
}

#[test]
fn refuses_torn_pg_control() {
    let dir = TestDir::new();
    let f = fixture(&dir);
    let p = f.pg.datadir.join("global/pg_control");
    let mut b = fs::read(&p).unwrap();
    b[100] ^= 0xff;
    fs::write(&p, b).unwrap();
    assert_refused(&f, &f.pg.datadir, &[], "CRC does not match");
}

#[test]
fn refuses_label_of_an_older_backup() {
    let dir = TestDir::new();
    let env = Env::new(&dir);
    let pg = Cluster::new(dir.path(), "pg");
    pg.execute("create table t (id int); insert into t values (1);");
    env.pre(&pg, "tuesday");
    env.post("tuesday");
    pg.execute("insert into t values (2); checkpoint;");
    env.pre(&pg, "wednesday");
    let tarfile = dir.path().join("wednesday.tar");
    tar_create(&pg.datadir, &tarfile);
    env.post("wednesday");
    switch_and_wait(&pg);
    restore_copy(&pg, &tarfile);
    let f = Fixture { pg, env, tarfile };
    let before = tree(&f.pg.datadir);
    let o = f.env.prep("tuesday", &f.pg.datadir, &f.pg.archive_dir, &[]);
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("does not belong to backup tuesday"), "{}", text(&o));
    assert_eq!(tree(&f.pg.datadir), before);
    // The right label is accepted.
    ok(&f.env.exe, &f.env.prep_args("wednesday", &f.pg.datadir, &f.pg.archive_dir));
}

#[test]
fn refuses_other_backup_label_in_the_directory_unless_forced() {
    let dir = TestDir::new();
    let f = fixture(&dir);
    let t = fs::read_to_string(f.env.sidecar.join("b1/default/backup_label"))
        .unwrap()
        .replace("LABEL: b1", "LABEL: someone-else");
    fs::write(f.pg.datadir.join("backup_label"), t).unwrap();
    assert_refused(&f, &f.pg.datadir, &[], "rerun with --force");
    let o = f.env.prep("b1", &f.pg.datadir, &f.pg.archive_dir, &["--force"]);
    assert!(o.status.success(), "{}", text(&o));
    assert_eq!(
        fs::read(f.pg.datadir.join("backup_label")).unwrap(),
        fs::read(f.env.sidecar.join("b1/default/backup_label")).unwrap()
    );
}

// ---------------------------------------------------------------- idempotence, dry run

#[test]
fn dry_run_changes_nothing_and_second_run_is_a_no_op() {
    let dir = TestDir::new();
    let f = fixture(&dir);
    let d = &f.pg.datadir;
    let before = tree(d);
    let out = ok(&f.env.exe, &[&f.env.prep_args("b1", d, &f.pg.archive_dir)[..], &["--dry-run"]].concat());
    assert!(out.contains("would write backup_label"), "{out}");
    assert!(out.contains("would remove postmaster.pid"), "{out}");
    assert!(out.contains("dry run: nothing was changed"), "{out}");
    assert_eq!(tree(d), before, "--dry-run changed the data directory");

    let out = ok(&f.env.exe, &f.env.prep_args("b1", d, &f.pg.archive_dir));
    println!("{out}");
    assert!(out.contains("removed postmaster.pid"), "{out}");
    assert!(d.join("recovery.signal").exists());
    let segments: Vec<String> = fs::read_dir(d.join("pg_wal"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.len() == 24)
        .collect();
    assert!(segments.is_empty(), "WAL segments left in pg_wal: {segments:?}");
    assert!(d.join("pg_wal/archive_status").is_dir());
    let auto = fs::read_to_string(d.join("postgresql.auto.conf")).unwrap();
    // The program beside the binary that links no OpenSSL (it starts fast: one run per WAL file).
    assert!(auto.contains("/pg-backup-hooks-wal-restore --archive-dir"), "{auto}");

    let prepared = tree(d);
    let out = ok(&f.env.exe, &f.env.prep_args("b1", d, &f.pg.archive_dir));
    assert!(out.contains("already prepared: nothing to do"), "{out}");
    assert_eq!(tree(d), prepared, "a second run changed the data directory");

    let json = ok(&f.env.exe, &[&f.env.prep_args("b1", d, &f.pg.archive_dir)[..], &["--json", "--dry-run"]].concat());
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(v["plan"]["node"], "default");
    assert!(v["plan"]["start_command"].as_str().unwrap().contains("pg_ctl"));

    // And the prepared copy starts and has the data.
    start_and_wait_promoted(&f.pg);
    assert_eq!(f.pg.query_scalar("select count(*) from t"), "100");
    let _ = &f.tarfile;
}

// ---------------------------------------------------------------- tablespaces

#[test]
fn tablespace_is_restored_at_a_new_path() {
    let dir = TestDir::new();
    let env = Env::new(&dir);
    let old_ts = dir.mkdir("ts_old");
    let pg = Cluster::new(dir.path(), "pg");
    pg.execute(&format!("create tablespace ts location '{}'", old_ts.display()));
    pg.execute("create table big (id int) tablespace ts; insert into big select generate_series(1, 5000);");
    env.pre(&pg, "tsb");
    let data_tar = dir.path().join("data.tar");
    let ts_tar = dir.path().join("ts.tar");
    tar_create(&pg.datadir, &data_tar);
    tar_create(&old_ts, &ts_tar);
    env.post("tsb");
    pg.execute("insert into big select generate_series(5001, 6000);");
    switch_and_wait(&pg);
    restore_copy(&pg, &data_tar);
    fs::remove_dir_all(&old_ts).unwrap();

    // Restore the tablespace elsewhere: <dir>/moved/ts_old.
    let moved_parent = dir.mkdir("moved");
    tar_extract(&ts_tar, &moved_parent);
    let new_ts = moved_parent.join("ts_old");
    common::chown_to_server_user(&moved_parent);

    // Without the mapping: the old path does not exist.
    let o = env.prep("tsb", &pg.datadir, &pg.archive_dir, &[]);
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("which is not a directory"), "{}", text(&o));

    let map = format!("{}={}", old_ts.display(), new_ts.display());
    let out =
        ok(&env.exe, &[&env.prep_args("tsb", &pg.datadir, &pg.archive_dir)[..], &["--tablespace-map", &map]].concat());
    assert!(out.contains("wrote tablespace_map"), "{out}");
    start_and_wait_promoted(&pg);
    assert_eq!(pg.query_scalar("select count(*) from big"), "6000");
    assert_eq!(
        pg.query_scalar("select pg_tablespace_location(oid) from pg_tablespace where spcname = 'ts'"),
        new_ts.display().to_string()
    );
}

// ---------------------------------------------------------------- wal-restore

/// `sub` then `rest`: a command line with or without the subcommand.
fn with<'a>(sub: &[&'a str], rest: &[&'a str]) -> Vec<&'a str> {
    [sub, rest].concat()
}

#[test]
fn wal_restore_end_of_archive_and_foreign_segments() {
    let dir = TestDir::new();
    let exe = install_bin(&dir);
    let a = Cluster::new(dir.path(), "a");
    let b = Cluster::new(dir.path(), "b");
    let seg = switch_and_wait(&a);
    let sysid = |c: &Cluster| c.query_scalar("select system_identifier from pg_control_system()");
    let dest = dir.path().join("RECOVERYXLOG");
    // The subcommand, and restore_command's own program beside the binary: the same answers.
    let lean = exe.with_file_name("pg-backup-hooks-wal-restore");
    for (program, sub) in [(&exe, &["wal-restore"][..]), (&lean, &[][..])] {
        // End of archive: exit 1, nothing on stderr, nothing written.
        let o = run(program, &with(sub, &["--archive-dir", s(&a.archive_dir), "0000000100000000000000FF", s(&dest)]));
        assert_eq!(o.status.code(), Some(1), "{}", text(&o));
        assert!(o.stderr.is_empty(), "{}", text(&o));
        assert!(!dest.exists());

        // Another cluster's segment: refused loudly with a status that aborts recovery.
        let o = run(
            program,
            &with(sub, &["--archive-dir", s(&a.archive_dir), "--system-identifier", &sysid(&b), &seg, s(&dest)]),
        );
        assert_eq!(o.status.code(), Some(126), "{}", text(&o));
        assert!(String::from_utf8_lossy(&o.stderr).contains("another cluster's WAL"), "{}", text(&o));
        assert!(!dest.exists());

        // Its own segment is copied exactly.
        ok(
            program,
            &with(sub, &["--archive-dir", s(&a.archive_dir), "--system-identifier", &sysid(&a), &seg, s(&dest)]),
        );
        assert_eq!(fs::read(&dest).unwrap(), fs::read(a.archive_dir.join(&seg)).unwrap());
        fs::remove_file(&dest).unwrap();
    }
}
