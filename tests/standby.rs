//! Backups taken from a streaming standby (issue 12), against the PostgreSQL in
//! `$PGBH_PG_BINDIR` (default Debian's 15; scripts/test-matrix.sh runs this file on every major):
//! the backup program copies global/pg_control first and the rest seconds later under pgbench
//! load, and the copy still restores with target backup-end and latest.

mod common;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::roundtrip::{install_bin, start_and_wait_promoted, switch_and_wait};
use common::standby::{
    amcheck, checksummed_primary, copy_control_first, major_of, pgbench_init, standby_by_copy, tpcb_sums,
    wait_caught_up, Load,
};
use common::tool::Tool;
use common::{Cluster, TestDir};
use pg_backup_hooks::pg::control;
use pg_backup_hooks::pg::wal::Lsn;

/// A standby backup whose copy took pg_control first, put in place of the standby's data
/// directory (standby stopped), not yet prepared.
struct CopiedFirst {
    dir: TestDir,
    t: Tool,
    exe: PathBuf,
    primary: Cluster,
    standby: Cluster,
    stop_lsn: Lsn,
    /// minRecoveryPoint in the copied pg_control.
    copied_min_recovery: Lsn,
    /// pgbench_history rows on the primary when post returned, and in all.
    history_at_post: i64,
    history_total: i64,
}

fn lsn(s: &str) -> Lsn {
    s.parse().unwrap_or_else(|e| panic!("{e}"))
}

/// Primary under pgbench load, backup from its standby (`--node s1=<standby>`), copy with
/// pg_control first; a restartpoint during the pause moves the standby's minRecoveryPoint on,
/// as minutes of load do in production.
fn standby_backup_copied_control_first(id: &str) -> CopiedFirst {
    let dir = TestDir::new();
    let exe = install_bin(&dir);
    let primary = checksummed_primary(dir.path(), "primary");
    pgbench_init(&primary, 2);
    let standby = standby_by_copy(&primary, dir.path(), "standby");
    let t = Tool::new(&dir);
    let load = Load::start(&primary, 2);
    std::thread::sleep(Duration::from_secs(1));
    t.pre(id, &[("s1", standby.conninfo())], &[]).ok();
    let copy_dir = dir.mkdir("copy");
    let copy = std::thread::scope(|s| {
        let copier = s.spawn(|| copy_control_first(&standby.datadir, &copy_dir, Duration::from_secs(5)));
        std::thread::sleep(Duration::from_secs(2));
        primary.execute("checkpoint");
        wait_caught_up(&primary, &standby);
        standby.execute("checkpoint");
        copier.join().expect("copier")
    });
    t.post(id).ok();
    let history_at_post = tpcb_sums(&primary).4;
    std::thread::sleep(Duration::from_secs(1));
    drop(load);
    let history_total = tpcb_sums(&primary).4;
    switch_and_wait(&primary);
    let m = t.manifest(id);
    let stop_lsn = lsn(m["nodes"][0]["stop_lsn"].as_str().expect("stop_lsn"));
    assert_eq!(m["nodes"][0]["from_standby"], true, "{m:#}");
    let copied_min_recovery = control::read(&copy).expect("copied pg_control").min_recovery_point;
    standby.stop("fast");
    fs::remove_dir_all(&standby.datadir).expect("removing the standby's data directory");
    fs::rename(&copy, &standby.datadir).expect("putting the copy in place");
    CopiedFirst { dir, t, exe, primary, standby, stop_lsn, copied_min_recovery, history_at_post, history_total }
}

fn restore_prep(c: &CopiedFirst, id: &str, target: &str) -> String {
    let out = Command::new(&c.exe)
        .args(["restore-prep", "--backup-id", id, "--sidecar-dir"])
        .arg(&c.t.sidecar)
        .arg("--pgdata")
        .arg(&c.standby.datadir)
        .arg("--archive-dir")
        .arg(&c.primary.archive_dir)
        .args(["--archive-mode", "off", "--target", target])
        .output()
        .expect("running restore-prep");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "restore-prep: {text}{}", String::from_utf8_lossy(&out.stderr));
    text
}

