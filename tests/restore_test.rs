//! restore-test (issue 24) on real servers: a healthy backup of a checksummed cluster passes
//! (with --amcheck) while the production server keeps running and its archive receives
//! nothing; a copy with a damaged relation page fails at amcheck and pg_checksums naming the
//! relation; a copy whose WAL misses a segment fails at replay naming it, its server stopped;
//! a restore-test stopped by SIGTERM stops its server. Several nodes: a two-node backup passes
//! on both, to its restore point; a node left out is refused before anything changes; a
//! segment missing for one node fails that node alone and stops every server; SIGTERM stops
//! every node's server.

use std::fs;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use crate::common::roundtrip::{install_bin, switch_and_wait, tar_create, tar_extract};
use crate::common::standby::checksummed_primary;
use crate::common::tool::Tool;
use crate::common::{chown_to_server_user, wait_until, Cluster, TestDir};

struct Backup {
    dir: TestDir,
    t: Tool,
    exe: PathBuf,
    pg: Cluster,
    tar: PathBuf,
    /// pg_relation_filepath of table `cold`, written and frozen before the backup started.
    cold_file: String,
    start_wal_file: String,
}

/// A checksummed cluster, a table `cold` frozen and checkpointed before pre (no WAL touches
/// it during replay), writes and two WAL switches during the backup (it spans >= 3 segments),
/// a tar copy, post, and the end archived.
fn backup() -> Backup {
    let dir = TestDir::new();
    let exe = install_bin(&dir);
    let pg = checksummed_primary(dir.path(), "pg");
    let t = Tool::new(&dir);
    pg.execute("create table cold (id int primary key, pad text); insert into cold select g, repeat('x', 200) from generate_series(1, 2000) g");
    // Nothing may write cold's pages after the backup's checkpoint (autovacuum's analyze
    // setting hint bits would log a full page image that replay puts back).
    pg.execute("alter table cold set (autovacuum_enabled = off)");
    pg.execute("vacuum freeze cold");
    pg.execute("create table hot (id int)");
    pg.execute("checkpoint");
    let cold_file = pg.query_scalar("select pg_relation_filepath('cold')");
    t.pre("rt", &[("default", pg.conninfo())], &[]).ok();
    pg.execute("insert into hot select generate_series(1, 1000)");
    pg.query_scalar("select pg_switch_wal()::text");
    pg.execute("insert into hot select generate_series(1, 1000)");
    pg.query_scalar("select pg_switch_wal()::text");
    pg.execute("insert into hot select generate_series(1, 1000)");
    let tar = dir.path().join("rt.tar");
    tar_create(&pg.datadir, &tar);
    t.post("rt").ok();
    // A record after the stop, so that the switch has a segment to close on every major.
    pg.execute("insert into hot values (0)");
    switch_and_wait(&pg);
    let start_wal_file = t.manifest("rt")["nodes"][0]["start_wal_file"].as_str().expect("start_wal_file").to_string();
    Backup { dir, t, exe, pg, tar, cold_file, start_wal_file }
}

impl Backup {
    /// The copy, extracted into a new scratch directory (as a backup program's restore job
    /// would); returns its data directory.
    fn scratch(&self, name: &str) -> PathBuf {
        let parent = self.dir.mkdir(name);
        tar_extract(&self.tar, &parent);
        let data = parent.join(self.pg.datadir.file_name().expect("name"));
        chown_to_server_user(&parent);
        data
    }

    fn cmd(&self, pgdata: &Path, extra: &[&str]) -> Command {
        let mut c = Command::new(&self.exe);
        c.args(["restore-test", "--backup-id", "rt", "--sidecar-dir"]).arg(&self.t.sidecar).arg("--pgdata").arg(pgdata);
        c.args(extra);
        for v in [
            "PGHOST",
            "PGPORT",
            "PGUSER",
            "PGDATABASE",
            "PGPASSWORD",
            "PGSERVICE",
            "PGBH_SIDECAR_DIR",
            "PGBH_BACKUP_ID",
        ] {
            c.env_remove(v);
        }
        c
    }

