//! The inventory pre and post take of each node's files (issue 21): which source it comes
//! from (the local file system, SQL over the held session, or none), what it lists, and that
//! the sidecar keeps both, checksummed.

use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;

use pg_backup_hooks::inventory::{Inventory, Kind, Source};

use crate::common::tool::{Ran, Tool};
use crate::common::{Cluster, ClusterOpts, TestDir};

/// A node's stored inventory (`start` or `stop`), decoded.
fn stored(t: &Tool, id: &str, node: &str, which: &str) -> Inventory {
    let p = t.backup_dir(id).join(node).join(format!("inventory-{}.zst", which));
    let data = std::fs::read(&p).unwrap_or_else(|e| panic!("{}: {}", p.display(), e));
    Inventory::decode(&data, &p.display().to_string()).expect("a readable inventory")
}

/// The relation file of `table`, relative to the data directory.
fn relation_path(pg: &Cluster, table: &str) -> String {
    pg.query_scalar(&format!("select pg_relation_filepath('{}')", table))
}

fn verify(t: &Tool, id: &str) {
    t.run(&["verify", "--backup-id", id, "--sidecar-dir", &t.sidecar.display().to_string()]).ok();
}

#[test]
fn the_local_source_lists_the_node_at_start_and_at_stop() {
    let dir = TestDir::new();
    let pg = Cluster::new(dir.path(), "pg");
    let t = Tool::new(&dir);
    pg.execute("create table before_pre(i int); insert into before_pre select generate_series(1, 1000)");
    let pre = t.pre("inv-1", &[("default", pg.conninfo())], &[]).ok();
    assert!(pre.stdout.contains("node default: inventory source local"), "{}", pre.stdout);
    let status = t.with_run("status", "inv-1", &[]).ok();
    assert!(status.stdout.contains("inventory source local, "), "{}", status.stdout);
    let js = t.status_json("inv-1");
    assert_eq!(js[0]["nodes"][0]["inventory"]["source"], "local", "{}", js);
    assert!(js[0]["nodes"][0]["inventory"]["start"]["entries"].as_u64().unwrap_or(0) > 500, "{}", js);
    pg.execute("create table between(i int); insert into between values (1)");
    let post = t.post("inv-1").ok();
    assert!(post.stdout.contains("inventory source local"), "{}", post.stdout);

    let m = t.manifest("inv-1");
    let n = &m["nodes"][0];
    assert_eq!(n["inventory_source"], "local");
    assert!(n["inventory_note"].is_null(), "{}", n);
    for f in ["inventory-start.zst", "inventory-stop.zst"] {
        let size = std::fs::metadata(t.backup_dir("inv-1").join("default").join(f)).expect("stored").len();
        assert_eq!(n["files"][f]["size"].as_u64(), Some(size), "{}", f);
        assert_eq!(n["files"][f]["sha256"].as_str().map(str::len), Some(64), "{}", f);
    }
    verify(&t, "inv-1");

    let start = stored(&t, "inv-1", "default", "start");
    let stop = stored(&t, "inv-1", "default", "stop");
    assert_eq!((start.source, stop.source), (Source::Local, Source::Local));
    let old = relation_path(&pg, "before_pre");
    let new = relation_path(&pg, "between");
    let e = start.get(&old).unwrap_or_else(|| panic!("{} not in the start inventory", old));
    assert_eq!(e.kind, Kind::File);
    assert_eq!(e.size, std::fs::metadata(pg.datadir.join(&old)).expect("relation file").len());
    assert!(stop.get(&old).is_some());
    assert!(start.get(&new).is_none(), "{} was created after pre", new);
    assert!(stop.get(&new).is_some(), "{} was created before post", new);
    for p in ["global/pg_control", "PG_VERSION", "pg_wal", "base"] {
        assert!(start.get(p).is_some(), "{}", p);
    }
    for p in ["postmaster.pid", "backup_label"] {
        assert!(start.get(p).is_none(), "{} is left out of a copy", p);
    }
    assert!(!start.entries.iter().any(|e| e.path.starts_with("pg_wal/")), "pg_wal's contents are not listed");
    assert!(start.databases.values().any(|d| d == "postgres"), "{:?}", start.databases);
    assert!(t.run_dir_files().iter().all(|f| !f.contains("inventory")), "{:?}", t.run_dir_files());
}

