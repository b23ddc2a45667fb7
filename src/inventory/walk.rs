//! Listing a data directory on the local file system for an inventory, at pre and post (the
//! node's directory on this host) and at restore-prep (the restored copy).
//!
//! Run as root over a tree the data directory's owner controls: every directory is opened
//! below its parent's descriptor with O_NOFOLLOW and every entry is examined with
//! `fstatat(AT_SYMLINK_NOFOLLOW)`, so a link planted anywhere is listed as a link and never
//! followed. The one exception is what the server itself follows: `pg_tblspc/<oid>`, a
//! tablespace's link, whose target is listed as the directory it stands for. The root is
//! opened as named (the user or the server named it). Files that vanish while the listing
//! runs (a running server drops and recycles files) are simply not listed.

use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::os::fd::AsRawFd;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use nix::dir::Dir;
use nix::errno::Errno;
use nix::fcntl::{AtFlags, OFlag};
use nix::sys::stat::{fstatat, FileStat, Mode, SFlag};

use super::{listed, Entry, Kind};
use crate::error::Result;
use crate::exclude::{Rule, RULES};

const OPEN: OFlag = OFlag::O_RDONLY.union(OFlag::O_DIRECTORY).union(OFlag::O_CLOEXEC);

/// Every path below `root` that belongs in an inventory ([`listed`]), unsorted.
pub fn walk(root: &Path) -> Result<Vec<Entry>> {
    walk_mapped(root, &BTreeMap::new())
}

/// [`walk`] without sizes and mtimes (0): names and kinds from readdir's entry types, a stat
/// only where readdir does not say or for a tablespace link. What the stop inventory needs
/// (missing and stale are judged by names and kinds alone), at a fraction of the cost.
pub fn walk_names(root: &Path) -> Result<Vec<Entry>> {
    walk_with(root, &BTreeMap::new(), true)
}

/// [`walk`], with the tablespaces of `mapped` (oid -> directory) listed from where they will
/// be, not from where the copy's `pg_tblspc/<oid>` link points: a restored copy whose
/// tablespace goes to a new path (restore-prep's --tablespace-map) still has the original
/// server's link, which on the same host leads into production's tablespace.
pub fn walk_mapped(root: &Path, mapped: &BTreeMap<String, PathBuf>) -> Result<Vec<Entry>> {
    walk_with(root, mapped, false)
}

fn walk_with(root: &Path, mapped: &BTreeMap<String, PathBuf>, names_only: bool) -> Result<Vec<Entry>> {
    let top = Dir::open(root, OPEN, Mode::empty()).map_err(|e| err!("cannot open {}: {}", root.display(), e))?;
    let mut out = Vec::new();
    let mut stack: Vec<(Dir, String)> = vec![(top, String::new())];
    while let Some((mut dir, prefix)) = stack.pop() {
        let names = match crate::fsutil::dir_entries(&mut dir) {
            Ok(n) => n,
            Err(e) => return Err(err!("cannot list {}/{}: {}", root.display(), prefix, e)),
        };
        for (name, typ) in names {
            let rel = format!("{}{}", prefix, String::from_utf8_lossy(name.as_bytes()));
            if !listed(&rel) {
                continue;
            }
            let sub = match rel.strip_prefix("pg_tblspc/").and_then(|oid| mapped.get(oid)) {
                Some(to) => Some(open_mapped(&rel, to, &mut out)?),
                None if names_only => visit_typed(&dir, &name, typ, &rel, root, &mut out)?,
                None => visit(&dir, &name, &rel, root, &mut out)?,
            };
            if let Some(sub) = sub {
                stack.push((sub, format!("{}/", rel)));
            }
        }
    }
    Ok(out)
}

/// List one entry by the type readdir gave (no stat); [`visit`] where it gave none or for a
/// tablespace link.
fn visit_typed(
    dir: &Dir,
    name: &OsStr,
    typ: Option<nix::dir::Type>,
    rel: &str,
    root: &Path,
    out: &mut Vec<Entry>,
) -> Result<Option<Dir>> {
    use nix::dir::Type;
    let kind = match typ {
        Some(Type::File) => Kind::File,
        Some(Type::Directory) => Kind::Dir,
        Some(Type::Symlink) if !is_tablespace_link(rel) => Kind::Link,
        Some(Type::Symlink) | None => return visit(dir, name, rel, root, out),
        Some(_) => return Ok(None),
    };
    out.push(Entry { path: rel.to_string(), kind, size: 0, mtime: 0 });
    descend(dir, name, kind, rel, root)
}

