//! The inventory: every file of a node that a copy must or may hold, with its size and mtime,
//! recorded right after the backup starts and again right after it stops, so that restore-prep
//! can prove that a restored copy is complete and all of this backup.
//!
//! - this file: the model ([`Inventory`], [`Entry`]), which paths belong in it (the exclude
//!   rules' complement, [`listed`]), which are optional ([`optional_paths`]), and the stored
//!   form ([`Inventory::encode`] / [`Inventory::decode`]: zstd-compressed text).
//! - [`walk`]: listing a data directory (and its tablespaces) on the local file system without
//!   following any link but the tablespace links the server follows.
//!
//! Paths are relative to the data directory, `/`-separated; a tablespace's files are under
//! `pg_tblspc/<oid>/`, as the server reaches them through its link.

pub mod compare;
pub mod source;
pub mod sql;
pub mod walk;

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use crate::error::{Context, Result};
use crate::exclude::{Rule, RULES};

/// The version of the stored form; a reader refuses any other.
pub const FORMAT_VERSION: u32 = 1;

/// Where an inventory was read from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Source {
    /// The node's data directory on this host's file system.
    Local,
    /// `pg_ls_dir`/`pg_stat_file` over the helper's session.
    Sql,
}

impl Source {
    pub fn as_str(self) -> &'static str {
        match self {
            Source::Local => "local",
            Source::Sql => "sql",
        }
    }
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What a listed path is. Links other than tablespace links are listed, never followed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Kind {
    File,
    Dir,
    Link,
}

impl Kind {
    fn letter(self) -> char {
        match self {
            Kind::File => 'f',
            Kind::Dir => 'd',
            Kind::Link => 'l',
        }
    }
    fn from_letter(c: &str) -> Option<Kind> {
        match c {
            "f" => Some(Kind::File),
            "d" => Some(Kind::Dir),
            "l" => Some(Kind::Link),
            _ => None,
        }
    }
}

/// One listed path.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    /// Relative to the data directory, `/`-separated, no leading `/`.
    pub path: String,
    pub kind: Kind,
    /// Bytes (0 for directories and links).
    pub size: u64,
    /// Modification time, whole seconds since the epoch.
    pub mtime: i64,
}

/// One node's files at one moment.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Inventory {
    pub source: Source,
    /// When the listing started (RFC 3339).
    pub taken_at: String,
    /// Database names by oid (the `base/<oid>` and tablespace directories), when known.
    pub databases: BTreeMap<u32, String>,
    /// Sorted by path, no duplicates.
    pub entries: Vec<Entry>,
    /// Names and kinds only, sizes and mtimes 0 (a local stop inventory: missing and stale
    /// need nothing more); stored as `detail=names` in the header.
    pub names_only: bool,
}

/// Files a copy of a running cluster holds or leaves out that an inventory never requires
/// nor calls stale, because restore-prep itself writes or removes them.
pub const RESTORE_CONTROL_FILES: &[&str] = &[
    "recovery.signal",
    "standby.signal",
    "recovery.conf",
    "backup_label.old",
    "tablespace_map.old",
    RESTORE_RECORD_FILE,
];

/// restore-prep's record for restore-check (src/restore/record.rs).
pub const RESTORE_RECORD_FILE: &str = "pg-backup-hooks-restore.json";

/// Does `path` belong in an inventory: a file or directory a copy must or may hold? The
/// exclude rules' complement: a `Contents` directory itself is listed, what it holds is not;
/// the restore control files are not listed either.
pub fn listed(path: &str) -> bool {
    // Called for every entry of every listing: no allocation.
    let (first, nested) = match path.split_once('/') {
        Some((f, _)) => (f, true),
        None => (path, false),
    };
    if !nested && RESTORE_CONTROL_FILES.contains(&first) {
        return false;
    }
    for r in RULES {
        match *r {
            Rule::Contents(d) => {
                if nested && first == d {
                    return false;
                }
            }
            Rule::TopFile(f) => {
                if !nested && first == f {
                    return false;
                }
            }
            Rule::AnyDepth(p) => {
                if path.split('/').any(|c| glob(p, c)) {
                    return false;
                }
            }
        }
    }
    true
}

/// `*` matches any run of characters; nothing else is special (the exclude rules' patterns).
fn glob(pattern: &str, name: &str) -> bool {
    match pattern.split_once('*') {
        None => pattern == name,
        // One star (every rule today): a prefix and a suffix that do not overlap.
        Some((pre, rest)) if !rest.contains('*') => {
            name.len() >= pre.len() + rest.len() && name.starts_with(pre) && name.ends_with(rest)
        }
        Some((pre, rest)) => {
            let Some(tail) = name.strip_prefix(pre) else { return false };
            (0..=tail.len()).any(|i| tail.is_char_boundary(i) && glob(rest, &tail[i..]))
        }
    }
}

