//! restore-prep proves a restored copy's files against the inventories pre and post took
//! (issue 21, "Full copies"): real servers, real tar copies.

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use crate::common::roundtrip::{restore_copy, start_and_wait_promoted, switch_and_wait, tar_create};
use crate::common::standby::{pgbench_init, tpcb_sums, Load};
use crate::common::tool::{Ran, Tool};
use crate::common::{chown_to_server_user, Cluster, TestDir};

/// Every path below `dir` with its size and mtime (links by target): what a refusal must not change.
fn listing(dir: &Path) -> BTreeMap<String, (u64, i64, String)> {
    let mut out = BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            let m = fs::symlink_metadata(&p).unwrap();
            let link = if m.file_type().is_symlink() {
                fs::read_link(&p).unwrap().display().to_string()
            } else {
                String::new()
            };
            out.insert(p.strip_prefix(dir).unwrap().display().to_string(), (m.size(), m.mtime(), link));
            if m.is_dir() {
                stack.push(p);
            }
        }
    }
    out
}

/// pre, a live tar of the data directory, post: the copy of backup `id`.
fn backup(t: &Tool, pg: &Cluster, dir: &TestDir, id: &str) -> std::path::PathBuf {
    t.pre(id, &[("default", pg.conninfo())], &[]).ok();
    let tar = dir.path().join(format!("{}.tar", id));
    tar_create(&pg.datadir, &tar);
    t.post(id).ok();
    switch_and_wait(pg);
    tar
}

fn prep(t: &Tool, pg: &Cluster, id: &str, extra: &[&str]) -> Ran {
    chown_to_server_user(&pg.datadir);
    let (side, data, arch) =
        (t.sidecar.display().to_string(), pg.datadir.display().to_string(), pg.archive_dir.display().to_string());
    let mut args = vec![
        "restore-prep",
        "--backup-id",
        id,
        "--sidecar-dir",
        &side,
        "--pgdata",
        &data,
        "--archive-dir",
        &arch,
        "--archive-mode",
        "off",
    ];
    args.extend_from_slice(extra);
    t.run(&args)
}

/// The path of a table's first file, relative to the data directory.
fn relpath(pg: &Cluster, table: &str) -> String {
    pg.query_scalar(&format!("select pg_relation_filepath('{}')", table))
}

#[test]
fn a_good_copy_under_pgbench_load_passes_with_no_false_alarm() {
    let dir = TestDir::new();
    let pg = Cluster::new(dir.path(), "pg");
    pgbench_init(&pg, 5);
    let t = Tool::new(&dir);
    let load = Load::start(&pg, 4);
    std::thread::sleep(std::time::Duration::from_secs(2));
    let tar = backup(&t, &pg, &dir, "load-1");
    drop(load);
    restore_copy(&pg, &tar);
    let r = prep(&t, &pg, "load-1", &[]).ok();
    assert!(r.stdout.contains("ok: files verified against the local inventory"), "{}", r.stdout);
    assert!(!r.stdout.contains("stale:") && !r.stderr.contains("accept-unverified"), "{}\n{}", r.stdout, r.stderr);
    chown_to_server_user(&pg.datadir);
    start_and_wait_promoted(&pg);
    let (a, b, tt, h, _) = tpcb_sums(&pg);
    assert!(a == b && b == tt && tt == h, "TPC-B sums broken: {a} {b} {tt} {h}");
}

#[test]
fn a_missing_relation_file_is_refused_and_nothing_changes() {
    let dir = TestDir::new();
    let pg = Cluster::new(dir.path(), "pg");
    pg.execute("create table keep as select g from generate_series(1, 1000) g");
    let rel = relpath(&pg, "keep");
    let t = Tool::new(&dir);
    let tar = backup(&t, &pg, &dir, "miss-1");
    restore_copy(&pg, &tar);
    fs::remove_file(pg.datadir.join(&rel)).unwrap();
    let before = listing(&pg.datadir);
    let r = prep(&t, &pg, "miss-1", &["--force"]);
    assert_ne!(r.code, 0, "{}", r.stdout);
    assert!(
        r.stderr.contains("node default:") && r.stderr.contains("1 file(s) missing") && r.stderr.contains(&rel),
        "{}",
        r.stderr
    );
    assert!(r.stderr.contains("of database postgres"), "{}", r.stderr);
    assert_eq!(r.stderr.trim().lines().count(), 1, "{}", r.stderr);
    assert_eq!(listing(&pg.datadir), before, "a refusal changes nothing");
}

