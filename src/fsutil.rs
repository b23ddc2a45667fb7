//! Durable file-system writes: every file we leave behind is written to a temporary name,
//! fsynced, renamed into place, and its directory fsynced.

use std::ffi::{OsStr, OsString};
use std::fs::{self, File, OpenOptions};
use std::io::{Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::ffi::OsStringExt;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};

use nix::dir::Dir;
use nix::fcntl::{AtFlags, OFlag};
use nix::sys::stat::{fstatat, Mode, SFlag};
use nix::unistd::{unlinkat, UnlinkatFlags};

use crate::error::{Context, Result};

pub fn fsync_dir(dir: &Path) -> Result<()> {
    File::open(dir).and_then(|f| f.sync_all()).context(|| format!("cannot fsync directory {}", dir.display()))
}

/// 16 hex digits from the kernel's random source, for temporary names nobody can guess (a pid
/// is guessable: someone could plant a link at `NAME.PID` beforehand).
pub fn random_suffix() -> Result<String> {
    let mut b = [0u8; 8];
    File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut b))
        .context(|| "cannot read /dev/urandom for a temporary name")?;
    Ok(b.iter().map(|x| format!("{:02x}", x)).collect())
}

/// Create `path` exclusively (O_CREAT|O_EXCL|O_NOFOLLOW: never an existing file, never
/// through a link), then set mode and owner on the open file.
fn create_exclusive(path: &Path, mode: u32, owner: Option<(u32, u32)>) -> Result<File> {
    let f = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode & 0o600)
        .custom_flags(nix::libc::O_NOFOLLOW | nix::libc::O_CLOEXEC)
        .open(path)
        .context(|| format!("cannot create {}", path.display()))?;
    if let Some((uid, gid)) = owner {
        std::os::unix::fs::fchown(&f, Some(uid), Some(gid))
            .context(|| format!("cannot give {} to uid {} gid {}", path.display(), uid, gid))?;
    }
    f.set_permissions(fs::Permissions::from_mode(mode)).context(|| format!("cannot set mode of {}", path.display()))?;
    Ok(f)
}

/// Write `data` to `path` atomically with the given mode. The temporary file has an
/// unpredictable name and is created exclusively; `owner` (uid, gid) and the mode are set on
/// the open file before the rename, so the file never appears with the wrong owner. A link
/// at `path` is replaced, never followed.
pub fn write_atomic(path: &Path, data: &[u8], mode: u32, owner: Option<(u32, u32)>) -> Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let name = path.file_name().map(|n| n.to_string_lossy().to_string()).unwrap_or_default();
    let tmp = dir.join(format!(".{}.tmp.{}", name, random_suffix()?));
    let mut created = false;
    let result = (|| {
        let mut f = create_exclusive(&tmp, mode, owner)?;
        created = true;
        f.write_all(data).context(|| format!("cannot write {}", tmp.display()))?;
        f.sync_all().context(|| format!("cannot fsync {}", tmp.display()))?;
        fs::rename(&tmp, path).context(|| format!("cannot rename {} to {}", tmp.display(), path.display()))?;
        fsync_dir(dir)
    })();
    if result.is_err() && created {
        let _ = fs::remove_file(&tmp);
    }
    result
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

const DIR_FLAGS: OFlag = OFlag::O_RDONLY.union(OFlag::O_DIRECTORY).union(OFlag::O_NOFOLLOW).union(OFlag::O_CLOEXEC);

/// Open `rel` (relative components) below the directory `root` names, one component at a
/// time with O_NOFOLLOW: a symbolic link anywhere below `root` (or `root` itself being a
/// link) makes this fail instead of being followed.
pub fn open_dir_below(root: &Path, rel: &Path) -> nix::Result<Dir> {
    let mut cur = Dir::open(root, DIR_FLAGS, Mode::empty())?;
    for c in rel.components() {
        match c {
            Component::Normal(name) => cur = Dir::openat(Some(cur.as_raw_fd()), name, DIR_FLAGS, Mode::empty())?,
            Component::CurDir => {}
            _ => return Err(nix::errno::Errno::EINVAL),
        }
    }
    Ok(cur)
}

/// Remove the entry `name` of `dir` without following any link: a file or a link is
/// unlinked (a link's target is never touched), a directory is emptied the same way,
/// through its own descriptor, and removed.
pub fn remove_at(dir: &mut Dir, name: &OsStr) -> nix::Result<()> {
    let st = fstatat(Some(dir.as_raw_fd()), name, AtFlags::AT_SYMLINK_NOFOLLOW)?;
    if SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT != SFlag::S_IFDIR {
        return unlinkat(Some(dir.as_raw_fd()), name, UnlinkatFlags::NoRemoveDir);
    }
    let mut sub = Dir::openat(Some(dir.as_raw_fd()), name, DIR_FLAGS, Mode::empty())?;
    let names = dir_names(&mut sub)?;
    for n in names {
        remove_at(&mut sub, &n)?;
    }
    unlinkat(Some(dir.as_raw_fd()), name, UnlinkatFlags::RemoveDir)
}

