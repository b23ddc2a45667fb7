//! The two-phase flow against real servers: pre, post, abort, status, and what happens
//! when things go wrong between them.

use std::time::Duration;

use crate::common;
use crate::common::tool::{label_field, Tool};
use crate::common::{Cluster, ClusterOpts, TestDir};

#[test]
fn pre_then_post_stores_a_label_that_matches_what_pre_printed() {
    let dir = TestDir::new();
    let pg = Cluster::new(dir.path(), "pg");
    let t = Tool::new(&dir);
    pg.execute("create table t(i int); insert into t select generate_series(1, 1000)");
    let pre = t.pre("job-1", &[("default", pg.conninfo())], &[]).ok();
    let start = pre.start_lsn("default");
    assert_eq!(pg.backup_sessions("job-1"), 1, "the helper holds one session during the backup");
    pg.execute("insert into t select generate_series(1, 1000)");

    let post = t.post("job-1").ok();
    assert!(post.stdout.contains("complete and restorable"), "{}", post.stdout);
    let label = t.label("job-1", "default");
    assert_eq!(label_field(&label, "LABEL"), "job-1");
    assert!(label_field(&label, "START WAL LOCATION").starts_with(&format!("{} (file ", start)), "{}", label);
    assert_eq!(std::fs::read(t.backup_dir("job-1").join("default/tablespace_map")).expect("map"), b"");

    let m = t.manifest("job-1");
    assert_eq!(m["status"], "complete");
    assert_eq!(m["backup_id"], "job-1");
    let n = &m["nodes"][0];
    assert_eq!(n["name"], "default");
    assert_eq!(n["start_lsn"], start.as_str());
    assert_eq!(
        n["system_identifier"].as_str(),
        Some(pg.query_scalar("select system_identifier from pg_control_system()").as_str())
    );
    assert_eq!(n["server_version_num"].to_string(), pg.query_scalar("show server_version_num"));
    assert!(!n["conninfo"].as_str().unwrap_or("").contains("password"));
    assert_eq!(n["files"]["backup_label"]["sha256"].as_str().map(str::len), Some(64));

    // When post returns, the WAL the backup needs is in the archive already.
    let archived = pg.archived_files();
    let stop_seg = n["stop_wal_file"].as_str().expect("stop_wal_file");
    let history = n["backup_history_file"].as_str().expect("backup_history_file");
    assert!(archived.iter().any(|f| f == stop_seg), "{} not in {:?}", stop_seg, archived);
    assert!(archived.iter().any(|f| f == history), "{} not in {:?}", history, archived);

    // A restore point named after the backup, created after the stop, already archived.
    assert_eq!(m["restore_point"]["name"], "job-1");
    assert_eq!(m["restore_point"]["scope"], "node");
    let rp = m["restore_point"]["lsns"]["default"].as_str().expect("restore point lsn");
    let rp_seg = pg.query_scalar(&format!("select pg_walfile_name('{}'::pg_lsn - 1)", rp));
    assert!(archived.contains(&rp_seg), "{} not in {:?}", rp_seg, archived);
    assert_eq!(
        pg.query_scalar(&format!("select '{}'::pg_lsn > '{}'::pg_lsn", rp, n["stop_lsn"].as_str().unwrap_or(""))),
        "t"
    );

    pg.wait_no_backup_sessions("job-1");
    // Files are private.
    use std::os::unix::fs::MetadataExt;
    let mode = |p: &std::path::Path| std::fs::metadata(p).expect("stat").mode() & 0o777;
    assert_eq!(mode(&t.backup_dir("job-1")), 0o700);
    assert_eq!(mode(&t.backup_dir("job-1").join("default/backup_label")), 0o600);
    assert_eq!(mode(&t.backup_dir("job-1").join("manifest.json")), 0o600);

    // verify agrees
    t.run(&["verify", "--backup-id", "job-1", "--sidecar-dir", &t.sidecar.display().to_string()]).ok();
    // post again: already stored, nothing rewritten
    let again = t.post("job-1").ok();
    assert!(again.stdout.contains("already stored"), "{}", again.stdout);
}