#[test]
fn one_relation_file_from_an_older_backup_is_refused_unless_accepted() {
    let dir = TestDir::new();
    let pg = Cluster::new(dir.path(), "pg");
    pg.execute("create table t as select g from generate_series(1, 1000) g");
    let rel = relpath(&pg, "t");
    let t = Tool::new(&dir);
    let old = backup(&t, &pg, &dir, "old-1");
    std::thread::sleep(std::time::Duration::from_millis(1100));
    pg.execute("insert into t select g from generate_series(1, 1000) g; checkpoint");
    let new = backup(&t, &pg, &dir, "new-1");
    let scratch = dir.path().join("scratch");
    fs::create_dir_all(&scratch).unwrap();
    crate::common::roundtrip::tar_extract(&old, &scratch);
    restore_copy(&pg, &new);
    let name = pg.datadir.file_name().unwrap().to_owned();
    fs::copy(scratch.join(&name).join(&rel), pg.datadir.join(&rel)).unwrap();
    let mtime = fs::metadata(scratch.join(&name).join(&rel)).unwrap().modified().unwrap();
    fs::File::options().write(true).open(pg.datadir.join(&rel)).unwrap().set_modified(mtime).unwrap();
    let before = listing(&pg.datadir);
    let r = prep(&t, &pg, "new-1", &["--dry-run"]);
    assert_ne!(r.code, 0, "{}", r.stdout);
    assert!(r.stderr.contains("older than at the backup's start") && r.stderr.contains(&rel), "{}", r.stderr);
    assert_eq!(listing(&pg.datadir), before, "a refusal changes nothing");
    let r = prep(&t, &pg, "new-1", &["--accept-unverified-files"]).ok();
    assert!(
        r.stderr.contains("warning: --accept-unverified-files: node default:") && r.stderr.contains(&rel),
        "{}",
        r.stderr
    );
}

#[test]
fn a_newer_clusters_table_left_in_the_directory_is_moved_aside_and_the_restore_is_right() {
    let dir = TestDir::new();
    let pg = Cluster::new(dir.path(), "pg");
    pg.execute("create table old as select g from generate_series(1, 100) g");
    let t = Tool::new(&dir);
    let tar = backup(&t, &pg, &dir, "over-1");
    pg.execute("create table newer as select g from generate_series(1, 100) g; checkpoint");
    let newer = relpath(&pg, "newer");
    pg.stop("fast");
    // The copy extracted over the crashed server's directory.
    crate::common::roundtrip::tar_extract(&tar, pg.datadir.parent().unwrap());
    assert!(pg.datadir.join(&newer).exists());
    let r = prep(&t, &pg, "over-1", &["--dry-run"]).ok();
    assert!(r.stdout.contains(&format!("stale: would move {}", newer)), "{}", r.stdout);
    assert!(pg.datadir.join(&newer).exists(), "a dry run moves nothing");
    // A planted link where the stale files go is refused, and nothing moves.
    let stale_root = format!("{}.pgbh-stale", pg.datadir.display());
    std::os::unix::fs::symlink(dir.path(), &stale_root).unwrap();
    let r = prep(&t, &pg, "over-1", &[]);
    assert_ne!(r.code, 0);
    assert!(r.stderr.contains("is not a directory"), "{}", r.stderr);
    assert!(pg.datadir.join(&newer).exists());
    fs::remove_file(&stale_root).unwrap();
    // Recovery to the backup's restore point: the table created after it is not replayed.
    let r = prep(&t, &pg, "over-1", &["--target", "restore-point"]).ok();
    assert!(r.stdout.contains(&format!("stale: moved {}", newer)), "{}", r.stdout);
    assert!(!pg.datadir.join(&newer).exists());
    assert!(Path::new(&stale_root).join("over-1").join(&newer).is_file());
    chown_to_server_user(&pg.datadir);
    start_and_wait_promoted(&pg);
    assert_eq!(pg.query_scalar("select count(*) from old"), "100");
    assert_eq!(pg.query_scalar("select count(*) from pg_class where relname = 'newer'"), "0");
    // restore-check shows what restore-prep proved of the files and what it moved aside.
    let report = t.restore_check_proves("over-1", &t.sidecar, &pg);
    let want = "files: the copy's files were verified against the inventory; ";
    assert!(
        report.contains(want) && report.contains(&format!("stale path(s) moved to {}/over-1", stale_root)),
        "{}",
        report
    );
}
