//! Tests of the integration-test harness itself (tests/common).

use std::collections::BTreeSet;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::time::Duration;

use crate::common;
use crate::common::{Cluster, ClusterOpts, TestDir};

#[test]
fn cluster_starts_and_answers_queries() {
    let dir = TestDir::new();
    let pg = Cluster::new(dir.path(), "main");
    assert!(pg.is_running(), "pg_ctl status says {} is not running", pg.name);
    assert_eq!(pg.query_scalar("select 1"), "1");
    // Both TCP and the Unix socket in socket_dir work.
    let mut sock = postgres::Client::connect(&pg.socket_conninfo(), postgres::NoTls)
        .unwrap_or_else(|e| panic!("connecting via {}: {}", pg.socket_conninfo(), common::pg_error_text(&e)));
    let row = sock.query_one("select 2::int4", &[]).expect("select 2 over Unix socket");
    assert_eq!(row.get::<_, i32>(0), 2);
    assert_eq!(pg.query_opt("select null::text"), None);
    assert_eq!(pg.query_scalar("select current_setting('wal_level')"), "replica");
}

#[test]
fn archive_mode_follows_opts() {
    let dir = TestDir::new();
    let archiving = Cluster::new(dir.path(), "arch");
    assert_eq!(archiving.query_scalar("select current_setting('archive_mode')"), "on");
    let plain = Cluster::with_opts(dir.path(), "noarch", ClusterOpts { archive: false, ..ClusterOpts::default() });
    assert_eq!(plain.query_scalar("select current_setting('archive_mode')"), "off");
}

#[test]
fn switched_wal_segment_is_archived() {
    let dir = TestDir::new();
    let pg = Cluster::new(dir.path(), "main");
    pg.execute("create table t (id int primary key, v text); insert into t select g, md5(g::text) from generate_series(1, 1000) g;");
    let segment = pg.query_scalar("select pg_walfile_name(pg_switch_wal())");
    assert_eq!(segment.len(), 24, "unexpected WAL file name {segment:?}");
    common::wait_until(Duration::from_secs(30), &format!("{segment} in {}", pg.archive_dir.display()), || {
        pg.archived_files().contains(&segment)
    });
    let segment_size: u64 = pg
        // On 10 pg_settings gives it in 8kB pages; pg_size_bytes of the text form works on 10+.
        .query_scalar("select pg_size_bytes(current_setting('wal_segment_size'))")
        .parse()
        .expect("wal_segment_size is a number");
    // cp may still be writing when the name appears; wait for the full size.
    let path = pg.archive_dir.join(&segment);
    common::wait_until(Duration::from_secs(10), &format!("{} to be {segment_size} bytes", path.display()), || {
        std::fs::metadata(&path).is_ok_and(|m| m.len() == segment_size)
    });
}

#[test]
fn clusters_get_distinct_ports_and_system_identifiers() {
    let dir = TestDir::new();
    let a = Cluster::new(dir.path(), "pg");
    let b = Cluster::new(dir.path(), "pg");
    assert_ne!(a.root, b.root, "same name must still give distinct cluster roots");
    assert_ne!(a.port, b.port);
    let sysid = "select system_identifier::text from pg_control_system()";
    let (id_a, id_b) = (a.query_scalar(sysid), b.query_scalar(sysid));
    assert!(!id_a.is_empty() && id_a.chars().all(|c| c.is_ascii_digit()), "bad system id {id_a:?}");
    assert_ne!(id_a, id_b);
    // Each client really talks to its own server.
    assert_eq!(a.query_scalar("select current_setting('port')"), a.port.to_string());
    assert_eq!(b.query_scalar("select current_setting('port')"), b.port.to_string());
}

#[test]
fn datadir_is_owned_by_server_user_and_private() {
    let dir = TestDir::new();
    let pg = Cluster::new(dir.path(), "main");
    let meta = std::fs::metadata(&pg.datadir).expect("stat datadir");
    let expected_uid = match common::server_user() {
        Some(name) => {
            let user =
                nix::unistd::User::from_name(&name).expect("looking up server user").expect("server user exists");
            assert_ne!(user.uid.as_raw(), 0, "server user {name} must not be root");
            user.uid
        }
        None => nix::unistd::Uid::effective(),
    };
    assert_eq!(meta.uid(), expected_uid.as_raw(), "owner of {}", pg.datadir.display());
    assert_eq!(meta.permissions().mode() & 0o077, 0, "datadir must not be group/other accessible");
    let archive_meta = std::fs::metadata(&pg.archive_dir).expect("stat archive dir");
    assert_eq!(archive_meta.uid(), expected_uid.as_raw(), "owner of {}", pg.archive_dir.display());
}

#[test]
fn stop_start_and_restart_keep_data() {
    let dir = TestDir::new();
    let pg = Cluster::new(dir.path(), "main");
    pg.execute("create table kept (x int); insert into kept values (42);");
    pg.stop("fast");
    assert!(!pg.is_running(), "server still running after stop");
    pg.stop("fast"); // stopping a stopped server is not an error
    pg.start().unwrap_or_else(|e| panic!("{e}"));
    assert!(pg.is_running());
    pg.restart("immediate");
    assert_eq!(pg.query_scalar("select x from kept"), "42");
    assert!(pg.log().contains("database system is ready to accept connections"));
}

#[test]
fn free_port_never_repeats() {
    let ports: Vec<u16> = (0..200).map(|_| common::free_port()).collect();
    let distinct: BTreeSet<u16> = ports.iter().copied().collect();
    assert_eq!(distinct.len(), ports.len(), "free_port handed out a port twice");
}

#[test]
#[should_panic(expected = "waiting for the impossible")]
fn wait_until_panics_on_timeout() {
    common::wait_until(Duration::from_millis(200), "the impossible", || false);
}

#[test]
fn dropping_cluster_stops_server() {
    let dir = TestDir::new();
    let pg = Cluster::new(dir.path(), "main");
    let pidfile = pg.datadir.join("postmaster.pid");
    assert!(pidfile.exists(), "{} missing while running", pidfile.display());
    let conninfo = pg.conninfo();
    drop(pg);
    assert!(!pidfile.exists(), "{} still exists after drop", pidfile.display());
    assert!(
        postgres::Client::connect(&conninfo, postgres::NoTls).is_err(),
        "server still accepts connections after drop"
    );
}

#[test]
#[should_panic(expected = "unrecognized configuration parameter")]
fn start_failure_reports_server_log() {
    let dir = TestDir::new();
    let opts = ClusterOpts { extra_conf: vec!["no_such_setting = 1".to_string()], ..ClusterOpts::default() };
    let _pg = Cluster::with_opts(dir.path(), "bad", opts);
}
