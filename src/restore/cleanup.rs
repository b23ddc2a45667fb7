//! What must not survive into a restored cluster, found before anything is removed.
//!
//! * postmaster.pid (stale; checked by `checks`), postmaster.opts, backup_manifest;
//! * pg_wal: every file except `*.history`, every entry of archive_status/ and summaries/
//!   (the directories stay). The archive is the source of WAL now: segments copied from a
//!   live server may be torn, and stale `.ready` files would re-archive them. Timeline
//!   history files are kept: they are written once, atomically, and describe this copy's own
//!   timelines (useful when the archive has been pruned of them);
//! * the contents (not the directories) of pg_replslot, pg_dynshmem, pg_notify, pg_serial,
//!   pg_snapshots, pg_stat_tmp, pg_subtrans;
//! * anywhere in the data directory and in the tablespaces: `pgsql_tmp*`,
//!   `pg_internal.init*` and `*.tmp` files.
//!
//! Symbolic links are never followed, neither while walking nor while removing: a directory
//! this module empties that is a link is refused (see [`entries`]), and [`remove`] works
//! through directory descriptors opened with O_NOFOLLOW, so a link planted anywhere is
//! removed itself and its target is never touched. pg_wal and the tablespaces are cleaned at
//! the real directories [`crate::restore::links`] chose (never through the copy's links).

use std::fs;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::fsutil;

const EMPTIED_DIRS: &[&str] =
    &["pg_replslot", "pg_dynshmem", "pg_notify", "pg_serial", "pg_snapshots", "pg_stat_tmp", "pg_subtrans"];
const TOP_FILES: &[&str] = &["postmaster.opts", "backup_manifest"];

/// The entries of a real directory (none when it does not exist). A link is refused: the
/// copy's own directories are emptied, never what a link points at.
fn entries(dir: &Path) -> Result<Vec<fs::DirEntry>> {
    match fs::symlink_metadata(dir) {
        Ok(m) if m.file_type().is_symlink() => {
            let target = fs::read_link(dir).map(|t| t.display().to_string()).unwrap_or_else(|_| "?".into());
            return Err(err!(
                "{} is a symbolic link to {}: restore-prep empties this directory and never follows a link; replace the link with an empty directory owned by the data directory's owner",
                dir.display(),
                target
            ));
        }
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(err!("cannot stat {}: {}", dir.display(), e)),
    }
    let rd = match fs::read_dir(dir) {
        Ok(rd) => rd,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(err!("cannot list {}: {}", dir.display(), e)),
    };
    let mut v = Vec::new();
    for e in rd {
        v.push(e.map_err(|e| err!("cannot list {}: {}", dir.display(), e))?);
    }
    v.sort_by_key(|e| e.file_name());
    Ok(v)
}

fn is_temp_name(name: &str, is_dir: bool) -> bool {
    name.starts_with("pgsql_tmp") || (!is_dir && (name.starts_with("pg_internal.init") || name.ends_with(".tmp")))
}

/// Walk without following symlinks; collect temp entries (a matching directory is taken whole).
fn walk_temp(dir: &Path, out: &mut Vec<PathBuf>, skip: &[PathBuf]) -> Result<()> {
    for e in entries(dir)? {
        let path = e.path();
        if skip.contains(&path) {
            continue;
        }
        let ft = e.file_type().map_err(|err| err!("cannot stat {}: {}", path.display(), err))?;
        let name = e.file_name().to_string_lossy().to_string();
        if ft.is_symlink() {
            // A temporary name that is a link goes itself (its target is never touched).
            if is_temp_name(&name, false) {
                out.push(path);
            }
            continue;
        }
        if is_temp_name(&name, ft.is_dir()) {
            out.push(path);
        } else if ft.is_dir() {
            walk_temp(&path, out, skip)?;
        }
    }
    Ok(())
}

