//! Durable file-system writes: every file we leave behind is written to a temporary name,
//! fsynced, renamed into place, and its directory fsynced.

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use crate::error::{Context, Result};

pub fn fsync_dir(dir: &Path) -> Result<()> {
    File::open(dir).and_then(|f| f.sync_all()).context(|| format!("cannot fsync directory {}", dir.display()))
}

/// Write `data` to `path` atomically with the given mode. `owner` (uid, gid) is applied
/// before the rename, so the file never appears with the wrong owner.
pub fn write_atomic(path: &Path, data: &[u8], mode: u32, owner: Option<(u32, u32)>) -> Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let name = path.file_name().map(|n| n.to_string_lossy().to_string()).unwrap_or_default();
    let tmp = dir.join(format!(".{}.tmp.{}", name, std::process::id()));
    let result = (|| {
        let mut f = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(mode)
            .open(&tmp)
            .context(|| format!("cannot create {}", tmp.display()))?;
        f.write_all(data).context(|| format!("cannot write {}", tmp.display()))?;
        fs::set_permissions(&tmp, fs::Permissions::from_mode(mode))
            .context(|| format!("cannot set mode of {}", tmp.display()))?;
        if let Some((uid, gid)) = owner {
            chown(&tmp, uid, gid)?;
        }
        f.sync_all().context(|| format!("cannot fsync {}", tmp.display()))?;
        fs::rename(&tmp, path).context(|| format!("cannot rename {} to {}", tmp.display(), path.display()))?;
        fsync_dir(dir)
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

/// Create a new file with `data` and fsync it. For files inside a staging directory that is
/// itself renamed into place (the directory rename is the atomic step, so no per-file
/// rename is needed); the caller fsyncs the directory.
pub fn write_new(path: &Path, data: &[u8], mode: u32) -> Result<()> {
    let mut f = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)
        .context(|| format!("cannot create {}", path.display()))?;
    f.write_all(data).context(|| format!("cannot write {}", path.display()))?;
    fs::set_permissions(path, fs::Permissions::from_mode(mode))
        .context(|| format!("cannot set mode of {}", path.display()))?;
    f.sync_all().context(|| format!("cannot fsync {}", path.display()))
}

pub fn chown(path: &Path, uid: u32, gid: u32) -> Result<()> {
    std::os::unix::fs::lchown(path, Some(uid), Some(gid))
        .context(|| format!("cannot give {} to uid {} gid {}", path.display(), uid, gid))
}

/// Create a directory with `mode` (not subject to umask surprises).
pub fn create_dir_mode(path: &Path, mode: u32) -> Result<()> {
    fs::create_dir(path).context(|| format!("cannot create directory {}", path.display()))?;
    fs::set_permissions(path, fs::Permissions::from_mode(mode))
        .context(|| format!("cannot set mode of {}", path.display()))
}

/// A temporary sibling name for staging a directory before it is renamed into place.
pub fn staging_name(target: &Path, what: &str) -> PathBuf {
    let dir = target.parent().unwrap_or(Path::new("."));
    let name = target.file_name().map(|n| n.to_string_lossy().to_string()).unwrap_or_default();
    dir.join(format!(".{}.{}.{}", name, what, std::process::id()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;

    #[test]
    fn atomic_write_sets_mode_and_leaves_no_temp() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("f");
        write_atomic(&p, b"one", 0o600, None).unwrap();
        write_atomic(&p, b"two", 0o600, None).unwrap();
        assert_eq!(fs::read(&p).unwrap(), b"two");
        assert_eq!(fs::metadata(&p).unwrap().mode() & 0o777, 0o600);
        assert_eq!(fs::read_dir(d.path()).unwrap().count(), 1);
    }
}

// ---- Exclusive creation with unpredictable names (never through a link) ----

/// 16 hex digits from the kernel's random source, for temporary names nobody can guess
/// (a pid is guessable: someone could plant a link at `NAME.PID` beforehand).
pub fn unpredictable_suffix() -> Result<String> {
    use std::io::Read;
    let mut b = [0u8; 8];
    File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut b))
        .context(|| "cannot read /dev/urandom for a temporary name")?;
    Ok(b.iter().map(|x| format!("{:02x}", x)).collect())
}

/// Create `path`, which must not exist, as a new file: O_CREAT|O_EXCL|O_NOFOLLOW, so an
/// existing file or a planted link (even a dangling one) makes it fail instead of being
/// written through. The mode is set on the open file, not on the path.
pub fn create_new_nofollow(path: &Path, mode: u32) -> Result<File> {
    let f = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .custom_flags(nix::libc::O_NOFOLLOW | nix::libc::O_CLOEXEC)
        .open(path)
        .context(|| format!("cannot create {}", path.display()))?;
    f.set_permissions(fs::Permissions::from_mode(mode)).context(|| format!("cannot set mode of {}", path.display()))?;
    Ok(f)
}

/// A new empty file `DIR/PREFIX<random>`, created as [`create_new_nofollow`] does.
pub fn create_temp_in(dir: &Path, prefix: &str, mode: u32) -> Result<(File, PathBuf)> {
    let path = dir.join(format!("{}{}", prefix, unpredictable_suffix()?));
    Ok((create_new_nofollow(&path, mode)?, path))
}

/// A new directory `DIR/PREFIX<random>` with `mode` (mkdir never follows a link at its
/// last component, and the random name cannot have been planted).
pub fn create_temp_dir_in(dir: &Path, prefix: &str, mode: u32) -> Result<PathBuf> {
    let path = dir.join(format!("{}{}", prefix, unpredictable_suffix()?));
    create_dir_mode(&path, mode)?;
    Ok(path)
}

/// Write a new file with `data` (as [`create_new_nofollow`]) and fsync it; for files in a
/// staging directory that is renamed into place as a whole (the caller fsyncs the directory).
pub fn write_new_nofollow(path: &Path, data: &[u8], mode: u32) -> Result<()> {
    let mut f = create_new_nofollow(path, mode)?;
    f.write_all(data).context(|| format!("cannot write {}", path.display()))?;
    f.sync_all().context(|| format!("cannot fsync {}", path.display()))
}

#[cfg(test)]
mod nofollow_tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;

    #[test]
    fn exclusive_creation_never_goes_through_a_link() {
        let d = tempfile::tempdir().unwrap();
        let victim = d.path().join("victim");
        fs::write(&victim, "keep").unwrap();
        let link = d.path().join("link");
        std::os::unix::fs::symlink(&victim, &link).unwrap();
        assert!(write_new_nofollow(&link, b"x", 0o600).is_err());
        let dangling = d.path().join("dangling");
        std::os::unix::fs::symlink(d.path().join("nowhere"), &dangling).unwrap();
        assert!(create_new_nofollow(&dangling, 0o600).is_err());
        assert!(!d.path().join("nowhere").exists());
        assert_eq!(fs::read(&victim).unwrap(), b"keep");
        let (_, p) = create_temp_in(d.path(), ".t.", 0o600).unwrap();
        let (_, q) = create_temp_in(d.path(), ".t.", 0o600).unwrap();
        assert_ne!(p, q);
        assert_eq!(fs::metadata(&p).unwrap().mode() & 0o777, 0o600);
    }
}
