//! The core two-phase flow against the PostgreSQL in `$PGBH_PG_BINDIR` (default Debian's 15).
//! scripts/test-matrix.sh runs this file once per major, 10 to 18, and sets
//! `PGBH_PG_EXPECT_MAJOR` so that a wrong bin directory cannot silently test another version.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use crate::common;
use crate::common::roundtrip::{
    install_bin, restore_copy, run_exe, start_and_wait_promoted, switch_and_wait, tar_create,
};
use crate::common::{Cluster, TestDir};

/// A run directory the tool accepts: owned by us (the TestDir is the server user's), 0700.
fn run_dir(dir: &TestDir) -> PathBuf {
    own_dir(dir, "run")
}

/// A directory of ours (the TestDir is the server user's), 0700: run and sidecar directories
/// owned by another user are refused.
fn own_dir(dir: &TestDir, name: &str) -> PathBuf {
    let p = dir.mkdir(name);
    let me = nix::unistd::geteuid();
    std::os::unix::fs::chown(&p, Some(me.as_raw()), None).expect("chown own dir");
    fs::set_permissions(&p, fs::Permissions::from_mode(0o700)).expect("chmod own dir");
    p
}

fn tool(args: &[&str], run: &Path) -> Output {
    let run = run.display().to_string();
    let mut all = args.to_vec();
    all.extend(["--run-dir", run.as_str()]);
    run_exe(&common::bin(), &all)
}