    fn run(&self, pgdata: &Path, extra: &[&str]) -> Output {
        let out = self.cmd(pgdata, extra).output().expect("running restore-test");
        eprintln!(
            "$ restore-test {:?}\n{}{}[{}]",
            extra,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
            out.status
        );
        out
    }

    fn archive(&self) -> String {
        self.pg.archive_dir.display().to_string()
    }
}

fn json(out: &Output) -> serde_json::Value {
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("--json: {e}: {}", String::from_utf8_lossy(&out.stdout)))
}

fn step<'a>(v: &'a serde_json::Value, name: &str) -> &'a serde_json::Value {
    v["steps"]
        .as_array()
        .expect("steps")
        .iter()
        .find(|s| s["name"] == name)
        .unwrap_or_else(|| panic!("no step {name}: {v:#}"))
}

/// Whether the server's bindir has pg_checksums (the matrix builds have only initdb, pg_ctl
/// and postgres: there the step is skipped, and says so).
fn has_pg_checksums() -> bool {
    crate::common::bindir().join("pg_checksums").is_file()
}

/// No postmaster runs on `pgdata`: postmaster.pid is gone (or names a dead process).
fn server_gone(pgdata: &Path) -> bool {
    match fs::read_to_string(pgdata.join("postmaster.pid")) {
        Err(_) => true,
        Ok(t) => {
            let pid: i32 = t.lines().next().and_then(|l| l.trim().parse().ok()).unwrap_or(0);
            pid <= 0 || nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None).is_err()
        }
    }
}

#[test]
fn a_healthy_backup_passes_and_production_is_untouched() {
    let b = backup();
    let before = b.pg.archived_files();
    let data = b.scratch("healthy");
    let out = b.run(&data, &["--archive-dir", &b.archive(), "--amcheck", "--json"]);
    let v = json(&out);
    assert_eq!(out.status.code(), Some(0), "{v:#}");
    assert_eq!(v["passed"], true, "{v:#}");
    for s in ["restore-prep", "start", "replay", "restore-check", "relations", "amcheck", "stop"] {
        assert_eq!(step(&v, s)["outcome"], "passed", "{s}: {v:#}");
    }
    let sums = step(&v, "checksums");
    if has_pg_checksums() {
        assert_eq!(sums["outcome"], "passed", "{v:#}");
        assert!(sums["lines"][0].as_str().unwrap().contains("no bad checksum"), "{v:#}");
    } else {
        assert_eq!(sums["outcome"], "skipped", "{v:#}");
        let why = sums["lines"][0].as_str().unwrap();
        assert!(why.contains("is not installed") || why.contains("PostgreSQL 10 has no"), "{v:#}");
    }
    assert!(v["wal_replayed_bytes"].as_u64().unwrap() > 2 * (16 << 20), "three segments replayed: {v:#}");
    let pgdb = v["databases"].as_array().unwrap().iter().find(|d| d["name"] == "postgres").expect("postgres db");
    assert!(pgdb["relations"].as_i64().unwrap() > 100, "{v:#}");
    assert!(server_gone(&data), "the test server was stopped");
    let log = fs::read_to_string(v["log_file"].as_str().unwrap()).expect("the server log");
    assert!(log.contains("archive recovery complete"), "{log}");
    // Production: still running, its archive received nothing from the test (no new timeline's history).
    assert!(b.pg.is_running());
    assert_eq!(b.pg.query_scalar("select count(*) from hot"), "3001");
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(b.pg.archived_files(), before, "the production archive got files from the test");
    // The copy was left in place: data directory, restore-prep's archive_mode = 'off'.
    let auto = fs::read_to_string(data.join("postgresql.auto.conf")).unwrap();
    assert!(auto.contains("archive_mode = 'off'"), "{auto}");

    // The text report, again on a fresh copy, without --amcheck.
    let data = b.scratch("healthy-text");
    let out = b.run(&data, &["--archive-dir", &b.archive()]);
    assert_eq!(out.status.code(), Some(0));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("verdict: PASSED"), "{text}");
    assert!(text.contains("WAL replayed:"), "{text}");

    // --keep: the server is left running on its private socket, promoted, with the data; the
    // report says how to reach and stop it.
    let data = b.scratch("kept");
    let out = b.run(&data, &["--archive-dir", &b.archive(), "--keep", "--json"]);
    let v = json(&out);
    assert_eq!(out.status.code(), Some(0), "{v:#}");
    assert_eq!(step(&v, "checksums")["outcome"], "skipped", "{v:#}");
    let pid = v["kept"]["pid"].as_i64().expect("kept.pid") as i32;
    assert!(v["kept"]["connect"].as_str().unwrap().starts_with("psql 'host=/"), "{v:#}");
    let sock = v["socket_dir"].as_str().expect("socket_dir").to_string();
    let ci = format!("host={} port={} user=postgres dbname=postgres", sock, v["port"]);
    let mut c = postgres::Client::connect(&ci, postgres::NoTls).expect("connecting to the kept server");
    let row = c.query_one("select pg_is_in_recovery(), (select count(*) from hot), current_setting('listen_addresses'), current_setting('archive_mode')", &[]).unwrap();
    assert_eq!((row.get::<_, bool>(0), row.get::<_, i64>(1)), (false, 3001));
    assert_eq!((row.get::<_, String>(2), row.get::<_, String>(3)), (String::new(), "off".to_string()));
    drop(c);
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGINT).unwrap();
    wait_until(Duration::from_secs(60), "the kept server stopped", || server_gone(&data));
    fs::remove_dir_all(&sock).unwrap();
    assert_eq!(b.pg.archived_files(), before, "the production archive got files from the tests");
}