/// "consistent recovery state reached at X/Y" in the server log (10 to 18).
fn consistent_at(log: &str) -> Lsn {
    let at = log
        .lines()
        .find_map(|l| l.split("consistent recovery state reached at ").nth(1))
        .unwrap_or_else(|| panic!("the log says nothing about reaching consistency:\n{log}"));
    lsn(at.split_whitespace().next().unwrap_or(at))
}

fn copy_order_round_trip(target: &str) {
    let id = format!("sb-{target}");
    let c = standby_backup_copied_control_first(&id);
    let major = major_of(&c.standby.datadir);
    eprintln!(
        "PostgreSQL {major}: copied pg_control's minRecoveryPoint {}, backup stopped at {}",
        c.copied_min_recovery, c.stop_lsn
    );
    assert!(
        c.copied_min_recovery < c.stop_lsn,
        "the copy must hold a pg_control from before the stop for this test to mean anything"
    );
    let out = restore_prep(&c, &id, target);
    assert!(
        out.contains(&format!(
            "minimum recovery point raised from {} (as copied) to the backup's stop location {}",
            c.copied_min_recovery, c.stop_lsn
        )),
        "{out}"
    );
    let ctl = control::read(&c.standby.datadir).expect("restored pg_control");
    assert_eq!(ctl.min_recovery_point, c.stop_lsn, "pg_control's minRecoveryPoint after restore-prep");

    let log_before = c.standby.log().len();
    start_and_wait_promoted(&c.standby);
    let log = c.standby.log()[log_before..].to_string();
    let consistent = consistent_at(&log);
    assert!(consistent >= c.stop_lsn, "consistent at {consistent}, before the backup's end {}:\n{log}", c.stop_lsn);
    let (a, b, t, h, rows) = tpcb_sums(&c.standby);
    eprintln!(
        "restored: {rows} pgbench transactions; {} when post returned, {} in all",
        c.history_at_post, c.history_total
    );
    assert!(
        a == b && b == t && t == h,
        "TPC-B invariants broken: accounts {a}, branches {b}, tellers {t}, history {h}"
    );
    match target {
        "backup-end" => {
            assert!(log.contains("recovery stopping after reaching consistency"), "{log}");
            assert!(
                rows <= c.history_at_post,
                "{rows} transactions restored, {} when post returned",
                c.history_at_post
            );
        }
        "latest" => assert_eq!(rows, c.history_total, "target latest restores every archived transaction"),
        _ => unreachable!(),
    }
    eprintln!("{}", amcheck(&c.standby));
    let side = c.t.sidecar.display().to_string();
    let node = format!("s1={}", c.standby.conninfo());
    let r = c.t.run(&["restore-check", "--backup-id", &id, "--sidecar-dir", &side, "--node", &node]).ok();
    assert!(r.stdout.contains("node s1: PROVEN"), "{}", r.stdout);
    let _ = &c.dir;
}

#[test]
fn standby_copy_with_pg_control_first_restores_to_backup_end() {
    copy_order_round_trip("backup-end");
}

#[test]
fn standby_copy_with_pg_control_first_restores_to_latest() {
    copy_order_round_trip("latest");
}

/// The offsets control.rs reads minRecoveryPoint at are this major's: a running standby's
/// pg_control file against pg_control_recovery(), which reads the same file.
#[test]
fn min_recovery_point_is_read_where_this_major_keeps_it() {
    let dir = TestDir::new();
    let primary = Cluster::new(dir.path(), "primary");
    let standby = standby_by_copy(&primary, dir.path(), "standby");
    primary.execute("create table t as select g from generate_series(1, 50000) g; checkpoint");
    wait_caught_up(&primary, &standby);
    standby.execute("checkpoint");
    let sql = "select min_recovery_end_lsn || ' ' || min_recovery_end_timeline from pg_control_recovery()";
    let before = standby.query_scalar(sql);
    let ctl = control::read(Path::new(&standby.datadir)).expect("reading the standby's pg_control");
    let after = standby.query_scalar(sql);
    assert_eq!(before, after, "pg_control changed while reading it: run again");
    assert_eq!(format!("{} {}", ctl.min_recovery_point, ctl.min_recovery_point_tli), before);
    assert!(ctl.min_recovery_point.0 > 0);
}
