//! Writing inside a data directory with its owner's rights only.
//!
//! Run as root, restore-prep makes its changes (removals and writes in the data directory,
//! the WAL directory and the tablespaces) with the file-system identity of the data
//! directory's owner: `setfsuid`/`setfsgid` for this thread, and as supplementary groups the
//! groups the owner's account is in (its primary group among them: a file restore-prep keeps
//! may belong to that group while the data directory belongs to another). The kernel then checks every open, create, rename and unlink
//! as if the owner made it (a non-zero fsuid also drops root's file-system capabilities),
//! so a link the owner planted can never make root write or delete where the owner could
//! not. Everything is restored when the closure returns.

use std::path::{Path, PathBuf};

use nix::fcntl::AtFlags;
use nix::unistd::{faccessat, geteuid, getgroups, setfsgid, setfsuid, setgroups, AccessFlags, Gid, Uid};

use crate::error::Result;

struct Restore {
    uid: Uid,
    gid: Gid,
    groups: Vec<Gid>,
}

impl Drop for Restore {
    fn drop(&mut self) {
        setfsuid(self.uid);
        setfsgid(self.gid);
        let _ = setgroups(&self.groups);
    }
}

/// Run `f` with the file-system rights of `owner` (uid, gid). Without root, or when the
/// owner is root, `f` simply runs: the kernel already limits us to our own rights.
pub fn as_owner<T>(owner: (u32, u32), f: impl FnOnce() -> Result<T>) -> Result<T> {
    if !geteuid().is_root() || owner.0 == 0 {
        return f();
    }
    // setfsuid/setfsgid are this thread's, but the supplementary groups are the whole
    // process's (glibc applies setgroups to every thread): one owner at a time.
    static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner());
    let (uid, gid) = (Uid::from_raw(owner.0), Gid::from_raw(owner.1));
    let groups = getgroups().map_err(|e| err!("cannot read this process's groups: {}", e))?;
    setgroups(&owner_groups(uid, gid))
        .map_err(|e| err!("cannot take the data directory owner's groups (gid {}): {}", gid, e))?;
    let _restore = Restore { gid: setfsgid(gid), uid: setfsuid(uid), groups };
    // setfsuid/setfsgid report the previous value: asking again confirms the switch.
    if setfsuid(uid) != uid || setfsgid(gid) != gid {
        return Err(err!(
            "cannot take the data directory owner's identity (uid {} gid {}): refusing to write as root",
            uid,
            gid
        ));
    }
    f()
}

/// `gid` and the groups of `uid`'s account (its primary group and those it is a member of, as
/// a login would have them); `gid` alone for a uid without an account.
fn owner_groups(uid: Uid, gid: Gid) -> Vec<Gid> {
    let mut groups = vec![gid];
    if let Ok(Some(user)) = nix::unistd::User::from_uid(uid) {
        if let Ok(name) = std::ffi::CString::new(user.name) {
            if let Ok(list) = nix::unistd::getgrouplist(&name, user.gid) {
                groups.extend(list.into_iter().filter(|g| *g != gid));
            }
        }
    }
    groups
}

/// Where `owner` (uid, gid) is stopped from using `path` with `need` (read, execute...): the
/// first directory on the way it cannot search, or the path itself, with its mode; None when
/// it can. Checked by the kernel with the owner's rights (faccessat with AT_EACCESS under
/// [`as_owner`]), so groups, ACLs and modes count as they will for the server.
pub fn blocked_for(owner: (u32, u32), path: &Path, need: AccessFlags) -> Result<Option<(PathBuf, u32)>> {
    use std::os::unix::fs::MetadataExt;
    let mode = |p: &Path| std::fs::metadata(p).map(|m| m.mode() & 0o7777).unwrap_or(0);
    as_owner(owner, || {
        let mut ancestors: Vec<&Path> = path.ancestors().skip(1).filter(|a| !a.as_os_str().is_empty()).collect();
        ancestors.reverse();
        for a in ancestors {
            if faccessat(None, a, AccessFlags::X_OK, AtFlags::AT_EACCESS).is_err() {
                return Ok(Some((a.to_path_buf(), mode(a))));
            }
        }
        if faccessat(None, path, need, AtFlags::AT_EACCESS).is_err() {
            return Ok(Some((path.to_path_buf(), mode(path))));
        }
        Ok(None)
    })
}