#[test]
fn a_damaged_page_fails_at_amcheck_and_pg_checksums_naming_the_relation() {
    let b = backup();
    let data = b.scratch("corrupt");
    let file = data.join(&b.cold_file);
    let f = fs::OpenOptions::new().read(true).write(true).open(&file).expect("cold's file");
    let mtime = f.metadata().unwrap().modified().unwrap();
    let mut byte = [0u8; 1];
    f.read_exact_at(&mut byte, 8100).unwrap();
    byte[0] ^= 0xFF;
    f.write_all_at(&byte, 8100).unwrap();
    f.set_modified(mtime).unwrap();
    drop(f);
    let out = b.run(&data, &["--archive-dir", &b.archive(), "--amcheck", "--json"]);
    let v = json(&out);
    assert_eq!(out.status.code(), Some(5), "{v:#}");
    assert_eq!(v["passed"], false);
    assert_eq!(step(&v, "restore-check")["outcome"], "passed", "{v:#}");
    let failed: &[&str] = if has_pg_checksums() { &["amcheck", "checksums"] } else { &["amcheck"] };
    for s in failed {
        let st = step(&v, s);
        assert_eq!(st["outcome"], "failed", "{s}: {v:#}");
        let lines = st["lines"].to_string();
        assert!(lines.contains("postgres.public.cold"), "{s} names the relation: {lines}");
    }
    assert!(server_gone(&data));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains(&format!("FAILED at {}", failed.join(", "))), "{stderr}");
}

/// The segment after `name` (no wrap-around in these tests).
fn next(name: &str) -> String {
    let lo = u32::from_str_radix(&name[16..], 16).unwrap();
    format!("{}{:08X}", &name[..16], lo + 1)
}

#[test]
fn missing_wal_fails_at_replay_naming_the_segment_and_stops_the_server() {
    let b = backup();
    let partial = b.dir.mkdir("partial-archive");
    for f in b.pg.archived_files() {
        fs::copy(b.pg.archive_dir.join(&f), partial.join(&f)).unwrap();
    }
    let middle = next(&b.start_wal_file);
    fs::remove_file(partial.join(&middle)).unwrap_or_else(|e| panic!("{middle}: {e}"));
    chown_to_server_user(&partial);
    let data = b.scratch("missing");
    let cmd = format!("cp {}/%f %p", partial.display());
    let out = b.run(&data, &["--restore-command", &cmd, "--timeout", "120", "--json"]);
    let v = json(&out);
    assert_eq!(out.status.code(), Some(5), "{v:#}");
    let replay = step(&v, "replay");
    assert_eq!(replay["outcome"], "failed", "{v:#}");
    let why = replay["lines"][0].as_str().unwrap();
    assert!(why.contains(&format!("did not deliver {middle}")), "{why}");
    assert!(why.contains("exited before recovery ended"), "{why}");
    assert!(server_gone(&data));
    assert!(v["log_problems"].to_string().contains("FATAL"), "{v:#}");
}

