//! Links out of the restored data directory: pg_wal and pg_tblspc/<oid>.
//!
//! A backup program that keeps symbolic links restores `pg_wal -> /wal/disk` and
//! `pg_tblspc/<oid> -> /ts/dir` as they were: on the original host they point at the original
//! server's directories. restore-prep empties pg_wal and cleans the tablespaces, and the
//! restored server writes into them, so such a link is refused unless the user re-points it
//! (`--wal-dir NEWDIR`, `--tablespace-map OLD=NEW`) or says that the original server is gone
//! and its directories may be reused (`--reuse-original-dirs`). Even then, a directory a
//! running server uses (its data directory, its pg_wal, its tablespaces) is never taken.

use std::fs;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::fsutil;
use crate::restore::install::Tablespace;

/// What to do with the copy's pg_wal.
#[derive(Debug, Clone)]
pub struct WalPlan {
    /// The real directory whose WAL is removed (pg_wal itself, or where its link points).
    pub dir: PathBuf,
    /// `--wal-dir`: pg_wal becomes a link to this directory (created when missing).
    pub repoint: Option<PathBuf>,
    /// One line for the report.
    pub note: Option<String>,
}

/// The directories running servers on this host use, found through /proc (every server
/// process runs in its data directory). Run as root this sees every server; run as the
/// server user, that user's servers.
pub struct LiveDirs {
    dirs: Vec<(PathBuf, String)>,
}

impl LiveDirs {
    pub fn scan() -> LiveDirs {
        let mut datadirs: Vec<(PathBuf, String)> = Vec::new();
        for e in fs::read_dir("/proc").into_iter().flatten().flatten() {
            let name = e.file_name().to_string_lossy().to_string();
            if !name.bytes().all(|b| b.is_ascii_digit()) {
                continue;
            }
            let comm = fs::read_to_string(e.path().join("comm")).unwrap_or_default();
            if !(comm.starts_with("postgres") || comm.starts_with("postmaster")) {
                continue;
            }
            // A postgres process that has not reached its data directory yet (pg_ctl's
            // `postgres -C`, a starting server) runs elsewhere, e.g. in /: only a directory
            // holding PG_VERSION and postmaster.pid is a server's.
            if let Ok(cwd) = fs::read_link(e.path().join("cwd")) {
                let is_datadir = cwd.join("PG_VERSION").is_file() && cwd.join("postmaster.pid").is_file();
                if is_datadir && !datadirs.iter().any(|(d, _)| *d == cwd) {
                    datadirs.push((cwd, name));
                }
            }
        }
        let mut dirs = Vec::new();
        for (d, pid) in datadirs {
            let server = format!("the server running on {} (pid {})", d.display(), pid);
            if let Ok(w) = fs::canonicalize(d.join("pg_wal")) {
                dirs.push((w, format!("the WAL directory of {}", server)));
            }
            for t in fs::read_dir(d.join("pg_tblspc")).into_iter().flatten().flatten() {
                if let Ok(p) = fs::canonicalize(t.path()) {
                    dirs.push((p, format!("tablespace {} of {}", t.file_name().to_string_lossy(), server)));
                }
            }
            dirs.push((d, format!("the data directory of {}", server)));
        }
        LiveDirs { dirs }
    }

    /// Which running server uses `p` (the same directory, one inside it, or one it contains)?
    pub fn user_of(&self, p: &Path) -> Option<&str> {
        let p = canonical(p);
        self.dirs.iter().find(|(d, _)| p.starts_with(d) || d.starts_with(&p)).map(|(_, what)| what.as_str())
    }
}

fn canonical(p: &Path) -> PathBuf {
    fs::canonicalize(p).unwrap_or_else(|_| p.to_path_buf())
}

/// Where a link points, made absolute against the directory that holds it.
fn link_target(link: &Path) -> Result<PathBuf> {
    let t = fs::read_link(link).map_err(|e| err!("cannot read link {}: {}", link.display(), e))?;
    Ok(canonical(&link.parent().unwrap_or(Path::new("/")).join(t)))
}

const REUSE_HINT: &str = "if the original server is gone for good and its directories may be reused (a disaster restore on the original host, or a restore on another host), add --reuse-original-dirs";

