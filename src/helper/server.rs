//! The helper's Unix socket: only our own uid (or root) may talk to it, one request per
//! connection, replies streamed as newline-delimited JSON.

use std::io::BufReader;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::error::{Context, Result};
use crate::protocol::{self, Phase, Reply, Request};

use super::{lock, Exit, Shared};

pub fn bind(path: &Path) -> Result<UnixListener> {
    let l = UnixListener::bind(path).context(|| format!("cannot listen on {}", path.display()))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
        .context(|| format!("cannot set mode of {}", path.display()))?;
    Ok(l)
}

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
            let _ = protocol::write_msg(&mut out, &Reply::Error { message: e, backup: None });
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
        Request::Stop { archive_timeout_secs } => stop(&sh, Duration::from_secs(archive_timeout_secs), &mut send),
        Request::Stored => {
            let all_archived = sh.nodes.iter().all(|n| n.is_archived());
            if sh.phase() == Phase::Stopped && all_archived {
                send(&Reply::Ok { message: "helper released".into() });
                sh.request_exit(Exit::Stored);
            } else {
                send(&Reply::Error {
                    message: "the backup is not stopped and archived yet".into(),
                    backup: Some(sh.status()),
                });
            }
        }
    }
}

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

fn stop(sh: &Arc<Shared>, archive_timeout: Duration, send: &mut dyn FnMut(&Reply)) {
    let guard = lock(&sh.op_lock);
    if sh.exiting.load(std::sync::atomic::Ordering::SeqCst) {
        send(&Reply::Error { message: "the helper is ending (aborted or expired)".into(), backup: None });
        return;
    }
    if sh.phase() == Phase::Running {
        sh.set_phase(Phase::Stopping);
        std::thread::scope(|s| {
            for n in &sh.nodes {
                s.spawn(move || {
                    if let Ok(r) = n.stop() {
                        log::info!("node {}: backup stopped at {}", n.name, r.stop_lsn);
                    }
                });
            }
        });
        let failed: Vec<String> =
            sh.nodes.iter().filter_map(|n| n.failure().map(|f| format!("node {}: {}", n.name, f))).collect();
        if !failed.is_empty() {
            let why = format!("{}; this copy cannot be restored: run the backup job again", failed.join("; "));
            sh.set_phase(Phase::Failed);
            send(&Reply::Error { message: why.clone(), backup: Some(sh.status()) });
            sh.request_exit(Exit::Failed(why));
            return;
        }
        sh.set_phase(Phase::Stopped);
        create_restore_point(sh);
    }
    if sh.phase() != Phase::Stopped {
        send(&Reply::Error {
            message: format!("backup is {:?}, cannot stop it", sh.phase()),
            backup: Some(sh.status()),
        });
        return;
    }
    // The wait only reads: a post retried while an earlier one (killed, say) still waits
    // must not queue behind it.
    drop(guard);
    let archived = wait_archived(sh, archive_timeout, send);
    let message = (!archived).then(|| {
        let stalled: Vec<String> = sh
            .nodes
            .iter()
            .filter(|n| !n.is_archived())
            .map(|n| describe_archiver(&n.name, &n.status().stop, n.archiver()))
            .collect();
        format!("WAL archiving did not finish within {} s: {}", archive_timeout.as_secs(), stalled.join("; "))
    });
    send(&Reply::Stopped { backup: sh.status(), archived, message });
}