#[test]
fn sigterm_stops_the_test_server() {
    let b = backup();
    let data = b.scratch("sigterm");
    // Each WAL file takes 3 s to arrive: the test is still replaying when SIGTERM comes.
    let cmd = format!("sleep 3 && cp {}/%f %p", b.archive());
    let child =
        b.cmd(&data, &["--restore-command", &cmd]).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    // The copy's postmaster.pid is production's (stale in the copy) until restore-prep removes it.
    let pid_of = |p: &Path| -> Option<i32> { fs::read_to_string(p).ok()?.lines().next()?.trim().parse().ok() };
    let production = pid_of(&b.pg.datadir.join("postmaster.pid")).expect("production's pid");
    let pid_file = data.join("postmaster.pid");
    wait_until(Duration::from_secs(60), "the test server started", || {
        pid_of(&pid_file).is_some_and(|p| p != production) && data.join("pg-backup-hooks-restore.log").exists()
    });
    std::thread::sleep(Duration::from_secs(1));
    let server = pid_of(&pid_file).unwrap();
    let t = Instant::now();
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(child.id() as i32), nix::sys::signal::Signal::SIGTERM).unwrap();
    let out = child.wait_with_output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    eprintln!("{text}{}", String::from_utf8_lossy(&out.stderr));
    assert_ne!(out.status.code(), Some(0));
    assert!(text.contains("interrupted by SIGTERM"), "{text}");
    assert!(
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(server), None).is_err(),
        "the server {server} still runs"
    );
    assert!(server_gone(&data));
    assert!(t.elapsed() < Duration::from_secs(60), "stopping took {:?}", t.elapsed());
    assert!(b.pg.is_running(), "production keeps running");
}