/// Decide what happens to pg_wal. Touches nothing.
pub fn plan_wal(pgdata: &Path, wal_dir: Option<&Path>, reuse: bool, live: &LiveDirs) -> Result<WalPlan> {
    let link = pgdata.join("pg_wal");
    let meta = fs::symlink_metadata(&link).ok();
    let is_link = meta.as_ref().is_some_and(|m| m.file_type().is_symlink());
    if let Some(new) = wal_dir {
        if meta.is_some() && !is_link {
            return Err(Error::usage(format!(
                "--wal-dir {}: pg_wal in {} is a directory, not a link, so there is nothing to re-point; leave out --wal-dir",
                new.display(),
                pgdata.display()
            )));
        }
        check_new_wal_dir(new, live)?;
        let note = format!("pg_wal will point to {} (--wal-dir)", new.display());
        return Ok(WalPlan { dir: new.to_path_buf(), repoint: Some(new.to_path_buf()), note: Some(note) });
    }
    if !is_link {
        return Ok(WalPlan { dir: link, repoint: None, note: None });
    }
    let target = link_target(&link)?;
    if target.starts_with(pgdata) {
        return Ok(WalPlan { dir: target, repoint: None, note: None });
    }
    if let Some(what) = live.user_of(&target) {
        return Err(err!(
            "{} is a link to {}, which is {}: a restored copy never shares a directory with a live server; give the copy its own WAL directory with --wal-dir NEWDIR",
            link.display(),
            target.display(),
            what
        ));
    }
    if !reuse {
        return Err(err!(
            "{} is a link to {}, outside the restored data directory (the original server's WAL directory?): restore-prep would empty it; give the copy its own WAL directory with --wal-dir NEWDIR, or, {}",
            link.display(),
            target.display(),
            REUSE_HINT
        ));
    }
    let note =
        format!("pg_wal links to {}, reused (--reuse-original-dirs); no running server uses it", target.display());
    Ok(WalPlan { dir: target, repoint: None, note: Some(note) })
}

/// A name PostgreSQL keeps in pg_wal: segments, .partial, .history, .backup files.
fn is_wal_name(name: &str) -> bool {
    name.len() >= 16 && name.bytes().take(8).all(|b| b.is_ascii_hexdigit())
}

/// `--wal-dir`: absolute, not a link, not a running server's, and new, empty or holding WAL.
fn check_new_wal_dir(new: &Path, live: &LiveDirs) -> Result<()> {
    let bad = |why: String| Err(Error::usage(format!("--wal-dir {}: {}", new.display(), why)));
    if !new.is_absolute() {
        return bad("give an absolute path".into());
    }
    if let Some(what) = live.user_of(new) {
        return bad(format!("{} uses it: give a directory of the restored copy's own", what));
    }
    let meta = match fs::symlink_metadata(new) {
        Ok(m) => m,
        Err(_) => {
            return match new.parent() {
                Some(p) if p.is_dir() => Ok(()),
                _ => bad("its parent directory does not exist: create it first".into()),
            }
        }
    };
    if meta.file_type().is_symlink() || !meta.is_dir() {
        return bad("is not a directory (a link is not followed): give a real directory".into());
    }
    for e in fs::read_dir(new).map_err(|e| err!("cannot list {}: {}", new.display(), e))? {
        let e = e.map_err(|e| err!("cannot list {}: {}", new.display(), e))?;
        let name = e.file_name().to_string_lossy().to_string();
        let dir_ok = (name == "archive_status" || name == "summaries") && e.file_type().is_ok_and(|t| t.is_dir());
        let wal_ok = is_wal_name(&name) && e.file_type().is_ok_and(|t| t.is_file());
        if !(dir_ok || wal_ok) {
            return bad(format!(
                "it holds {:?}, which is not WAL: restore-prep empties this directory; give a new or empty one",
                name
            ));
        }
    }
    Ok(())
}

