//! Writing inside a data directory with its owner's rights only.
//!
//! Run as root, restore-prep makes its changes (removals and writes in the data directory,
//! the WAL directory and the tablespaces) with the file-system identity of the data
//! directory's owner: `setfsuid`/`setfsgid` for this thread and the owner's group as the
//! only supplementary group. The kernel then checks every open, create, rename and unlink
//! as if the owner made it (a non-zero fsuid also drops root's file-system capabilities),
//! so a link the owner planted can never make root write or delete where the owner could
//! not. Everything is restored when the closure returns.

use nix::unistd::{geteuid, getgroups, setfsgid, setfsuid, setgroups, Gid, Uid};

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
    let (uid, gid) = (Uid::from_raw(owner.0), Gid::from_raw(owner.1));
    let groups = getgroups().map_err(|e| err!("cannot read this process's groups: {}", e))?;
    setgroups(&[gid]).map_err(|e| err!("cannot take the data directory owner's group {}: {}", gid, e))?;
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
        let denied = as_owner((65534, 65534), || std::fs::write(&p, b"x").map_err(|e| crate::error::Error::new(e.to_string())));
        assert!(denied.is_err());
        assert_eq!(std::fs::read(&p).unwrap(), b"root's");
        std::fs::write(&p, b"root again").unwrap();
    }
}
