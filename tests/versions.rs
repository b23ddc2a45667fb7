//! The core two-phase flow against the PostgreSQL in `$PGBH_PG_BINDIR` (default Debian's 15).
//! scripts/test-matrix.sh runs this file once per major, 10 to 18, and sets
//! `PGBH_PG_EXPECT_MAJOR` so that a wrong bin directory cannot silently test another version.

mod common;

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use common::{Cluster, TestDir};

/// A run directory the tool accepts: owned by us (the TestDir is the server user's), 0700.
fn run_dir(dir: &TestDir) -> PathBuf {
    let p = dir.mkdir("run");
    let me = nix::unistd::geteuid();
    std::os::unix::fs::chown(&p, Some(me.as_raw()), None).expect("chown run dir");
    fs::set_permissions(&p, fs::Permissions::from_mode(0o700)).expect("chmod run dir");
    p
}

fn tool(args: &[&str], run: &Path) -> Output {
    let out = Command::new(common::bin())
        .args(args)
        .arg("--run-dir")
        .arg(run)
        .env_remove("PGBH_NODES")
        .env_remove("PGBH_SIDECAR_DIR")
        .env_remove("XDG_RUNTIME_DIR")
        .output()
        .expect("running pg-backup-hooks");
    eprintln!(
        "$ pg-backup-hooks {}\n{}{}[{}]",
        args.join(" "),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
        out.status
    );
    out
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
    let sidecar = dir.mkdir("sidecar");
    let id = format!("versions-{major}");
    let node = format!("default={}", pg.conninfo());
    pg.execute("create table t (id int primary key, v text); insert into t select g, md5(g::text) from generate_series(1, 1000) g;");

    let out = tool(
        &["pre", "--backup-id", &id, "--fast", "--node", &node, "--sidecar-dir", sidecar.to_str().unwrap()],
        &run,
    );
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
    assert_eq!(label_field(&label, "START TIMELINE").is_some(), major >= 11, "START TIMELINE line on {major}:\n{label}");
    let tablespace_map = fs::read(backup.join("default/tablespace_map")).expect("stored tablespace_map");
    assert!(tablespace_map.is_empty(), "no tablespaces, yet tablespace_map is {tablespace_map:?}");

    let manifest: serde_json::Value =
        serde_json::from_str(&fs::read_to_string(backup.join("manifest.json")).expect("manifest.json")).expect("manifest is JSON");
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
    assert_eq!(
        pg.query_scalar(&format!("select pg_walfile_name('{start_lsn}')")),
        start_file,
        "start segment name"
    );
    let stop_lsn = n["stop_lsn"].as_str().unwrap();
    // pg_lsn - numeric only exists from 14: subtract the byte here.
    let (hi, lo) = stop_lsn.split_once('/').unwrap();
    let before_stop = ((u64::from_str_radix(hi, 16).unwrap() << 32) | u64::from_str_radix(lo, 16).unwrap()) - 1;
    let before_stop = format!("{:X}/{:X}", before_stop >> 32, before_stop & 0xFFFF_FFFF);
    assert_eq!(
        pg.query_scalar(&format!("select pg_walfile_name('{before_stop}')")),
        stop_file,
        "stop segment name"
    );
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
    assert!(out.status.success(), "verify: {}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));

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
    let sidecar = dir.mkdir("sidecar");
    let id = "versions-abort";
    let node = format!("default={}", pg.conninfo());
    let out = tool(
        &["pre", "--backup-id", id, "--fast", "--node", &node, "--sidecar-dir", sidecar.to_str().unwrap()],
        &run,
    );
    ok(&out, "pre", &run, id);
    let out = tool(&["abort", "--backup-id", id], &run);
    ok(&out, "abort", &run, id);
    assert!(!sidecar.join(id).join("manifest.json").exists(), "abort stored a sidecar");
    common::wait_until(std::time::Duration::from_secs(10), "the helper's session to end", || {
        pg.query_scalar("select count(*) from pg_stat_activity where application_name like 'pg-backup-hooks%'") == "0"
    });
}
