//! restore-check against real restores (issue 12), on the PostgreSQL in `$PGBH_PG_BINDIR`
//! (scripts/test-matrix.sh runs this file on every major): one backup restored again and again
//! with each kind of target, each proven; a target that is not in the WAL is caught (12 and older
//! promote silently, 13+ stop with FATAL); the production server is never taken for a restore.

use std::path::PathBuf;
use std::process::Command;

use crate::common::roundtrip::{install_bin, restore_copy, switch_and_wait, tar_create};
use crate::common::tool::{Ran, Tool};
use crate::common::{Cluster, TestDir};

struct Backup {
    dir: TestDir,
    t: Tool,
    exe: PathBuf,
    pg: Cluster,
    tar: PathBuf,
    major: u32,
    /// A transaction committed after post, a time and an LSN between later commits.
    xid: String,
    time: String,
    lsn: String,
}

/// A one-node backup (pre, tar copy, post) followed by commits that the targets pick from,
/// all archived.
fn backup() -> Backup {
    let dir = TestDir::new();
    let exe = install_bin(&dir);
    let pg = Cluster::new(dir.path(), "pg");
    let major: u32 = pg.query_scalar("select current_setting('server_version_num')::int / 10000").parse().unwrap();
    let t = Tool::new(&dir);
    pg.execute("create table t (id int primary key); insert into t select generate_series(1, 100)");
    t.pre("rc", &[("default", pg.conninfo())], &[]).ok();
    let tar = dir.path().join("rc.tar");
    tar_create(&pg.datadir, &tar);
    pg.execute("insert into t values (101)");
    t.post("rc").ok();
    let xid = pg.query_scalar("insert into t values (102) returning txid_current()");
    pg.execute("insert into t values (103)");
    std::thread::sleep(std::time::Duration::from_millis(1100));
    let time = pg.query_scalar("select clock_timestamp()::text");
    std::thread::sleep(std::time::Duration::from_millis(1100));
    pg.execute("insert into t values (104)");
    let lsn = pg.query_scalar("select pg_current_wal_insert_lsn()::text");
    pg.execute("insert into t values (105)");
    switch_and_wait(&pg);
    Backup { dir, t, exe, pg, tar, major, xid, time, lsn }
}

impl Backup {
    /// Put the copy back, prepare it for `target` and start it (pg_ctl's verdict ignored).
    fn restore(&self, target: &str) {
        self.restore_with(target, "promote");
    }

    fn restore_with(&self, target: &str, action: &str) {
        restore_copy(&self.pg, &self.tar);
        let out = Command::new(&self.exe)
            .args(["restore-prep", "--backup-id", "rc", "--sidecar-dir"])
            .arg(&self.t.sidecar)
            .arg("--pgdata")
            .arg(&self.pg.datadir)
            .arg("--archive-dir")
            .arg(&self.pg.archive_dir)
            .args(["--archive-mode", "off", "--target", target, "--target-action", action])
            .output()
            .expect("restore-prep");
        assert!(out.status.success(), "restore-prep --target {target}: {}", String::from_utf8_lossy(&out.stderr));
        let _ = self.pg.start();
    }

    fn check(&self, extra: &[&str]) -> Ran {
        let side = self.t.sidecar.display().to_string();
        let node = format!("default={}", self.pg.conninfo());
        let mut args = vec!["restore-check", "--backup-id", "rc", "--sidecar-dir", &side, "--node", &node];
        args.extend_from_slice(extra);
        let r = self.t.run(&args);
        eprintln!("$ restore-check {extra:?} on {}\n{}{}[{}]", self.major, r.stdout, r.stderr, r.code);
        r
    }

    fn rows(&self) -> String {
        self.pg.query_scalar("select count(*) || ' ' || max(id) from t")
    }
}

fn proven(r: Ran, what: &str) -> Ran {
    let r = r.ok();
    assert!(r.stdout.contains("node default: PROVEN"), "{what}: {}", r.stdout);
    r
}