/// Check the copy's pg_tblspc links against the final tablespace map (already validated by
/// install::validate_map). Returns one report line per tablespace.
pub fn check_tablespaces(pgdata: &Path, map: &[Tablespace], reuse: bool, live: &LiveDirs) -> Result<Vec<String>> {
    let tblspc = pgdata.join("pg_tblspc");
    refuse_unlisted_links(&tblspc, map)?;
    let mut notes = Vec::new();
    for t in map {
        notes.extend(check_tablespace(&tblspc, t, reuse, live)?);
    }
    Ok(notes)
}

/// A link in pg_tblspc that the map does not list would be used by the restored server as it is.
fn refuse_unlisted_links(tblspc: &Path, map: &[Tablespace]) -> Result<()> {
    for e in fs::read_dir(tblspc).into_iter().flatten().flatten() {
        let oid = e.file_name().to_string_lossy().to_string();
        if e.file_type().is_ok_and(|t| t.is_symlink()) && !map.iter().any(|t| t.oid == oid) {
            return Err(err!(
                "{} is a link to {}, but the backup's tablespace_map does not list tablespace {}: the restored server would use that directory as it is; check the sidecar, or restore another backup",
                e.path().display(),
                link_target(&e.path())?.display(),
                oid
            ));
        }
    }
    Ok(())
}

/// One tablespace of the map: its link must be there, its final path no live server's, and the
/// original directory reused only when asked. The report line when it is reused.
fn check_tablespace(tblspc: &Path, t: &Tablespace, reuse: bool, live: &LiveDirs) -> Result<Option<String>> {
    let link = tblspc.join(&t.oid);
    if !fs::symlink_metadata(&link).is_ok_and(|m| m.file_type().is_symlink()) {
        return Err(err!(
            "the backup's tablespace_map names tablespace {}, but the copy has no link {}: the sidecar was edited, or the copy is incomplete; restore the data directory again",
            t.oid,
            link.display()
        ));
    }
    let path = PathBuf::from(&t.path);
    let original = link_target(&link)?;
    if let Some(what) = live.user_of(&path) {
        return Err(err!(
            "tablespace {} ({} links to {}) would be restored at {}, which is {}: a restored copy never shares a directory with a live server; restore the tablespace elsewhere and give --tablespace-map {}=NEW_PATH",
            t.oid,
            link.display(),
            original.display(),
            t.path,
            what,
            t.path
        ));
    }
    if original != canonical(&path) {
        return Ok(None);
    }
    if !reuse {
        return Err(err!(
            "{} is a link to {}, outside the restored data directory (the original server's tablespace?): the restored server would write into it; restore the tablespace elsewhere and give --tablespace-map {}=NEW_PATH, or, {}",
            link.display(),
            original.display(),
            t.path,
            REUSE_HINT
        ));
    }
    Ok(Some(format!("tablespace {} at {} reused (--reuse-original-dirs)", t.oid, t.path)))
}

/// Create the `--wal-dir` directory when it is missing (as the caller, normally root, since
/// its parent may be root's), owned by the data directory's owner, mode 0700.
pub fn create_wal_dir(new: &Path, owner: (u32, u32)) -> Result<()> {
    if fs::symlink_metadata(new).is_ok() {
        return Ok(());
    }
    fsutil::create_dir_mode(new, 0o700)?;
    fsutil::chown(new, owner.0, owner.1)?;
    if let Some(parent) = new.parent() {
        fsutil::fsync_dir(parent)?;
    }
    Ok(())
}

