//! wal-archive as archive_command of real servers (issue 22 item 1): retries, conflicts, a
//! killed run's temporary file, another cluster, compressed archives through a real restore,
//! a minute of pgbench, and the order of the durability calls seen with strace.

use std::fs;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use crate::common::roundtrip::{
    archiving, install_archiver, restore_copy, run_exe, start_and_wait_promoted, switch_and_wait_archived, tar_create,
};
use crate::common::standby::{pgbench_init, tpcb_sums, CLIENT_BINDIR};
use crate::common::tool::Tool;
use crate::common::{wait_until, TestDir};

fn names(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> =
        fs::read_dir(dir).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into()).collect();
    v.sort();
    v
}

#[test]
fn a_retry_with_the_same_content_succeeds_and_other_content_is_refused_and_the_original_kept() {
    let dir = TestDir::new();
    let archive = dir.path().join("archive");
    let pg = archiving(&dir, "pg", &archive, None);
    let seg = switch_and_wait_archived(&pg);
    assert!(archive.join("pg-backup-hooks-archive.json").exists());
    let exe = dir.path().join("bin/pg-backup-hooks-wal-archive");
    let copy = dir.path().join("copy");
    fs::copy(archive.join(&seg), &copy).unwrap();
    let out = run_exe(&exe, &["--archive-dir", archive.to_str().unwrap(), copy.to_str().unwrap(), &seg]);
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("already archived"));
    let original = fs::read(archive.join(&seg)).unwrap();
    let mut other = original.clone();
    other[100_000] ^= 0xff;
    fs::write(&copy, &other).unwrap();
    for compress in [None, Some("zstd")] {
        let mut args = vec!["--archive-dir", archive.to_str().unwrap()];
        if let Some(c) = compress {
            args.extend(["--compress", c]);
        }
        args.extend([copy.to_str().unwrap(), &seg]);
        let out = run_exe(&exe, &args);
        assert_eq!(out.status.code(), Some(1));
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(err.trim().lines().count(), 1, "{}", err);
        assert!(err.contains("other content") && err.contains(copy.to_str().unwrap()) && err.contains(&seg), "{}", err);
    }
    assert_eq!(fs::read(archive.join(&seg)).unwrap(), original, "the original is kept");
    assert!(!names(&archive).iter().any(|n| n.starts_with(&format!("{}.", seg))), "no second form");
}

#[test]
fn a_temporary_file_left_by_a_killed_run_does_not_block_the_next_try() {
    let dir = TestDir::new();
    let archive = dir.path().join("archive");
    let pg = archiving(&dir, "pg", &archive, Some("lz4"));
    let first = switch_and_wait_archived(&pg);
    // What a run killed while writing the next segment leaves: its temporary file, half written.
    pg.execute("insert into tick values (2)");
    let next = pg.query_scalar("select pg_walfile_name(pg_current_wal_insert_lsn())");
    assert!(next > first);
    let tmp = archive.join(format!(".{}.pgbh-tmp", next));
    fs::write(&tmp, vec![0u8; 5000]).unwrap();
    crate::common::chown_to_server_user(&tmp);
    let seg = switch_and_wait_archived(&pg);
    assert_eq!(seg, next);
    assert!(archive.join(format!("{}.lz4", next)).exists());
    assert!(!tmp.exists(), "the leftover is cleaned");
    assert_eq!(pg.query_scalar("select failed_count from pg_stat_archiver"), "0");
}

#[test]
fn another_clusters_segment_is_refused() {
    let dir = TestDir::new();
    let archive = dir.path().join("archive");
    let a = archiving(&dir, "a", &archive, None);
    switch_and_wait_archived(&a);
    let b = archiving(&dir, "b", &archive, None);
    b.execute("create table t (x int); insert into t values (1)");
    let seg = b.query_scalar("select pg_walfile_name(pg_switch_wal())");
    wait_until(Duration::from_secs(60), "b's archiver fails", || {
        b.query_scalar("select failed_count from pg_stat_archiver") != "0"
    });
    assert_eq!(b.query_scalar("select coalesce(last_failed_wal, '') from pg_stat_archiver"), seg);
    let log = b.log();
    assert!(log.contains("another cluster's archive"), "{}", log);
    assert!(
        !archive.join(&seg).exists()
            || fs::read(archive.join(&seg)).unwrap()[24..32]
                != b.query_scalar("select system_identifier::text from pg_control_system()")
                    .parse::<u64>()
                    .unwrap()
                    .to_ne_bytes()
    );
}