/// Everything to remove, in a stable order. `wal` is the real directory behind pg_wal (see
/// [`crate::restore::links`]); `tablespaces` are the final mapped paths.
pub fn find(
    pgdata: &Path,
    wal: &Path,
    stale_pid: bool,
    tablespaces: &[PathBuf],
    remove_tablespace_map: bool,
) -> Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    if stale_pid {
        out.push(pgdata.join("postmaster.pid"));
    }
    for f in TOP_FILES {
        let p = pgdata.join(f);
        if fs::symlink_metadata(&p).is_ok() {
            out.push(p);
        }
    }
    if remove_tablespace_map && fs::symlink_metadata(pgdata.join("tablespace_map")).is_ok() {
        out.push(pgdata.join("tablespace_map"));
    }
    for e in entries(wal)? {
        let name = e.file_name().to_string_lossy().to_string();
        let is_dir = e.file_type().map(|t| t.is_dir()).unwrap_or(false);
        if is_dir {
            if name == "archive_status" || name == "summaries" {
                out.extend(entries(&e.path())?.iter().map(|x| x.path()));
            }
            continue;
        }
        if name.ends_with(".history") {
            continue;
        }
        out.push(e.path());
    }
    for d in EMPTIED_DIRS {
        out.extend(entries(&pgdata.join(d))?.iter().map(|x| x.path()));
    }
    let skip: Vec<PathBuf> =
        std::iter::once(pgdata.join("pg_wal")).chain(EMPTIED_DIRS.iter().map(|d| pgdata.join(d))).collect();
    walk_temp(pgdata, &mut out, &skip)?;
    for ts in tablespaces {
        walk_temp(ts, &mut out, &[])?;
    }
    Ok(out)
}

/// Remove what `find` listed. Each path lies below one of `roots` (the data directory, the
/// WAL directory, the tablespaces): it is reached from there one directory descriptor at a
/// time without following links, and removed without following links (fsutil::remove_at).
/// Each parent directory is fsynced once.
pub fn remove(roots: &[PathBuf], paths: &[PathBuf]) -> Result<()> {
    let mut open: Option<(PathBuf, nix::dir::Dir)> = None;
    for p in paths {
        let (root, rel) = split_root(roots, p)?;
        let (Some(parent), Some(name)) = (rel.parent(), rel.file_name()) else {
            return Err(err!("refusing to remove {}: it is not below the directory it was found in", p.display()));
        };
        let parent_path = root.join(parent);
        if open.as_ref().map(|(d, _)| d != &parent_path).unwrap_or(true) {
            sync_open(&mut open)?;
            let dir = fsutil::open_dir_below(root, parent).map_err(|e| not_followed(&parent_path, e))?;
            open = Some((parent_path.clone(), dir));
        }
        if let Some((_, dir)) = open.as_mut() {
            match fsutil::remove_at(dir, name) {
                Ok(()) | Err(nix::errno::Errno::ENOENT) => {}
                Err(e) => return Err(not_followed(p, e)),
            }
        }
    }
    sync_open(&mut open)
}

fn sync_open(open: &mut Option<(PathBuf, nix::dir::Dir)>) -> Result<()> {
    if let Some((path, dir)) = open.take() {
        fsutil::fsync_dir_fd(&dir).map_err(|e| err!("cannot fsync directory {}: {}", path.display(), e))?;
    }
    Ok(())
}

/// The deepest root `p` lies below, and the rest of the path.
fn split_root<'a>(roots: &'a [PathBuf], p: &'a Path) -> Result<(&'a Path, &'a Path)> {
    roots
        .iter()
        .filter_map(|r| p.strip_prefix(r).ok().map(|rel| (r.as_path(), rel)))
        .filter(|(_, rel)| rel.components().count() > 0)
        .max_by_key(|(r, _)| r.components().count())
        .ok_or_else(|| err!("refusing to remove {}: it is outside the directories restore-prep cleans", p.display()))
}