/// Tampering with a stored inventory is what verify reports.
#[test]
fn verify_checks_the_stored_inventories() {
    let dir = TestDir::new();
    let pg = Cluster::new(dir.path(), "pg");
    let t = Tool::new(&dir);
    t.pre("inv-v", &[("default", pg.conninfo())], &[]).ok();
    t.post("inv-v").ok();
    let p = t.backup_dir("inv-v").join("default/inventory-stop.zst");
    let mut data = std::fs::read(&p).expect("stored");
    let last = data.len() - 1;
    data[last] ^= 1;
    std::fs::write(&p, &data).expect("write");
    let r = t.run(&["verify", "--backup-id", "inv-v", "--sidecar-dir", &t.sidecar.display().to_string()]);
    assert_ne!(r.code, 0, "{}", r.stdout);
    assert!(format!("{}{}", r.stdout, r.stderr).contains("inventory-stop.zst"), "{} {}", r.stdout, r.stderr);
}

/// A `CREATE TABLESPACE` location and an initdb `-X` WAL directory: the tablespace's files
/// are listed under `pg_tblspc/<oid>/`, as the server reaches them; pg_wal's are not.
#[test]
fn a_tablespace_and_a_separate_wal_directory_are_listed_as_the_server_sees_them() {
    let dir = TestDir::new();
    let wal = dir.path().join("walx");
    let opts = ClusterOpts { initdb_args: vec!["-X".into(), wal.display().to_string()], ..Default::default() };
    let pg = Cluster::with_opts(dir.path(), "pg", opts);
    let ts = dir.mkdir("ts");
    let t = Tool::new(&dir);
    pg.execute(&format!("create tablespace ts location '{}'", ts.display()));
    pg.execute("create table in_ts(i int) tablespace ts; insert into in_ts select generate_series(1, 100)");
    t.pre("inv-ts", &[("default", pg.conninfo())], &[]).ok();
    t.post("inv-ts").ok();
    verify(&t, "inv-ts");
    let start = stored(&t, "inv-ts", "default", "start");
    let rel = relation_path(&pg, "in_ts");
    assert!(rel.starts_with("pg_tblspc/"), "{}", rel);
    let e = start.get(&rel).unwrap_or_else(|| panic!("{} not listed", rel));
    assert_eq!(e.kind, Kind::File);
    let oid = rel.split('/').nth(1).unwrap_or_default();
    assert_eq!(start.get(&format!("pg_tblspc/{}", oid)).map(|e| e.kind), Some(Kind::Dir), "the link is followed");
    assert_eq!(start.get("pg_wal").map(|e| e.kind), Some(Kind::Link), "pg_wal is a link to {}", wal.display());
    assert!(!start.entries.iter().any(|e| e.path.starts_with("pg_wal/")));
}

/// The data directory's owner plants a link to a directory outside it: the link is listed as
/// a link, and what it points at is never listed.
#[test]
fn a_link_planted_in_the_data_directory_is_not_followed() {
    let dir = TestDir::new();
    let pg = Cluster::new(dir.path(), "pg");
    let t = Tool::new(&dir);
    let outside = dir.mkdir("outside/deep");
    std::fs::write(outside.join("secret"), b"x").expect("write");
    let db = pg.query_scalar("select oid from pg_database where datname = 'postgres'");
    let planted = format!("base/{}/planted", db);
    std::os::unix::fs::symlink(dir.path().join("outside"), pg.datadir.join(&planted)).expect("plant");
    t.pre("inv-link", &[("default", pg.conninfo())], &[]).ok();
    t.post("inv-link").ok();
    for which in ["start", "stop"] {
        let inv = stored(&t, "inv-link", "default", which);
        assert_eq!(inv.get(&planted).map(|e| e.kind), Some(Kind::Link), "{}", which);
        let below: Vec<&str> =
            inv.entries.iter().map(|e| e.path.as_str()).filter(|p| p.starts_with(&format!("{}/", planted))).collect();
        assert!(below.is_empty(), "{}: listed through the link: {:?}", which, below);
    }
}