#[test]
fn two_nodes_in_one_backup() {
    let dir = TestDir::new();
    let a = Cluster::new(dir.path(), "a");
    let b = Cluster::new(dir.path(), "b");
    let t = Tool::new(&dir);
    let pre = t.pre("two", &[("coord", a.conninfo()), ("worker1", b.socket_conninfo())], &[]).ok();
    let (sa, sb) = (pre.start_lsn("coord"), pre.start_lsn("worker1"));
    assert_eq!(a.backup_sessions("two"), 1);
    assert_eq!(b.backup_sessions("two"), 1);
    t.post("two").ok();
    assert!(label_field(&t.label("two", "coord"), "START WAL LOCATION").starts_with(&sa));
    assert!(label_field(&t.label("two", "worker1"), "START WAL LOCATION").starts_with(&sb));
    let m = t.manifest("two");
    let ids: Vec<String> = m["nodes"]
        .as_array()
        .expect("nodes")
        .iter()
        .map(|n| n["system_identifier"].as_str().unwrap_or("").to_string())
        .collect();
    assert_eq!(ids[0], a.query_scalar("select system_identifier from pg_control_system()"));
    assert_eq!(ids[1], b.query_scalar("select system_identifier from pg_control_system()"));
    assert_ne!(ids[0], ids[1]);
}

#[test]
fn default_node_connects_like_psql_from_the_environment() {
    let dir = TestDir::new();
    let pg = Cluster::new(dir.path(), "pg");
    let t = Tool::new(&dir);
    let run = t.run_dir.display().to_string();
    let side = t.sidecar.display().to_string();
    let out: common::tool::Ran = t
        .cmd(&["pre", "--fast"])
        .env("PGHOST", &pg.socket_dir)
        .env("PGPORT", pg.port.to_string())
        .env("PGUSER", "postgres")
        .env("PGDATABASE", "postgres")
        .env("PGBH_BACKUP_ID", "env-1")
        .env("PGBH_SIDECAR_DIR", &side)
        .env("PGBH_RUN_DIR", &run)
        .output()
        .expect("run")
        .into();
    let out = out.ok();
    out.start_lsn("default");
    let post: common::tool::Ran =
        t.cmd(&["post"]).env("PGBH_BACKUP_ID", "env-1").env("PGBH_RUN_DIR", &run).output().expect("run").into();
    post.ok();
    assert_eq!(label_field(&t.label("env-1", "default"), "LABEL"), "env-1");
}

#[test]
fn a_relative_run_dir_and_sidecar_dir_work_from_the_job_scripts_directory() {
    let dir = TestDir::new();
    let pg = Cluster::new(dir.path(), "pg");
    let t = Tool::new(&dir);
    let node = format!("default={}", pg.conninfo());
    let pre: common::tool::Ran = t
        .cmd(&[
            "pre",
            "--backup-id",
            "rel-1",
            "--fast",
            "--run-dir",
            "run",
            "--sidecar-dir",
            "sidecar",
            "--node",
            &node,
        ])
        .current_dir(dir.path())
        .output()
        .expect("run")
        .into();
    pre.ok();
    let post: common::tool::Ran = t
        .cmd(&["post", "--backup-id", "rel-1", "--run-dir", "run"])
        .current_dir(dir.path())
        .output()
        .expect("run")
        .into();
    post.ok();
    assert_eq!(label_field(&t.label("rel-1", "default"), "LABEL"), "rel-1");
}

#[test]
fn bad_ids_are_refused_before_anything_starts() {
    let dir = TestDir::new();
    let pg = Cluster::new(dir.path(), "pg");
    let t = Tool::new(&dir);
    for id in ["has space", "../etc", "quote'd", "new\nline", &"x".repeat(64)] {
        t.pre(id, &[("default", pg.conninfo())], &[]).fails(2, "backup id");
    }
    assert!(t.run_dir_files().is_empty(), "nothing was started: {:?}", t.run_dir_files());
    t.with_run("post", "a/b", &[]).fails(2, "backup id");
}

#[test]
fn a_second_pre_with_the_same_id_is_refused_while_the_first_lives() {
    let dir = TestDir::new();
    let pg = Cluster::new(dir.path(), "pg");
    let t = Tool::new(&dir);
    t.pre("dup", &[("default", pg.conninfo())], &[]).ok();
    t.pre("dup", &[("default", pg.conninfo())], &[]).fails(1, "already in progress");
    assert_eq!(pg.backup_sessions("dup"), 1);
    t.post("dup").ok();
    // Once stored, the id cannot be reused.
    t.pre("dup", &[("default", pg.conninfo())], &[]).fails(2, "already stored");
}

#[test]
fn post_without_pre_says_there_is_no_such_backup() {
    let dir = TestDir::new();
    let t = Tool::new(&dir);
    t.post("never-started").fails(4, "no backup never-started is in progress");
}

