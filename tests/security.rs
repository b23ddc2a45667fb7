//! Safety as root and against hostile input (issue 11): sidecar directory checks, no password
//! in messages, numbers and paths checked before anything starts, schema-qualified
//! discovery, wal-restore's name and link checks, the helper socket's peer credentials.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;

use crate::common;
use crate::common::tool::Tool;
use crate::common::{fake_citus_catalog, Cluster, TestDir};

/// Sessions any pg-backup-hooks helper holds on this server.
fn tool_sessions(pg: &Cluster) -> i64 {
    pg.query_scalar("select count(*) from pg_stat_activity where application_name like 'pg-backup-hooks%'")
        .parse()
        .expect("count(*) is a number")
}

fn pre_args<'a>(id: &'a str, sidecar: &'a str, run: &'a str) -> Vec<&'a str> {
    vec!["pre", "--backup-id", id, "--sidecar-dir", sidecar, "--run-dir", run, "--fast"]
}

// ---- 2. pre's probe and post's staging in the sidecar directory ----

fn chmod(p: &Path, mode: u32) {
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)).expect("chmod");
}

#[test]
fn a_sidecar_directory_others_can_write_is_refused_by_pre_and_post() {
    let dir = TestDir::new();
    let pg = Cluster::new(dir.path(), "sidewide");
    let t = Tool::new(&dir);
    chmod(&t.sidecar, 0o777);
    let r = t.pre("wide", &[("default", pg.conninfo())], &[]).fails(1, "writable by group or others");
    assert!(r.stderr.contains(&t.sidecar.display().to_string()) && r.stderr.contains("chmod go-w"), "{}", r.stderr);
    assert_eq!(tool_sessions(&pg), 0, "no backup was started");
    // Opened up between pre and post: post refuses, the helper keeps the labels, and a post
    // after the fix stores them.
    chmod(&t.sidecar, 0o700);
    t.pre("wide2", &[("default", pg.conninfo())], &[]).ok();
    chmod(&t.sidecar, 0o770);
    t.post("wide2").fails(1, "writable by group or others");
    assert!(!t.backup_dir("wide2").exists());
    assert_eq!(pg.backup_sessions("wide2"), 1, "the helper still holds the backup");
    chmod(&t.sidecar, 0o750);
    t.post("wide2").ok();
    assert!(t.backup_dir("wide2").join("manifest.json").exists());
}

#[test]
fn a_sidecar_directory_owned_by_another_user_is_refused() {
    let Some((uid, _)) = common::server_user_ids() else {
        crate::common::skip("needs root (to give the directory to another user)");
        return;
    };
    let dir = TestDir::new();
    let pg = Cluster::new(dir.path(), "sideother");
    let t = Tool::new(&dir);
    nix::unistd::chown(t.sidecar.as_path(), Some(uid), None).expect("chown");
    let r = t.pre("other", &[("default", pg.conninfo())], &[]).fails(1, &format!("owned by uid {}", uid));
    assert!(r.stderr.contains("chown"), "says what to do: {}", r.stderr);
    assert_eq!(tool_sessions(&pg), 0);
}

/// pids the next processes will get, read from the kernel (to plant links at names that
/// embed a pid).
fn next_pids(n: u32) -> std::ops::Range<u32> {
    let last: u32 =
        std::fs::read_to_string("/proc/sys/kernel/ns_last_pid").expect("ns_last_pid").trim().parse().expect("a pid");
    last + 1..last + 1 + n
}

#[test]
fn links_planted_in_the_sidecar_directory_are_not_written_through() {
    let dir = TestDir::new();
    let pg = Cluster::new(dir.path(), "sidelink");
    let t = Tool::new(&dir);
    let victim = dir.path().join("victim");
    std::fs::write(&victim, "precious").expect("write victim");
    // Links at every name the probe and the staging used to derive from a pid.
    for pid in next_pids(400) {
        for name in [
            format!("..pg-backup-hooks-probe.{pid}.tmp.{pid}"),
            format!(".pg-backup-hooks-probe.{pid}"),
            format!(".planted.tmp.{pid}"),
            format!(".planted.old.{pid}"),
        ] {
            std::os::unix::fs::symlink(&victim, t.sidecar.join(name)).expect("symlink");
        }
    }
    t.pre("planted", &[("default", pg.conninfo())], &[]).ok();
    t.post("planted").ok();
    assert_eq!(std::fs::read_to_string(&victim).expect("victim"), "precious", "nothing wrote through a link");
    let label = t.backup_dir("planted").join("default").join("backup_label");
    assert_eq!(mode_of(&label), 0o600);
    assert_eq!(std::fs::symlink_metadata(&label).expect("stat").uid(), nix::unistd::geteuid().as_raw());
    let links = std::fs::read_dir(&t.sidecar).expect("ls").flatten().filter(|e| e.path().is_symlink()).count();
    assert_eq!(links, 1600, "every planted link is left as it was (none followed, none removed)");
}