#[test]
fn every_kind_of_target_is_proven() {
    let b = backup();
    b.restore("backup-end");
    let r = proven(b.check(&["--timeout", "120"]), "backup-end");
    assert!(r.stdout.contains("reached consistency") && r.stdout.contains("backup's end"), "{}", r.stdout);

    b.restore("latest");
    let r = b.check(&["--timeout", "120", "--json"]).ok();
    let v: serde_json::Value = serde_json::from_str(&r.stdout).expect("--json");
    assert_eq!(v["proven"], true, "{v:#}");
    assert_eq!(v["nodes"][0]["observed"]["reason"], "no recovery target specified", "{v:#}");
    assert!(v["nodes"][0]["observed"]["timeline"].as_u64() > Some(1), "{v:#}");
    assert_eq!(b.rows(), "105 105");

    b.restore(&format!("xid:{}", b.xid));
    proven(b.check(&["--timeout", "120"]), "xid");
    assert_eq!(b.rows(), "102 102", "inclusive xid target");

    b.restore(&format!("time:{}", b.time));
    proven(b.check(&["--timeout", "120"]), "time");
    assert_eq!(b.rows(), "103 103");

    b.restore(&format!("lsn:{}", b.lsn));
    proven(b.check(&["--timeout", "120"]), "lsn");
    assert_eq!(b.rows(), "104 104");
    // Paused at the target (--target-action pause): proven from the replay location.
    b.restore_with(&format!("lsn:{}", b.lsn), "pause");
    let r = proven(b.check(&["--timeout", "120"]), "lsn, paused");
    assert!(r.stdout.contains("paused at the target"), "{}", r.stdout);
    assert_eq!(b.pg.query_scalar("select pg_is_in_recovery()"), "t");
    // What restore-check is told must match what the server was configured with.
    b.check(&["--timeout", "5", "--target", "latest"]).fails(5, "not proven");
    let _ = &b.dir;
}

/// A restore point that is not in the WAL: 12 and older replay to the end and promote without
/// a word, 13+ stop with FATAL. Either way restore-check must not say it is proven.
#[test]
fn a_target_that_is_never_reached_is_caught() {
    let b = backup();
    b.restore("name:never-created");
    let r = b.check(&["--timeout", "20"]).fails(5, "not proven");
    if b.major <= 12 {
        assert!(r.stdout.contains("never reached") && r.stdout.contains("promote silently"), "{}", r.stdout);
        assert_eq!(b.rows(), "105 105", "12 and older replayed everything and promoted");
    } else {
        assert!(r.stdout.contains("recovery had not ended after 20 s"), "{}", r.stdout);
        assert!(r.stderr.contains("restore-check: node default:"), "progress on stderr: {}", r.stderr);
        assert!(b.pg.log().contains("recovery ended before configured recovery target was reached"), "{}", b.pg.log());
    }
}

/// Pointed at the production server (the backup's own timeline, never promoted) it refuses.
#[test]
fn the_production_server_is_not_a_proven_restore() {
    let dir = TestDir::new();
    let pg = Cluster::new(dir.path(), "pg");
    let t = Tool::new(&dir);
    t.pre("prod", &[("default", pg.conninfo())], &[]).ok();
    t.post("prod").ok();
    let side = t.sidecar.display().to_string();
    let node = format!("default={}", pg.conninfo());
    let r =
        t.run(&["restore-check", "--backup-id", "prod", "--sidecar-dir", &side, "--node", &node, "--target", "latest"]);
    let r = r.fails(5, "not proven");
    assert!(r.stdout.contains("never promoted"), "{}", r.stdout);
    // A node the backup does not have is a usage error.
    let other = format!("nope={}", pg.conninfo());
    t.run(&["restore-check", "--backup-id", "prod", "--sidecar-dir", &side, "--node", &other]).fails(2, "no node");
}
