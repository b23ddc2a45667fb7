//! The checks of a recovered test server: restore-check's proof (restore::outcome), the
//! count and size of databases and relations, amcheck (`--amcheck`), and after the stop
//! pg_checksums --check. Every failure that names a relation file is given the relation's
//! name, from a map of pg_relation_filepath() read while the server ran.

use std::collections::BTreeMap;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use postgres::Client;
use serde::Serialize;

use crate::error::{pg_error, Result};
use crate::pg::conninfo::ConnInfo;
use crate::pg::tls;
use crate::restore::outcome::{self, Observed};
use crate::restore::record;
use crate::restore::recovery::Target;
use crate::sidecar::{Manifest, NodeEntry};

const APP: &str = "pg-backup-hooks restore-test";

/// restore-check's proof of where recovery ended, and restore-prep's record of the files.
pub fn restore_check(
    c: &mut Client,
    v: i32,
    m: &Manifest,
    node: &NodeEntry,
    t: &Target,
) -> (bool, Vec<String>, Option<Observed>) {
    let o = match outcome::observe(c, v) {
        Ok(o) => o,
        Err(e) => return (false, vec![format!("reading the recovery state: {}", e.msg)], None),
    };
    let verdict = outcome::judge(node, m, t, &o);
    let mut lines = verdict.lines;
    match record::read(c) {
        Ok(Some(r)) if r.backup_id == m.backup_id => lines.push(format!("files: {}", r.summary())),
        Ok(_) => lines.push("files: no restore-prep record for this backup in the copy".into()),
        Err(e) => lines.push(format!("files: {}", e.msg)),
    }
    (verdict.proven, lines, Some(o))
}

#[derive(Serialize, Debug, Default, Clone)]
pub struct Db {
    pub name: String,
    pub bytes: i64,
    /// Relations with storage (tables, indexes, TOAST, materialized views, sequences).
    pub relations: i64,
    pub relation_bytes: i64,
}

/// What the server holds, and which relation each file is.
#[derive(Serialize, Debug, Default)]
pub struct Inventory {
    pub databases: Vec<Db>,
    pub data_checksums: bool,
    /// pg_relation_filepath -> "database.schema.relation".
    #[serde(skip)]
    pub files: BTreeMap<String, String>,
}

fn in_db(info: &ConnInfo, db: &str) -> ConnInfo {
    let mut i = info.clone();
    i.set("dbname", db);
    i
}

/// Databases (those that take connections) with their sizes, and every relation's file.
pub fn inventory(c: &mut Client, info: &ConnInfo) -> Result<Inventory> {
    let q = |e: postgres::Error| err!("{}", pg_error(&e));
    let data_checksums = c.query_one("SELECT current_setting('data_checksums') = 'on'", &[]).map_err(q)?.get(0);
    let mut inv = Inventory { data_checksums, ..Inventory::default() };
    let dbs = c
        .query("SELECT datname::text, pg_database_size(oid) FROM pg_database WHERE datallowconn ORDER BY datname", &[])
        .map_err(q)?;
    for row in dbs {
        let name: String = row.get(0);
        let mut dc = tls::connect(&in_db(info, &name), APP).map_err(|e| e.within(format!("database {}", name)))?;
        let rels = dc
            .query(
                "SELECT pg_relation_filepath(c.oid), n.nspname::text, c.relname::text, pg_relation_size(c.oid)
                   FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
                  WHERE c.relkind IN ('r', 'i', 't', 'm', 'S') AND pg_relation_filepath(c.oid) IS NOT NULL",
                &[],
            )
            .map_err(|e| err!("database {}: {}", name, pg_error(&e)))?;
        let mut db = Db { name: name.clone(), bytes: row.get(1), relations: rels.len() as i64, relation_bytes: 0 };
        for r in rels {
            let path: String = r.get(0);
            db.relation_bytes += r.get::<_, i64>(3);
            let what = format!("{}.{}.{}", name, r.get::<_, String>(1), r.get::<_, String>(2));
            inv.files.entry(path).or_insert(what);
        }
        inv.databases.push(db);
    }
    Ok(inv)
}

/// The relations named by relation file paths in `text` (base/..., global/..., pg_tblspc/...).
pub fn name_relations(text: &str, files: &BTreeMap<String, String>) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for start in ["base/", "global/", "pg_tblspc/"] {
        for (i, _) in text.match_indices(start) {
            let tail = &text[i..];
            let end = tail.find(|c: char| !(c.is_ascii_alphanumeric() || "_/.".contains(c))).unwrap_or(tail.len());
            let mut p = tail[..end].trim_end_matches('.');
            // A segment (".1") and a fork ("_fsm", "_vm", "_init") are the same relation.
            if let Some((head, seg)) = p.rsplit_once('.') {
                if seg.bytes().all(|b| b.is_ascii_digit()) {
                    p = head;
                }
            }
            for fork in ["_fsm", "_vm", "_init"] {
                p = p.strip_suffix(fork).unwrap_or(p);
            }
            if let Some(name) = files.get(p) {
                let s = format!("{} (file {})", name, p);
                if !out.contains(&s) {
                    out.push(s);
                }
            }
        }
    }
    out
}

