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
//! Symbolic links are never followed while walking (pg_tblspc/<oid> may still point at the
//! original cluster's tablespace); tablespaces are cleaned at their final, mapped paths.

use std::fs;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::fsutil;

const EMPTIED_DIRS: &[&str] =
    &["pg_replslot", "pg_dynshmem", "pg_notify", "pg_serial", "pg_snapshots", "pg_stat_tmp", "pg_subtrans"];
const TOP_FILES: &[&str] = &["postmaster.opts", "backup_manifest"];

fn entries(dir: &Path) -> Result<Vec<fs::DirEntry>> {
    let rd = match fs::read_dir(dir) {
        Ok(rd) => rd,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(Error::new(format!("cannot list {}: {}", dir.display(), e))),
    };
    let mut v = Vec::new();
    for e in rd {
        v.push(e.map_err(|e| Error::new(format!("cannot list {}: {}", dir.display(), e)))?);
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
        let ft = e.file_type().map_err(|err| Error::new(format!("cannot stat {}: {}", path.display(), err)))?;
        let name = e.file_name().to_string_lossy().to_string();
        if ft.is_symlink() {
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

/// Everything to remove, in a stable order. `tablespaces` are the final mapped paths.
pub fn find(
    pgdata: &Path,
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
    if remove_tablespace_map && pgdata.join("tablespace_map").exists() {
        out.push(pgdata.join("tablespace_map"));
    }
    let wal = pgdata.join("pg_wal");
    for e in entries(&wal)? {
        let name = e.file_name().to_string_lossy().to_string();
        let is_dir = e.path().is_dir();
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
    let skip: Vec<PathBuf> = std::iter::once(wal).chain(EMPTIED_DIRS.iter().map(|d| pgdata.join(d))).collect();
    walk_temp(pgdata, &mut out, &skip)?;
    for ts in tablespaces {
        walk_temp(ts, &mut out, &[])?;
    }
    Ok(out)
}

/// Remove what `find` listed, fsyncing each parent directory once.
pub fn remove(paths: &[PathBuf]) -> Result<()> {
    let mut parents: Vec<PathBuf> = Vec::new();
    for p in paths {
        let meta = match fs::symlink_metadata(p) {
            Ok(m) => m,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(Error::new(format!("cannot stat {}: {}", p.display(), e))),
        };
        let r = if meta.is_dir() { fs::remove_dir_all(p) } else { fs::remove_file(p) };
        r.map_err(|e| Error::new(format!("cannot remove {}: {}", p.display(), e)))?;
        if let Some(parent) = p.parent() {
            if !parents.iter().any(|x| x == parent) {
                parents.push(parent.to_path_buf());
            }
        }
    }
    for d in &parents {
        fsutil::fsync_dir(d)?;
    }
    Ok(())
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
        let found = find(p, true, &[], false).unwrap();
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
        remove(&found).unwrap();
        assert!(p.join("pg_wal/archive_status").is_dir());
        assert!(p.join("pg_wal/00000002.history").exists());
        assert!(p.join("pg_replslot").is_dir());
        assert!(p.join("base/1/1259").exists());
        assert!(find(p, false, &[], false).unwrap().is_empty());
    }
}