// ---- 4. target_session_attrs applied as libpq applies it ----

#[test]
fn target_session_attrs_picks_the_server_libpq_would_pick() {
    let dir = TestDir::new();
    let primary = Cluster::new(dir.path(), "tsa-p");
    let standby = common::standby_of(&primary, dir.path(), "tsa-s");
    let t = Tool::new(&dir);
    let both = |attrs: &str| {
        format!(
            "host=127.0.0.1,127.0.0.1 port={},{} user=postgres dbname=postgres target_session_attrs={}",
            primary.port, standby.port, attrs
        )
    };
    t.pre("tsa-standby", &[("default", both("standby"))], &[]).ok();
    assert_eq!(standby.backup_sessions("tsa-standby"), 1, "the standby, second in the list, holds the backup");
    assert_eq!(primary.backup_sessions("tsa-standby"), 0);
    t.abort("tsa-standby").ok();
    t.pre("tsa-prefer", &[("default", both("prefer-standby"))], &[]).ok();
    assert_eq!(standby.backup_sessions("tsa-prefer"), 1);
    t.abort("tsa-prefer").ok();
    // Only a primary in the list: standby finds none and says so; prefer-standby takes it.
    let only = |attrs: &str| format!("{} target_session_attrs={}", primary.conninfo(), attrs);
    t.pre("tsa-none", &[("default", only("standby"))], &[]).fails(1, "target_session_attrs=standby");
    t.pre("tsa-ro", &[("default", only("read-only"))], &[]).fails(1, "node default");
    assert_eq!(primary.backup_sessions("tsa-none") + primary.backup_sessions("tsa-ro"), 0);
    t.pre("tsa-prim", &[("default", only("prefer-standby"))], &[]).ok();
    assert_eq!(primary.backup_sessions("tsa-prim"), 1);
    t.abort("tsa-prim").ok();
    t.pre("tsa-bad", &[("default", only("leader"))], &[]).fails(2, "target_session_attrs");
}

// ---- 5. No password in any message ----

#[test]
fn usage_errors_about_node_values_never_show_the_password() {
    let dir = TestDir::new();
    let t = Tool::new(&dir);
    let (sidecar, run) = (t.sidecar.display().to_string(), t.run_dir.display().to_string());
    for node in [
        "postgresql://bob:SECRETPW@db.example/sales",
        "postgresql://bob:SECRETPW@db.example/sales?sslmode=require",
        "password=SECRETPW host=db.example",
        "password='SECRETPW with blanks' host=db.example",
        "main=password=SECRETPW host=db.example nosuchkey=1",
        "bad name=host=db.example password=SECRETPW",
    ] {
        let mut args = pre_args("redact", &sidecar, &run);
        args.extend(["--node", node]);
        let r = t.run(&args);
        assert_eq!(r.code, 2, "a usage error for --node {:?}: {}", node, r.stderr);
        assert!(!r.stderr.contains("SECRETPW"), "the password shows for --node {:?}: {}", node, r.stderr);
        assert!(!r.stdout.contains("SECRETPW"), "{}", r.stdout);
        assert!(r.stderr.contains("--node"), "the error names the flag: {}", r.stderr);
    }
}

// ---- 6. Numbers and paths checked before anything starts ----

