//! Several servers in one backup: explicit node lists, Citus discovery, the restore point.

mod common;

use common::tool::Tool;
use common::{Cluster, TestDir};

/// Stands in for Citus' catalog (Citus is not in the distribution's packages): a table
/// with pg_dist_node's name and the columns our discovery query reads, and the noderole type.
fn fake_citus_catalog(coord: &Cluster, rows: &[(i32, i32, u16, &str, bool)]) {
    coord.execute(
        "create type noderole as enum ('primary', 'secondary', 'unavailable');
         create table pg_dist_node (nodeid serial, groupid int, nodename text, nodeport int,
                                    noderole noderole default 'primary', isactive bool default true,
                                    nodecluster name default 'default', shouldhaveshards bool default true)",
    );
    for (nodeid, group, port, role, active) in rows {
        coord.execute(&format!(
            "insert into pg_dist_node(nodeid, groupid, nodename, nodeport, noderole, isactive) values ({}, {}, '127.0.0.1', {}, '{}', {})",
            nodeid, group, port, role, active
        ));
    }
}

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
    fake_citus_catalog(&coord, &[(1, 1, w1.port, "primary", true), (2, 2, w1.port, "primary", true), (3, 2, w1.port, "secondary", true)]);
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
        assert_eq!(
            pg.query_scalar("select count(*) from pg_stat_activity where application_name = 'pg-backup-hooks stopped'"),
            "0"
        );
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
    let r = t.pre("refuse", &[("a", a.conninfo()), ("b", weak)], &[]).fails(1, "node b: the server refused to start the backup");
    assert!(r.stderr.contains("permission denied"), "the server's error is quoted: {}", r.stderr);
    assert!(r.stderr.contains("stopped and their backups discarded"), "{}", r.stderr);
    assert_eq!(a.query_scalar("select count(*) from pg_stat_activity where application_name = 'pg-backup-hooks refuse'"), "0");
    assert!(!t.run_dir.join("refuse.sock").exists());
}
