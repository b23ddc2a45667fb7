//! Reading one file from a WAL archive without a server: from a plain directory, or through
//! the user's restore_command run as PostgreSQL would run it. Nothing is read through a
//! symlink, and fetched files land in a private temporary directory.

use std::fs;
use std::io::Read;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::ExitStatus;
use std::time::{Duration, Instant};

use crate::error::Result;

/// Where the archive is: a plain directory, or a restore_command that fetches one file.
pub enum Archive<'a> {
    Dir(&'a Path),
    Command { cmd: &'a str, pgdata: &'a Path, owner: (u32, u32) },
}

impl Archive<'_> {
    pub fn describe(&self) -> String {
        match self {
            Archive::Dir(d) => format!("archive directory {}", d.display()),
            Archive::Command { cmd, .. } => format!("archive (restore_command {})", cmd),
        }
    }

    /// Up to `max` bytes of archived file `name`; None when the archive does not have it.
    pub fn fetch(&self, name: &str, max: usize) -> Result<Option<Vec<u8>>> {
        self.fetch_within(name, max, None)
    }

    /// [`Archive::fetch`], with restore_command killed (and the fetch failed) after `limit`.
    pub fn fetch_within(&self, name: &str, max: usize, limit: Option<Duration>) -> Result<Option<Vec<u8>>> {
        match self {
            Archive::Dir(d) => read_regular(&d.join(name), max),
            Archive::Command { cmd, pgdata, owner } => fetch_with_command(cmd, pgdata, *owner, name, max, limit),
        }
    }
}

/// Read a regular file (never through a symlink); None when it does not exist.
pub fn read_regular(p: &Path, max: usize) -> Result<Option<Vec<u8>>> {
    let f = fs::OpenOptions::new().read(true).custom_flags(nix::libc::O_NOFOLLOW).open(p);
    let f = match f {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(err!("cannot open {}: {} (it must be a regular file)", p.display(), e)),
    };
    let meta = f.metadata().map_err(|e| err!("cannot stat {}: {}", p.display(), e))?;
    if !meta.is_file() {
        return Err(err!("{} is not a regular file", p.display()));
    }
    let mut buf = Vec::new();
    f.take(max as u64).read_to_end(&mut buf).map_err(|e| err!("cannot read {}: {}", p.display(), e))?;
    Ok(Some(buf))
}

/// A private directory for fetched files and the staged sidecar, removed on drop.
pub struct TempDir(PathBuf);