#[test]
fn huge_durations_are_usage_errors_and_leave_nothing_held() {
    let dir = TestDir::new();
    let pg = Cluster::new(dir.path(), "huge");
    let t = Tool::new(&dir);
    let huge = "18446744073709551615";
    for flag in ["--start-timeout", "--max-duration"] {
        let r = t.pre("huge", &[("default", pg.conninfo())], &[flag, huge]);
        assert_eq!(r.code, 2, "{} {} is a usage error\nstdout: {}\nstderr: {}", flag, huge, r.stdout, r.stderr);
        assert!(r.stderr.contains(flag), "the error names {}: {}", flag, r.stderr);
        assert!(!r.stderr.contains("panicked"), "{}", r.stderr);
    }
    assert!(t.run_dir_files().is_empty(), "nothing in the run directory: {:?}", t.run_dir_files());
    assert_eq!(tool_sessions(&pg), 0, "no session holds a backup");
    // post's archive timeout too, with a backup in progress: the backup is not touched.
    t.pre("huge2", &[("default", pg.conninfo())], &[]).ok();
    t.with_run("post", "huge2", &["--archive-timeout", huge]).fails(2, "--archive-timeout");
    assert_eq!(pg.backup_sessions("huge2"), 1, "the backup is still held, post can run again");
    t.post("huge2").ok();
}

#[test]
fn a_socket_path_too_long_is_refused_before_the_lock_file_is_created() {
    let dir = TestDir::new();
    let pg = Cluster::new(dir.path(), "longsock");
    let t = Tool::new(&dir);
    let run = dir.path().join("r".repeat(100));
    std::fs::create_dir(&run).expect("mkdir");
    std::fs::set_permissions(&run, std::fs::Permissions::from_mode(0o700)).expect("chmod");
    let (sidecar, runs) = (t.sidecar.display().to_string(), run.display().to_string());
    let mut args = pre_args("longsock", &sidecar, &runs);
    let node = format!("default={}", pg.conninfo());
    args.extend(["--node", &node]);
    let r = t.run(&args);
    r.fails(2, "socket path");
    let left: Vec<String> = std::fs::read_dir(&run)
        .expect("read run dir")
        .flatten()
        .map(|e| e.file_name().into_string().unwrap_or_default())
        .collect();
    assert!(left.is_empty(), "no lock, log or marker was created: {:?}", left);
    assert_eq!(tool_sessions(&pg), 0);
}

// ---- 8. Discovery reads pg_catalog.pg_dist_node ----

#[test]
fn a_pg_dist_node_earlier_in_the_search_path_cannot_redirect_discovery() {
    let dir = TestDir::new();
    let coord = Cluster::new(dir.path(), "coord");
    let w1 = Cluster::new(dir.path(), "w1");
    let elsewhere = common::free_port();
    let t = Tool::new(&dir);
    fake_citus_catalog(&coord, &[(1, 0, coord.port, "primary", true), (2, 1, w1.port, "primary", true)]);
    // A database owner's table and type of the same names, in a schema searched before
    // pg_catalog, pointing group 1 somewhere else.
    coord.execute(&format!(
        "create schema shadow;
         create type shadow.noderole as enum ('primary', 'secondary');
         create table shadow.pg_dist_node (nodeid int, groupid int, nodename text, nodeport int,
                                           noderole shadow.noderole, isactive bool);
         insert into shadow.pg_dist_node values (2, 1, '127.0.0.1', {}, 'primary', true);
         alter database postgres set search_path = shadow, pg_catalog, public",
        elsewhere
    ));
    let pre = t.pre("shadowed", &[("coordinator", coord.conninfo())], &["--discover", "citus"]).ok();
    let line = pre.stdout.lines().find(|l| l.starts_with("discovered node group-1")).expect("group-1 discovered");
    assert!(line.contains(&format!("port={}", w1.port)), "the catalog's worker, not the shadow's: {}", line);
    assert!(!line.contains(&format!("port={}", elsewhere)), "{}", line);
    t.post("shadowed").ok();
}

fn mode_of(p: &Path) -> u32 {
    std::fs::metadata(p).expect("stat").mode() & 0o7777
}

#[test]
fn a_backup_function_shadowed_in_the_search_path_is_not_called() {
    let dir = TestDir::new();
    let pg = Cluster::new(dir.path(), "shadowfn");
    let t = Tool::new(&dir);
    // A look-alike that starts nothing and returns a made-up LSN, in a schema the database's
    // search_path puts before pg_catalog.
    pg.execute(
        "create schema shadow;
         create function shadow.pg_backup_start(text, boolean) returns pg_lsn
           language sql as $$ select '0/1'::pg_lsn $$;
         alter database postgres set search_path = shadow, pg_catalog, public",
    );
    let pre = t.pre("shadowfn", &[("default", pg.conninfo())], &[]).ok();
    assert_ne!(pre.start_lsn("default"), "0/1", "the real pg_backup_start ran");
    assert_eq!(pg.backup_sessions("shadowfn"), 1);
    t.post("shadowfn").ok();
    assert_eq!(common::tool::label_field(&t.label("shadowfn", "default"), "LABEL"), "shadowfn");
}