/// The server's log lies in the owner's data directory: a hard link planted there (before the
/// test) to a file of root's is never written through: restore-prep moves the unknown path
/// aside with the copy's stale files, and the log is opened with the owner's rights anyway
/// (unit test in restore_test::server). Root's file keeps its owner and content.
#[test]
fn a_log_file_linked_to_roots_file_is_not_written_through() {
    if !nix::unistd::geteuid().is_root() {
        crate::common::skip("needs root (a file the data directory's owner cannot write)");
        return;
    }
    let b = backup();
    let data = b.scratch("linked-log");
    let secret = b.dir.path().join("roots-file");
    fs::write(&secret, "root's\n").unwrap();
    fs::set_permissions(&secret, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    let log = data.join("pg-backup-hooks-restore.log");
    fs::hard_link(&secret, &log).unwrap();
    let out = b.run(&data, &["--archive-dir", &b.archive(), "--json"]);
    let v = json(&out);
    assert_eq!(out.status.code(), Some(0), "{v:#}");
    assert_eq!(fs::read_to_string(&secret).unwrap(), "root's\n");
    let meta = fs::metadata(&secret).unwrap();
    use std::os::unix::fs::MetadataExt;
    assert_eq!(meta.uid(), 0);
    assert_ne!(fs::metadata(&log).unwrap().ino(), meta.ino(), "the server's log is a file of its own");
    assert!(fs::read_to_string(&log).unwrap().contains("database system is ready"), "the log is the server's");
}

/// A backup of several clusters as the nodes of one backup (`pre --node a=.. --node b=..`),
/// each with its own archive, writes and two WAL switches on every node during the backup
/// (it spans >= 3 segments there, the middle one checked only by a listed archive), a tar
/// copy of each, post (a per-node restore point), and every node's end archived.
struct Nodes {
    dir: TestDir,
    t: Tool,
    exe: PathBuf,
    /// (name, cluster, tar copy, start_wal_file).
    nodes: Vec<(String, Cluster, PathBuf, String)>,
}

fn nodes_backup(names: &[&str]) -> Nodes {
    let dir = TestDir::new();
    let exe = install_bin(&dir);
    let t = Tool::new(&dir);
    let pgs: Vec<Cluster> = names.iter().map(|n| checksummed_primary(dir.path(), n)).collect();
    for pg in &pgs {
        pg.execute("create table hot (id int)");
    }
    let spec: Vec<(&str, String)> = names.iter().zip(&pgs).map(|(n, pg)| (*n, pg.conninfo())).collect();
    t.pre("mn", &spec, &[]).ok();
    let mut tars = Vec::new();
    for (n, pg) in names.iter().zip(&pgs) {
        for _ in 0..2 {
            pg.execute("insert into hot select generate_series(1, 1000)");
            pg.query_scalar("select pg_switch_wal()::text");
        }
        pg.execute("insert into hot select generate_series(1, 1000)");
        let tar = dir.path().join(format!("{n}.tar"));
        tar_create(&pg.datadir, &tar);
        tars.push(tar);
    }
    t.post("mn").ok();
    for pg in &pgs {
        pg.execute("insert into hot values (0)");
        switch_and_wait(pg);
    }
    let m = t.manifest("mn");
    let mut nodes = Vec::new();
    for ((n, pg), tar) in names.iter().zip(pgs).zip(tars) {
        let entry = m["nodes"].as_array().unwrap().iter().find(|e| e["name"] == *n).expect("node in the manifest");
        let start = entry["start_wal_file"].as_str().expect("start_wal_file").to_string();
        nodes.push((n.to_string(), pg, tar, start));
    }
    Nodes { dir, t, exe, nodes }
}

impl Nodes {
    /// Each node's copy extracted into its own scratch directory: `--node NAME=DIR` values.
    fn scratch(&self, tag: &str, only: &[&str]) -> Vec<(String, PathBuf)> {
        let mut out = Vec::new();
        for (n, pg, tar, _) in self.nodes.iter().filter(|(n, ..)| only.contains(&n.as_str())) {
            let parent = self.dir.mkdir(&format!("{tag}-{n}"));
            tar_extract(tar, &parent);
            chown_to_server_user(&parent);
            out.push((n.clone(), parent.join(pg.datadir.file_name().expect("name"))));
        }
        out
    }

    fn run(&self, args: &[String]) -> Output {
        let mut c = Command::new(&self.exe);
        c.args(["restore-test", "--backup-id", "mn", "--sidecar-dir"]).arg(&self.t.sidecar).args(args);
        for v in ["PGHOST", "PGPORT", "PGUSER", "PGDATABASE", "PGSERVICE", "PGBH_SIDECAR_DIR", "PGBH_BACKUP_ID"] {
            c.env_remove(v);
        }
        let out = c.output().expect("running restore-test");
        eprintln!(
            "$ restore-test {:?}\n{}{}[{}]",
            args,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
            out.status
        );
        out
    }

    /// `--node NAME=DIR` for each copy and `--archive-dir NAME=DIR` for each node's archive
    /// (`archives` overrides some).
    fn args(&self, copies: &[(String, PathBuf)], archives: &[(&str, &Path)]) -> Vec<String> {
        let mut a = Vec::new();
        for (n, d) in copies {
            a.push("--node".to_string());
            a.push(format!("{n}={}", d.display()));
        }
        for (n, pg, ..) in &self.nodes {
            let arch =
                archives.iter().find(|(x, _)| x == n).map(|(_, p)| p.to_path_buf()).unwrap_or(pg.archive_dir.clone());
            a.push("--archive-dir".to_string());
            a.push(format!("{n}={}", arch.display()));
        }
        a
    }
}

fn node_report<'a>(v: &'a serde_json::Value, name: &str) -> &'a serde_json::Value {
    v["nodes"]
        .as_array()
        .expect("nodes")
        .iter()
        .find(|n| n["node"] == name)
        .unwrap_or_else(|| panic!("no node {name}: {v:#}"))
}