#[test]
fn abort_discards_the_backup_and_post_afterwards_refuses() {
    let dir = TestDir::new();
    let pg = Cluster::new(dir.path(), "pg");
    let t = Tool::new(&dir);
    t.pre("ab", &[("default", pg.conninfo())], &[]).ok();
    let a = t.abort("ab").ok();
    assert!(a.stdout.contains("aborted"), "{}", a.stdout);
    pg.wait_no_backup_sessions("ab");
    assert!(!t.backup_dir("ab").exists(), "abort stores nothing");
    t.post("ab").fails(1, "was aborted");
    let again = t.abort("ab").ok();
    assert!(again.stdout.contains("nothing to abort"), "{}", again.stdout);
    // The server has no backup left: the log shows no abort-on-exit warning, since we stopped it.
    assert!(!pg.log().contains("aborting backup due to backend exiting"), "{}", pg.log());
}

#[test]
fn helper_killed_between_pre_and_post_fails_post_loudly_and_leaves_nothing_running() {
    let dir = TestDir::new();
    let pg = Cluster::new(dir.path(), "pg");
    let t = Tool::new(&dir);
    t.pre("killed", &[("default", pg.conninfo())], &[]).ok();
    let pid = t.helper_pid("killed");
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGKILL).expect("kill helper");
    pg.wait_no_backup_sessions("killed");
    t.post("killed").fails(1, "cannot be restored");
    assert!(!t.backup_dir("killed").exists());
    assert!(!t.run_dir.join("killed.sock").exists(), "stale socket cleaned: {:?}", t.run_dir_files());
    // A new pre with the same id works.
    t.pre("killed", &[("default", pg.conninfo())], &[]).ok();
    t.post("killed").ok();
}

/// A signal to the helper stops and discards the backup cleanly (with the stop function,
/// not by dropping the session), leaves the aborted marker, and post then says why.
fn signal_stops_and_discards(signal: nix::sys::signal::Signal, id: &str) {
    let dir = TestDir::new();
    let pg = Cluster::new(dir.path(), "pg");
    let t = Tool::new(&dir);
    t.pre(id, &[("default", pg.conninfo())], &[]).ok();
    let pid = t.helper_pid(id);
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), signal).expect("signal the helper");
    pg.wait_no_backup_sessions(id);
    common::wait_until(Duration::from_secs(10), "the aborted marker", || {
        t.run_dir.join(format!("{id}.aborted")).exists()
    });
    t.post(id).fails(1, signal.as_str());
    assert!(
        !pg.log().contains("aborting backup due to backend exiting"),
        "stopped cleanly, not by closing the session"
    );
}

#[test]
fn helper_sigterm_stops_and_discards() {
    signal_stops_and_discards(nix::sys::signal::Signal::SIGTERM, "term");
}

#[test]
fn an_unreachable_node_fails_pre_and_nothing_is_left_running() {
    let dir = TestDir::new();
    let pg = Cluster::new(dir.path(), "pg");
    let t = Tool::new(&dir);
    let dead = format!("host=127.0.0.1 port={} user=postgres dbname=postgres connect_timeout=3", common::free_port());
    let r = t.pre("unreach", &[("good", pg.conninfo()), ("gone", dead)], &[]).fails(1, "node gone");
    assert!(r.stderr.contains("cannot connect"), "{}", r.stderr);
    assert_eq!(pg.backup_sessions("unreach"), 0);
    let st = t.status_json("unreach");
    assert_eq!(st[0]["phase"], "not-running", "{}", st);
}

#[test]
fn a_node_without_wal_archiving_is_refused() {
    let dir = TestDir::new();
    let pg = Cluster::with_opts(dir.path(), "noarch", ClusterOpts { archive: false, ..Default::default() });
    let t = Tool::new(&dir);
    t.pre("noarch", &[("default", pg.conninfo())], &[]).fails(1, "archive_mode is off");
    assert_eq!(pg.backup_sessions("noarch"), 0);
}

#[test]
fn an_unwritable_sidecar_at_post_keeps_the_label_and_a_retry_succeeds() {
    let dir = TestDir::new();
    let pg = Cluster::new(dir.path(), "pg");
    let t = Tool::new(&dir);
    t.pre("side", &[("default", pg.conninfo())], &[]).ok();
    // Root ignores permissions, so break the directory by putting a file in its place.
    std::fs::remove_dir(&t.sidecar).expect("rmdir sidecar");
    std::fs::write(&t.sidecar, b"not a directory").expect("write");
    let r = t.post("side").fails(1, "run post again");
    assert!(r.stderr.contains("LABEL: side"), "the label is printed for the job log: {}", r.stderr);
    assert_eq!(pg.backup_sessions("side"), 1, "the helper keeps holding");
    std::fs::remove_file(&t.sidecar).expect("rm");
    std::fs::create_dir(&t.sidecar).expect("mkdir");
    t.post("side").ok();
    assert_eq!(label_field(&t.label("side", "default"), "LABEL"), "side");
    assert_eq!(t.manifest("side")["status"], "complete");
}

