//! The inventory pre and post take of each node's files (issue 21): which source it comes
//! from (the local file system, SQL over the held session, or none), what it lists, and that
//! the sidecar keeps both, checksummed.

use pg_backup_hooks::inventory::{Inventory, Kind, Source};

use crate::common::tool::Tool;
use crate::common::{Cluster, TestDir};

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