/// The names in an open directory, without "." and "..".
pub fn dir_names(dir: &mut Dir) -> nix::Result<Vec<OsString>> {
    Ok(dir_entries(dir)?.into_iter().map(|(name, _)| name).collect())
}

/// The names in `dir` (but `.` and `..`) with the type readdir reports (None when the file
/// system does not say: the caller must stat).
pub fn dir_entries(dir: &mut Dir) -> nix::Result<Vec<(OsString, Option<nix::dir::Type>)>> {
    let mut out = Vec::new();
    for e in dir.iter() {
        let e = e?;
        let b = e.file_name().to_bytes();
        if b != b"." && b != b".." {
            out.push((OsString::from_vec(b.to_vec()), e.file_type()));
        }
    }
    Ok(out)
}

/// fsync an open directory.
pub fn fsync_dir_fd(dir: &Dir) -> nix::Result<()> {
    nix::unistd::fsync(dir.as_raw_fd())
}

/// Open a regular file for reading, never through a symlink (O_NOFOLLOW); None when it does
/// not exist.
pub fn open_regular(p: &Path) -> Result<Option<File>> {
    let f = OpenOptions::new().read(true).custom_flags(nix::libc::O_NOFOLLOW | nix::libc::O_CLOEXEC).open(p);
    let f = match f {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(err!("cannot open {}: {} (it must be a regular file)", p.display(), e)),
    };
    let meta = f.metadata().map_err(|e| err!("cannot stat {}: {}", p.display(), e))?;
    if !meta.is_file() {
        return Err(err!("{} is not a regular file", p.display()));
    }
    Ok(Some(f))
}

/// Up to `max` bytes of a regular file (never through a symlink); None when it does not exist.
pub fn read_regular(p: &Path, max: usize) -> Result<Option<Vec<u8>>> {
    let Some(f) = open_regular(p)? else { return Ok(None) };
    let mut buf = Vec::new();
    f.take(max as u64).read_to_end(&mut buf).map_err(|e| err!("cannot read {}: {}", p.display(), e))?;
    Ok(Some(buf))
}

// ---- Exclusive creation with unpredictable names (never through a link) ----

/// Create `path`, which must not exist, as a new file: O_CREAT|O_EXCL|O_NOFOLLOW, so an
/// existing file or a planted link (even a dangling one) makes it fail instead of being
/// written through. The mode is set on the open file, not on the path.
pub fn create_new_nofollow(path: &Path, mode: u32) -> Result<File> {
    create_exclusive(path, mode, None)
}

/// A new empty file `DIR/PREFIX<random>`, created as [`create_new_nofollow`] does.
pub fn create_temp_in(dir: &Path, prefix: &str, mode: u32) -> Result<(File, PathBuf)> {
    let path = dir.join(format!("{}{}", prefix, random_suffix()?));
    Ok((create_new_nofollow(&path, mode)?, path))
}