#[test]
fn stalled_archiving_stores_a_not_restorable_sidecar_and_a_later_post_completes_it() {
    let dir = TestDir::new();
    let pg = Cluster::new(dir.path(), "pg");
    let t = Tool::new(&dir);
    pg.set_archiving_works(false);
    t.pre("stall", &[("default", pg.conninfo())], &[]).ok();
    let r = t.with_run("post", "stall", &["--archive-timeout", "2"]).fails(3, "NOT restorable");
    assert!(r.stderr.contains("node default"), "{}", r.stderr);
    assert_eq!(t.manifest("stall")["status"], "archive-pending");
    t.run(&["verify", "--backup-id", "stall", "--sidecar-dir", &t.sidecar.display().to_string()])
        .fails(1, "not complete");
    pg.set_archiving_works(true);
    let ok = t.with_run("post", "stall", &["--archive-timeout", "60"]).ok();
    assert!(ok.stdout.contains("complete and restorable"), "{}", ok.stdout);
    assert_eq!(t.manifest("stall")["status"], "complete");
}

#[test]
fn max_duration_expiry_stops_the_backup_and_post_says_so() {
    let dir = TestDir::new();
    let pg = Cluster::new(dir.path(), "pg");
    let t = Tool::new(&dir);
    t.pre("expire", &[("default", pg.conninfo())], &["--max-duration", "1"]).ok();
    pg.wait_no_backup_sessions("expire");
    common::wait_until(Duration::from_secs(10), "the helper to end", || t.run_dir.join("expire.aborted").exists());
    t.post("expire").fails(1, "--max-duration");
}

#[test]
fn a_node_restarted_during_the_backup_is_noticed_and_post_names_it() {
    let dir = TestDir::new();
    let a = Cluster::new(dir.path(), "a");
    let b = Cluster::new(dir.path(), "b");
    let t = Tool::new(&dir);
    t.pre("restart", &[("a", a.conninfo()), ("b", b.conninfo())], &["--heartbeat", "1"]).ok();
    b.restart("fast");
    common::wait_until(Duration::from_secs(15), "status to show node b failed", || {
        let st = t.status_json("restart");
        st[0]["nodes"][1]["failed"] == true
    });
    t.post("restart").fails(1, "node b");
    assert!(!t.backup_dir("restart").join("manifest.json").exists(), "no sidecar for a failed backup");
    a.wait_no_backup_sessions("restart");
}

#[test]
fn status_lists_running_backups() {
    let dir = TestDir::new();
    let pg = Cluster::new(dir.path(), "pg");
    let t = Tool::new(&dir);
    let pre = t.pre("st", &[("default", pg.conninfo())], &[]).ok();
    let run = t.run_dir.display().to_string();
    let human = t.run(&["status", "--run-dir", &run]).ok();
    assert!(human.stdout.contains("backup st: running"), "{}", human.stdout);
    assert!(human.stdout.contains(&pre.start_lsn("default")), "{}", human.stdout);
    let j = t.status_json("st");
    assert_eq!(j[0]["nodes"][0]["health"], "ok");
    t.abort("st").ok();
}

#[test]
fn every_sidecar_directory_gets_a_copy() {
    let dir = TestDir::new();
    let pg = Cluster::new(dir.path(), "pg");
    let t = Tool::new(&dir);
    let second = dir.path().join("nfs-copy");
    std::fs::create_dir(&second).expect("mkdir");
    t.pre("copies", &[("default", pg.conninfo())], &["--sidecar-dir", &second.display().to_string()]).ok();
    t.post("copies").ok();
    let a = std::fs::read(t.backup_dir("copies").join("default/backup_label")).expect("first copy");
    let b = std::fs::read(second.join("copies/default/backup_label")).expect("second copy");
    assert_eq!(a, b);
    // A missing sidecar directory (an NFS share not mounted) is refused before anything starts.
    let missing = dir.path().join("not-mounted").display().to_string();
    t.pre("copies2", &[("default", pg.conninfo())], &["--sidecar-dir", &missing]).fails(1, "not-mounted");
    assert_eq!(pg.backup_sessions("copies2"), 0);
}

