//! The test server: postgres started directly as the data directory's owner, with its log
//! in a file; stopped with SIGINT (fast shutdown), then SIGQUIT (immediate) after a timeout.
//! A Drop guard stops it on every way out, and SIGTERM/SIGINT/SIGHUP only raise a flag
//! that the waits poll, so an interrupted restore-test still stops its server. Without
//! --keep the server also gets SIGINT from the kernel if restore-test dies (PR_SET_PDEATHSIG).

use std::fs::{File, OpenOptions};
use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicI32, Ordering};
use std::time::{Duration, Instant};

use nix::sys::signal::{self, SaFlags, SigAction, SigHandler, SigSet, Signal};
use nix::unistd::Pid;

use crate::error::{Context, Result};

static INTERRUPTED: AtomicI32 = AtomicI32::new(0);

extern "C" fn on_signal(sig: nix::libc::c_int) {
    INTERRUPTED.store(sig, Ordering::SeqCst);
}

/// Catch SIGTERM, SIGINT and SIGHUP into a flag (see [`interrupted`]).
pub fn catch_signals() -> Result<()> {
    let action = SigAction::new(SigHandler::Handler(on_signal), SaFlags::empty(), SigSet::empty());
    for s in [Signal::SIGTERM, Signal::SIGINT, Signal::SIGHUP] {
        // SAFETY: the handler only stores into an atomic, which is async-signal-safe.
        unsafe { signal::sigaction(s, &action) }.map_err(|e| err!("cannot catch {}: {}", s, e))?;
    }
    Ok(())
}

/// The signal that interrupted restore-test, if one did.
pub fn interrupted() -> Option<String> {
    match INTERRUPTED.load(Ordering::SeqCst) {
        0 => None,
        n => Some(Signal::try_from(n).map(|s| s.as_str().to_string()).unwrap_or_else(|_| format!("signal {}", n))),
    }
}

/// How to start the server.
pub struct Start<'a> {
    pub postgres: &'a Path,
    pub args: Vec<String>,
    pub owner: (u32, u32),
    pub log: &'a Path,
    /// Kept running after restore-test (--keep): no parent-death signal, no Drop stop.
    pub keep: bool,
}

pub struct Server {
    child: Option<Child>,
    pub pid: u32,
    pub log: PathBuf,
    keep: bool,
}

/// Open (append) the server's log file with the owner's file-system rights, never through a
/// symbolic link: the data directory is the owner's, so a file (or a hard link to another
/// file) there is opened only if the owner may write it, and a new one is the owner's.
fn open_log(p: &Path, owner: (u32, u32)) -> Result<File> {
    crate::restore::privs::as_owner(owner, || {
        OpenOptions::new()
            .append(true)
            .create(true)
            .mode(0o600)
            .custom_flags(nix::libc::O_NOFOLLOW | nix::libc::O_CLOEXEC)
            .open(p)
            .context(|| format!("cannot open the server log {} as the data directory's owner", p.display()))
    })
}

pub fn start(s: Start) -> Result<Server> {
    let log = open_log(s.log, s.owner)?;
    let err_log = log.try_clone().context(|| format!("cannot open the server log {}", s.log.display()))?;
    let mut cmd = Command::new(s.postgres);
    cmd.args(&s.args).stdin(Stdio::null()).stdout(log).stderr(err_log).current_dir("/").process_group(0);
    for v in ["PGDATA", "PGPORT", "PGHOST", "PGOPTIONS"] {
        cmd.env_remove(v);
    }
    if nix::unistd::geteuid().is_root() {
        if s.owner.0 == 0 {
            return Err(err!("the data directory is owned by root: PostgreSQL does not run as root"));
        }
        // std drops the supplementary groups when it changes the uid as root.
        cmd.uid(s.owner.0).gid(s.owner.1);
    }
    if !s.keep {
        // SAFETY: prctl is async-signal-safe and the closure allocates nothing. It runs
        // after the uid change, which would clear the setting.
        unsafe {
            cmd.pre_exec(|| nix::sys::prctl::set_pdeathsig(Signal::SIGINT).map_err(std::io::Error::from));
        }
    }
    let child = cmd.spawn().context(|| format!("cannot start {}", s.postgres.display()))?;
    Ok(Server { pid: child.id(), child: Some(child), log: s.log.to_path_buf(), keep: s.keep })
}

impl Server {
    /// The server's exit status, once it has exited.
    pub fn exited(&mut self) -> Option<ExitStatus> {
        let c = self.child.as_mut()?;
        match c.try_wait() {
            Ok(Some(st)) => {
                self.child = None;
                Some(st)
            }
            _ => None,
        }
    }

    /// Fast shutdown; immediate after `timeout`; SIGKILL if even that does not end it.
    /// Returns how it stopped, in words.
    pub fn stop(&mut self, timeout: Duration) -> Result<String> {
        let Some(mut c) = self.child.take() else { return Ok("the server had already exited".into()) };
        let pid = Pid::from_raw(self.pid as i32);
        let wait = |c: &mut Child, d: Duration| -> Option<ExitStatus> {
            let end = Instant::now() + d;
            loop {
                if let Ok(Some(st)) = c.try_wait() {
                    return Some(st);
                }
                if Instant::now() >= end {
                    return None;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        };
        if let Ok(Some(_)) = c.try_wait() {
            return Ok("the server had already exited".into());
        }
        let _ = signal::kill(pid, Signal::SIGINT);
        if wait(&mut c, timeout).is_some() {
            return Ok("stopped (fast shutdown)".into());
        }
        let _ = signal::kill(pid, Signal::SIGQUIT);
        if wait(&mut c, Duration::from_secs(10)).is_some() {
            return Ok(format!(
                "stopped by immediate shutdown: fast shutdown took longer than {} s",
                timeout.as_secs()
            ));
        }
        let _ = c.kill();
        let _ = c.wait();
        Err(err!("the server (pid {}) ignored fast and immediate shutdown and was killed", self.pid))
    }

    /// Leave the server running (--keep): nothing stops it when this ends.
    pub fn detach(mut self) {
        self.child = None;
        self.keep = true;
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if !self.keep {
            let _ = self.stop(Duration::from_secs(30));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A hard link in the owner's directory to a file the owner cannot write is not opened.
    #[test]
    fn the_log_is_opened_with_the_owners_rights() {
        if !nix::unistd::geteuid().is_root() {
            return;
        }
        let d = tempfile::tempdir().unwrap();
        let nobody = (65534, 65534);
        let owned = d.path().join("data");
        std::fs::create_dir(&owned).unwrap();
        std::os::unix::fs::chown(&owned, Some(nobody.0), Some(nobody.1)).unwrap();
        std::fs::set_permissions(d.path(), std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
        let secret = d.path().join("secret");
        std::fs::write(&secret, "root's").unwrap();
        std::fs::set_permissions(&secret, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
        let log = owned.join("server.log");
        std::fs::hard_link(&secret, &log).unwrap();
        let e = open_log(&log, nobody).unwrap_err();
        assert!(e.msg.contains("cannot open the server log"), "{}", e.msg);
        assert_eq!(std::fs::read_to_string(&secret).unwrap(), "root's");
        std::fs::remove_file(&log).unwrap();
        let f = open_log(&log, nobody).unwrap();
        assert_eq!(std::os::unix::fs::MetadataExt::uid(&f.metadata().unwrap()), nobody.0);
    }
}
