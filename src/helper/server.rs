//! The helper's Unix socket: only our own uid (or root) may talk to it, one request per
//! connection, replies streamed as newline-delimited JSON. What a stop does is in `stop`.

use std::io::BufReader;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use crate::error::{Context, Result};
use crate::protocol::{self, Phase, Reply, Request};

use super::{lock, Exit, Shared};

/// Listen on the socket, mode 0600.
pub fn bind(path: &Path) -> Result<UnixListener> {
    let l = UnixListener::bind(path).context(|| format!("cannot listen on {}", path.display()))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
        .context(|| format!("cannot set mode of {}", path.display()))?;
    Ok(l)
}

/// Accept connections for the helper's life, each answered on its own thread.
pub fn serve(listener: UnixListener, sh: Arc<Shared>) {
    let me = nix::unistd::geteuid().as_raw();
    for conn in listener.incoming() {
        let Ok(stream) = conn else { continue };
        match nix::sys::socket::getsockopt(&stream, nix::sys::socket::sockopt::PeerCredentials) {
            Ok(cred) if cred.uid() == me || cred.uid() == 0 => {}
            Ok(cred) => {
                log::warn!(
                    "refused a connection from uid {} (pid {}): only uid {} or root may talk to this helper",
                    cred.uid(),
                    cred.pid(),
                    me
                );
                continue;
            }
            Err(e) => {
                log::warn!("refused a connection whose peer credentials cannot be read: {}", e);
                continue;
            }
        }
        let sh = sh.clone();
        std::thread::spawn(move || handle(stream, sh));
    }
}

/// Read one request from a connection and answer it.
fn handle(stream: UnixStream, sh: Arc<Shared>) {
    let _ = stream.set_read_timeout(Some(Duration::from_secs(30)));
    let Ok(mut out) = stream.try_clone() else { return };
    let mut reader = BufReader::new(stream);
    let line = match protocol::read_line(&mut reader) {
        Ok(Some(l)) => l,
        Ok(None) => return,
        Err(e) => {
            log::warn!("rejected a request: {}", e);
            let _ = protocol::write_msg(&mut out, &Reply::Error { message: format!("rejected: {}", e), backup: None });
            return;
        }
    };
    let req: Request = match protocol::decode(&line) {
        Ok(r) => r,
        Err(e) => {
            log::warn!("rejected a request: {}", e);
            let _ = protocol::write_msg(&mut out, &Reply::Error { message: e.msg, backup: None });
            return;
        }
    };
    log::info!("request: {:?}", req);
    let mut send = |r: &Reply| {
        // The client may go away (post killed); the helper carries on regardless.
        let _ = protocol::write_msg(&mut out, r);
    };
    match req {
        Request::Status => send(&Reply::Status { backup: sh.status() }),
        Request::Abort => abort(&sh, &mut send),
        Request::Stop { archive_timeout_secs } => {
            super::stop::stop(&sh, Duration::from_secs(archive_timeout_secs), &mut send)
        }
        Request::Stored => stored(&sh, &mut send),
    }
}

/// `Stored`: post wrote the sidecar; release the helper if everything is stopped and archived.
fn stored(sh: &Arc<Shared>, send: &mut dyn FnMut(&Reply)) {
    let all_archived = sh.nodes.iter().all(|n| n.is_archived());
    if sh.phase() == Phase::Stopped && all_archived {
        send(&Reply::Ok { message: "helper released".into() });
        sh.request_exit(Exit::Stored);
    } else {
        send(&Reply::Error { message: "the backup is not stopped and archived yet".into(), backup: Some(sh.status()) });
    }
}

/// `Abort`: discard every node's backup and end the helper.
fn abort(sh: &Arc<Shared>, send: &mut dyn FnMut(&Reply)) {
    let _g = lock(&sh.op_lock);
    if sh.exiting.load(std::sync::atomic::Ordering::SeqCst) {
        send(&Reply::Ok { message: "the helper is already ending".into() });
        return;
    }
    super::discard_all(&sh.nodes);
    sh.set_phase(Phase::Aborted);
    send(&Reply::Ok {
        message: format!("backup {} aborted: every node's backup was stopped and discarded", sh.cfg.backup_id),
    });
    sh.request_exit(Exit::Aborted("aborted on request (pg-backup-hooks abort): this copy cannot be restored".into()));
}