/// The relation file name's parts: `<relfilenode>[_<fork>][.<segment>]`, or `t<backend>_...`
/// for a temporary relation.
fn relation_parts(name: &str) -> Option<(bool, &str, Option<&str>)> {
    let (temp, rest) = match name.strip_prefix('t') {
        Some(r) => {
            let (_, r) = r.split_once('_')?;
            (true, r)
        }
        None => (false, name),
    };
    let base = rest.split('.').next()?;
    let (node, fork) = match base.split_once('_') {
        Some((n, f)) => (n, Some(f)),
        None => (base, None),
    };
    (!node.is_empty() && node.bytes().all(|b| b.is_ascii_digit())).then_some((temp, node, fork))
}

/// Is `path` inside a database directory (`base/<oid>/` or a tablespace's
/// `pg_tblspc/<oid>/<version dir>/<oid>/`)? Returns the directory's prefix and the file name.
pub fn in_database_dir(path: &str) -> Option<(&str, &str)> {
    let (dir, name) = path.rsplit_once('/')?;
    let comps: Vec<&str> = dir.split('/').collect();
    let ok = match comps.as_slice() {
        ["base", db] => db.bytes().all(|b| b.is_ascii_digit()),
        ["pg_tblspc", ts, _, db] => ts.bytes().all(|b| b.is_ascii_digit()) && db.bytes().all(|b| b.is_ascii_digit()),
        _ => false,
    };
    ok.then_some((dir, name))
}

/// The paths among `paths` a copy may hold or not: temporary relations, and every fork but
/// the init fork of an unlogged relation (one whose `<relfilenode>_init` file is listed
/// beside it); recovery resets them either way.
pub fn optional_paths<'a>(paths: impl IntoIterator<Item = &'a str> + Clone) -> BTreeSet<&'a str> {
    let mut unlogged: BTreeSet<(&str, &str)> = BTreeSet::new();
    for p in paths.clone() {
        if let Some((dir, name)) = in_database_dir(p) {
            if let Some((false, node, Some("init"))) = relation_parts(name) {
                unlogged.insert((dir, node));
            }
        }
    }
    let mut out = BTreeSet::new();
    for p in paths {
        let Some((dir, name)) = in_database_dir(p) else { continue };
        match relation_parts(name) {
            Some((true, _, _)) => {
                out.insert(p);
            }
            Some((false, node, fork)) if fork != Some("init") && unlogged.contains(&(dir, node)) => {
                out.insert(p);
            }
            _ => {}
        }
    }
    out
}

/// What a path is, for people: the database (by name when known), the relation file, or
/// the directory. E.g. `base/16384/16397 (relation file 16397 of database app)`.
pub fn describe(path: &str, databases: &BTreeMap<u32, String>) -> String {
    let db_name = |oid: &str| match oid.parse::<u32>().ok().and_then(|o| databases.get(&o)) {
        Some(n) => format!("database {}", n),
        None => format!("database oid {}", oid),
    };
    if let Some((dir, name)) = in_database_dir(path) {
        let db = db_name(dir.rsplit('/').next().unwrap_or(""));
        return match relation_parts(name) {
            Some((_, node, fork)) => {
                let fork = fork.map(|f| format!(" ({} fork)", f)).unwrap_or_default();
                format!("{} (relation file {}{} of {})", path, node, fork, db)
            }
            None => format!("{} (file of {})", path, db),
        };
    }
    let comps: Vec<&str> = path.split('/').collect();
    match comps.as_slice() {
        ["base", db] => format!("{} (directory of {})", path, db_name(db)),
        [top, ..] if comps.len() > 1 => format!("{} (in {})", path, top),
        _ => path.to_string(),
    }
}

/// `\` and newline escaped, so that a path is one line and its last field.
fn escape(s: &str) -> String {
    s.replace('\\', "\\\\").replace('\n', "\\n").replace('\r', "\\r")
}

fn unescape(s: &str) -> Option<String> {
    let mut out = String::with_capacity(s.len());
    let mut it = s.chars();
    while let Some(c) = it.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match it.next()? {
            '\\' => out.push('\\'),
            'n' => out.push('\n'),
            'r' => out.push('\r'),
            _ => return None,
        }
    }
    Some(out)
}