/// The major version a PostgreSQL program prints, e.g. `pg_amcheck (PostgreSQL) 15.14`.
fn version_of(program: &Path) -> Option<u32> {
    let o = Command::new(program).arg("--version").output().ok().filter(|o| o.status.success())?;
    let text = String::from_utf8_lossy(&o.stdout);
    let v = text.split("PostgreSQL").nth(1)?.trim_start_matches([')', ' ']);
    v.split(|c: char| !c.is_ascii_digit()).next()?.parse().ok()
}

/// pg_amcheck (14+): the server's own bindir, else the newest Debian one.
fn find_pg_amcheck(bindir: &Path) -> Option<PathBuf> {
    let own = bindir.join("pg_amcheck");
    if own.is_file() && version_of(&own).is_some_and(|v| v >= 14) {
        return Some(own);
    }
    let mut debian: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| Some((e.file_name().to_str()?.parse::<u32>().ok()?, e.path().join("bin/pg_amcheck"))))
        .filter(|(v, p)| *v >= 14 && p.is_file())
        .collect();
    debian.sort();
    debian.pop().map(|(_, p)| p)
}

/// amcheck on every database. The extension is created where it is missing: this is the
/// scratch copy.
pub fn amcheck(bindir: &Path, info: &ConnInfo, v: i32, inv: &Inventory) -> (bool, Vec<String>) {
    if v >= 140000 {
        if let Some(tool) = find_pg_amcheck(bindir) {
            return pg_amcheck(&tool, info, inv);
        }
    }
    sql_amcheck(info, v, inv)
}

fn pg_amcheck(tool: &Path, info: &ConnInfo, inv: &Inventory) -> (bool, Vec<String>) {
    let mut cmd = Command::new(tool);
    cmd.args(["--all", "--install-missing", "--heapallindexed", "--no-password"]);
    for (flag, key) in [("-h", "host"), ("-p", "port"), ("-U", "user")] {
        if let Some(v) = info.get(key) {
            cmd.arg(flag).arg(v);
        }
    }
    for (k, _) in std::env::vars_os() {
        if k.to_string_lossy().starts_with("PG") {
            cmd.env_remove(k);
        }
    }
    let o = match cmd.output() {
        Ok(o) => o,
        Err(e) => return (false, vec![format!("cannot run {}: {}", tool.display(), e)]),
    };
    let text = format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr));
    let what = format!("{} --all --heapallindexed", tool.display());
    if o.status.success() && text.trim().is_empty() {
        let n: i64 = inv.databases.iter().map(|d| d.relations).sum();
        return (
            true,
            vec![format!("{}: no corruption in {} database(s), {} relations", what, inv.databases.len(), n)],
        );
    }
    let mut lines = vec![format!("{} found problems ({})", what, o.status)];
    lines.extend(name_relations(&text, &inv.files).into_iter().map(|r| format!("relation {}", r)));
    lines.extend(text.lines().filter(|l| !l.trim().is_empty()).take(20).map(|l| l.trim().to_string()));
    (false, lines)
}