// ---- 9. wal-restore serves only WAL names, never through a link, into a 0600 file ----

#[test]
fn wal_restore_serves_only_wal_names_never_through_a_link_and_writes_0600() {
    let dir = TestDir::new();
    let pg = Cluster::new(dir.path(), "walr");
    let t = Tool::new(&dir);
    pg.execute("create table t as select generate_series(1, 1000) i");
    let seg = pg.query_scalar("select pg_walfile_name(pg_current_wal_lsn())");
    pg.execute("select pg_switch_wal()");
    common::wait_until(std::time::Duration::from_secs(30), "the segment to be archived", || {
        std::fs::metadata(pg.archive_dir.join(&seg)).is_ok_and(|m| m.len() == 16 << 20)
    });
    let pg_wal = dir.mkdir("restored/pg_wal");
    let dest = pg_wal.join("RECOVERYXLOG");
    let archive = pg.archive_dir.display().to_string();
    let restore = |archive: &str, name: &str| -> common::tool::Ran {
        t.run(&["wal-restore", "--archive-dir", archive, name, &dest.display().to_string()])
    };
    restore(&archive, &seg).ok();
    let original = std::fs::read(pg.archive_dir.join(&seg)).expect("archived segment");
    assert!(std::fs::read(&dest).expect("restored") == original, "the restored segment is the archived one");
    assert_eq!(mode_of(&dest), 0o600, "only its owner may read the restored WAL");
    std::fs::remove_file(&dest).expect("rm");

    // An archive holding a link (to a real segment) and a file that is not WAL.
    let other = dir.mkdir("other-archive");
    std::os::unix::fs::symlink(pg.archive_dir.join(&seg), other.join(&seg)).expect("symlink");
    std::fs::write(other.join("secret.conf"), "password=SECRETPW").expect("write");
    let other_s = other.display().to_string();
    restore(&other_s, &seg).fails(126, "symbolic link");
    for name in ["secret.conf", "../archive/x", &format!("{}/../{}", seg, seg), "00000001000000000000000a"] {
        restore(&other_s, name).fails(2, "not a WAL file name");
    }
    let left: Vec<String> = std::fs::read_dir(&pg_wal)
        .expect("ls")
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    assert!(left.is_empty(), "nothing was written: {:?}", left);
}

// ---- 11. The client checks the helper's peer credentials ----

const FAKE_HELPER: &str = r#"
import socket, sys
path, out = sys.argv[1], sys.argv[2]
s = socket.socket(socket.AF_UNIX)
s.bind(path)
s.listen(1)
open(out + ".ready", "w").close()
s.settimeout(60)
c, _ = s.accept()
c.settimeout(2)
data = b""
try:
    while True:
        d = c.recv(4096)
        if not d:
            break
        data += d
except OSError:
    pass
open(out, "wb").write(data)
"#;

#[test]
fn post_refuses_a_helper_socket_served_by_another_user() {
    let Some((uid, _)) = common::server_user_ids() else {
        crate::common::skip("needs root (to serve a socket as another user)");
        return;
    };
    let dir = TestDir::new();
    let t = Tool::new(&dir);
    let other = dir.mkdir("other");
    let (sock, out) = (other.join("h.sock"), other.join("received"));
    let mut server = common::server_command("/usr/bin/python3")
        .arg("-c")
        .arg(FAKE_HELPER)
        .arg(&sock)
        .arg(&out)
        .spawn()
        .expect("start the fake helper");
    common::wait_until(std::time::Duration::from_secs(10), "the fake helper to listen", || {
        other.join("received.ready").exists()
    });
    // As if planted where post looks (our run directory only we can write: a socket
    // someone else serves must still not be trusted).
    std::fs::rename(&sock, t.run_dir.join("fake.sock")).expect("move the socket");
    let r = t.post("fake").fails(1, &format!("served by uid {}", uid));
    assert!(r.stderr.contains("refusing"), "{}", r.stderr);
    let status = server.wait().expect("fake helper");
    assert!(status.success(), "the fake helper ran to the end");
    let got = std::fs::read(&out).expect("what the fake helper received");
    assert!(got.is_empty(), "post sent nothing to it: {}", String::from_utf8_lossy(&got));
}