impl TempDir {
    pub fn new(owner: Option<(u32, u32)>) -> Result<TempDir> {
        let base = std::env::temp_dir();
        for i in 0..100u32 {
            let p = base.join(format!("pg-backup-hooks-label.{}.{}", std::process::id(), i));
            match fs::create_dir(&p) {
                Ok(()) => {
                    let d = TempDir(p);
                    fs::set_permissions(&d.0, fs::Permissions::from_mode(0o700))
                        .map_err(|e| err!("cannot set mode of {}: {}", d.0.display(), e))?;
                    if let Some((uid, gid)) = owner {
                        crate::fsutil::chown(&d.0, uid, gid)?;
                    }
                    return Ok(d);
                }
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
                Err(e) => return Err(err!("cannot create a directory in {}: {}", base.display(), e)),
            }
        }
        Err(err!("cannot create a private directory in {}", base.display()))
    }

    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

/// restore_command's substitutions: %f the file, %p where to put it, %r a restart point
/// (the lowest name, so that a cleanup step in the command removes nothing), %% a percent.
pub fn substitute(cmd: &str, file: &str, dest: &str) -> String {
    let mut out = String::new();
    let mut it = cmd.chars();
    while let Some(c) = it.next() {
        if c != '%' {
            out.push(c);
            continue;
        }
        match it.next() {
            Some('f') => out.push_str(file),
            Some('p') => out.push_str(dest),
            Some('r') => out.push_str("000000000000000000000000"),
            Some('%') => out.push('%'),
            Some(o) => {
                out.push('%');
                out.push(o);
            }
            None => out.push('%'),
        }
    }
    out
}

/// Run restore_command for one file into a private temporary file, as the server would: by
/// sh -c in the data directory, as the data directory's owner when we are root; killed with
/// its process group after `limit`.
fn fetch_with_command(
    cmd: &str,
    pgdata: &Path,
    owner: (u32, u32),
    name: &str,
    max: usize,
    limit: Option<Duration>,
) -> Result<Option<Vec<u8>>> {
    use std::os::unix::process::CommandExt;
    let root = nix::unistd::Uid::effective().is_root();
    let tmp = TempDir::new(root.then_some(owner))?;
    let dest = tmp.path().join(name);
    let line = substitute(cmd, name, &dest.to_string_lossy());
    let errors = tmp.path().join(".stderr");
    let stderr = fs::File::create(&errors).map_err(|e| err!("cannot create {}: {}", errors.display(), e))?;
    let mut c = std::process::Command::new("/bin/sh");
    c.arg("-c").arg(&line).current_dir(pgdata).stdin(std::process::Stdio::null());
    c.stdout(std::process::Stdio::null()).stderr(stderr).process_group(0);
    if root && owner.0 != 0 {
        c.uid(owner.0).gid(owner.1);
    }
    let mut child = c.spawn().map_err(|e| err!("cannot run restore_command {:?}: {}", line, e))?;
    let status = wait_bounded(&mut child, limit).map_err(|e| err!("restore_command {:?}: {}", line, e))?;
    let Some(status) = status else {
        return Err(err!(
            "restore_command {:?} did not finish within {} s for {}: check that it cannot hang (a mount, a network store), then run restore-prep again",
            line,
            limit.map(|l| l.as_secs()).unwrap_or(0),
            name
        ));
    };
    // "Not in the archive" is an ordinary answer here: what the command printed for it is noise.
    match status.code() {
        Some(0) => read_regular(&dest, max),
        Some(code) if code <= 125 => Ok(None),
        _ => Err(err!(
            "restore_command {:?} failed for {} ({}{}): PostgreSQL would stop recovery on this too; fix the command",
            line,
            name,
            status,
            fs::read_to_string(&errors)
                .unwrap_or_default()
                .lines()
                .last()
                .map(|l| format!(": {}", l))
                .unwrap_or_default()
        )),
    }
}

/// Wait for `child`; None (and the child's process group killed) when `limit` passes first.
fn wait_bounded(child: &mut std::process::Child, limit: Option<Duration>) -> std::io::Result<Option<ExitStatus>> {
    let Some(limit) = limit else { return child.wait().map(Some) };
    let deadline = Instant::now() + limit;
    loop {
        if let Some(s) = child.try_wait()? {
            return Ok(Some(s));
        }
        if Instant::now() >= deadline {
            let pgid = nix::unistd::Pid::from_raw(child.id() as i32);
            let _ = nix::sys::signal::killpg(pgid, nix::sys::signal::Signal::SIGKILL);
            let _ = child.wait();
            return Ok(None);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn restore_command_substitutions() {
        assert_eq!(
            substitute("cp /a/%f %p && echo 100%% %r %x", "F", "/t/F"),
            "cp /a/F /t/F && echo 100% 000000000000000000000000 %x"
        );
    }

    use std::os::unix::fs::{symlink, MetadataExt};

    #[test]
    fn a_link_or_a_non_file_in_the_archive_is_refused_and_a_missing_file_is_none() {
        let d = tempfile::tempdir().unwrap();
        let secret = d.path().join("secret");
        fs::write(&secret, b"not WAL").unwrap();
        let arch = d.path().join("arch");
        fs::create_dir_all(arch.join("00000002.history")).unwrap();
        symlink(&secret, arch.join("000000010000000000000003")).unwrap();
        fs::write(arch.join("000000010000000000000004"), b"0123456789").unwrap();
        let a = Archive::Dir(&arch);
        let e = a.fetch("000000010000000000000003", 100).unwrap_err();
        assert!(e.msg.contains(&arch.join("000000010000000000000003").display().to_string()), "{}", e.msg);
        assert!(!e.msg.contains("not WAL"));
        let e = a.fetch("00000002.history", 100).unwrap_err();
        assert!(e.msg.contains("not a regular file"), "{}", e.msg);
        assert_eq!(a.fetch("000000010000000000000005", 100).unwrap(), None);
        assert_eq!(a.fetch("000000010000000000000004", 4).unwrap().unwrap(), b"0123");
    }

    #[test]
    fn restore_command_runs_in_the_data_directory_and_its_exit_status_decides() {
        let d = tempfile::tempdir().unwrap();
        let pgdata = d.path().join("data");
        let arch = d.path().join("arch");
        fs::create_dir_all(&pgdata).unwrap();
        fs::create_dir_all(&arch).unwrap();
        fs::write(arch.join("00000002.history"), b"1\t0/3000000\tno recovery target specified\n").unwrap();
        let me = (nix::unistd::geteuid().as_raw(), nix::unistd::getegid().as_raw());
        let cmd = format!("cp {}/%f %p", arch.display());
        let a = Archive::Command { cmd: &cmd, pgdata: &pgdata, owner: me };
        assert_eq!(a.fetch("00000002.history", 100).unwrap().unwrap(), b"1\t0/3000000\tno recovery target specified\n");
        assert_eq!(a.fetch("00000003.history", 100).unwrap(), None, "cp exits 1: not in the archive");
        let a = Archive::Command { cmd: "pwd > %p", pgdata: &pgdata, owner: me };
        let cwd = a.fetch("00000002.history", 1000).unwrap().unwrap();
        assert_eq!(String::from_utf8_lossy(&cwd).trim(), pgdata.display().to_string());
        let a = Archive::Command { cmd: "echo dying >&2; kill -9 $$", pgdata: &pgdata, owner: me };
        let e = a.fetch("00000002.history", 100).unwrap_err();
        assert!(e.msg.contains("failed for 00000002.history") && e.msg.contains("dying"), "{}", e.msg);
        let a = Archive::Command { cmd: "exit 126", pgdata: &pgdata, owner: me };
        assert!(a.fetch("00000002.history", 100).is_err(), "above 125 is not \"not in the archive\"");
    }

    #[test]
    fn a_restore_command_that_hangs_is_killed_after_the_limit() {
        let d = tempfile::tempdir().unwrap();
        let me = (nix::unistd::geteuid().as_raw(), nix::unistd::getegid().as_raw());
        let a = Archive::Command { cmd: "sleep 30; echo late > %p", pgdata: d.path(), owner: me };
        let t = Instant::now();
        let e = a.fetch_within("00000002.history", 100, Some(Duration::from_millis(300))).unwrap_err();
        assert!(t.elapsed() < Duration::from_secs(5), "{:?}", t.elapsed());
        assert!(e.msg.contains("did not finish within"), "{}", e.msg);
    }

    #[test]
    fn as_root_restore_command_runs_as_the_data_directory_owner() {
        if !nix::unistd::geteuid().is_root() {
            return;
        }
        let d = tempfile::tempdir().unwrap();
        fs::set_permissions(d.path(), fs::Permissions::from_mode(0o755)).unwrap();
        let a = Archive::Command { cmd: "id -u > %p", pgdata: d.path(), owner: (65534, 65534) };
        assert_eq!(String::from_utf8_lossy(&a.fetch("00000002.history", 100).unwrap().unwrap()).trim(), "65534");
    }

    #[test]
    fn the_private_directory_is_0700_and_goes_on_drop() {
        let t = TempDir::new(None).unwrap();
        let p = t.path().to_path_buf();
        fs::write(p.join("f"), b"x").unwrap();
        assert_eq!(fs::metadata(&p).unwrap().mode() & 0o7777, 0o700);
        drop(t);
        assert!(fs::symlink_metadata(&p).is_err());
    }
}
