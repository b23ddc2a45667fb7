//! Several servers in one backup: explicit node lists, Citus discovery, the restore point.

use crate::common;
use crate::common::tool::Tool;
use crate::common::{fake_citus_catalog, Cluster, TestDir};

#[test]
fn citus_discovery_backs_up_the_coordinator_and_one_primary_per_group() {
    let dir = TestDir::new();
    let coord = Cluster::new(dir.path(), "coord");
    let w1 = Cluster::new(dir.path(), "w1");
    let w2 = Cluster::new(dir.path(), "w2");
    let t = Tool::new(&dir);
    fake_citus_catalog(
        &coord,
        &[
            (1, 0, coord.port, "primary", true),
            (2, 1, w1.port, "primary", true),
            (3, 2, w2.port, "primary", true),
            (4, 2, common::free_port(), "primary", false), // inactive: ignored
            (5, 2, w1.port, "secondary", true),
        ],
    );
    let pre = t.pre("disc", &[("coordinator", coord.conninfo())], &["--discover", "citus"]).ok();
    assert!(pre.stdout.contains("discovered node group-1"), "{}", pre.stdout);
    pre.start_lsn("coordinator");
    pre.start_lsn("group-1");
    pre.start_lsn("group-2");
    t.post("disc").ok();
    let m = t.manifest("disc");
    let names: Vec<&str> = m["nodes"].as_array().expect("nodes").iter().filter_map(|n| n["name"].as_str()).collect();
    assert_eq!(names, ["coordinator", "group-1", "group-2"]);
    let sysid = |pg: &Cluster| pg.query_scalar("select system_identifier from pg_control_system()");
    assert_eq!(m["nodes"][1]["system_identifier"].as_str(), Some(sysid(&w1).as_str()));
    assert_eq!(m["nodes"][2]["system_identifier"].as_str(), Some(sysid(&w2).as_str()));
    // Without the citus extension the restore point is one per node.
    assert_eq!(m["restore_point"]["scope"], "per-node");
    assert_eq!(m["restore_point"]["name"], "disc");
    for n in ["coordinator", "group-1", "group-2"] {
        assert!(m["restore_point"]["lsns"][n].is_string(), "{}", m["restore_point"]);
    }
    // Each node's restore point segment is archived when post returns.
    for (i, pg) in [&coord, &w1, &w2].iter().enumerate() {
        let lsn = m["restore_point"]["lsns"][names[i]].as_str().expect("lsn");
        let seg = pg.query_scalar(&format!("select pg_walfile_name('{}'::pg_lsn - 1)", lsn));
        assert!(pg.archived_files().contains(&seg), "{} not archived on {}", seg, names[i]);
    }
}

#[test]
fn citus_discovery_of_standbys_names_a_group_without_one() {
    let dir = TestDir::new();
    let coord = Cluster::new(dir.path(), "coord");
    let w1 = Cluster::new(dir.path(), "w1");
    let t = Tool::new(&dir);
    fake_citus_catalog(
        &coord,
        &[(1, 1, w1.port, "primary", true), (2, 2, w1.port, "primary", true), (3, 2, w1.port, "secondary", true)],
    );
    t.pre("disc2", &[("coordinator", coord.conninfo())], &["--discover", "citus", "--discover-role", "secondary"])
        .fails(1, "worker group(s) 1 have no active secondary node");
    // A server without the catalog is not a coordinator.
    t.pre("disc3", &[("coordinator", w1.conninfo())], &["--discover", "citus"]).fails(1, "pg_dist_node");
}

#[test]
fn a_stopped_node_fails_pre_and_the_others_are_left_without_a_backup() {
    let dir = TestDir::new();
    let a = Cluster::new(dir.path(), "a");
    let b = Cluster::new(dir.path(), "b");
    let c = Cluster::new(dir.path(), "c");
    let t = Tool::new(&dir);
    c.stop("fast");
    let r = t.pre("stopped", &[("coordinator", a.conninfo()), ("w1", b.conninfo()), ("w2", c.conninfo())], &[]);
    r.fails(1, "node w2");
    for pg in [&a, &b] {
        assert_eq!(pg.backup_sessions("stopped"), 0);
    }
}

#[test]
fn a_node_that_refuses_to_start_gets_the_started_ones_stopped_and_discarded() {
    let dir = TestDir::new();
    let a = Cluster::new(dir.path(), "a");
    let b = Cluster::new(dir.path(), "b");
    let t = Tool::new(&dir);
    // A role that may log in and read settings but not run the backup functions.
    b.execute("create role weak login; grant pg_read_all_settings to weak");
    let weak = format!("host=127.0.0.1 port={} user=weak dbname=postgres", b.port);
    let r = t
        .pre("refuse", &[("a", a.conninfo()), ("b", weak)], &[])
        .fails(1, "node b: the server refused to start the backup");
    assert!(r.stderr.contains("permission denied"), "the server's error is quoted: {}", r.stderr);
    assert!(r.stderr.contains("stopped and their backups discarded"), "{}", r.stderr);
    assert_eq!(a.backup_sessions("refuse"), 0);
    assert!(!t.run_dir.join("refuse.sock").exists());
}

