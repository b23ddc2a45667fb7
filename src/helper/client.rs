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

/// The error for "no helper is running for this id", with what the run dir remembers.
pub fn no_helper_error(run: &RunDir, id: &str) -> Error {
    use crate::rundir::Marker;
    match run.marker(id) {
        Some(Marker::Aborted(why)) => err!("backup {} was aborted: {}", id, why.trim()),
        Some(Marker::Failed(why)) => err!("backup {} failed: {}", id, why.trim()),
        Some(Marker::Done(_)) => Error::with_code(exit::OK, format!("backup {} is already stored", id)),
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
    }
}