/// Make pg_wal a link to `new` (atomically: a new link renamed over the old one) and give
/// `new` its archive_status directory. Run with the owner's rights.
pub fn repoint(pgdata: &Path, new: &Path) -> Result<()> {
    let status = new.join("archive_status");
    if fs::symlink_metadata(&status).is_err() {
        fsutil::create_dir_mode(&status, 0o700)?;
        fsutil::fsync_dir(new)?;
    }
    let link = pgdata.join("pg_wal");
    if fs::read_link(&link).is_ok_and(|t| t == new) {
        return Ok(());
    }
    let tmp = pgdata.join(format!(".pg_wal.link.{}", fsutil::random_suffix()?));
    std::os::unix::fs::symlink(new, &tmp).map_err(|e| err!("cannot create link {}: {}", tmp.display(), e))?;
    if let Err(e) = fs::rename(&tmp, &link) {
        let _ = fs::remove_file(&tmp);
        return Err(err!("cannot re-point {} to {}: {}", link.display(), new.display(), e));
    }
    fsutil::fsync_dir(pgdata)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wal_names() {
        assert!(is_wal_name("000000010000000000000003"));
        assert!(is_wal_name("00000002.history"));
        assert!(is_wal_name("000000010000000000000003.00000028.backup"));
        assert!(!is_wal_name("postgresql.conf"));
        assert!(!is_wal_name("base"));
    }

    #[test]
    fn a_link_out_is_refused_and_one_inside_is_followed() {
        let d = tempfile::tempdir().unwrap();
        let pgdata = d.path().join("data");
        let outside = d.path().join("wal");
        fs::create_dir_all(pgdata.join("walreal")).unwrap();
        fs::create_dir_all(&outside).unwrap();
        let live = LiveDirs { dirs: Vec::new() };
        std::os::unix::fs::symlink(&outside, pgdata.join("pg_wal")).unwrap();
        let e = plan_wal(&pgdata, None, false, &live).unwrap_err();
        assert!(e.msg.contains("--wal-dir") && e.msg.contains(&outside.display().to_string()), "{}", e.msg);
        assert_eq!(plan_wal(&pgdata, None, true, &live).unwrap().dir, outside);
        let busy = LiveDirs { dirs: vec![(outside.clone(), "the WAL directory of X".into())] };
        assert!(plan_wal(&pgdata, None, true, &busy).unwrap_err().msg.contains("live server"));
        fs::remove_file(pgdata.join("pg_wal")).unwrap();
        std::os::unix::fs::symlink("walreal", pgdata.join("pg_wal")).unwrap();
        assert_eq!(plan_wal(&pgdata, None, false, &live).unwrap().dir, pgdata.join("walreal"));
    }

    use std::os::unix::fs::{symlink, MetadataExt, PermissionsExt};

    fn none_live() -> LiveDirs {
        LiveDirs { dirs: Vec::new() }
    }

    #[test]
    fn wal_dir_must_be_absolute_a_real_directory_and_hold_only_wal() {
        let d = tempfile::tempdir().unwrap();
        let pgdata = d.path().join("data");
        fs::create_dir_all(&pgdata).unwrap();
        symlink(d.path().join("old"), pgdata.join("pg_wal")).unwrap();
        let try_dir = |p: &Path| plan_wal(&pgdata, Some(p), false, &none_live());
        let e = try_dir(Path::new("rel/wal")).unwrap_err();
        assert_eq!(e.code, crate::error::exit::USAGE);
        assert!(e.msg.contains("absolute"), "{}", e.msg);
        assert!(try_dir(&d.path().join("no/such")).unwrap_err().msg.contains("parent directory does not exist"));
        let busy = d.path().join("busy");
        fs::create_dir_all(busy.join("archive_status")).unwrap();
        fs::write(busy.join("000000010000000000000003"), b"").unwrap();
        fs::write(busy.join("postgresql.conf"), b"").unwrap();
        let e = try_dir(&busy).unwrap_err();
        assert!(e.msg.contains("\"postgresql.conf\"") && e.msg.contains(&busy.display().to_string()), "{}", e.msg);
        fs::remove_file(busy.join("postgresql.conf")).unwrap();
        let plan = try_dir(&busy).unwrap();
        assert_eq!((plan.dir.clone(), plan.repoint.clone()), (busy.clone(), Some(busy.clone())));
        symlink(&busy, d.path().join("via-link")).unwrap();
        assert!(try_dir(&d.path().join("via-link")).unwrap_err().msg.contains("a link is not followed"));
        let live = LiveDirs { dirs: vec![(busy.clone(), "the WAL directory of X".into())] };
        assert!(plan_wal(&pgdata, Some(&busy), false, &live)
            .unwrap_err()
            .msg
            .contains("the WAL directory of X uses it"));
        assert!(try_dir(&d.path().join("new")).is_ok(), "a new directory in an existing parent");
        // A real pg_wal has nothing to re-point.
        fs::remove_file(pgdata.join("pg_wal")).unwrap();
        fs::create_dir(pgdata.join("pg_wal")).unwrap();
        assert_eq!(try_dir(&busy).unwrap_err().code, crate::error::exit::USAGE);
        assert!(fs::read_dir(&busy).unwrap().count() == 2, "planning touches nothing");
    }

    #[test]
    fn repoint_replaces_the_link_atomically_and_leaves_the_old_directory() {
        let d = tempfile::tempdir().unwrap();
        let pgdata = d.path().join("data");
        let (old, new) = (d.path().join("old"), d.path().join("new"));
        fs::create_dir_all(&pgdata).unwrap();
        fs::create_dir_all(&new).unwrap();
        fs::create_dir_all(&old).unwrap();
        fs::write(old.join("000000010000000000000003"), b"kept").unwrap();
        symlink(&old, pgdata.join("pg_wal")).unwrap();
        repoint(&pgdata, &new).unwrap();
        assert_eq!(fs::read_link(pgdata.join("pg_wal")).unwrap(), new);
        assert_eq!(fs::metadata(new.join("archive_status")).unwrap().mode() & 0o7777, 0o700);
        assert_eq!(fs::read(old.join("000000010000000000000003")).unwrap(), b"kept");
        let left: Vec<_> = fs::read_dir(&pgdata).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(left, vec![std::ffi::OsString::from("pg_wal")], "no temporary link left");
        repoint(&pgdata, &new).unwrap();
        assert_eq!(fs::read_link(pgdata.join("pg_wal")).unwrap(), new);
    }

    #[test]
    fn a_new_wal_dir_is_0700_and_the_owners() {
        let d = tempfile::tempdir().unwrap();
        let owner = crate::testutil::someone();
        let new = d.path().join("wal");
        create_wal_dir(&new, owner).unwrap();
        let m = fs::metadata(&new).unwrap();
        assert_eq!((m.mode() & 0o7777, m.uid(), m.gid()), (0o700, owner.0, owner.1));
        // An existing one is left as it is.
        fs::set_permissions(&new, fs::Permissions::from_mode(0o750)).unwrap();
        create_wal_dir(&new, owner).unwrap();
        assert_eq!(fs::metadata(&new).unwrap().mode() & 0o7777, 0o750);
    }

    #[test]
    fn tablespace_links_must_match_the_map_and_not_reuse_the_original_unasked() {
        let d = tempfile::tempdir().unwrap();
        let pgdata = d.path().join("data");
        let (orig, moved) = (d.path().join("orig"), d.path().join("moved"));
        for p in [pgdata.join("pg_tblspc"), orig.clone(), moved.clone()] {
            fs::create_dir_all(p).unwrap();
        }
        symlink(&orig, pgdata.join("pg_tblspc/16384")).unwrap();
        let map = |p: &Path| vec![Tablespace { oid: "16384".into(), path: p.display().to_string() }];
        let e = check_tablespaces(&pgdata, &[], false, &none_live()).unwrap_err();
        assert!(e.msg.contains("does not list tablespace 16384"), "{}", e.msg);
        let e = check_tablespaces(&pgdata, &map(&orig), false, &none_live()).unwrap_err();
        assert!(e.msg.contains("--reuse-original-dirs") && e.msg.contains("pg_tblspc/16384"), "{}", e.msg);
        let notes = check_tablespaces(&pgdata, &map(&orig), true, &none_live()).unwrap();
        assert_eq!(notes, vec![format!("tablespace 16384 at {} reused (--reuse-original-dirs)", orig.display())]);
        assert!(check_tablespaces(&pgdata, &map(&moved), false, &none_live()).unwrap().is_empty());
        let live = LiveDirs { dirs: vec![(moved.clone(), "tablespace 1 of Y".into())] };
        assert!(check_tablespaces(&pgdata, &map(&moved), true, &live).unwrap_err().msg.contains("tablespace 1 of Y"));
        fs::remove_file(pgdata.join("pg_tblspc/16384")).unwrap();
        let e = check_tablespaces(&pgdata, &map(&moved), false, &none_live()).unwrap_err();
        assert!(e.msg.contains("has no link"), "{}", e.msg);
    }
}