/// Coordinator and two workers under write load, backed up in one backup, lost, restored
/// with restore-prep per node: each node replays to exactly the backup's restore point.
#[test]
fn three_nodes_restore_to_the_same_restore_point() {
    use common::roundtrip::{install_bin, restore_copy, start_and_wait_promoted, switch_and_wait, tar_each, Writers};

    let dir = TestDir::new();
    let nodes =
        [Cluster::new(dir.path(), "coordinator"), Cluster::new(dir.path(), "w1"), Cluster::new(dir.path(), "w2")];
    let names = ["coordinator", "group-1", "group-2"];
    let t = Tool::new(&dir);
    let exe = install_bin(&dir);
    for pg in &nodes {
        pg.execute("create table t(id bigserial primary key, at timestamptz default clock_timestamp())");
    }
    // One writer per node, counting what it saw committed.
    let writers = Writers::start(&nodes.iter().collect::<Vec<_>>());
    std::thread::sleep(std::time::Duration::from_millis(300));
    let specs: Vec<(&str, String)> = names.iter().zip(&nodes).map(|(n, pg)| (*n, pg.conninfo())).collect();
    t.pre("cluster-rt", &specs, &[]).ok();
    let tars = tar_each(dir.path(), &nodes.iter().collect::<Vec<_>>());
    let before_post = writers.counts();
    t.post("cluster-rt").ok();
    let after_post = writers.counts();
    std::thread::sleep(std::time::Duration::from_millis(300));
    writers.stop();
    let m = t.manifest("cluster-rt");
    assert_eq!(m["restore_point"]["name"], "cluster-rt");
    for pg in &nodes {
        switch_and_wait(pg);
    }
    let side = t.sidecar.display().to_string();
    for (i, pg) in nodes.iter().enumerate() {
        restore_copy(pg, &tars[i]);
        let out = std::process::Command::new(&exe)
            .args(["restore-prep", "--backup-id", "cluster-rt", "--sidecar-dir", &side, "--node", names[i]])
            .arg("--pgdata")
            .arg(&pg.datadir)
            .arg("--archive-dir")
            .arg(&pg.archive_dir)
            .args(["--archive-mode", "off"])
            .output()
            .expect("restore-prep");
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "restore-prep {}: {}{}", names[i], text, String::from_utf8_lossy(&out.stderr));
        assert!(text.contains("restore point \"cluster-rt\""), "multi-node default target: {}", text);
    }
    for (i, pg) in nodes.iter().enumerate() {
        start_and_wait_promoted(pg);
        assert!(pg.log().contains("recovery stopping at restore point \"cluster-rt\""), "{}", pg.log());
        let expected = m["restore_point"]["lsns"][names[i]].as_str().expect("restore point lsn");
        assert_eq!(
            pg.query_scalar("select pg_last_wal_replay_lsn()"),
            expected,
            "node {} replayed to the restore point",
            names[i]
        );
        let rows: u64 = pg.query_scalar("select count(*) from t").parse().expect("count");
        assert!(
            rows >= before_post[i] && rows <= after_post[i],
            "node {}: {} rows, committed {}..{}",
            names[i],
            rows,
            before_post[i],
            after_post[i]
        );
    }
    // One restore-check call proves every node stopped exactly at the restore point.
    let mut args =
        vec!["restore-check".to_string(), "--backup-id".into(), "cluster-rt".into(), "--sidecar-dir".into(), side];
    for (i, pg) in nodes.iter().enumerate() {
        args.extend(["--node".to_string(), format!("{}={}", names[i], pg.conninfo())]);
    }
    let r = t.run(&args.iter().map(String::as_str).collect::<Vec<_>>()).ok();
    for n in names {
        assert!(r.stdout.contains(&format!("node {}: PROVEN (restore point \"cluster-rt\")", n)), "{}", r.stdout);
    }
    assert!(r.stdout.contains("stopped exactly at restore point"), "{}", r.stdout);
}

#[test]
fn citus_discovery_of_standbys_backs_up_each_groups_standby() {
    let dir = TestDir::new();
    let coord = Cluster::new(dir.path(), "coord");
    let w1 = Cluster::new(dir.path(), "w1");
    let w1s = common::standby_of(&w1, dir.path(), "w1s");
    let t = Tool::new(&dir);
    fake_citus_catalog(&coord, &[(1, 1, w1.port, "primary", true), (2, 1, w1s.port, "secondary", true)]);
    t.pre("disc-sec", &[("coordinator", coord.conninfo())], &["--discover", "citus", "--discover-role", "secondary"])
        .ok();
    w1.execute("create table x as select 1");
    t.post("disc-sec").ok();
    assert_eq!(common::tool::label_field(&t.label("disc-sec", "group-1"), "BACKUP FROM"), "standby");
    assert_eq!(common::tool::label_field(&t.label("disc-sec", "coordinator"), "BACKUP FROM"), "primary");
    let m = t.manifest("disc-sec");
    assert_eq!(m["nodes"][1]["from_standby"], true);
}