#[test]
fn a_two_node_backup_restores_on_both_nodes_to_its_restore_point() {
    let b = nodes_backup(&["a", "b"]);
    let before: Vec<Vec<String>> = b.nodes.iter().map(|(_, pg, ..)| pg.archived_files()).collect();
    let copies = b.scratch("ok", &["a", "b"]);
    let mut args = b.args(&copies, &[]);
    args.push("--json".into());
    let out = b.run(&args);
    let v = json(&out);
    assert_eq!(out.status.code(), Some(0), "{v:#}");
    assert_eq!(v["passed"], true, "{v:#}");
    assert_eq!(v["nodes"].as_array().map(Vec::len), Some(2), "{v:#}");
    let rp = b.t.manifest("mn")["restore_point"]["name"].as_str().expect("a restore point").to_string();
    for (n, data) in &copies {
        let r = node_report(&v, n);
        assert_eq!(r["passed"], true, "{n}: {v:#}");
        for s in ["restore-prep", "start", "replay", "restore-check", "relations", "stop"] {
            assert_eq!(step(r, s)["outcome"], "passed", "{n} {s}: {v:#}");
        }
        assert_eq!(r["pgdata"].as_str().map(PathBuf::from), Some(fs::canonicalize(data).unwrap()), "{v:#}");
        assert_eq!(r["stop_reason"].as_str(), Some(format!("at restore point \"{rp}\"").as_str()), "{v:#}");
        assert!(server_gone(data), "{n}'s test server was stopped");
    }
    let across = &v["across_nodes"];
    assert_eq!(across["outcome"], "passed", "{v:#}");
    let lines = across["lines"].to_string();
    assert!(lines.contains(&format!("every node ended at restore point \\\"{rp}\\\" on a new timeline")), "{lines}");
    assert!(lines.contains("node a: stopped at restore point") && lines.contains("node b: stopped at restore point"));
    assert!(lines.contains("not one instant of a cluster"), "a per-node restore point is said to be one: {lines}");
    // One node given as NAME=DIR is the one-node form, to the restore point all the same.
    let one = b.scratch("one", &["a"]);
    let mut args = b.args(&one, &[]);
    args.push("--json".into());
    let out = b.run(&args);
    let v = json(&out);
    assert_eq!(out.status.code(), Some(0), "{v:#}");
    assert!(v.get("nodes").is_none() && v["node"] == "a", "{v:#}");
    assert_eq!(v["stop_reason"].as_str(), Some(format!("at restore point \"{rp}\"").as_str()), "{v:#}");
    assert!(server_gone(&one[0].1));
    // Production: both keep running, their archives received nothing from the test.
    for ((_, pg, ..), before) in b.nodes.iter().zip(before) {
        assert!(pg.is_running());
        assert_eq!(pg.archived_files(), before);
    }
}

#[test]
fn a_node_left_out_is_refused_before_anything_starts() {
    let b = nodes_backup(&["a", "b", "c"]);
    let copies = b.scratch("part", &["a", "b"]);
    let autos: Vec<Vec<u8>> = copies.iter().map(|(_, d)| fs::read(d.join("postgresql.auto.conf")).unwrap()).collect();
    let out = b.run(&b.args(&copies, &[]));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("node(s) c that no --node NAME=DIR gives"), "{stderr}");
    assert!(!stderr.contains("node(s) a") && !stderr.contains("c, "), "{stderr}");
    for ((n, d), auto) in copies.iter().zip(autos) {
        assert_eq!(fs::read(d.join("postgresql.auto.conf")).unwrap(), auto, "{n}: restore-prep wrote");
        assert!(!d.join("recovery.signal").exists() && !d.join("pg-backup-hooks-restore.log").exists(), "{n}");
    }
    assert!(out.stdout.is_empty(), "no report: nothing ran");
    // A node the backup does not have is refused, naming the backup's nodes.
    let mut unknown = b.args(&copies, &[]);
    unknown.extend(["--node".to_string(), format!("x={}", b.dir.mkdir("x").display())]);
    let out = b.run(&unknown);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("has no node x (its nodes: a, b, c)"), "{stderr}");
    // Two nodes in one directory (through another spelling of its path) are refused.
    let same =
        vec![copies[0].clone(), ("b".to_string(), copies[0].1.join("../data")), ("c".to_string(), b.dir.mkdir("c"))];
    let out = b.run(&b.args(&same, &[]));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("is node a's too"), "{stderr}");
    // Mixing the two forms is refused, saying what to do.
    let mut mixed = b.args(&copies, &[]);
    mixed.extend(["--pgdata".to_string(), copies[0].1.display().to_string()]);
    let out = b.run(&mixed);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("leave out --pgdata"), "{stderr}");
}