fn ok(out: &Output, what: &str, run: &Path, id: &str) -> String {
    if !out.status.success() {
        let log = fs::read_to_string(run.join(format!("{id}.log"))).unwrap_or_default();
        panic!(
            "{what} failed with {}\n--- stdout ---\n{}\n--- stderr ---\n{}\n--- helper log ---\n{log}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The value of `KEY: value` in a backup_label.
fn label_field<'a>(label: &'a str, key: &str) -> Option<&'a str> {
    label.lines().find_map(|l| l.strip_prefix(key)?.strip_prefix(": "))
}

#[test]
fn two_phase_backup_on_this_major() {
    let dir = TestDir::new();
    let pg = Cluster::new(dir.path(), "main");
    let version_num: i32 = pg.query_scalar("show server_version_num").parse().unwrap();
    let major = version_num / 10000;
    eprintln!("testing against PostgreSQL {version_num} from {}", common::bindir().display());
    if let Ok(want) = std::env::var("PGBH_PG_EXPECT_MAJOR") {
        assert_eq!(major.to_string(), want, "PGBH_PG_BINDIR={} runs the wrong major", common::bindir().display());
    }

    let run = run_dir(&dir);
    let sidecar = own_dir(&dir, "sidecar");
    let id = format!("versions-{major}");
    let node = format!("default={}", pg.conninfo());
    pg.execute("create table t (id int primary key, v text); insert into t select g, md5(g::text) from generate_series(1, 1000) g;");

    let out =
        tool(&["pre", "--backup-id", &id, "--fast", "--node", &node, "--sidecar-dir", sidecar.to_str().unwrap()], &run);
    let stdout = ok(&out, "pre", &run, &id);
    // "node default: backup started at 0/2000028 (PostgreSQL 15.18 ...)"
    let start_lsn = stdout
        .lines()
        .find_map(|l| l.strip_prefix("node default: backup started at "))
        .and_then(|r| r.split(' ').next())
        .unwrap_or_else(|| panic!("pre printed no start LSN:\n{stdout}"))
        .to_string();

    assert_eq!(
        pg.query_scalar("select count(*) from pg_stat_activity where application_name like 'pg-backup-hooks%'"),
        "1",
        "the helper holds one session while the backup runs"
    );
    // The cluster keeps working while the backup is held, including WAL switches.
    pg.execute("insert into t select g, md5(g::text) from generate_series(1001, 5000) g;");
    pg.query_scalar("select pg_switch_wal()");
    pg.execute("update t set v = v || 'x' where id % 7 = 0;");

    let out = tool(&["post", "--backup-id", &id, "--archive-timeout", "60"], &run);
    ok(&out, "post", &run, &id);
    // Right when post returns, the WAL the backup needs is in the archive.
    let archived = pg.archived_files();

    let backup = sidecar.join(&id);
    let label = fs::read_to_string(backup.join("default/backup_label")).expect("stored backup_label");
    eprintln!("--- backup_label ---\n{label}");
    assert_eq!(label_field(&label, "LABEL"), Some(id.as_str()), "label:\n{label}");
    let start_field = label_field(&label, "START WAL LOCATION").expect("START WAL LOCATION line");
    assert_eq!(start_field.split(' ').next(), Some(start_lsn.as_str()), "pre printed {start_lsn}; label:\n{label}");
    assert_eq!(label_field(&label, "BACKUP METHOD"), Some("streamed"));
    let from = if major <= 13 { "master" } else { "primary" };
    assert_eq!(label_field(&label, "BACKUP FROM"), Some(from), "label:\n{label}");
    assert_eq!(
        label_field(&label, "START TIMELINE").is_some(),
        major >= 11,
        "START TIMELINE line on {major}:\n{label}"
    );
    let tablespace_map = fs::read(backup.join("default/tablespace_map")).expect("stored tablespace_map");
    assert!(tablespace_map.is_empty(), "no tablespaces, yet tablespace_map is {tablespace_map:?}");

    let manifest: serde_json::Value =
        serde_json::from_str(&fs::read_to_string(backup.join("manifest.json")).expect("manifest.json"))
            .expect("manifest is JSON");
    assert_eq!(manifest["status"], "complete", "{manifest:#}");
    let n = &manifest["nodes"][0];
    assert_eq!(n["server_version_num"].as_i64(), Some(version_num as i64), "{manifest:#}");
    assert_eq!(n["start_lsn"].as_str(), Some(start_lsn.as_str()));
    assert_eq!(n["archived"], true);
    assert_eq!(n["wal_segment_size"].as_u64(), Some(16 * 1024 * 1024), "wal_segment_size in bytes on {major}");
    assert_eq!(
        n["system_identifier"].as_str().unwrap(),
        pg.query_scalar("select system_identifier::text from pg_control_system()")
    );
    let start_file = n["start_wal_file"].as_str().unwrap();
    assert_eq!(Some(start_file), start_field.split("(file ").nth(1).and_then(|r| r.strip_suffix(')')));
    let stop_file = n["stop_wal_file"].as_str().unwrap().to_string();
    let history = n["backup_history_file"].as_str().expect("a primary's backup has a history file").to_string();
    // Our segment-name arithmetic agrees with the server's.
    assert_eq!(pg.query_scalar(&format!("select pg_walfile_name('{start_lsn}')")), start_file, "start segment name");
    let stop_lsn = n["stop_lsn"].as_str().unwrap();
    // pg_lsn - numeric only exists from 14: subtract the byte here.
    let (hi, lo) = stop_lsn.split_once('/').unwrap();
    let before_stop = ((u64::from_str_radix(hi, 16).unwrap() << 32) | u64::from_str_radix(lo, 16).unwrap()) - 1;
    let before_stop = format!("{:X}/{:X}", before_stop >> 32, before_stop & 0xFFFF_FFFF);
    assert_eq!(pg.query_scalar(&format!("select pg_walfile_name('{before_stop}')")), stop_file, "stop segment name");
    assert!(archived.contains(&stop_file), "stop segment {stop_file} not archived when post returned: {archived:?}");
    assert!(archived.contains(&history), "history file {history} not archived when post returned: {archived:?}");
    let hist = fs::read_to_string(pg.archive_dir.join(&history)).expect("reading history file");
    assert!(hist.contains(&format!("LABEL: {id}")), "history file:\n{hist}");
    assert!(hist.contains(&format!("STOP WAL LOCATION: {stop_lsn} ")), "history file vs stop_lsn {stop_lsn}:\n{hist}");

    // verify accepts what post stored.
    let out = Command::new(common::bin())
        .args(["verify", "--backup-id", &id, "--sidecar-dir", sidecar.to_str().unwrap()])
        .output()
        .expect("running verify");
    assert!(
        out.status.success(),
        "verify: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );

    // The backup is over on the server: a new one can start in any session.
    assert_eq!(pg.query_scalar("select count(*) from t"), "5000");
    assert_eq!(
        pg.query_scalar("select count(*) from pg_stat_activity where application_name like 'pg-backup-hooks%'"),
        "0",
        "the helper's session is gone after post"
    );
}

#[test]
fn abort_ends_the_backup_on_this_major() {
    let dir = TestDir::new();
    let pg = Cluster::new(dir.path(), "main");
    let run = run_dir(&dir);
    let sidecar = own_dir(&dir, "sidecar");
    let id = "versions-abort";
    let node = format!("default={}", pg.conninfo());
    let out =
        tool(&["pre", "--backup-id", id, "--fast", "--node", &node, "--sidecar-dir", sidecar.to_str().unwrap()], &run);
    ok(&out, "pre", &run, id);
    let out = tool(&["abort", "--backup-id", id], &run);
    ok(&out, "abort", &run, id);
    assert!(!sidecar.join(id).join("manifest.json").exists(), "abort stored a sidecar");
    common::wait_until(std::time::Duration::from_secs(10), "the helper's session to end", || {
        pg.query_scalar("select count(*) from pg_stat_activity where application_name like 'pg-backup-hooks%'") == "0"
    });
}

// ---------------------------------------------------------------- round trips (issues 5 and 7)

fn exe_ok(exe: &Path, args: &[&str]) -> String {
    let out = run_exe(exe, args);
    assert!(out.status.success(), "{args:?} failed with {}:\n{}", out.status, String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The checkpoint location in a pg_control file (u64 at offset 32, native order).
fn control_checkpoint(pgdata: &Path) -> u64 {
    let b = fs::read(pgdata.join("global/pg_control")).expect("reading pg_control");
    u64::from_ne_bytes(b[32..40].try_into().unwrap())
}

struct Restored {
    dir: TestDir,
    pg: Cluster,
    exe: PathBuf,
    sidecar: PathBuf,
    major: i32,
    /// Rows committed before pre returned, before post was called, when post returned, in all.
    before_pre_returned: u64,
    before_post: u64,
    after_post: u64,
    total: u64,
}

impl Restored {
    fn prep_args(&self, id: &str) -> Vec<String> {
        [
            "restore-prep",
            "--backup-id",
            id,
            "--sidecar-dir",
            self.sidecar.to_str().unwrap(),
            "--pgdata",
            self.pg.datadir.to_str().unwrap(),
            "--archive-dir",
            self.pg.archive_dir.to_str().unwrap(),
            "--archive-mode",
            "off",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect()
    }

    fn prep(&self, extra: &[&str]) -> Output {
        let mut a = self.prep_args("rt");
        a.extend(extra.iter().map(|s| s.to_string()));
        let refs: Vec<&str> = a.iter().map(String::as_str).collect();
        run_exe(&self.exe, &refs)
    }

    fn rows(&self) -> (u64, u64) {
        let rows: u64 = self.pg.query_scalar("select count(*) from t").parse().unwrap();
        let max: u64 = self.pg.query_scalar("select coalesce(max(id), 0) from t").parse().unwrap();
        (rows, max)
    }
}

/// Back up a cluster with pre --fast / tar (while another thread keeps committing rows) /
/// post, commit more, switch WAL and wait for the archive, then stop the cluster and put the
/// tar copy in place of its data directory. Nothing is prepared yet.
fn backed_up_and_restored() -> Restored {
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
    use std::sync::Arc;
    let dir = TestDir::new();
    let exe = install_bin(&dir);
    let pg = Cluster::new(dir.path(), "pg");
    let major = pg.query_scalar("show server_version_num").parse::<i32>().unwrap() / 10000;
    let run = run_dir(&dir);
    let sidecar = own_dir(&dir, "sidecar");
    pg.execute("create table t (id bigint primary key, at timestamptz default now())");

    let committed = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let inserter = {
        let (committed, stop, conninfo) = (committed.clone(), stop.clone(), pg.conninfo());
        std::thread::spawn(move || {
            let mut c = postgres::Client::connect(&conninfo, postgres::NoTls).expect("inserter connects");
            let mut n = 0u64;
            while !stop.load(Ordering::SeqCst) {
                n += 1;
                c.execute("insert into t (id) values ($1)", &[&(n as i64)]).expect("insert");
                committed.store(n, Ordering::SeqCst);
            }
        })
    };
    let wait_more = |than: u64, what: &str| {
        common::wait_until(std::time::Duration::from_secs(20), what, || committed.load(Ordering::SeqCst) > than + 50)
    };
    wait_more(0, "first commits");
    let node = format!("default={}", pg.conninfo());
    let s = |p: &Path| p.to_str().unwrap().to_string();
    exe_ok(
        &exe,
        &["pre", "--backup-id", "rt", "--fast", "--node", &node, "--sidecar-dir", &s(&sidecar), "--run-dir", &s(&run)],
    );
    let before_pre_returned = committed.load(Ordering::SeqCst);
    let tarfile = dir.path().join("rt.tar");
    tar_create(&pg.datadir, &tarfile);
    wait_more(before_pre_returned, "commits during the copy");
    let before_post = committed.load(Ordering::SeqCst);
    exe_ok(&exe, &["post", "--backup-id", "rt", "--run-dir", &s(&run), "--archive-timeout", "60"]);
    let after_post = committed.load(Ordering::SeqCst);
    wait_more(after_post, "commits after post");
    stop.store(true, Ordering::SeqCst);
    inserter.join().expect("inserter thread");
    let total = committed.load(Ordering::SeqCst);
    assert_eq!(pg.query_scalar("select count(*) from t"), total.to_string());
    switch_and_wait(&pg);
    restore_copy(&pg, &tarfile);
    Restored { dir, pg, exe, sidecar, major, before_pre_returned, before_post, after_post, total }
}

fn round_trip(target: &str) {
    use std::os::unix::fs::MetadataExt;
    let r = backed_up_and_restored();
    let control = r.pg.datadir.join("global/pg_control");
    let (mode, uid, gid) = {
        let m = fs::metadata(&control).unwrap();
        (m.mode(), m.uid(), m.gid())
    };
    let checkpoint_in_copy = control_checkpoint(&r.pg.datadir);

    let out = r.prep(&["--target", target]);
    assert!(out.status.success(), "restore-prep on {}: {}", r.major, String::from_utf8_lossy(&out.stderr));
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(stdout.contains("wrote backup_label"), "{stdout}");
    let recovery_file = if r.major >= 12 { "recovery.signal" } else { "recovery.conf" };
    assert!(r.pg.datadir.join(recovery_file).exists(), "no {recovery_file} on {}", r.major);
    assert_eq!(r.pg.datadir.join("recovery.conf").exists(), r.major < 12, "recovery.conf only before 12");

    // pg_control: the checkpoint location is now invalid (issue 7), same size, owner, mode.
    let m = fs::metadata(&control).unwrap();
    assert_eq!((m.len(), m.mode(), m.uid(), m.gid()), (8192, mode, uid, gid), "pg_control size/mode/owner changed");
    let invalid = control_checkpoint(&r.pg.datadir);
    assert_eq!(invalid, checkpoint_in_copy | 0xFFFF_0000_0000_0000, "checkpoint location {invalid:X} not invalidated");

    // A second run changes nothing.
    let before: Vec<(PathBuf, Vec<u8>)> = ["global/pg_control", "backup_label", "postgresql.auto.conf", recovery_file]
        .iter()
        .map(|f| (r.pg.datadir.join(f), fs::read(r.pg.datadir.join(f)).unwrap()))
        .collect();
    let again = r.prep(&["--target", target]);
    assert!(again.status.success(), "second restore-prep: {}", String::from_utf8_lossy(&again.stderr));
    assert!(
        String::from_utf8_lossy(&again.stdout).contains("already prepared: nothing to do"),
        "{}",
        String::from_utf8_lossy(&again.stdout)
    );
    for (p, b) in &before {
        assert_eq!(&fs::read(p).unwrap(), b, "second run changed {}", p.display());
    }

    start_and_wait_promoted(&r.pg);
    let (rows, max) = r.rows();
    let log = r.pg.log();
    eprintln!("PostgreSQL {} target {target}: {rows} rows restored; committed {} before pre returned, {} before post, {} after post, {} in all", r.major, r.before_pre_returned, r.before_post, r.after_post, r.total);
    assert_eq!(rows, max, "rows are missing in the middle");
    match target {
        "latest" => assert_eq!(rows, r.total, "every committed row must be restored with target latest"),
        "backup-end" => {
            assert!(
                rows >= r.before_pre_returned,
                "{rows} rows restored, {} committed before pre returned",
                r.before_pre_returned
            );
            assert!(rows <= r.after_post, "{rows} rows restored, only {} committed when post returned", r.after_post);
            assert!(log.contains("recovery stopping after reaching consistency"), "{log}");
        }
        "restore-point" => {
            assert!(rows >= r.before_post, "{rows} rows restored, {} committed before post", r.before_post);
            assert!(rows <= r.after_post, "{rows} rows restored, only {} committed when post returned", r.after_post);
            assert!(log.contains("recovery stopping at restore point \"rt\""), "{log}");
        }
        _ => unreachable!(),
    }
    // restore-check proves where recovery ended, on every major (10/11 read recovery.done).
    let (side, node) = (r.sidecar.display().to_string(), format!("default={}", r.pg.conninfo()));
    let check = run_exe(&r.exe, &["restore-check", "--backup-id", "rt", "--sidecar-dir", &side, "--node", &node]);
    let said = String::from_utf8_lossy(&check.stdout);
    assert!(check.status.success() && said.contains("node default: PROVEN"), "restore-check on {}: {said}", r.major);
    assert_eq!(r.pg.query_scalar("select current_setting('archive_mode')"), "off");
    assert!(!r.pg.datadir.join("backup_label").exists(), "the server consumes backup_label");
    // The restored server takes new writes and checkpoints.
    r.pg.execute("insert into t (id) values (-1); checkpoint;");
    let _ = &r.dir;
}

#[test]
fn round_trip_latest_on_this_major() {
    round_trip("latest");
}

#[test]
fn round_trip_backup_end_on_this_major() {
    round_trip("backup-end");
}

#[test]
fn round_trip_restore_point_on_this_major() {
    round_trip("restore-point");
}

/// Issue 7 case 17: backup_label deleted after restore-prep. The server must refuse to
/// start (restore-prep invalidated pg_control's checkpoint) instead of running crash recovery
/// from the copy's own checkpoint, even with the WAL in pg_wal; running restore-prep again
/// puts the label back (and empties pg_wal again).
#[test]
fn deleted_backup_label_refuses_to_start_on_this_major() {
    let r = backed_up_and_restored();
    let out = r.prep(&[]);
    assert!(out.status.success(), "restore-prep: {}", String::from_utf8_lossy(&out.stderr));
    fs::remove_file(r.pg.datadir.join("backup_label")).expect("deleting backup_label");
    // restore-prep emptied pg_wal, and without a label the checkpoint is read from pg_wal
    // only: that alone already stops the server. Put the WAL there (as someone "fixing"
    // the first failure would, or a copy that kept its pg_wal), so that only the invalidated
    // checkpoint location can stop it.
    for f in r.pg.archived_files() {
        if f.len() == 24 {
            let to = r.pg.datadir.join("pg_wal").join(&f);
            fs::copy(r.pg.archive_dir.join(&f), &to).expect("copying WAL into pg_wal");
            common::chown_to_server_user(&to);
        }
    }

    let started = r.pg.start();
    // pg_ctl -w returns once the postmaster is gone; give a racing exit a moment anyway.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while r.pg.is_running() && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    let log = r.pg.log();
    eprintln!("--- server log of the start without backup_label on {} ---\n{log}", r.major);
    assert!(!r.pg.is_running(), "the server runs without backup_label on {}:\n{log}", r.major);
    assert!(started.is_err(), "pg_ctl start succeeded without backup_label on {}:\n{log}", r.major);
    // "LOG: invalid primary checkpoint link in control file" (10-14) or "invalid checkpoint
    // location" (15+), then "PANIC: could not locate a valid checkpoint record".
    let says = |f: &dyn Fn(&str) -> bool| log.lines().any(f);
    assert!(
        says(&|l| l.contains("invalid") && l.contains("checkpoint")),
        "log on {} names no invalid checkpoint:\n{log}",
        r.major
    );
    assert!(
        says(&|l| (l.contains("PANIC") || l.contains("FATAL")) && l.contains("checkpoint")),
        "no PANIC/FATAL about the checkpoint on {}:\n{log}",
        r.major
    );
    assert!(!log.contains("redo starts"), "the server replayed WAL without its label:\n{log}");
    assert!(postgres::Client::connect(&r.pg.conninfo(), postgres::NoTls).is_err(), "the server accepts connections");

    // The remedy: restore-prep again (the copy was not modified by the failed start).
    let out = r.prep(&[]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "restore-prep after the label was deleted: {}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains("wrote backup_label"), "{stdout}");
    start_and_wait_promoted(&r.pg);
    let (rows, max) = r.rows();
    assert_eq!((rows, max), (r.total, r.total), "every committed row after restore-prep put the label back");
}
