//! Waiting, after the stop, until the WAL each node's backup needs is in the archive.

use std::time::{Duration, Instant};

use crate::pg::api::ArchiverStats;
use crate::protocol::{Reply, StopResult};

use super::Shared;

/// One node's archive state for a message: what it waits for and what the archiver last did.
pub(super) fn describe_archiver(name: &str, stop: &Option<StopResult>, st: Option<ArchiverStats>) -> String {
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
pub(super) fn wait_archived(sh: &Shared, timeout: Duration, send: &mut dyn FnMut(&Reply)) -> bool {
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