#[test]
fn the_helper_survives_the_hook_process_group_being_killed() {
    let dir = TestDir::new();
    let pg = Cluster::new(dir.path(), "pg");
    let t = Tool::new(&dir);
    // A hook shell in its own process group runs pre, then lingers; the backup program
    // then kills the whole group (as some do when a script times out).
    let script = format!(
        "{} pre --backup-id pgkill --fast --sidecar-dir {} --run-dir {} --node 'default={}' && echo started && sleep 60",
        common::bin().display(),
        t.sidecar.display(),
        t.run_dir.display(),
        pg.conninfo()
    );
    use std::os::unix::process::CommandExt;
    let mut child = std::process::Command::new("sh")
        .arg("-c")
        .arg(&script)
        .process_group(0)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("spawn hook shell");
    let mut out = std::io::BufReader::new(child.stdout.take().expect("stdout"));
    let mut seen = String::new();
    while !seen.contains("started") {
        let mut line = String::new();
        if std::io::BufRead::read_line(&mut out, &mut line).expect("read") == 0 {
            panic!("hook shell ended early: {}", seen);
        }
        seen.push_str(&line);
    }
    let pgid = nix::unistd::Pid::from_raw(-(child.id() as i32));
    nix::sys::signal::kill(pgid, nix::sys::signal::Signal::SIGKILL).expect("kill process group");
    let _ = child.wait();
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(pg.backup_sessions("pgkill"), 1, "the helper still holds the backup");
    t.post("pgkill").ok();
}

#[test]
fn a_least_privileged_backup_role_is_enough() {
    let dir = TestDir::new();
    let pg = Cluster::new(dir.path(), "pg");
    let t = Tool::new(&dir);
    // The grants docs/security.md gives (PostgreSQL 15+ function names).
    pg.execute(
        "create role backup login;
         grant execute on function pg_backup_start(text, boolean), pg_backup_stop(boolean),
               pg_create_restore_point(text), pg_switch_wal() to backup;
         grant pg_monitor to backup;",
    );
    let ci = format!("host=127.0.0.1 port={} user=backup dbname=postgres", pg.port);
    t.pre("leastpriv", &[("default", ci)], &[]).ok();
    let post = t.post("leastpriv").ok();
    assert!(!post.stderr.contains("warning"), "{}", post.stderr);
    let m = t.manifest("leastpriv");
    assert_eq!(m["restore_point"]["name"], "leastpriv");
    assert!(m["nodes"][0]["data_directory"].is_string());
}

#[test]
fn start_timeout_gives_up_and_leaves_no_helper() {
    let dir = TestDir::new();
    let pg = Cluster::new(dir.path(), "pg");
    let t = Tool::new(&dir);
    // A "server" that accepts connections and never says a word.
    let silent = common::local_listener();
    let port = silent.local_addr().expect("addr").port();
    let hold = std::thread::spawn(move || {
        let conns: Vec<_> = silent.incoming().take(1).collect();
        std::thread::sleep(Duration::from_secs(20));
        drop(conns);
    });
    let mute = format!("host=127.0.0.1 port={} user=postgres dbname=postgres connect_timeout=30", port);
    let t0 = std::time::Instant::now();
    t.pre("slow", &[("ok", pg.conninfo()), ("mute", mute)], &["--start-timeout", "2"]).fails(1, "within 2 s");
    assert!(t0.elapsed() < Duration::from_secs(10), "pre gave up on time: {:?}", t0.elapsed());
    common::wait_until(Duration::from_secs(10), "no helper left", || {
        t.status_json("slow")[0]["phase"] == "not-running"
    });
    pg.wait_no_backup_sessions("slow");
    drop(hold);
}

#[test]
fn abort_stops_each_node_once() {
    let dir = TestDir::new();
    let pg = Cluster::new(dir.path(), "pg");
    let t = Tool::new(&dir);
    t.pre("once", &[("default", pg.conninfo())], &[]).ok();
    t.abort("once").ok();
    common::wait_until(Duration::from_secs(10), "the helper to end", || !t.run_dir.join("once.sock").exists());
    let log = std::fs::read_to_string(t.run_dir.join("once.log")).expect("helper log");
    assert_eq!(log.matches("backup stopped and discarded").count(), 1, "{}", log);
    assert!(!log.contains("stop while discarding failed"), "{}", log);
}

#[test]
fn helper_sigint_also_stops_and_discards() {
    signal_stops_and_discards(nix::sys::signal::Signal::SIGINT, "int");
}