const MAGIC: &str = "pg-backup-hooks inventory";

impl Inventory {
    /// Sort the entries by path and drop duplicates (a walk's or a query's order is not ours).
    pub fn normalize(&mut self) {
        self.entries.sort_by(|a, b| a.path.cmp(&b.path));
        self.entries.dedup_by(|a, b| a.path == b.path);
    }

    /// The entry for `path`, if listed (entries must be normalized).
    pub fn get(&self, path: &str) -> Option<&Entry> {
        self.entries.binary_search_by(|e| e.path.as_str().cmp(path)).ok().map(|i| &self.entries[i])
    }

    /// The stored form: text (a header line, `db OID NAME` lines, then `KIND SIZE MTIME PATH`
    /// lines with the path last and escaped), zstd-compressed.
    pub fn encode(&self) -> Result<Vec<u8>> {
        let mut text = String::with_capacity(self.entries.len() * 40 + 256);
        text.push_str(&format!(
            "{} {} source={} taken_at={}{}\n",
            MAGIC,
            FORMAT_VERSION,
            self.source,
            escape(&self.taken_at),
            if self.names_only { " detail=names" } else { "" }
        ));
        for (oid, name) in &self.databases {
            text.push_str(&format!("db {} {}\n", oid, escape(name)));
        }
        for e in &self.entries {
            text.push_str(&format!("{} {} {} {}\n", e.kind.letter(), e.size, e.mtime, escape(&e.path)));
        }
        zstd::bulk::compress(text.as_bytes(), 3).context(|| "cannot compress the inventory".to_string())
    }

    /// Read the stored form back; `what` names it in errors (e.g. the sidecar file's path).
    pub fn decode(data: &[u8], what: &str) -> Result<Inventory> {
        let raw =
            zstd::stream::decode_all(data).context(|| format!("{}: not a compressed inventory (damaged?)", what))?;
        let text = String::from_utf8(raw).map_err(|_| err!("{}: the inventory is not UTF-8 text (damaged?)", what))?;
        let mut lines = text.lines();
        let (source, taken_at, names_only) = parse_header(lines.next().unwrap_or(""), what)?;
        let mut inv = Inventory { source, taken_at, databases: BTreeMap::new(), entries: Vec::new(), names_only };
        for (i, line) in lines.enumerate() {
            let bad = || err!("{}: inventory line {} is not readable: {:?}", what, i + 2, line);
            if let Some(rest) = line.strip_prefix("db ") {
                let (oid, name) = rest.split_once(' ').ok_or_else(bad)?;
                inv.databases.insert(oid.parse().map_err(|_| bad())?, unescape(name).ok_or_else(bad)?);
                continue;
            }
            let mut f = line.splitn(4, ' ');
            let kind = f.next().and_then(Kind::from_letter).ok_or_else(bad)?;
            let size = f.next().and_then(|s| s.parse().ok()).ok_or_else(bad)?;
            let mtime = f.next().and_then(|s| s.parse().ok()).ok_or_else(bad)?;
            let path = f.next().and_then(unescape).ok_or_else(bad)?;
            inv.entries.push(Entry { path, kind, size, mtime });
        }
        inv.normalize();
        Ok(inv)
    }
}

