//! restore-prep's proof that the archive holds the backup's WAL (issue 21 item 3), on real
//! backups: a backup spanning several segments, copied with tar, restored in place, then
//! prepared against archives that lack something. Each refusal is one line and changes
//! nothing in the data directory (compared by a listing with sizes, modes and mtimes).

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Output;

use crate::common::roundtrip::{
    install_bin, restore_copy, run_exe, start_and_wait_promoted, switch_and_wait, tar_create,
};
use crate::common::standby::wait_caught_up;
use crate::common::tool::Tool;
use crate::common::{chown_to_server_user, standby_of, Cluster, TestDir};

const ID: &str = "ap";

/// A backup whose WAL spans at least three segments, its copy restored in place (stopped).
struct Fixture {
    dir: TestDir,
    exe: PathBuf,
    sidecar: PathBuf,
    pg: Cluster,
    manifest: serde_json::Value,
    _tool: Tool,
}

fn fixture() -> Fixture {
    let dir = TestDir::new();
    let exe = install_bin(&dir);
    let t = Tool::new(&dir);
    let (sidecar, run) = (t.sidecar.clone(), t.run_dir.clone());
    let pg = Cluster::new(dir.path(), "pg");
    pg.execute("create table t (id int); insert into t select generate_series(1, 1000)");
    let node = format!("default={}", pg.conninfo());
    let (s, r) = (sidecar.display().to_string(), run.display().to_string());
    ok(&exe, &["pre", "--backup-id", ID, "--sidecar-dir", &s, "--run-dir", &r, "--fast", "--node", &node]);
    for _ in 0..2 {
        pg.execute("insert into t select generate_series(1, 1000)");
        pg.query_scalar("select pg_switch_wal()");
    }
    let tar = dir.path().join("copy.tar");
    tar_create(&pg.datadir, &tar);
    ok(&exe, &["post", "--backup-id", ID, "--run-dir", &r, "--archive-timeout", "60"]);
    switch_and_wait(&pg);
    restore_copy(&pg, &tar);
    chown_to_server_user(&pg.datadir);
    let manifest = serde_json::from_slice(&fs::read(sidecar.join(ID).join("manifest.json")).expect("manifest"))
        .expect("manifest json");
    Fixture { dir, exe, sidecar, pg, manifest, _tool: t }
}

impl Fixture {
    fn node(&self, key: &str) -> String {
        self.manifest["nodes"][0][key].as_str().unwrap_or_else(|| panic!("no {key} in {:#}", self.manifest)).to_string()
    }

    /// The segments of the backup, from its start to its stop segment (names on timeline 1).
    fn backup_segments(&self) -> Vec<String> {
        let (start, stop) = (self.node("start_wal_file"), self.node("stop_wal_file"));
        let mut names: Vec<String> = archived(&self.pg.archive_dir)
            .into_iter()
            .filter(|n| n.len() == 24 && n.as_str() >= start.as_str() && n.as_str() <= stop.as_str())
            .collect();
        names.sort();
        assert!(names.len() >= 3, "the backup must span three segments for a middle one: {names:?}");
        names
    }

    /// A copy of the cluster's archive, to damage.
    fn archive_copy(&self, name: &str) -> PathBuf {
        let to = self.dir.mkdir(name);
        for n in archived(&self.pg.archive_dir) {
            fs::copy(self.pg.archive_dir.join(&n), to.join(&n)).expect("copying the archive");
        }
        to
    }

    fn prep(&self, source: &[&str], extra: &[&str]) -> Output {
        let (s, d) = (self.sidecar.display().to_string(), self.pg.datadir.display().to_string());
        let mut a =
            vec!["restore-prep", "--backup-id", ID, "--sidecar-dir", &s, "--pgdata", &d, "--archive-mode", "off"];
        a.extend_from_slice(source);
        a.extend_from_slice(extra);
        run_exe(&self.exe, &a)
    }