// ---- Sources other than the local file system: pre as a user who cannot read the data
// directory (the realistic remote case), over TCP as a non-superuser role. ----

const NOBODY: u32 = 65534;

/// The directory of [`nobody_tool`]; dropped, it aborts (as nobody) whatever a failed test
/// left running there.
struct NobodyDir(tempfile::TempDir);

impl Drop for NobodyDir {
    fn drop(&mut self) {
        let t = Tool { run_dir: self.0.path().join("run"), sidecar: self.0.path().join("sidecar") };
        let Ok(entries) = std::fs::read_dir(&t.run_dir) else { return };
        for e in entries.flatten() {
            if let Some(id) = e.file_name().to_string_lossy().strip_suffix(".sock") {
                let run = t.run_dir.display().to_string();
                let _ = as_nobody(&t, &["abort", "--backup-id", id, "--run-dir", &run]);
            }
        }
    }
}

/// A run dir and a sidecar dir that `nobody` owns, in a directory it may traverse.
fn nobody_tool() -> (NobodyDir, Tool) {
    let top = tempfile::Builder::new().prefix("pgbhn").tempdir_in("/tmp").expect("tempdir");
    std::fs::set_permissions(top.path(), std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let t = Tool { run_dir: top.path().join("run"), sidecar: top.path().join("sidecar") };
    for d in [&t.run_dir, &t.sidecar] {
        std::fs::create_dir(d).expect("mkdir");
        std::fs::set_permissions(d, std::fs::Permissions::from_mode(0o700)).expect("chmod");
        std::os::unix::fs::chown(d, Some(NOBODY), Some(NOBODY)).expect("chown");
    }
    (NobodyDir(top), t)
}

/// Run the tool as `nobody`.
fn as_nobody(t: &Tool, args: &[&str]) -> Ran {
    let mut c = t.cmd(args);
    c.uid(NOBODY).gid(NOBODY).env("HOME", "/nonexistent").env_remove("XDG_STATE_HOME");
    c.output().expect("running pg-backup-hooks as nobody").into()
}

fn pre_as_nobody(t: &Tool, id: &str, conninfo: &str, extra: &[&str]) -> Ran {
    let (sidecar, run) = (t.sidecar.display().to_string(), t.run_dir.display().to_string());
    let node = format!("default={}", conninfo);
    let mut args =
        vec!["pre", "--backup-id", id, "--sidecar-dir", &sidecar, "--run-dir", &run, "--fast", "--node", &node];
    args.extend_from_slice(extra);
    as_nobody(t, &args)
}

fn post_as_nobody(t: &Tool, id: &str) -> Ran {
    let run = t.run_dir.display().to_string();
    as_nobody(t, &["post", "--backup-id", id, "--run-dir", &run])
}

/// The non-superuser backup role of docs/security.md; `list_grants` adds the two grants the
/// SQL inventory needs.
fn backup_role(pg: &Cluster, list_grants: bool) -> String {
    // docs/security.md's grants, by major: the backup functions were renamed in 15.
    let backup_functions = if major(pg) >= 15 {
        "pg_backup_start(text, boolean), pg_backup_stop(boolean)"
    } else {
        "pg_start_backup(text, boolean, boolean), pg_stop_backup(boolean, boolean)"
    };
    pg.execute(&format!(
        "create role backup login;
         grant execute on function {backup_functions}, pg_create_restore_point(text), pg_switch_wal() to backup;
         grant pg_monitor to backup"
    ));
    if list_grants {
        pg.execute("grant execute on function pg_ls_dir(text, boolean, boolean), pg_stat_file(text) to backup");
    }
    format!("host=127.0.0.1 port={} user=backup dbname=postgres", pg.port)
}

fn major(pg: &Cluster) -> i32 {
    pg.query_scalar("show server_version_num").parse::<i32>().expect("server_version_num") / 10000
}

#[test]
fn a_remote_inventory_over_sql_with_only_the_documented_grants() {
    let dir = TestDir::new();
    let pg = Cluster::new(dir.path(), "pg");
    let ts = dir.mkdir("ts");
    pg.execute(&format!("create tablespace ts location '{}'", ts.display()));
    pg.execute("create table before_pre(i int); insert into before_pre select generate_series(1, 1000)");
    pg.execute("create table in_ts(i int) tablespace ts; insert into in_ts values (1)");
    let conninfo = backup_role(&pg, true);
    assert_eq!(pg.query_scalar("select rolsuper from pg_roles where rolname = 'backup'"), "f");
    let (_top, t) = nobody_tool();
    let pre = pre_as_nobody(&t, "inv-sql", &conninfo, &[]).ok();
    eprintln!("PostgreSQL {}: {}{}", major(&pg), pre.stdout, pre.stderr);
    if major(&pg) < 11 {
        // PostgreSQL 10's file functions check for a superuser themselves: pre says so.
        assert!(pre.stdout.contains("node default: inventory source none"), "{}\n{}", pre.stdout, pre.stderr);
        assert!(
            pre.stderr.contains("before PostgreSQL 11 pg_ls_dir and pg_stat_file are for superusers only"),
            "{}",
            pre.stderr
        );
        post_as_nobody(&t, "inv-sql").ok();
        return;
    }
    assert!(pre.stdout.contains("node default: inventory source sql"), "{}\n{}", pre.stdout, pre.stderr);
    pg.execute("create table between(i int); insert into between values (1)");
    // The listing ran on the session holding the backup: it still holds it.
    assert_eq!(pg.backup_sessions("inv-sql"), 1);
    let post = post_as_nobody(&t, "inv-sql").ok();
    assert!(post.stdout.contains("complete and restorable"), "{}", post.stdout);

    let m = t.manifest("inv-sql");
    assert_eq!(m["nodes"][0]["inventory_source"], "sql", "{}", m);
    let start = stored(&t, "inv-sql", "default", "start");
    let stop = stored(&t, "inv-sql", "default", "stop");
    assert_eq!((start.source, stop.source), (Source::Sql, Source::Sql));
    let old = relation_path(&pg, "before_pre");
    let new = relation_path(&pg, "between");
    let e = start.get(&old).unwrap_or_else(|| panic!("{} not in the start inventory", old));
    assert_eq!(e.size, std::fs::metadata(pg.datadir.join(&old)).expect("relation file").len());
    assert!(start.get(&new).is_none() && stop.get(&new).is_some(), "{} was created between pre and post", new);
    let in_ts = relation_path(&pg, "in_ts");
    assert!(start.get(&in_ts).is_some(), "the tablespace is followed: {} not listed", in_ts);
    // Paths, sizes and mtimes are what the local file system shows for files that do not change.
    let local = pg_backup_hooks::inventory::walk::walk(&pg.datadir).expect("local walk");
    for p in ["PG_VERSION", "global/pg_filenode.map", "base"] {
        let (l, s) = (local.iter().find(|e| e.path == p).expect("local"), start.get(p).expect("sql"));
        assert_eq!((l.kind, l.size, l.mtime), (s.kind, s.size, s.mtime), "{}", p);
    }
    for p in ["postmaster.pid", "postmaster.opts"] {
        assert!(start.get(p).is_none(), "{}", p);
    }
    assert!(!start.entries.iter().any(|e| e.path.starts_with("pg_wal/")));
    assert!(start.databases.values().any(|d| d == "postgres"));
}

#[test]
fn a_node_with_no_source_is_said_once_and_fails_pre_under_require_inventory() {
    let dir = TestDir::new();
    let pg = Cluster::new(dir.path(), "pg");
    let conninfo = backup_role(&pg, false);
    let (_top, t) = nobody_tool();

    let refused = pre_as_nobody(&t, "inv-none-req", &conninfo, &["--require-inventory"]);
    assert_eq!(refused.code, 1, "{}\n{}", refused.stdout, refused.stderr);
    let line = refused.stderr.lines().find(|l| l.contains("--require-inventory")).unwrap_or_default().to_string();
    assert!(
        line.contains("node default")
            && line.contains("GRANT EXECUTE ON FUNCTION pg_ls_dir(text, boolean, boolean) TO backup;")
            && line.contains("GRANT EXECUTE ON FUNCTION pg_stat_file(text) TO backup;"),
        "{}",
        refused.stderr
    );
    assert_eq!(pg.backup_sessions("inv-none-req"), 0, "no backup was started");

    let pre = pre_as_nobody(&t, "inv-none", &conninfo, &[]).ok();
    assert_eq!(pre.stderr.matches("cannot be verified").count(), 1, "said once: {}", pre.stderr);
    assert!(pre.stderr.contains("node default: no inventory source"), "{}", pre.stderr);
    assert!(pre.stdout.contains("node default: inventory source none"), "{}", pre.stdout);
    post_as_nobody(&t, "inv-none").ok();
    let n = &t.manifest("inv-none")["nodes"][0];
    assert!(n["inventory_source"].is_null(), "{}", n);
    assert!(n["inventory_note"].as_str().unwrap_or_default().contains("GRANT EXECUTE"), "{}", n);
    assert!(!t.backup_dir("inv-none").join("default/inventory-start.zst").exists());
    verify(&t, "inv-none");
}

#[test]
fn each_node_of_a_backup_has_its_own_inventories() {
    let dir = TestDir::new();
    let a = Cluster::new(dir.path(), "a");
    let b = Cluster::new(dir.path(), "b");
    let t = Tool::new(&dir);
    a.execute("create table only_a(i int)");
    b.execute("create table only_b(i int)");
    let pre = t.pre("inv-2", &[("a", a.conninfo()), ("b", b.conninfo())], &[]).ok();
    for n in ["a", "b"] {
        assert!(pre.stdout.contains(&format!("node {}: inventory source local", n)), "{}", pre.stdout);
    }
    t.post("inv-2").ok();
    verify(&t, "inv-2");
    let (ia, ib) = (stored(&t, "inv-2", "a", "start"), stored(&t, "inv-2", "b", "start"));
    let (ra, rb) = (relation_path(&a, "only_a"), relation_path(&b, "only_b"));
    assert!(ia.get(&ra).is_some(), "{} in a's inventory", ra);
    assert!(ib.get(&rb).is_some(), "{} in b's inventory", rb);
    assert_ne!(ia.entries, ib.entries);
    for n in ["a", "b"] {
        assert_eq!(t.manifest("inv-2")["nodes"].as_array().map(|v| v.len()), Some(2));
        assert!(t.backup_dir("inv-2").join(n).join("inventory-stop.zst").exists());
    }
}

/// The SQL listing fails (a directory the server may not open: pg_ls_dir raises an ERROR on
/// the session holding the backup). The backup goes on: post stores it complete, and the
/// manifest says why there is no inventory; under --require-inventory pre fails instead.
#[test]
fn a_failing_sql_listing_leaves_the_backup_running() {
    let dir = TestDir::new();
    let pg = Cluster::new(dir.path(), "pg");
    let conninfo = backup_role(&pg, true);
    let closed = pg.datadir.join("closed_to_the_server");
    std::fs::create_dir(&closed).expect("mkdir");
    std::fs::set_permissions(&closed, std::fs::Permissions::from_mode(0o700)).expect("chmod");
    std::os::unix::fs::chown(&closed, Some(0), Some(0)).expect("chown root");
    let (_top, t) = nobody_tool();

    let pre = pre_as_nobody(&t, "inv-fail", &conninfo, &[]).ok();
    assert!(pre.stderr.contains("the start inventory could not be taken"), "{}", pre.stderr);
    assert!(pre.stderr.contains("closed_to_the_server"), "{}", pre.stderr);
    assert_eq!(pg.backup_sessions("inv-fail"), 1, "the backup survived the failed listing");
    let post = post_as_nobody(&t, "inv-fail").ok();
    assert!(post.stdout.contains("complete and restorable"), "{}", post.stdout);
    let n = &t.manifest("inv-fail")["nodes"][0];
    assert!(n["inventory_source"].is_null(), "{}", n);
    assert!(n["inventory_note"].as_str().unwrap_or_default().contains("start inventory"), "{}", n);

    let refused = pre_as_nobody(&t, "inv-fail-req", &conninfo, &["--require-inventory"]);
    assert_eq!(refused.code, 1, "{}\n{}", refused.stdout, refused.stderr);
    assert!(refused.stderr.contains("node default: the start inventory could not be taken"), "{}", refused.stderr);
    pg.wait_no_backup_sessions("inv-fail-req");
}
