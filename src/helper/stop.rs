//! Stopping the backup for post: stop every node, create the restore point, wait for the
//! WAL the backup needs to be archived.

use std::sync::Arc;
use std::time::Duration;

use crate::protocol::{Phase, Reply};

use super::archive_wait::{describe_archiver, wait_archived};
use super::node::Moment;
use super::{lock, Exit, Shared};

/// `Stop`: stop every node (the first time), then wait for archiving and send `Stopped`.
pub(super) fn stop(sh: &Arc<Shared>, archive_timeout: Duration, send: &mut dyn FnMut(&Reply)) {
    let guard = lock(&sh.op_lock);
    if sh.exiting.load(std::sync::atomic::Ordering::SeqCst) {
        send(&Reply::Error { message: "the helper is ending (aborted or expired)".into(), backup: None });
        return;
    }
    if sh.phase() == Phase::Running && !stop_nodes(sh, send) {
        return;
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
    // The stop inventories, taken during the wait, are complete before post hears "stopped".
    drop(lock(&sh.inventory_lock));
    let message = (!archived).then(|| stalled_message(sh, archive_timeout));
    send(&Reply::Stopped { backup: sh.status(), archived, message });
}

/// Stop every node in parallel, then create the restore point. False (the failure already
/// sent and the helper told to end) when a node's backup was lost.
fn stop_nodes(sh: &Arc<Shared>, send: &mut dyn FnMut(&Reply)) -> bool {
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
        return false;
    }
    stop_inventories(sh);
    sh.set_phase(Phase::Stopped);
    super::restore_point::create(sh);
    true
}

/// Take every node's stop inventory, in parallel, in a thread of their own that runs beside
/// the restore point and the archive wait; it holds `inventory_lock` until done (taken
/// before this returns, so that whoever waits for the lock waits for the inventories).
fn stop_inventories(sh: &Arc<Shared>) {
    let (taken, locked) = std::sync::mpsc::channel();
    let sh = sh.clone();
    std::thread::spawn(move || {
        let _held = lock(&sh.inventory_lock);
        let _ = taken.send(());
        std::thread::scope(|s| {
            for n in &sh.nodes {
                let sh = &sh;
                s.spawn(move || {
                    if let Err(e) = n.take_inventory(&sh.run, &sh.cfg.backup_id, Moment::Stop) {
                        n.lose_inventory(Moment::Stop, &e.msg);
                    }
                });
            }
        });
    });
    let _ = locked.recv();
}

/// Why the archive wait gave up: which node still waits for which files.
fn stalled_message(sh: &Shared, archive_timeout: Duration) -> String {
    let stalled: Vec<String> = sh
        .nodes
        .iter()
        .filter(|n| !n.is_archived())
        .map(|n| describe_archiver(&n.name, &n.status().stop, n.archiver()))
        .collect();
    format!("WAL archiving did not finish within {} s: {}", archive_timeout.as_secs(), stalled.join("; "))
}