fn not_followed(p: &Path, e: nix::errno::Errno) -> Error {
    let why = match e {
        nix::errno::Errno::ELOOP | nix::errno::Errno::ENOTDIR => {
            "a symbolic link is in the way (restore-prep never follows one): replace it with the directory it stands for".to_string()
        }
        e => e.desc().to_string(),
    };
    err!("cannot remove {}: {}", p.display(), why)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_what_must_go_and_keeps_the_rest() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path();
        for dir in [
            "pg_wal/archive_status",
            "pg_replslot/slot1",
            "pg_stat_tmp",
            "base/1/sub",
            "base/pgsql_tmp",
            "global",
            "pg_xact",
        ] {
            fs::create_dir_all(p.join(dir)).unwrap();
        }
        for f in [
            "postmaster.pid",
            "postmaster.opts",
            "pg_wal/000000010000000000000003",
            "pg_wal/000000010000000000000004.partial",
            "pg_wal/00000002.history",
            "pg_wal/archive_status/000000010000000000000003.ready",
            "pg_replslot/slot1/state",
            "pg_stat_tmp/global.stat",
            "base/1/1259",
            "base/1/pg_internal.init",
            "base/pgsql_tmp/pgsql_tmp123.0",
            "global/pg_control",
            "pg_xact/0000",
        ] {
            fs::write(p.join(f), b"x").unwrap();
        }
        std::os::unix::fs::symlink("/", p.join("pg_tblspc_link")).unwrap();
        let found = find(p, &p.join("pg_wal"), true, &[], false).unwrap();
        let rel: Vec<String> = found.iter().map(|x| x.strip_prefix(p).unwrap().display().to_string()).collect();
        assert_eq!(
            rel,
            vec![
                "postmaster.pid",
                "postmaster.opts",
                "pg_wal/000000010000000000000003",
                "pg_wal/000000010000000000000004.partial",
                "pg_wal/archive_status/000000010000000000000003.ready",
                "pg_replslot/slot1",
                "pg_stat_tmp/global.stat",
                "base/1/pg_internal.init",
                "base/pgsql_tmp",
            ]
        );
        remove(&[p.to_path_buf()], &found).unwrap();
        assert!(p.join("pg_wal/archive_status").is_dir());
        assert!(p.join("pg_wal/00000002.history").exists());
        assert!(p.join("pg_replslot").is_dir());
        assert!(p.join("base/1/1259").exists());
        assert!(find(p, &p.join("pg_wal"), false, &[], false).unwrap().is_empty());
    }

    use std::os::unix::fs::symlink;

    /// A directory outside the data directory with one file in it, to plant links to.
    fn outside(d: &Path) -> PathBuf {
        let o = d.join("outside");
        fs::create_dir_all(o.join("pgsql_tmp")).unwrap();
        for f in ["state", "pg_internal.init", "000000010000000000000003", "pgsql_tmp/pgsql_tmp1.0"] {
            fs::write(o.join(f), b"not yours").unwrap();
        }
        o
    }

    fn untouched(o: &Path) {
        for f in ["state", "pg_internal.init", "000000010000000000000003", "pgsql_tmp/pgsql_tmp1.0"] {
            assert_eq!(fs::read(o.join(f)).unwrap(), b"not yours", "{} was touched", f);
        }
    }

    #[test]
    fn a_directory_it_empties_that_is_a_link_is_refused() {
        let d = tempfile::tempdir().unwrap();
        let o = outside(d.path());
        let p = d.path().join("data");
        fs::create_dir_all(p.join("pg_wal")).unwrap();
        symlink(&o, p.join("pg_replslot")).unwrap();
        let e = find(&p, &p.join("pg_wal"), false, &[], false).unwrap_err();
        assert!(e.msg.contains(&p.join("pg_replslot").display().to_string()), "{}", e.msg);
        assert!(e.msg.contains("symbolic link") && e.msg.contains(&o.display().to_string()), "{}", e.msg);
        // A link where a directory of pg_wal should be is not entered: it goes itself.
        fs::remove_file(p.join("pg_replslot")).unwrap();
        symlink(&o, p.join("pg_wal/archive_status")).unwrap();
        let found = find(&p, &p.join("pg_wal"), false, &[], false).unwrap();
        assert_eq!(found, vec![p.join("pg_wal/archive_status")]);
        remove(std::slice::from_ref(&p), &found).unwrap();
        assert!(fs::symlink_metadata(p.join("pg_wal/archive_status")).is_err());
        untouched(&o);
    }

    #[test]
    fn a_link_with_a_name_that_goes_is_removed_itself_and_its_target_kept() {
        let d = tempfile::tempdir().unwrap();
        let o = outside(d.path());
        let p = d.path().join("data");
        fs::create_dir_all(p.join("pg_wal")).unwrap();
        fs::create_dir_all(p.join("base/1")).unwrap();
        symlink(o.join("000000010000000000000003"), p.join("pg_wal/000000010000000000000003")).unwrap();
        symlink(o.join("pgsql_tmp"), p.join("base/pgsql_tmp")).unwrap();
        symlink(o.join("pg_internal.init"), p.join("base/1/pg_internal.init")).unwrap();
        symlink(&o, p.join("base/2")).unwrap(); // not a temporary name: neither walked nor removed
        let found = find(&p, &p.join("pg_wal"), false, &[], false).unwrap();
        assert_eq!(found.len(), 3, "{:?}", found);
        remove(std::slice::from_ref(&p), &found).unwrap();
        for f in &found {
            assert!(fs::symlink_metadata(f).is_err(), "{} is still there", f.display());
        }
        assert!(fs::symlink_metadata(p.join("base/2")).unwrap().file_type().is_symlink());
        untouched(&o);
    }

    #[test]
    fn a_link_planted_after_find_is_not_followed_by_remove() {
        let d = tempfile::tempdir().unwrap();
        let o = outside(d.path());
        let p = d.path().join("data");
        fs::create_dir_all(p.join("base/1")).unwrap();
        fs::write(p.join("base/1/pg_internal.init"), b"x").unwrap();
        let found = find(&p, &p.join("pg_wal"), false, &[], false).unwrap();
        assert_eq!(found, vec![p.join("base/1/pg_internal.init")]);
        // Between find and remove, base/1 becomes a link to a directory with the same name in it.
        fs::remove_dir_all(p.join("base/1")).unwrap();
        symlink(&o, p.join("base/1")).unwrap();
        let e = remove(std::slice::from_ref(&p), &found).unwrap_err();
        assert!(e.msg.contains("base/1") && e.msg.contains("symbolic link is in the way"), "{}", e.msg);
        untouched(&o);
    }

    #[test]
    fn nothing_outside_the_roots_is_removed() {
        let d = tempfile::tempdir().unwrap();
        let o = outside(d.path());
        let p = d.path().join("data");
        fs::create_dir_all(&p).unwrap();
        for bad in [o.join("state"), p.join("../outside/state"), p.clone()] {
            let e = remove(std::slice::from_ref(&p), std::slice::from_ref(&bad)).unwrap_err();
            assert!(e.msg.starts_with("refusing to remove") || e.msg.starts_with("cannot remove"), "{}", e.msg);
        }
        untouched(&o);
    }

    #[test]
    fn tablespaces_and_the_real_wal_directory_are_cleaned_and_maps_go_when_asked() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("data");
        let wal = d.path().join("wal");
        let ts = d.path().join("ts");
        fs::create_dir_all(p.join("global")).unwrap();
        fs::create_dir_all(wal.join("summaries")).unwrap();
        fs::create_dir_all(ts.join("PG_15_202209061/16384/pgsql_tmp")).unwrap();
        symlink(&wal, p.join("pg_wal")).unwrap();
        for f in [
            "wal/000000010000000000000003",
            "wal/00000002.history",
            "wal/summaries/0000000100000000020000280000000003000000.summary",
            "ts/PG_15_202209061/16384/16385",
            "ts/PG_15_202209061/16384/pgsql_tmp/pgsql_tmp9.1",
            "ts/PG_15_202209061/16384/x.tmp",
            "data/tablespace_map",
            "data/backup_manifest",
        ] {
            fs::write(d.path().join(f), b"x").unwrap();
        }
        let found = find(&p, &wal, false, std::slice::from_ref(&ts), true).unwrap();
        let rel: Vec<String> = found.iter().map(|x| x.strip_prefix(d.path()).unwrap().display().to_string()).collect();
        assert_eq!(
            rel,
            vec![
                "data/backup_manifest",
                "data/tablespace_map",
                "wal/000000010000000000000003",
                "wal/summaries/0000000100000000020000280000000003000000.summary",
                "ts/PG_15_202209061/16384/pgsql_tmp",
                "ts/PG_15_202209061/16384/x.tmp",
            ]
        );
        assert!(!find(&p, &wal, false, &[], false).unwrap().iter().any(|x| x.ends_with("tablespace_map")));
        remove(&[p.clone(), wal.clone(), ts.clone()], &found).unwrap();
        assert!(wal.join("00000002.history").exists() && wal.join("summaries").is_dir());
        assert!(ts.join("PG_15_202209061/16384/16385").exists());
        assert!(fs::symlink_metadata(p.join("pg_wal")).unwrap().file_type().is_symlink(), "the link itself stays");
        assert!(find(&p, &wal, false, std::slice::from_ref(&ts), true).unwrap().is_empty());
    }
}