/// After every node stopped: one named restore point for the whole backup, then a WAL
/// switch on each node so the segment holding it can be archived. With Citus the
/// coordinator creates it on every node at one instant; otherwise each node gets its own.
fn create_restore_point(sh: &Arc<Shared>) {
    use crate::pg::api;
    use crate::protocol::RestorePointInfo;
    let name = sh.cfg.backup_id.clone();
    // Standbys given with pre --node-primary get the point through their primary.
    let primaries: Vec<&Arc<super::node::Node>> =
        sh.nodes.iter().filter(|n| !n.facts.in_recovery || n.primary.is_some()).collect();
    let set = |rp: Option<RestorePointInfo>, note: Option<String>| {
        if let Some(n) = &note {
            log::warn!("{}", n);
        }
        *lock(&sh.restore_point) = (rp, note);
    };
    let Some(first) = primaries.first() else {
        set(
            None,
            Some(
                "no restore point: every node is a standby, and restore points can only be created on a primary (give each standby's primary with pre --node-primary NAME=CONNINFO)".into(),
            ),
        );
        return;
    };
    let coord = sh.nodes.iter().find(|n| n.name == "coordinator" && !n.facts.in_recovery).unwrap_or(first);
    let citus = sh.nodes.len() > 1 && coord.with_client(|c| api::has_citus(c).map_err(|e| e.msg)).unwrap_or(false);
    if citus {
        if let Err(e) = coord.with_client(|c| api::citus_create_restore_point(c, &name).map_err(|e| e.msg)) {
            set(
                None,
                Some(format!("no restore point: citus_create_restore_point failed on node {}: {}", coord.name, e)),
            );
            return;
        }
    }
    let errors: Vec<String> = std::thread::scope(|s| {
        let hs: Vec<_> = primaries
            .iter()
            .map(|n| {
                let name = &name;
                s.spawn(move || {
                    let r = n
                        .with_restore_point_client(|c| {
                            let at = if citus { api::current_wal_lsn(c)? } else { api::create_restore_point(c, name)? };
                            api::switch_wal(c)?;
                            Ok(at)
                        })
                        .unwrap_or_else(|| Err("a standby without a primary".into()));
                    match r {
                        Ok(at) => {
                            n.set_restore_point(at);
                            None
                        }
                        Err(e) => Some(format!("node {}: {}", n.name, e)),
                    }
                })
            })
            .collect();
        hs.into_iter().filter_map(|h| h.join().unwrap_or(Some("restore point thread panicked".into()))).collect()
    });
    if !errors.is_empty() {
        set(None, Some(format!("no restore point: {}", errors.join("; "))));
        return;
    }
    let scope = if citus {
        "cluster"
    } else if sh.nodes.len() > 1 {
        "per-node"
    } else {
        "node"
    };
    log::info!("restore point {:?} created ({})", name, scope);
    set(Some(RestorePointInfo { name, scope: scope.into() }), None);
}

fn describe_archiver(
    name: &str,
    stop: &Option<crate::protocol::StopResult>,
    st: Option<crate::pg::api::ArchiverStats>,
) -> String {
    let need = stop
        .as_ref()
        .map(|s| {
            let mut v = vec![s.stop_wal_file.as_str()];
            v.extend(s.backup_history_file.as_deref());
            v.extend(s.restore_point_wal_file.as_deref());
            v.join(", ")
        })
        .unwrap_or_else(|| "?".into());
    match st {
        Some(st) => format!(
            "node {} waits for {} (last archived {} at {}, last failed {} at {}, {} failures)",
            name,
            need,
            st.last_archived_wal.as_deref().unwrap_or("none"),
            st.last_archived_time.as_deref().unwrap_or("-"),
            st.last_failed_wal.as_deref().unwrap_or("none"),
            st.last_failed_time.as_deref().unwrap_or("-"),
            st.failed_count
        ),
        None => format!("node {} waits for {}", name, need),
    }
}

/// Poll every node until the WAL its backup needs is archived. Polls finely at first (the
/// server's own wait re-checks once a second), then more gently.
fn wait_archived(sh: &Arc<Shared>, timeout: Duration, send: &mut dyn FnMut(&Reply)) -> bool {
    let t0 = Instant::now();
    let mut last_progress = Instant::now();
    loop {
        let mut all = true;
        for n in &sh.nodes {
            match n.check_archived() {
                Ok(true) => {}
                Ok(false) => all = false,
                Err(e) => {
                    all = false;
                    log::warn!("node {}: {}", n.name, e);
                }
            }
        }
        if all {
            log::info!("all nodes archived in {:?}", t0.elapsed());
            return true;
        }
        if t0.elapsed() >= timeout {
            return false;
        }
        if last_progress.elapsed() >= Duration::from_secs(30) {
            last_progress = Instant::now();
            for n in sh.nodes.iter().filter(|n| !n.is_archived()) {
                let msg = describe_archiver(&n.name, &n.status().stop, n.archiver());
                log::info!("{}", msg);
                send(&Reply::Progress { message: format!("still waiting for WAL archiving: {}", msg) });
            }
        }
        let e = t0.elapsed();
        let pause = if e < Duration::from_secs(5) {
            Duration::from_millis(10)
        } else if e < Duration::from_secs(60) {
            Duration::from_millis(100)
        } else {
            Duration::from_millis(500)
        };
        std::thread::sleep(pause.min(timeout.saturating_sub(e)).max(Duration::from_millis(1)));
    }
}