/// Before 14 (or without pg_amcheck): bt_index_check on every B-tree index (with
/// heapallindexed from 11), and verify_heapam on every table from 14.
fn sql_amcheck(info: &ConnInfo, v: i32, inv: &Inventory) -> (bool, Vec<String>) {
    let call = if v >= 110000 { "bt_index_check(c.oid, true)" } else { "bt_index_check(c.oid)" };
    let (mut ok, mut lines, mut checked) = (true, Vec::new(), 0usize);
    for db in &inv.databases {
        let mut c = match tls::connect(&in_db(info, &db.name), APP) {
            Ok(c) => c,
            Err(e) => {
                ok = false;
                lines.push(format!("database {}: {}", db.name, e.msg));
                continue;
            }
        };
        if let Err(e) = c.batch_execute("CREATE EXTENSION IF NOT EXISTS amcheck") {
            ok = false;
            lines.push(format!("database {}: CREATE EXTENSION amcheck: {}", db.name, pg_error(&e)));
            continue;
        }
        let mut sql = vec![format!(
            "SELECT c.oid::regclass::text, 'index' FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid JOIN pg_am a ON a.oid = c.relam
              WHERE a.amname = 'btree' AND c.relpersistence <> 't' AND i.indisvalid AND i.indisready"
        )];
        // verify_heapam from 14; before, a sequential scan, which reads (and checksums) every
        // page (an index-only scan would read only the index of an all-visible table).
        if v < 140000 {
            let _ = c.batch_execute(
                "SET enable_indexonlyscan = off; SET enable_indexscan = off; SET enable_bitmapscan = off",
            );
        }
        let heap = if v >= 140000 { "heap" } else { "scan" };
        sql.push(format!(
            "SELECT c.oid::regclass::text, '{}' FROM pg_class c WHERE c.relkind IN ('r', 'm', 't') AND c.relpersistence <> 't'",
            heap
        ));
        for s in sql {
            let rels = match c.query(s.as_str(), &[]) {
                Ok(r) => r,
                Err(e) => {
                    ok = false;
                    lines.push(format!("database {}: {}", db.name, pg_error(&e)));
                    continue;
                }
            };
            for r in rels {
                let (rel, kind): (String, String) = (r.get(0), r.get(1));
                let res = match kind.as_str() {
                    "index" => c.query_one(
                        format!("SELECT count({}) FROM pg_class c WHERE c.oid = $1::text::regclass", call).as_str(),
                        &[&rel],
                    ),
                    "heap" => c.query_one("SELECT count(*) FROM verify_heapam($1::text::regclass)", &[&rel]),
                    // regclass's text is the quoted, schema-qualified name where needed.
                    _ => c.query_one(format!("SELECT count(*) FROM ONLY {}", rel).as_str(), &[]),
                };
                let problems = match (&res, kind.as_str()) {
                    (Ok(row), "heap") => row.get::<_, i64>(0),
                    (Ok(_), _) => 0,
                    (Err(_), _) => 1,
                };
                checked += 1;
                if problems > 0 {
                    ok = false;
                    let why = match res {
                        Err(e) => pg_error(&e),
                        Ok(_) => format!("verify_heapam reports {} problem(s)", problems),
                    };
                    let mut l = format!("relation {}.{}: {}", db.name, rel, why);
                    for n in name_relations(&why, &inv.files) {
                        l.push_str(&format!(" [{}]", n));
                    }
                    lines.push(l);
                }
            }
        }
    }
    if ok {
        lines.insert(
            0,
            format!(
                "amcheck ({}{}): {} relations in {} database(s), no corruption",
                call,
                if v >= 140000 { ", verify_heapam" } else { ", a full scan of every table" },
                checked,
                inv.databases.len()
            ),
        );
    }
    (ok, lines)
}

/// After the stop: pg_checksums --check (pg_verify_checksums on 11) as the owner.
/// Err(why) when it cannot run (checksums off, PostgreSQL 10, no such program): skipped.
pub fn checksums(
    bindir: &Path,
    pgdata: &Path,
    owner: (u32, u32),
    major: u32,
    inv: &Inventory,
) -> std::result::Result<(bool, Vec<String>), String> {
    if !inv.data_checksums {
        return Err("data checksums are off: nothing to verify offline".into());
    }
    let (tool, check) = match major {
        12.. => (bindir.join("pg_checksums"), true),
        11 => (bindir.join("pg_verify_checksums"), false),
        _ => return Err("PostgreSQL 10 has no offline checksum verifier".into()),
    };
    if !tool.is_file() {
        return Err(format!(
            "{} is not installed (the server's own major's program is needed): checksums not verified offline",
            tool.display()
        ));
    }
    let mut cmd = Command::new(&tool);
    if check {
        cmd.arg("--check");
    }
    cmd.arg("-D").arg(pgdata).current_dir("/");
    if nix::unistd::geteuid().is_root() && owner.0 != 0 {
        cmd.uid(owner.0).gid(owner.1);
    }
    let o = match cmd.output() {
        Ok(o) => o,
        Err(e) => return Ok((false, vec![format!("cannot run {}: {}", tool.display(), e)])),
    };
    let text = format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr));
    if o.status.success() {
        let scanned =
            text.lines().find(|l| l.starts_with("Blocks scanned")).map(|l| l.trim().to_string()).unwrap_or_default();
        return Ok((true, vec![format!("{} --check: no bad checksum ({})", tool.display(), scanned)]));
    }
    let mut lines = vec![format!("{} found bad checksums ({})", tool.display(), o.status)];
    lines.extend(name_relations(&text, &inv.files).into_iter().map(|r| format!("relation {}", r)));
    lines.extend(
        text.lines()
            .filter(|l| l.contains("error") || l.starts_with("Bad checksums"))
            .take(20)
            .map(|l| l.trim().to_string()),
    );
    Ok((false, lines))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_file_in_a_message_is_named_as_its_relation() {
        let mut files = BTreeMap::new();
        files.insert("base/5/16384".to_string(), "postgres.public.t".to_string());
        files.insert("global/1262".to_string(), "postgres.pg_catalog.pg_database".to_string());
        let msg =
            "pg_checksums: error: checksum verification failed in file \"/srv/base/data/base/5/16384.1\", block 0\n\
                   ERROR: invalid page in block 0 of relation base/5/16384_fsm.";
        assert_eq!(name_relations(msg, &files), vec!["postgres.public.t (file base/5/16384)"]);
        assert!(name_relations("relation base/5/999", &files).is_empty());
    }
}