/// "user NAME (uid N)", or "uid N" when the user has no name.
pub fn user_name(uid: u32) -> String {
    match nix::unistd::User::from_uid(Uid::from_raw(uid)) {
        Ok(Some(u)) => format!("user {} (uid {})", u.name, uid),
        _ => format!("uid {}", uid),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn root_writes_with_the_owners_rights() {
        if !geteuid().is_root() {
            return;
        }
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("f");
        std::fs::write(&p, b"root's").unwrap();
        let denied =
            as_owner((65534, 65534), || std::fs::write(&p, b"x").map_err(|e| crate::error::Error::new(e.to_string())));
        assert!(denied.is_err());
        assert_eq!(std::fs::read(&p).unwrap(), b"root's");
        std::fs::write(&p, b"root again").unwrap();
    }

    use std::fs;
    use std::os::unix::fs::{symlink, MetadataExt, PermissionsExt};

    fn io(e: std::io::Error) -> crate::error::Error {
        crate::error::Error::new(e.to_string())
    }

    #[test]
    fn a_file_kept_in_the_owners_primary_group_is_written_when_the_directory_has_another_group() {
        if !geteuid().is_root() {
            return;
        }
        // The data directory nobody:root (group 0), a file in it nobody:nogroup (nobody's
        // primary group): keeping the file's group needs the owner's own groups.
        let d = tempfile::tempdir().unwrap();
        let pg = d.path().join("pgdata");
        fs::create_dir(&pg).unwrap();
        std::os::unix::fs::chown(&pg, Some(65534), Some(0)).unwrap();
        fs::set_permissions(&pg, fs::Permissions::from_mode(0o700)).unwrap();
        as_owner((65534, 0), || crate::fsutil::write_atomic(&pg.join("f"), b"x", 0o600, Some((65534, 65534)))).unwrap();
        let m = fs::metadata(pg.join("f")).unwrap();
        assert_eq!((m.uid(), m.gid()), (65534, 65534));
        // A group the owner is not in stays refused.
        let e = as_owner((65534, 0), || crate::fsutil::write_atomic(&pg.join("g"), b"x", 0o600, Some((65534, 4))));
        assert!(e.is_err_and(|e| e.msg.contains("cannot give")));
    }

    #[test]
    fn what_the_owner_creates_is_the_owners_and_root_is_back_afterwards() {
        if !geteuid().is_root() {
            return;
        }
        let d = tempfile::tempdir().unwrap();
        let mine = d.path().join("owners");
        fs::create_dir(&mine).unwrap();
        std::os::unix::fs::chown(&mine, Some(65534), Some(65534)).unwrap();
        as_owner((65534, 65534), || fs::write(mine.join("f"), b"x").map_err(io)).unwrap();
        let m = fs::metadata(mine.join("f")).unwrap();
        assert_eq!((m.uid(), m.gid()), (65534, 65534));
        // Root's identity is back: a new file is root's again.
        fs::write(d.path().join("g"), b"x").unwrap();
        assert_eq!(fs::metadata(d.path().join("g")).unwrap().uid(), 0);
    }

    #[test]
    fn a_link_the_owner_planted_cannot_make_root_write_or_delete() {
        if !geteuid().is_root() {
            return;
        }
        let d = tempfile::tempdir().unwrap();
        fs::set_permissions(d.path(), fs::Permissions::from_mode(0o755)).unwrap();
        let roots = d.path().join("roots");
        fs::create_dir(&roots).unwrap();
        fs::write(roots.join("shadow"), b"root's").unwrap();
        let data = d.path().join("data");
        fs::create_dir(&data).unwrap();
        std::os::unix::fs::chown(&data, Some(65534), Some(65534)).unwrap();
        symlink(roots.join("shadow"), data.join("backup_label")).unwrap();
        symlink(&roots, data.join("pg_wal")).unwrap();
        let wrote = as_owner((65534, 65534), || fs::write(data.join("backup_label"), b"x").map_err(io));
        assert!(wrote.is_err());
        let removed = as_owner((65534, 65534), || fs::remove_file(data.join("pg_wal/shadow")).map_err(io));
        assert!(removed.is_err());
        assert_eq!(fs::read(roots.join("shadow")).unwrap(), b"root's");
    }

    #[test]
    fn an_error_inside_comes_out_unchanged_and_root_as_owner_just_runs() {
        let e = as_owner((65534, 65534), || -> Result<()> { Err(crate::error::Error::with_code(3, "inner")) });
        let e = e.unwrap_err();
        assert_eq!((e.code, e.msg.as_str()), (3, "inner"));
        let me = (geteuid().as_raw(), nix::unistd::getegid().as_raw());
        let d = tempfile::tempdir().unwrap();
        as_owner(me, || fs::write(d.path().join("f"), b"x").map_err(io)).unwrap();
        assert_eq!(fs::metadata(d.path().join("f")).unwrap().uid(), me.0);
    }

    #[test]
    fn blocked_for_names_the_directory_the_owner_cannot_search() {
        if !geteuid().is_root() {
            return;
        }
        let d = tempfile::tempdir().unwrap();
        fs::set_permissions(d.path(), fs::Permissions::from_mode(0o755)).unwrap();
        let closed = d.path().join("closed");
        let prog = closed.join("prog");
        fs::create_dir(&closed).unwrap();
        fs::write(&prog, "#!/bin/sh\n").unwrap();
        fs::set_permissions(&prog, fs::Permissions::from_mode(0o755)).unwrap();
        fs::set_permissions(&closed, fs::Permissions::from_mode(0o700)).unwrap();
        let nobody = (65534, 65534);
        assert_eq!(blocked_for(nobody, &prog, AccessFlags::X_OK).unwrap(), Some((closed.clone(), 0o700)));
        fs::set_permissions(&closed, fs::Permissions::from_mode(0o711)).unwrap();
        assert_eq!(blocked_for(nobody, &prog, AccessFlags::X_OK).unwrap(), None);
        fs::set_permissions(&prog, fs::Permissions::from_mode(0o744)).unwrap();
        assert_eq!(blocked_for(nobody, &prog, AccessFlags::X_OK).unwrap(), Some((prog.clone(), 0o744)));
        // Root itself is back: it can still write there.
        fs::write(closed.join("f"), "x").unwrap();
    }
}
