//! Backups taken from a streaming standby (issue 12), against the PostgreSQL in
//! `$PGBH_PG_BINDIR` (default Debian's 15; scripts/test-matrix.sh runs this file on every major):
//! the backup program copies global/pg_control first and the rest seconds later under pgbench
//! load, and the copy still restores with target backup-end and latest.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::common;
use crate::common::roundtrip::{install_bin, start_and_wait_promoted, switch_and_wait};
use crate::common::standby::{
    amcheck, checksummed_primary, copy_control_first, major_of, pgbench_init, standby_by_copy, tpcb_sums,
    wait_caught_up, Load,
};
use crate::common::tool::Tool;
use crate::common::{Cluster, TestDir};
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
    let mut primary = checksummed_primary(dir.path(), "primary");
    pgbench_init(&primary, 2);
    let standby = standby_by_copy(&mut primary, dir.path(), "standby");
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
    let mut primary = Cluster::new(dir.path(), "primary");
    let standby = standby_by_copy(&mut primary, dir.path(), "standby");
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

/// Issue 12 item 4: a two-node backup without Citus, a primary p1 and a standby s2 of another
/// primary p2, with `--node-primary s2=<p2>`: post writes the restore point on p1 and on p2 (for
/// s2), waits for both archives, and both nodes restore to exactly that point.
#[test]
fn a_standby_node_with_its_primary_restores_to_the_backups_restore_point() {
    use common::roundtrip::{restore_copy, tar_each, Writers};

    let dir = TestDir::new();
    let exe = install_bin(&dir);
    let p1 = Cluster::new(dir.path(), "p1");
    let mut p2 = Cluster::new(dir.path(), "p2");
    let s2 = standby_by_copy(&mut p2, dir.path(), "s2");
    let t = Tool::new(&dir);
    for pg in [&p1, &p2] {
        pg.execute("create table t (id bigserial primary key)");
    }
    let writers = Writers::start(&[&p1, &p2]);
    wait_caught_up(&p2, &s2);
    let nodes = [("p1", p1.conninfo()), ("s2", s2.conninfo())];
    // The primary given must be this standby's own.
    t.pre("mixed-wrong", &nodes, &["--node-primary", &format!("s2={}", p1.conninfo())])
        .fails(1, "give this standby's own primary");
    t.pre("mixed", &nodes, &["--node-primary", &format!("s2={}", p2.conninfo())]).ok();
    let tars = tar_each(dir.path(), &[&p1, &s2]);
    let before_post = writers.counts();
    t.post("mixed").ok();
    let after_post = writers.counts();
    std::thread::sleep(Duration::from_millis(300));
    writers.stop();
    let m = t.manifest("mixed");
    assert_eq!(m["restore_point"]["name"], "mixed", "{m:#}");
    assert!(m["restore_point"]["lsns"]["s2"].is_string(), "the standby has a restore point: {m:#}");
    assert!(m["restore_point"]["lsns"]["p1"].is_string(), "{m:#}");
    // When post returned, p2's archive held the segment with the restore point.
    let at = m["restore_point"]["lsns"]["s2"].as_str().unwrap();
    // pg_lsn - numeric only exists from 14: subtract the byte here.
    let before = Lsn(lsn(at).0 - 1);
    let seg = p2.query_scalar(&format!("select pg_walfile_name('{before}')"));
    assert!(p2.archived_files().contains(&seg), "{seg} not in p2's archive when post returned");
    switch_and_wait(&p1);
    switch_and_wait(&p2);

    let side = t.sidecar.display().to_string();
    for (i, (pg, archive)) in [(&p1, &p1.archive_dir), (&s2, &p2.archive_dir)].iter().enumerate() {
        restore_copy(pg, &tars[i]);
        let out = Command::new(&exe)
            .args(["restore-prep", "--backup-id", "mixed", "--sidecar-dir", &side, "--node", nodes[i].0])
            .arg("--pgdata")
            .arg(&pg.datadir)
            .arg("--archive-dir")
            .arg(archive)
            .args(["--archive-mode", "off"])
            .output()
            .expect("restore-prep");
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "restore-prep {}: {text}{}", nodes[i].0, String::from_utf8_lossy(&out.stderr));
        assert!(text.contains("restore point \"mixed\""), "{text}");
    }
    for (i, pg) in [&p1, &s2].iter().enumerate() {
        start_and_wait_promoted(pg);
        let rows: u64 = pg.query_scalar("select count(*) from t").parse().unwrap();
        assert!(
            rows >= before_post[i] && rows <= after_post[i],
            "node {}: {rows} rows, committed {}..{}",
            nodes[i].0,
            before_post[i],
            after_post[i]
        );
    }
    let (n1, n2) = (format!("p1={}", p1.conninfo()), format!("s2={}", s2.conninfo()));
    let r =
        t.run(&["restore-check", "--backup-id", "mixed", "--sidecar-dir", &side, "--node", &n1, "--node", &n2]).ok();
    for n in ["p1", "s2"] {
        assert!(r.stdout.contains(&format!("node {n}: PROVEN (restore point \"mixed\")")), "{}", r.stdout);
    }
}

#[test]
fn node_primary_must_name_a_node_of_the_backup_and_a_standby() {
    let dir = TestDir::new();
    let pg = Cluster::new(dir.path(), "pg");
    let t = Tool::new(&dir);
    let nodes = [("a", pg.conninfo())];
    t.pre("np1", &nodes, &["--node-primary", &format!("b={}", pg.conninfo())]).fails(2, "no --node b");
    // A primary node needs no primary: refused before any backup starts.
    t.pre("np2", &nodes, &["--node-primary", &format!("a={}", pg.conninfo())])
        .fails(1, "--node-primary is only for a standby node");
    assert_eq!(pg.backup_sessions("np2"), 0);
}