fn parse_header(line: &str, what: &str) -> Result<(Source, String, bool)> {
    let rest = line.strip_prefix(MAGIC).ok_or_else(|| err!("{}: not a pg-backup-hooks inventory", what))?;
    let mut f = rest.split_whitespace();
    let version: u32 = f.next().and_then(|v| v.parse().ok()).unwrap_or(0);
    if version != FORMAT_VERSION {
        return Err(err!(
            "{}: inventory format {} (this build reads {}): use the pg-backup-hooks version that wrote it",
            what,
            version,
            FORMAT_VERSION
        ));
    }
    let mut source = None;
    let mut taken_at = String::new();
    let mut names_only = false;
    for kv in f {
        match kv.split_once('=') {
            Some(("source", "local")) => source = Some(Source::Local),
            Some(("source", "sql")) => source = Some(Source::Sql),
            Some(("taken_at", t)) => taken_at = unescape(t).unwrap_or_default(),
            Some(("detail", "names")) => names_only = true,
            _ => {}
        }
    }
    let source = source.ok_or_else(|| err!("{}: the inventory does not say where it was read from", what))?;
    Ok((source, taken_at, names_only))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn e(path: &str, kind: Kind, size: u64, mtime: i64) -> Entry {
        Entry { path: path.into(), kind, size, mtime }
    }

    #[test]
    fn the_stored_form_reads_back_exactly() {
        let mut inv = Inventory {
            source: Source::Sql,
            taken_at: "2026-12-03T16:00:00Z".into(),
            databases: [(5, "postgres".to_string()), (16384, "a b\\c".to_string())].into_iter().collect(),
            entries: vec![
                e("base/16384/16397", Kind::File, 8192, 1_700_000_000),
                e("base", Kind::Dir, 0, 1_700_000_001),
                e("odd name\nwith newline\\", Kind::File, 1, -5),
                e("pg_tblspc/16385", Kind::Dir, 0, 3),
                e("conf.link", Kind::Link, 0, 4),
            ],
            names_only: false,
        };
        inv.normalize();
        let data = inv.encode().unwrap();
        assert_eq!(Inventory::decode(&data, "x").unwrap(), inv);
        inv.names_only = true;
        assert_eq!(Inventory::decode(&inv.encode().unwrap(), "x").unwrap(), inv, "detail=names reads back");
        assert!(inv.get("base/16384/16397").is_some());
        assert!(inv.get("base/16384").is_none());
    }

    #[test]
    fn damaged_or_foreign_data_is_refused_with_its_name() {
        let err = Inventory::decode(b"not zstd", "/s/ID/a/inventory-start.zst").unwrap_err();
        assert!(err.to_string().contains("/s/ID/a/inventory-start.zst"), "{}", err);
        let other = zstd::bulk::compress(b"pg-backup-hooks inventory 9 source=local\n", 3).unwrap();
        assert!(Inventory::decode(&other, "x").unwrap_err().to_string().contains("format 9"));
        let bad_line = zstd::bulk::compress(b"pg-backup-hooks inventory 1 source=local\nf x 1 p\n", 3).unwrap();
        assert!(Inventory::decode(&bad_line, "x").unwrap_err().to_string().contains("line 2"));
    }

    #[test]
    fn listed_is_the_complement_of_the_exclude_rules() {
        for p in [
            "base/1/1259",
            "global/pg_control",
            "pg_wal",
            "pg_replslot",
            "PG_VERSION",
            "postgresql.auto.conf",
            "pg_tblspc/16385/PG_15_202209061/5/16390",
        ] {
            assert!(listed(p), "{}", p);
        }
        for p in [
            "pg_wal/000000010000000000000001",
            "pg_wal/archive_status",
            "pg_replslot/s/state",
            "postmaster.pid",
            "backup_label",
            "tablespace_map",
            "base/pgsql_tmp",
            "base/pgsql_tmp/pgsql_tmp123.0",
            "global/pg_internal.init",
            "postgresql.auto.conf.tmp",
            "recovery.signal",
            "standby.signal",
        ] {
            assert!(!listed(p), "{}", p);
        }
    }

    #[test]
    fn temporary_relations_and_unlogged_forks_are_optional_but_not_init_forks() {
        let paths = [
            "base/5/16400",
            "base/5/16400_init",
            "base/5/16400_fsm",
            "base/5/16400.1",
            "base/5/16401",
            "base/5/t3_16402",
            "base/5/t3_16402_fsm",
            "pg_tblspc/16385/PG_15_202209061/5/16410_init",
            "pg_tblspc/16385/PG_15_202209061/5/16410",
            "base/6/16400",
            "global/16400",
        ];
        let opt = optional_paths(paths.iter().copied());
        let want: BTreeSet<&str> = [
            "base/5/16400",
            "base/5/16400_fsm",
            "base/5/16400.1",
            "base/5/t3_16402",
            "base/5/t3_16402_fsm",
            "pg_tblspc/16385/PG_15_202209061/5/16410",
        ]
        .into_iter()
        .collect();
        assert_eq!(opt, want);
    }

    #[test]
    fn paths_are_described_for_people() {
        let dbs: BTreeMap<u32, String> = [(16384, "app".to_string())].into_iter().collect();
        assert_eq!(describe("base/16384/16397", &dbs), "base/16384/16397 (relation file 16397 of database app)");
        assert_eq!(
            describe("base/16385/16397_vm", &dbs),
            "base/16385/16397_vm (relation file 16397 (vm fork) of database oid 16385)"
        );
        assert_eq!(describe("base/16384", &dbs), "base/16384 (directory of database app)");
        assert_eq!(describe("global/pg_control", &dbs), "global/pg_control (in global)");
        assert_eq!(describe("PG_VERSION", &dbs), "PG_VERSION");
    }
}