/// Backup with pre/post of a server archiving with `--compress c`, restore with restore-prep
/// --archive-dir (its restore_command is the wal-restore lean binary), check the rows; then a
/// damaged compressed file makes wal-restore exit 126.
fn compressed_round_trip(c: &str) {
    let dir = TestDir::new();
    let tool = Tool::new(&dir);
    let archive = dir.path().join("archive");
    let pg = archiving(&dir, "pg", &archive, Some(c));
    pg.execute("create table t (id int); insert into t select generate_series(1, 1000)");
    tool.pre("b1", &[("default", pg.conninfo())], &[]).ok();
    let tar = dir.path().join("b1.tar");
    tar_create(&pg.datadir, &tar);
    pg.execute("insert into t select generate_series(1001, 2000)");
    tool.post("b1").ok();
    pg.execute("insert into t select generate_series(2001, 3000)");
    let last = switch_and_wait_archived(&pg);
    assert!(archive.join(format!("{}.{}", last, if c == "zstd" { "zst" } else { "lz4" })).exists());
    assert!(!archive.join(&last).exists());
    restore_copy(&pg, &tar);
    let mut restored = pg;
    restored.archive_dir = archive.clone();
    tool.restore_prep_ok("b1", &tool.sidecar, &restored);
    let auto = fs::read_to_string(restored.datadir.join("postgresql.auto.conf")).unwrap();
    assert!(auto.contains("pg-backup-hooks-wal-restore --archive-dir"), "{}", auto);
    start_and_wait_promoted(&restored);
    assert_eq!(restored.query_scalar("select count(*) from t"), "3000");
    // Damage the compressed segment in the middle: wal-restore refuses it with 126.
    let stored = archive.join(format!("{}.{}", last, if c == "zstd" { "zst" } else { "lz4" }));
    let mut bytes = fs::read(&stored).unwrap();
    let at = bytes.len() / 2;
    bytes[at] ^= 0x55;
    fs::write(&stored, &bytes).unwrap();
    let lean = dir.path().join("bin/pg-backup-hooks-wal-restore");
    let dest = dir.path().join("RECOVERYXLOG");
    let out = run_exe(&lean, &["--archive-dir", archive.to_str().unwrap(), &last, dest.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(126));
    assert!(!dest.exists());
}

#[test]
fn zstd_segments_go_through_a_real_restore_and_a_damaged_one_exits_126() {
    compressed_round_trip("zstd");
}

#[test]
fn lz4_segments_go_through_a_real_restore_and_a_damaged_one_exits_126() {
    compressed_round_trip("lz4");
}

#[test]
fn durability_order_seen_with_strace_fsync_file_then_rename_then_fsync_dir() {
    let dir = TestDir::new();
    let archive = dir.mkdir("archive");
    let exe = install_archiver(&dir);
    let seg = "000000010000000000000001";
    let src = dir.path().join(seg);
    let mut s = vec![0u8; 16 << 20];
    // A long page header: flags, system identifier 7, segment size, page size.
    s[2..4].copy_from_slice(&6u16.to_ne_bytes());
    s[24..32].copy_from_slice(&7u64.to_ne_bytes());
    s[32..36].copy_from_slice(&(16u32 << 20).to_ne_bytes());
    s[36..40].copy_from_slice(&8192u32.to_ne_bytes());
    fs::write(&src, &s).unwrap();
    let trace = dir.path().join("trace");
    let out = Command::new("/usr/bin/strace")
        .args(["-f", "-y", "-e", "trace=openat,fsync,fdatasync,rename,renameat,renameat2,link,linkat", "-o"])
        .arg(&trace)
        .arg(&exe)
        .args(["--archive-dir", archive.to_str().unwrap(), src.to_str().unwrap(), seg])
        .output()
        .expect("strace");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let t = fs::read_to_string(&trace).unwrap();
    let lines: Vec<&str> = t.lines().collect();
    let pos = |f: &dyn Fn(&str) -> bool, what: &str| {
        lines.iter().position(|l| f(l)).unwrap_or_else(|| panic!("no {} in:\n{}", what, t))
    };
    let tmp = format!(".{}.pgbh-tmp", seg);
    let fsync_tmp = pos(
        &|l: &str| (l.contains("fsync(") || l.contains("fdatasync(")) && l.contains(&tmp),
        "fsync of the temporary file",
    );
    let rename = pos(
        &|l: &str| l.contains("rename") && l.contains(&tmp) && l.contains(&format!("{}\"", seg)) && l.contains("= 0"),
        "rename",
    );
    let fsync_dir = lines
        .iter()
        .enumerate()
        .skip(rename)
        .position(|(_, l)| l.contains("fsync(") && l.contains(&format!("<{}>", archive.display())))
        .map(|p| p + rename);
    assert!(fsync_tmp < rename, "the file is fsynced before the rename:\n{}", t);
    assert!(fsync_dir.is_some(), "the directory is fsynced after the rename:\n{}", t);
    assert_eq!(fs::read(archive.join(seg)).unwrap(), s);
}

#[test]
fn a_server_archiving_under_a_minute_of_pgbench_restores_every_row() {
    let dir = TestDir::new();
    let tool = Tool::new(&dir);
    let archive = dir.path().join("archive");
    let pg = archiving(&dir, "pg", &archive, Some("zstd"));
    pgbench_init(&pg, 5);
    tool.pre("b1", &[("default", pg.conninfo())], &[]).ok();
    let tar = dir.path().join("b1.tar");
    tar_create(&pg.datadir, &tar);
    tool.post("b1").ok();
    let bench = Command::new(Path::new(CLIENT_BINDIR).join("pgbench"))
        .args(["-h", "127.0.0.1", "-U", "postgres", "-n", "-T", "60", "-c", "4", "-p"])
        .arg(pg.port.to_string())
        .arg("postgres")
        .env_remove("PGHOST")
        .output()
        .expect("pgbench");
    assert!(bench.status.success(), "{}", String::from_utf8_lossy(&bench.stderr));
    let sums = tpcb_sums(&pg);
    assert!(sums.4 > 1000, "pgbench ran: {:?}", sums);
    switch_and_wait_archived(&pg);
    assert_eq!(pg.query_scalar("select failed_count from pg_stat_archiver"), "0");
    restore_copy(&pg, &tar);
    let mut restored = pg;
    restored.archive_dir = archive.clone();
    tool.restore_prep_ok("b1", &tool.sidecar, &restored);
    start_and_wait_promoted(&restored);
    let got = tpcb_sums(&restored);
    assert_eq!(got, sums, "every row is back");
    assert!(got.0 == got.1 && got.1 == got.2 && got.2 == got.3, "TPC-B invariants: {:?}", got);
}
