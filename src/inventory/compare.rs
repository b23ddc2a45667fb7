//! The proof of a restored copy against its node's inventories (pure: no file system).
//!
//! - *missing*: a file listed at start and at stop is not a file in the copy;
//! - *older*: a file's mtime in the copy (whole seconds) is before its mtime at start;
//! - *stale*: a path in neither inventory. A stale directory is one finding (it is moved
//!   as a whole); what lies below it is not listed again.
//!
//! Optional paths (temporary relations, unlogged non-init forks) are never missing, older
//! or stale: recovery resets them. Only files are compared: a directory or link that is of
//! another kind in the copy (pg_wal or a tablespace re-pointed) is restore-prep's links'
//! business, not a finding. Paths the exclude rules leave out never reach here (the
//! listings hold only [`super::listed`] paths).

use std::collections::{BTreeMap, BTreeSet};

use super::{optional_paths, Entry, Inventory, Kind};

/// A file the copy holds older than it was at start.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Older {
    pub path: String,
    pub copy_mtime: i64,
    pub start_mtime: i64,
}

/// A path of the copy in neither inventory.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Stale {
    pub path: String,
    pub kind: Kind,
}

/// What the comparison found.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Verdict {
    /// Files of the copy compared (for the report).
    pub files_checked: usize,
    pub missing: Vec<String>,
    pub older: Vec<Older>,
    pub stale: Vec<Stale>,
}

impl Verdict {
    /// Nothing would refuse the copy (stale paths are moved aside, not refused).
    pub fn proven(&self) -> bool {
        self.missing.is_empty() && self.older.is_empty()
    }
}

/// Compare the copy's listing (any order) to the inventories at start and stop.
pub fn compare(start: &Inventory, stop: &Inventory, copy: &[Entry]) -> Verdict {
    let copy: BTreeMap<&str, &Entry> = copy.iter().map(|e| (e.path.as_str(), e)).collect();
    let all = start.entries.iter().chain(&stop.entries).map(|e| e.path.as_str()).chain(copy.keys().copied());
    let optional = optional_paths(all.collect::<Vec<_>>());
    let mut v = Verdict {
        missing: missing(start, stop, &copy, &optional),
        older: older(start, &copy, &optional),
        stale: stale(start, stop, &copy, &optional),
        ..Verdict::default()
    };
    v.files_checked = copy.values().filter(|e| e.kind == Kind::File).count();
    v
}

/// Files at start and at stop that are not files in the copy.
fn missing(
    start: &Inventory,
    stop: &Inventory,
    copy: &BTreeMap<&str, &Entry>,
    optional: &BTreeSet<&str>,
) -> Vec<String> {
    start
        .entries
        .iter()
        .filter(|e| e.kind == Kind::File && !optional.contains(e.path.as_str()))
        .filter(|e| stop.get(&e.path).is_some_and(|s| s.kind == Kind::File))
        .filter(|e| copy.get(e.path.as_str()).is_none_or(|c| c.kind != Kind::File))
        .map(|e| e.path.clone())
        .collect()
}

/// Files of the copy whose mtime is before their mtime at start.
fn older(start: &Inventory, copy: &BTreeMap<&str, &Entry>, optional: &BTreeSet<&str>) -> Vec<Older> {
    start
        .entries
        .iter()
        .filter(|e| e.kind == Kind::File && !optional.contains(e.path.as_str()))
        .filter_map(|e| {
            let c = copy.get(e.path.as_str()).filter(|c| c.kind == Kind::File)?;
            (c.mtime < e.mtime).then(|| Older { path: e.path.clone(), copy_mtime: c.mtime, start_mtime: e.mtime })
        })
        .collect()
}

