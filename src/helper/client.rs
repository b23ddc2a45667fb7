//! Talking to a running helper from post, abort and status.

use std::io::BufReader;
use std::os::unix::net::UnixStream;

use crate::error::{exit, Error, Result};
use crate::protocol::{self, Reply, Request};
use crate::rundir::RunDir;

/// Send one request and collect replies; progress lines go to `on_progress` as they come.
/// Returns Ok(None) when no helper is listening for this id.
pub fn request(run: &RunDir, id: &str, req: &Request, on_progress: &mut dyn FnMut(&str)) -> Result<Option<Reply>> {
    let path = run.socket(id)?;
    let stream = match UnixStream::connect(&path) {
        Ok(s) => s,
        Err(e) if matches!(e.kind(), std::io::ErrorKind::NotFound | std::io::ErrorKind::ConnectionRefused) => {
            return Ok(None)
        }
        Err(e) => return Err(err!("cannot connect to the helper at {}: {}", path.display(), e)),
    };
    check_peer(&stream, &path)?;
    let mut w = stream.try_clone().map_err(|e| err!("socket {}: {}", path.display(), e))?;
    protocol::write_msg(&mut w, req).map_err(|e| err!("cannot send to the helper at {}: {}", path.display(), e))?;
    let mut r = BufReader::new(stream);
    loop {
        let line = protocol::read_line(&mut r).map_err(|e| err!("reading from the helper: {}", e))?;
        let Some(line) = line else {
            return Err(err!(
                "the helper for backup {} closed the connection without an answer: see {}",
                id,
                run.log(id).display()
            ));
        };
        let reply: Reply = protocol::decode(&line).map_err(|e| err!("helper reply: {}", e))?;
        match reply {
            Reply::Progress { message } => on_progress(&message),
            other => return Ok(Some(other)),
        }
    }
}

/// Talk only to a helper run by us or by root (SO_PEERCRED, from the kernel): a socket served
/// by anyone else could feed post forged labels. The helper checks its clients the same way.
fn check_peer(stream: &UnixStream, path: &std::path::Path) -> Result<()> {
    let me = nix::unistd::geteuid().as_raw();
    match nix::sys::socket::getsockopt(stream, nix::sys::socket::sockopt::PeerCredentials) {
        Ok(cred) if cred.uid() == me || cred.uid() == 0 => Ok(()),
        Ok(cred) => Err(err!(
            "the socket {} is served by uid {} (pid {}), neither us (uid {}) nor root: refusing to talk to it; remove it and check who can write to {}",
            path.display(),
            cred.uid(),
            cred.pid(),
            me,
            path.parent().map(|p| p.display().to_string()).unwrap_or_default()
        )),
        Err(e) => Err(err!("cannot read the peer credentials of {}: {}", path.display(), e)),
    }
}

/// Why no helper answers for a backup id, from what the run dir remembers.
pub enum NoHelper {
    /// post stored the backup and released its helper: not an error (the message is news
    /// for stdout, and the exit code is 0).
    Stored(String),
    /// Aborted, failed, gone, or never started.
    Error(Error),
}

impl NoHelper {
    /// The one-line message either way.
    pub fn message(&self) -> &str {
        match self {
            NoHelper::Stored(m) => m,
            NoHelper::Error(e) => &e.msg,
        }
    }
}

/// What became of the backup `id` whose helper does not answer.
pub fn no_helper(run: &RunDir, id: &str) -> NoHelper {
    use crate::rundir::Marker;
    NoHelper::Error(match run.marker(id) {
        Some(Marker::Aborted(why)) => err!("backup {} was aborted: {}", id, why.trim()),
        Some(Marker::Failed(why)) => err!("backup {} failed: {}", id, why.trim()),
        Some(Marker::Done(_)) => return NoHelper::Stored(format!("backup {} is already stored", id)),
        None if run.path(id, "lock").exists() => err!(
            "the helper for backup {} is gone (killed, crashed or the machine restarted; see {}): its sessions ended and with them the backups, so this copy cannot be restored; run the backup job again",
            id,
            run.log(id).display()
        ),
        None => Error::with_code(
            exit::NO_BACKUP,
            format!(
                "no backup {} is in progress in {} (did pre run with this id and the same --run-dir?)",
                id,
                run.dir.display()
            ),
        ),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rundir::Marker;

    fn run_dir() -> (tempfile::TempDir, RunDir) {
        let t = tempfile::tempdir().unwrap();
        let run = RunDir::open(Some(t.path().join("run")), true).unwrap();
        (t, run)
    }

    #[test]
    fn a_stored_backup_is_success_not_an_error() {
        let (_t, run) = run_dir();
        run.set_marker("b1", &Marker::Done("stored in /s/b1".into())).unwrap();
        let NoHelper::Stored(m) = no_helper(&run, "b1") else { panic!("a stored backup is not an error") };
        assert_eq!(m, "backup b1 is already stored");
    }

    #[test]
    fn what_the_run_dir_remembers_is_the_error() {
        let (_t, run) = run_dir();
        let error = |id| match no_helper(&run, id) {
            NoHelper::Error(e) => e,
            NoHelper::Stored(m) => panic!("{}", m),
        };
        let e = error("none");
        assert_eq!(e.code, exit::NO_BACKUP);
        assert!(e.msg.starts_with("no backup none is in progress in "), "{}", e.msg);
        run.set_marker("ab", &Marker::Aborted("on request\n".into())).unwrap();
        assert_eq!(error("ab").msg, "backup ab was aborted: on request");
        run.set_marker("f", &Marker::Failed("pre failed: x".into())).unwrap();
        assert_eq!(error("f").msg, "backup f failed: pre failed: x");
        std::fs::write(run.path("gone", "lock"), "").unwrap();
        let e = error("gone");
        assert_eq!(e.code, exit::FAILURE);
        assert!(e.msg.starts_with("the helper for backup gone is gone"), "{}", e.msg);
        assert_eq!(no_helper(&run, "gone").message(), e.msg);
    }
}