/// Node b's copy of its archive misses the segment after its start: with `--archive-dir`
/// restore-prep refuses node b, naming the segment, and nothing is changed on node a; with one
/// `--restore-command` for both (each node's WAL found from its scratch directory's name),
/// node b fails at replay naming the segment, node a passes, and both servers are stopped.
#[test]
fn a_wal_segment_missing_for_one_node_fails_that_node_and_stops_every_server() {
    let b = nodes_backup(&["a", "b"]);
    let (_, pg_b, _, start_b) = &b.nodes[1];
    let middle = next(start_b);
    let copies = b.scratch("gap", &["a", "b"]);
    // Each node's WAL where the restore_command looks: wal-<its scratch directory's parent>.
    let mut wal = Vec::new();
    for ((_, pg, ..), (n, data)) in b.nodes.iter().zip(&copies) {
        let parent = data.parent().unwrap().file_name().unwrap().to_str().unwrap().to_string();
        let w = b.dir.mkdir(&format!("wal-{parent}"));
        for f in pg.archived_files() {
            fs::copy(pg.archive_dir.join(&f), w.join(&f)).unwrap();
        }
        if n == "b" {
            fs::remove_file(w.join(&middle)).unwrap_or_else(|e| panic!("{middle}: {e}"));
        }
        chown_to_server_user(&w);
        wal.push(w);
    }
    assert_eq!(pg_b.archived_files().len(), fs::read_dir(&wal[1]).unwrap().count() + 1);
    let autos: Vec<Vec<u8>> = copies.iter().map(|(_, d)| fs::read(d.join("postgresql.auto.conf")).unwrap()).collect();
    let mut args = b.args(&copies, &[("b", &wal[1])]);
    args.push("--json".to_string());
    let out = b.run(&args);
    let v = json(&out);
    assert_eq!(out.status.code(), Some(5), "{v:#}");
    let prep_b = step(node_report(&v, "b"), "restore-prep");
    assert_eq!(prep_b["outcome"], "failed", "{v:#}");
    assert!(prep_b["lines"][0].as_str().unwrap().contains(&format!("lacks segment {middle}")), "{v:#}");
    let prep_a = step(node_report(&v, "a"), "restore-prep");
    assert_eq!(prep_a["outcome"], "skipped", "{v:#}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("FAILED node b at restore-prep") && !stderr.contains("node a at"), "{stderr}");
    assert!(prep_a["lines"][0].as_str().unwrap().contains("refused node(s) b, so no node was changed"), "{v:#}");
    assert!(node_report(&v, "a")["steps"].as_array().unwrap().iter().all(|s| s["name"] != "start"), "{v:#}");
    for ((n, d), auto) in copies.iter().zip(&autos) {
        assert_eq!(&fs::read(d.join("postgresql.auto.conf")).unwrap(), auto, "{n}: restore-prep wrote");
    }

    let base = b.dir.path().display().to_string();
    let cmd = format!("cp {base}/wal-$(basename \"$(dirname \"$(pwd -P)\")\")/%f %p");
    let mut args: Vec<String> = Vec::new();
    for (n, d) in &copies {
        args.extend(["--node".to_string(), format!("{n}={}", d.display())]);
    }
    args.extend(["--restore-command".to_string(), cmd, "--timeout".into(), "120".into(), "--json".into()]);
    let out = b.run(&args);
    let v = json(&out);
    assert_eq!(out.status.code(), Some(5), "{v:#}");
    assert_eq!(v["passed"], false);
    let (ra, rb) = (node_report(&v, "a"), node_report(&v, "b"));
    assert_eq!(ra["passed"], true, "node a has all its WAL: {v:#}");
    assert_eq!(rb["passed"], false, "{v:#}");
    let replay = step(rb, "replay");
    assert_eq!(replay["outcome"], "failed", "{v:#}");
    let why = replay["lines"][0].as_str().unwrap();
    assert!(why.contains(&format!("did not deliver {middle}")), "{why}");
    assert_eq!(v["across_nodes"]["outcome"], "failed", "{v:#}");
    let across = v["across_nodes"]["lines"].to_string();
    assert!(across.contains("node b: did not show") && across.contains("node a: stopped at restore point"), "{v:#}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("FAILED node b at replay") && !stderr.contains("node a at"), "{stderr}");
    for (n, d) in &copies {
        assert!(server_gone(d), "{n}'s test server still runs");
    }
}

/// SIGTERM while both nodes' servers replay (each WAL file takes 2 s to arrive) stops both.
#[test]
fn sigterm_stops_every_nodes_test_server() {
    let b = nodes_backup(&["a", "b"]);
    let copies = b.scratch("term", &["a", "b"]);
    for ((_, pg, ..), (_, data)) in b.nodes.iter().zip(&copies) {
        let parent = data.parent().unwrap().file_name().unwrap().to_str().unwrap().to_string();
        let w = b.dir.mkdir(&format!("wal-{parent}"));
        for f in pg.archived_files() {
            fs::copy(pg.archive_dir.join(&f), w.join(&f)).unwrap();
        }
        chown_to_server_user(&w);
    }
    let base = b.dir.path().display().to_string();
    let cmd = format!("sleep 2 && cp {base}/wal-$(basename \"$(dirname \"$(pwd -P)\")\")/%f %p");
    let mut c = Command::new(&b.exe);
    c.args(["restore-test", "--backup-id", "mn", "--sidecar-dir"]).arg(&b.t.sidecar);
    for (n, d) in &copies {
        c.arg("--node").arg(format!("{n}={}", d.display()));
    }
    c.args(["--restore-command", &cmd]).env_remove("PGBH_SIDECAR_DIR").env_remove("PGBH_BACKUP_ID");
    let child = c.stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    let pid_of = |p: &Path| -> Option<i32> { fs::read_to_string(p).ok()?.lines().next()?.trim().parse().ok() };
    let production: Vec<i32> =
        b.nodes.iter().map(|(_, pg, ..)| pid_of(&pg.datadir.join("postmaster.pid")).expect("pid")).collect();
    for ((_, d), prod) in copies.iter().zip(&production) {
        wait_until(Duration::from_secs(60), "both test servers started", || {
            pid_of(&d.join("postmaster.pid")).is_some_and(|p| p != *prod)
                && d.join("pg-backup-hooks-restore.log").exists()
        });
    }
    let servers: Vec<i32> = copies.iter().map(|(_, d)| pid_of(&d.join("postmaster.pid")).unwrap()).collect();
    let t = Instant::now();
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(child.id() as i32), nix::sys::signal::Signal::SIGTERM).unwrap();
    let out = child.wait_with_output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    eprintln!("{text}{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(out.status.code(), Some(5));
    assert_eq!(text.matches("restore-test was interrupted by SIGTERM").count(), 2, "both nodes say so: {text}");
    for ((n, d), pid) in copies.iter().zip(servers) {
        assert!(
            nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None).is_err(),
            "{n}'s server {pid} still runs"
        );
        assert!(server_gone(d), "{n}");
    }
    assert!(t.elapsed() < Duration::from_secs(60), "stopping took {:?}", t.elapsed());
    assert!(b.nodes.iter().all(|(_, pg, ..)| pg.is_running()), "production keeps running");
}