/// Paths of the copy in neither inventory; below a stale directory only the directory.
fn stale(start: &Inventory, stop: &Inventory, copy: &BTreeMap<&str, &Entry>, optional: &BTreeSet<&str>) -> Vec<Stale> {
    let mut out: Vec<Stale> = Vec::new();
    let mut stale_dir: Option<String> = None;
    for (path, e) in copy {
        if let Some(d) = &stale_dir {
            if path.len() > d.len() && path.starts_with(d.as_str()) && path.as_bytes()[d.len()] == b'/' {
                continue;
            }
        }
        if start.get(path).is_some() || stop.get(path).is_some() || optional.contains(path) {
            continue;
        }
        stale_dir = (e.kind == Kind::Dir).then(|| path.to_string());
        out.push(Stale { path: path.to_string(), kind: e.kind });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::super::Source;
    use super::*;

    fn f(path: &str, mtime: i64) -> Entry {
        Entry { path: path.into(), kind: Kind::File, size: 8192, mtime }
    }
    fn d(path: &str) -> Entry {
        Entry { path: path.into(), kind: Kind::Dir, size: 0, mtime: 1 }
    }
    fn l(path: &str) -> Entry {
        Entry { path: path.into(), kind: Kind::Link, size: 0, mtime: 1 }
    }
    fn inv(entries: Vec<Entry>) -> Inventory {
        let mut i = Inventory {
            source: Source::Local,
            taken_at: String::new(),
            databases: BTreeMap::new(),
            entries,
            names_only: false,
        };
        i.normalize();
        i
    }
    fn base() -> Vec<Entry> {
        vec![
            d("base"),
            d("base/5"),
            f("base/5/1259", 100),
            f("base/5/16400", 100),
            d("global"),
            f("global/pg_control", 100),
            d("pg_wal"),
        ]
    }

    #[test]
    fn a_good_copy_is_proven_with_nothing_stale() {
        let start = inv(base());
        let stop = inv(base()
            .into_iter()
            .map(|mut e| {
                e.mtime += 50;
                e
            })
            .collect());
        // The copy took some files before they changed, some after: never before start.
        let mut copy = base();
        copy[2].mtime = 120;
        let v = compare(&start, &stop, &copy);
        assert!(v.proven() && v.stale.is_empty(), "{:?}", v);
        assert_eq!(v.files_checked, 3);
    }

    #[test]
    fn a_file_at_start_and_stop_not_in_the_copy_is_missing() {
        let (start, stop) = (inv(base()), inv(base()));
        let copy: Vec<Entry> = base().into_iter().filter(|e| e.path != "base/5/16400").collect();
        let v = compare(&start, &stop, &copy);
        assert_eq!(v.missing, vec!["base/5/16400"]);
        assert!(!v.proven());
        // A directory where the file should be is no file either.
        let mut copy = base();
        copy[3] = d("base/5/16400");
        assert_eq!(compare(&start, &stop, &copy).missing, vec!["base/5/16400"]);
    }

    #[test]
    fn a_file_only_at_start_or_only_at_stop_may_be_absent() {
        let mut s = base();
        s.push(f("base/5/16500", 90)); // dropped during the backup
        let mut t = base();
        t.push(f("base/5/16400.1", 140)); // a new segment during the backup
        let v = compare(&inv(s), &inv(t), &base());
        assert!(v.proven() && v.stale.is_empty(), "{:?}", v);
    }

    #[test]
    fn a_file_older_than_at_start_is_older_newer_is_fine() {
        let (start, stop) = (inv(base()), inv(base()));
        let mut copy = base();
        copy[3].mtime = 99;
        copy[2].mtime = 500;
        let v = compare(&start, &stop, &copy);
        assert_eq!(v.older, vec![Older { path: "base/5/16400".into(), copy_mtime: 99, start_mtime: 100 }]);
        assert!(v.missing.is_empty() && !v.proven());
    }

    #[test]
    fn stale_paths_and_a_stale_directory_as_a_whole() {
        let (start, stop) = (inv(base()), inv(base()));
        let mut copy = base();
        copy.extend([
            f("base/5/16999", 200),
            d("base/16384"),
            f("base/16384/1259", 1),
            f("base/16384/2", 1),
            l("base/5/odd"),
        ]);
        copy.push(d("base/163840")); // not below base/16384
        let v = compare(&start, &stop, &copy);
        let got: Vec<(&str, Kind)> = v.stale.iter().map(|s| (s.path.as_str(), s.kind)).collect();
        assert_eq!(
            got,
            vec![
                ("base/16384", Kind::Dir),
                ("base/163840", Kind::Dir),
                ("base/5/16999", Kind::File),
                ("base/5/odd", Kind::Link)
            ]
        );
        assert!(v.proven(), "stale paths are moved aside, not refused");
    }

    #[test]
    fn optional_paths_are_never_findings() {
        let mut s = base();
        s.extend([f("base/5/17000_init", 100), f("base/5/17000", 100), f("base/5/t3_17001", 100)]);
        let (start, stop) = (inv(s.clone()), inv(s));
        let mut copy = base();
        copy.push(f("base/5/17000_init", 100));
        copy.push(f("base/5/t4_18000", 1)); // a temporary relation of another session: optional
        let v = compare(&start, &stop, &copy);
        assert!(v.proven() && v.stale.is_empty(), "{:?}", v);
        // The init fork itself is required.
        let v = compare(&start, &stop, &base());
        assert_eq!(v.missing, vec!["base/5/17000_init"]);
    }

    #[test]
    fn kind_differences_of_directories_and_links_are_not_findings() {
        let mut s = base();
        s.extend([d("pg_tblspc"), l("pg_tblspc/16385")]);
        let (start, stop) = (inv(s.clone()), inv(s));
        let mut copy = base();
        copy[6] = l("pg_wal"); // pg_wal a link in the copy
        copy.extend([d("pg_tblspc"), d("pg_tblspc/16385")]);
        let v = compare(&start, &stop, &copy);
        assert!(v.proven() && v.stale.is_empty(), "{:?}", v);
    }
}