/// A new directory `DIR/PREFIX<random>` with `mode` (mkdir never follows a link at its
/// last component, and the random name cannot have been planted).
pub fn create_temp_dir_in(dir: &Path, prefix: &str, mode: u32) -> Result<PathBuf> {
    let path = dir.join(format!("{}{}", prefix, random_suffix()?));
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
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;

    #[test]
    fn remove_at_never_follows_a_link() {
        let d = tempfile::tempdir().unwrap();
        let victim = d.path().join("victim");
        fs::create_dir_all(victim.join("sub")).unwrap();
        fs::write(victim.join("sub/keep"), b"x").unwrap();
        let tree = d.path().join("tree");
        fs::create_dir_all(tree.join("a/b")).unwrap();
        std::os::unix::fs::symlink(&victim, tree.join("a/b/link")).unwrap();
        std::os::unix::fs::symlink(&victim, tree.join("a/top")).unwrap();
        let mut root = open_dir_below(d.path(), Path::new("tree")).unwrap();
        remove_at(&mut root, OsStr::new("a")).unwrap();
        assert!(!tree.join("a").exists());
        assert!(victim.join("sub/keep").exists());
        // A link on the way is never followed either.
        std::os::unix::fs::symlink(&victim, tree.join("via")).unwrap();
        let e = open_dir_below(&tree, Path::new("via/sub")).err();
        assert!(matches!(e, Some(nix::errno::Errno::ELOOP) | Some(nix::errno::Errno::ENOTDIR)), "{e:?}");
    }

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

    #[test]
    fn write_new_nofollow_refuses_an_existing_file_and_sets_the_mode_asked() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("f");
        fs::write(&p, "old").unwrap();
        let e = write_new_nofollow(&p, b"new", 0o600).unwrap_err();
        assert!(e.msg.starts_with(&format!("cannot create {}: ", p.display())) && !e.msg.contains('\n'), "{}", e.msg);
        assert_eq!(fs::read(&p).unwrap(), b"old");
        // The mode is the one asked for, whatever the umask.
        for mode in [0o600, 0o640, 0o666] {
            let q = d.path().join(format!("m{:o}", mode));
            write_new_nofollow(&q, b"x", mode).unwrap();
            assert_eq!(fs::metadata(&q).unwrap().mode() & 0o777, mode);
            assert_eq!(fs::read(&q).unwrap(), b"x");
        }
    }

    #[test]
    fn create_temp_in_sets_the_mode_and_leaves_nothing_on_failure() {
        let d = tempfile::tempdir().unwrap();
        let (_, p) = create_temp_in(d.path(), ".t.", 0o640).unwrap();
        assert_eq!(fs::metadata(&p).unwrap().mode() & 0o777, 0o640);
        assert!(p.file_name().unwrap().to_str().unwrap().starts_with(".t."));
        // Where no file can be made (the directory is missing, or is a file), the error is one
        // line naming the path and nothing is left.
        let missing = d.path().join("missing");
        let e = create_temp_in(&missing, ".t.", 0o600).unwrap_err();
        assert!(e.msg.starts_with(&format!("cannot create {}/.t.", missing.display())), "{}", e.msg);
        assert!(!e.msg.contains('\n') && !missing.exists());
        let file = d.path().join("file");
        fs::write(&file, "keep").unwrap();
        assert!(create_temp_in(&file, ".t.", 0o600).is_err());
        assert_eq!(fs::read(&file).unwrap(), b"keep");
        assert_eq!(fs::read_dir(d.path()).unwrap().count(), 2, "only the first temp file and `file`");
    }

    #[test]
    fn create_dir_mode_refuses_a_planted_link_and_sets_the_mode_asked() {
        let d = tempfile::tempdir().unwrap();
        let victim = d.path().join("victim");
        fs::create_dir(&victim).unwrap();
        fs::set_permissions(&victim, fs::Permissions::from_mode(0o700)).unwrap();
        let link = d.path().join("link");
        std::os::unix::fs::symlink(&victim, &link).unwrap();
        let e = create_dir_mode(&link, 0o777).unwrap_err();
        assert!(e.msg.starts_with(&format!("cannot create directory {}: ", link.display())), "{}", e.msg);
        assert_eq!(fs::metadata(&victim).unwrap().mode() & 0o777, 0o700, "the link's target keeps its mode");
        assert!(fs::symlink_metadata(&link).unwrap().file_type().is_symlink());
        for mode in [0o700, 0o750, 0o777] {
            let p = d.path().join(format!("d{:o}", mode));
            create_dir_mode(&p, mode).unwrap();
            assert_eq!(fs::metadata(&p).unwrap().mode() & 0o777, mode);
        }
        let t = create_temp_dir_in(d.path(), ".s.", 0o700).unwrap();
        assert_eq!(fs::metadata(&t).unwrap().mode() & 0o777, 0o700);
    }

    #[test]
    fn atomic_write_replaces_a_link_and_cleans_up_after_a_failure() {
        let d = tempfile::tempdir().unwrap();
        let victim = d.path().join("victim");
        fs::write(&victim, "keep").unwrap();
        let p = d.path().join("f");
        std::os::unix::fs::symlink(&victim, &p).unwrap();
        write_atomic(&p, b"new", 0o600, None).unwrap();
        assert_eq!(fs::read(&victim).unwrap(), b"keep");
        assert!(fs::symlink_metadata(&p).unwrap().is_file());
        // A rename that fails (a non-empty directory is in the way) leaves no temporary file.
        let busy = d.path().join("busy");
        fs::create_dir(&busy).unwrap();
        fs::write(busy.join("x"), "x").unwrap();
        let e = write_atomic(&busy, b"new", 0o600, None).unwrap_err();
        assert!(e.msg.starts_with("cannot rename "), "{}", e.msg);
        let mut names: Vec<String> =
            fs::read_dir(d.path()).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
        names.sort();
        assert_eq!(names, ["busy", "f", "victim"]);
    }
}