/// The directory below a listed entry when the walk goes on there: a directory (never through
/// a link) whose contents a copy holds.
fn descend(dir: &Dir, name: &OsStr, kind: Kind, rel: &str, root: &Path) -> Result<Option<Dir>> {
    if kind != Kind::Dir || contents_left_out(rel) {
        return Ok(None);
    }
    open_below(dir, name, OPEN.union(OFlag::O_NOFOLLOW), rel, root)
}

/// List one entry; returns its directory when the walk goes on below it.
fn visit(dir: &Dir, name: &OsStr, rel: &str, root: &Path, out: &mut Vec<Entry>) -> Result<Option<Dir>> {
    let st = match fstatat(Some(dir.as_raw_fd()), name, AtFlags::AT_SYMLINK_NOFOLLOW) {
        Ok(st) => st,
        Err(Errno::ENOENT) => return Ok(None),
        Err(e) => return Err(err!("cannot stat {}/{}: {}", root.display(), rel, e)),
    };
    let fmt = SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT;
    if fmt == SFlag::S_IFLNK && is_tablespace_link(rel) {
        return follow_tablespace(dir, name, rel, root, out);
    }
    let kind = match fmt {
        SFlag::S_IFREG => Kind::File,
        SFlag::S_IFDIR => Kind::Dir,
        SFlag::S_IFLNK => Kind::Link,
        _ => return Ok(None),
    };
    out.push(entry(rel, kind, &st));
    descend(dir, name, kind, rel, root)
}

/// A tablespace link, followed as the server follows it: listed as the directory it names.
fn follow_tablespace(dir: &Dir, name: &OsStr, rel: &str, root: &Path, out: &mut Vec<Entry>) -> Result<Option<Dir>> {
    let st = match fstatat(Some(dir.as_raw_fd()), name, AtFlags::empty()) {
        Ok(st) => st,
        Err(Errno::ENOENT) => return Err(err!("{}/{}: the tablespace link points at nothing", root.display(), rel)),
        Err(e) => return Err(err!("cannot stat the tablespace {}/{}: {}", root.display(), rel, e)),
    };
    if SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT != SFlag::S_IFDIR {
        return Err(err!("{}/{}: the tablespace link does not point at a directory", root.display(), rel));
    }
    out.push(entry(rel, Kind::Dir, &st));
    open_below(dir, name, OPEN, rel, root)
}

/// A mapped tablespace: its directory, opened as named (the sidecar or the user named it).
fn open_mapped(rel: &str, to: &Path, out: &mut Vec<Entry>) -> Result<Dir> {
    let d = Dir::open(to, OPEN, Mode::empty())
        .map_err(|e| err!("cannot open tablespace {} at {}: {}", rel, to.display(), e))?;
    let st = nix::sys::stat::fstat(d.as_raw_fd()).map_err(|e| err!("cannot stat {}: {}", to.display(), e))?;
    out.push(entry(rel, Kind::Dir, &st));
    Ok(d)
}

fn open_below(dir: &Dir, name: &OsStr, flags: OFlag, rel: &str, root: &Path) -> Result<Option<Dir>> {
    match Dir::openat(Some(dir.as_raw_fd()), name, flags, Mode::empty()) {
        Ok(d) => Ok(Some(d)),
        Err(Errno::ENOENT) => Ok(None),
        Err(e) => Err(err!("cannot open {}/{}: {}", root.display(), rel, e)),
    }
}

fn entry(rel: &str, kind: Kind, st: &FileStat) -> Entry {
    let size = if kind == Kind::File { st.st_size as u64 } else { 0 };
    Entry { path: rel.to_string(), kind, size, mtime: st.st_mtime }
}

/// `pg_tblspc/<oid>`: the only links the server follows (pg_wal's contents are never listed).
fn is_tablespace_link(rel: &str) -> bool {
    rel.strip_prefix("pg_tblspc/").is_some_and(|oid| !oid.is_empty() && oid.bytes().all(|b| b.is_ascii_digit()))
}