    /// restore-prep from `source` is refused with `needle` in one line, plain, in a dry run
    /// and with --json, and the data directory is left exactly as it was.
    fn assert_refused(&self, source: &[&str], needle: &str) {
        let before = listing(&self.pg.datadir);
        for extra in [&[][..], &["--dry-run"], &["--json"]] {
            let o = self.prep(source, extra);
            let err = String::from_utf8_lossy(&o.stderr);
            assert!(!o.status.success(), "restore-prep {extra:?} should refuse");
            let node = format!("node {}:", self.node("name"));
            assert!(err.contains(needle) && err.contains(&node), "expected {node} {needle:?} in: {err}");
            assert_eq!(err.trim().lines().count(), 1, "one line: {err}");
            assert_eq!(
                listing(&self.pg.datadir),
                before,
                "restore-prep {extra:?} changed the data directory while refusing"
            );
        }
        let o = self.prep(source, &["--force"]);
        assert!(!o.status.success(), "--force does not override the archive proof");
        assert_eq!(listing(&self.pg.datadir), before);
    }
}

fn ok(exe: &Path, args: &[&str]) -> String {
    let o = run_exe(exe, args);
    assert!(o.status.success(), "{args:?} failed: {}", String::from_utf8_lossy(&o.stderr));
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn archived(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = fs::read_dir(dir)
        .expect("archive")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

/// Every entry below `root` (not following links): size, mode, owner, mtime.
fn listing(root: &Path) -> BTreeMap<PathBuf, String> {
    fn walk(root: &Path, p: &Path, out: &mut BTreeMap<PathBuf, String>) {
        let m = fs::symlink_metadata(p).expect("stat");
        let rel = p.strip_prefix(root).expect("below root").to_path_buf();
        out.insert(rel, format!("{} {:o} {}:{} {}.{}", m.len(), m.mode(), m.uid(), m.gid(), m.mtime(), m.mtime_nsec()));
        if m.is_dir() {
            for e in fs::read_dir(p).expect("list") {
                walk(root, &e.expect("entry").path(), out);
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(root, root, &mut out);
    out
}

#[test]
fn an_empty_archive_dir_is_refused_naming_the_start_segment() {
    let f = fixture();
    let empty = f.dir.mkdir("empty-archive");
    let start = f.node("start_wal_file");
    let dir = empty.display().to_string();
    f.assert_refused(&["--archive-dir", &dir], &format!("lacks segment {start}"));
}

#[test]
fn an_archive_missing_one_segment_inside_the_backup_is_refused_naming_it() {
    let f = fixture();
    let middle = f.backup_segments()[1].clone();
    let arch = f.archive_copy("holed");
    fs::remove_file(arch.join(&middle)).expect("removing a segment");
    let dir = arch.display().to_string();
    f.assert_refused(&["--archive-dir", &dir], &format!("lacks segment {middle}"));
}

#[test]
fn another_clusters_segment_under_the_right_name_is_refused() {
    let f = fixture();
    let other = Cluster::new(f.dir.path(), "other");
    let theirs = switch_and_wait(&other);
    let sysid = other.query_scalar("select system_identifier from pg_control_system()");
    let middle = f.backup_segments()[1].clone();
    let arch = f.archive_copy("mixed");
    fs::copy(other.archive_dir.join(&theirs), arch.join(&middle)).expect("planting another cluster's segment");
    let dir = arch.display().to_string();
    f.assert_refused(
        &["--archive-dir", &dir],
        &format!(
            "segment {middle} in the archive directory {dir} belongs to the cluster with system identifier {sysid}"
        ),
    );
}

#[test]
fn a_good_archive_passes_says_how_far_it_reaches_and_the_copy_recovers() {
    let f = fixture();
    let newest = archived(&f.pg.archive_dir).into_iter().filter(|n| n.len() == 24).max().expect("segments");
    let dir = f.pg.archive_dir.display().to_string();
    let o = f.prep(&["--archive-dir", &dir], &["--dry-run", "--json"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).expect("json");
    assert_eq!(v["plan"]["archive_reach"]["newest_segment"], newest.as_str(), "{:#}", v["plan"]);
    assert!(v["plan"]["archive_reach"]["newest_time"].as_str().is_some_and(|t| t.starts_with("20")));
    let out = String::from_utf8_lossy(&f.prep(&["--archive-dir", &dir], &[]).stdout).into_owned();
    let n = f.backup_segments().len();
    assert!(out.contains(&format!("ok: the archive holds all {n} segment(s) of the backup")), "{out}");
    assert!(out.contains(&format!("the archive reaches without a gap to segment {newest}")), "{out}");
    start_and_wait_promoted(&f.pg);
    assert_eq!(f.pg.query_scalar("select count(*) from t"), "3000");
}

#[test]
fn restore_command_refuses_an_unfetchable_start_segment_and_passes_a_fetchable_one() {
    let f = fixture();
    let start = f.node("start_wal_file");
    let arch = f.archive_copy("fetched");
    chown_to_server_user(&arch);
    let cmd = format!("cp {}/%f %p", arch.display());
    fs::rename(arch.join(&start), arch.join("moved-away")).expect("hiding the start segment");
    f.assert_refused(&["--restore-command", &cmd], &format!("lacks segment {start}"));
    fs::rename(arch.join("moved-away"), arch.join(&start)).expect("putting it back");
    let out = String::from_utf8_lossy(&f.prep(&["--restore-command", &cmd], &["--dry-run"]).stdout).into_owned();
    assert!(out.contains(&format!("ok: restore_command fetched the backup's start segment {start}")), "{out}");
}

/// A standby without archive_mode = always archives nothing: its backup's WAL is in the
/// primary's archive, and only once the primary has archived the stop segment.
#[test]
fn a_standby_backup_needs_the_primarys_archive_and_the_refusal_says_so() {
    let dir = TestDir::new();
    let exe = install_bin(&dir);
    let t = Tool::new(&dir);
    let primary = Cluster::new(dir.path(), "primary");
    primary.execute("create table t (id int); insert into t select generate_series(1, 100)");
    let standby = standby_of(&primary, dir.path(), "standby");
    let (s, r) = (t.sidecar.display().to_string(), t.run_dir.display().to_string());
    let node = format!("s1={}", standby.conninfo());
    ok(&exe, &["pre", "--backup-id", ID, "--sidecar-dir", &s, "--run-dir", &r, "--fast", "--node", &node]);
    primary.execute("insert into t select generate_series(1, 100)");
    wait_caught_up(&primary, &standby);
    let tar = dir.path().join("copy.tar");
    tar_create(&standby.datadir, &tar);
    ok(&exe, &["post", "--backup-id", ID, "--run-dir", &r]);
    restore_copy(&standby, &tar);
    chown_to_server_user(&standby.datadir);
    let manifest = serde_json::from_slice(&fs::read(t.sidecar.join(ID).join("manifest.json")).expect("manifest"))
        .expect("manifest json");
    let f = Fixture { exe, sidecar: t.sidecar.clone(), pg: standby, manifest, _tool: t, dir };
    assert_eq!(f.manifest["nodes"][0]["from_standby"], true);
    let stop = f.node("stop_wal_file");
    let own = f.pg.archive_dir.display().to_string();
    f.assert_refused(&["--archive-dir", &own], "give the primary's archive");
    // The primary's archive before its archiver got to the stop segment.
    switch_and_wait(&primary);
    let early = f.dir.mkdir("primary-archive-early");
    for n in archived(&primary.archive_dir).into_iter().filter(|n| *n < stop) {
        fs::copy(primary.archive_dir.join(&n), early.join(&n)).expect("copying the archive");
    }
    let early = early.display().to_string();
    f.assert_refused(&["--archive-dir", &early], &format!("lacks segment {stop}"));
    f.assert_refused(&["--archive-dir", &early], "wait until the primary has archived that segment");
    let theirs = primary.archive_dir.display().to_string();
    let o = f.prep(&["--archive-dir", &theirs], &["--dry-run"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
}