/// A directory whose contents a copy leaves out (pg_wal, pg_replslot, ...): listed, not entered.
fn contents_left_out(rel: &str) -> bool {
    RULES.iter().any(|r| matches!(r, Rule::Contents(d) if *d == rel))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;
    use std::fs;
    use std::os::unix::fs::symlink;

    fn kinds(entries: &[Entry]) -> BTreeMap<String, Kind> {
        entries.iter().map(|e| (e.path.clone(), e.kind)).collect()
    }

    #[test]
    fn lists_what_a_copy_holds_and_follows_only_tablespace_links() {
        let t = tempfile::tempdir().unwrap();
        let pg = t.path().join("pgdata");
        let ts = t.path().join("ts");
        let secret = t.path().join("secret");
        for d in ["base/5", "global", "pg_wal/archive_status", "pg_tblspc", "pg_stat_tmp", "base/pgsql_tmp"] {
            fs::create_dir_all(pg.join(d)).unwrap();
        }
        fs::create_dir_all(ts.join("PG_15_1/5")).unwrap();
        fs::create_dir_all(&secret).unwrap();
        fs::write(secret.join("key"), "x").unwrap();
        fs::write(pg.join("base/5/1259"), vec![0u8; 8192]).unwrap();
        fs::write(pg.join("global/pg_control"), vec![0u8; 8192]).unwrap();
        fs::write(pg.join("pg_wal/000000010000000000000001"), "w").unwrap();
        fs::write(pg.join("pg_stat_tmp/global.stat"), "s").unwrap();
        fs::write(pg.join("base/pgsql_tmp/pgsql_tmp1.0"), "t").unwrap();
        fs::write(pg.join("postmaster.pid"), "1").unwrap();
        fs::write(ts.join("PG_15_1/5/16400"), "r").unwrap();
        symlink(&ts, pg.join("pg_tblspc/16385")).unwrap();
        // Planted links: a directory link and a file link, never followed.
        symlink(&secret, pg.join("base/5/planted")).unwrap();
        symlink(secret.join("key"), pg.join("global/planted_file")).unwrap();

        let got = walk(&pg).unwrap();
        let k = kinds(&got);
        let want: BTreeMap<String, Kind> = [
            ("base", Kind::Dir),
            ("base/5", Kind::Dir),
            ("base/5/1259", Kind::File),
            ("base/5/planted", Kind::Link),
            ("global", Kind::Dir),
            ("global/pg_control", Kind::File),
            ("global/planted_file", Kind::Link),
            ("pg_wal", Kind::Dir),
            ("pg_tblspc", Kind::Dir),
            ("pg_tblspc/16385", Kind::Dir),
            ("pg_tblspc/16385/PG_15_1", Kind::Dir),
            ("pg_tblspc/16385/PG_15_1/5", Kind::Dir),
            ("pg_tblspc/16385/PG_15_1/5/16400", Kind::File),
            ("pg_stat_tmp", Kind::Dir),
        ]
        .into_iter()
        .map(|(p, k)| (p.to_string(), k))
        .collect();
        assert_eq!(k, want);
        let rel = got.iter().find(|e| e.path == "base/5/1259").unwrap();
        assert_eq!(rel.size, 8192);
        assert!(rel.mtime > 1_600_000_000);
        // Names only: the same paths and kinds (planted links still links, the tablespace
        // still followed), no sizes or mtimes.
        let names = walk_names(&pg).unwrap();
        assert_eq!(kinds(&names), want);
        assert!(names.iter().filter(|e| e.kind == Kind::File).all(|e| e.size == 0 && e.mtime == 0), "{names:?}");
    }

    #[test]
    fn a_mapped_tablespace_is_listed_from_its_new_place_not_through_the_copys_link() {
        let t = tempfile::tempdir().unwrap();
        let pg = t.path().join("pgdata");
        let production = t.path().join("prod_ts");
        let moved = t.path().join("moved_ts");
        fs::create_dir_all(pg.join("pg_tblspc")).unwrap();
        fs::create_dir_all(production.join("PG_15_1/5")).unwrap();
        fs::create_dir_all(moved.join("PG_15_1/5")).unwrap();
        fs::write(production.join("PG_15_1/5/1"), "production").unwrap();
        fs::write(moved.join("PG_15_1/5/2"), "restored").unwrap();
        symlink(&production, pg.join("pg_tblspc/16385")).unwrap();
        let map: BTreeMap<String, PathBuf> = [("16385".to_string(), moved.clone())].into_iter().collect();
        let k = kinds(&walk_mapped(&pg, &map).unwrap());
        assert!(k.contains_key("pg_tblspc/16385/PG_15_1/5/2"), "{:?}", k);
        assert!(!k.contains_key("pg_tblspc/16385/PG_15_1/5/1"), "production's tablespace was listed: {:?}", k);
        assert_eq!(k.get("pg_tblspc/16385"), Some(&Kind::Dir));
        // Not mapped: the link is followed as the server follows it.
        assert!(kinds(&walk(&pg).unwrap()).contains_key("pg_tblspc/16385/PG_15_1/5/1"));
    }

    #[test]
    fn a_dangling_tablespace_link_is_an_error_naming_it() {
        let t = tempfile::tempdir().unwrap();
        let pg = t.path().join("pgdata");
        fs::create_dir_all(pg.join("pg_tblspc")).unwrap();
        symlink(t.path().join("gone"), pg.join("pg_tblspc/16385")).unwrap();
        let e = walk(&pg).unwrap_err().to_string();
        assert!(e.contains("pg_tblspc/16385") && e.contains("points at nothing"), "{}", e);
    }
}
