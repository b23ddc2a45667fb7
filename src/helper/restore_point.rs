//! The backup's restore point, created after every node stopped: one name for the whole
//! backup, then a WAL switch on each primary so the segment holding it can be archived.

use std::sync::Arc;

use crate::error::{Error, Result};
use crate::pg::api;
use crate::pg::discovery::COORDINATOR;
use crate::pg::wal::Lsn;
use crate::protocol::{RestorePointInfo, RestorePointScope};

use super::node::Node;
use super::{lock, RestorePoint, Shared};

/// Create the restore point and record it (or why there is none) in the shared state. With
/// Citus the coordinator creates it on every node at one instant; otherwise each node gets its own.
pub(super) fn create(sh: &Shared) {
    let name = sh.cfg.backup_id.clone();
    // Standbys given with pre --node-primary get the point through their primary.
    let primaries: Vec<&Arc<Node>> = sh.nodes.iter().filter(|n| !n.facts.in_recovery || n.primary.is_some()).collect();
    let Some(first) = primaries.first() else {
        return set(
            sh,
            RestorePoint::Missing(
                "no restore point: every node is a standby, and restore points can only be created on a primary (give each standby's primary with pre --node-primary NAME=CONNINFO)".into(),
            ),
        );
    };
    let coord = sh.nodes.iter().find(|n| n.name == COORDINATOR && !n.facts.in_recovery).unwrap_or(first);
    let citus = sh.nodes.len() > 1 && coord.with_client(api::has_citus).unwrap_or(false);
    if citus {
        if let Err(e) = coord.with_client(|c| api::citus_create_restore_point(c, &name)) {
            let note = format!("no restore point: citus_create_restore_point failed on node {}: {}", coord.name, e);
            return set(sh, RestorePoint::Missing(note));
        }
    }
    let errors = mark_each(&primaries, &name, citus);
    if !errors.is_empty() {
        return set(sh, RestorePoint::Missing(format!("no restore point: {}", errors.join("; "))));
    }
    let scope = scope_of(citus, sh.nodes.len());
    log::info!("restore point {:?} created ({})", name, scope);
    set(sh, RestorePoint::Created(RestorePointInfo { name, scope }));
}

/// Record the restore point, or why there is none (also logged).
fn set(sh: &Shared, rp: RestorePoint) {
    if let RestorePoint::Missing(note) = &rp {
        log::warn!("{}", note);
    }
    *lock(&sh.restore_point) = rp;
}

/// On each primary in parallel: create the point (or, with Citus, where it already is),
/// switch WAL and record where it landed. The errors, one per failed node.
fn mark_each(primaries: &[&Arc<Node>], name: &str, citus: bool) -> Vec<String> {
    std::thread::scope(|s| {
        let hs: Vec<_> = primaries
            .iter()
            .map(|n| {
                s.spawn(move || match point_and_switch(n, name, citus) {
                    Ok(at) => {
                        n.set_restore_point(at);
                        None
                    }
                    Err(e) => Some(format!("node {}: {}", n.name, e)),
                })
            })
            .collect();
        hs.into_iter().filter_map(|h| h.join().unwrap_or(Some("restore point thread panicked".into()))).collect()
    })
}

/// One node's share: a location at or after its restore point, then a WAL switch.
fn point_and_switch(n: &Node, name: &str, citus: bool) -> Result<Lsn> {
    n.with_restore_point_client(|c| {
        let at = if citus { api::current_wal_lsn(c)? } else { api::create_restore_point(c, name)? };
        api::switch_wal(c)?;
        Ok(at)
    })
    .unwrap_or_else(|| Err(Error::new("a standby without a primary")))
}

/// The scope of a point made with Citus or not, on a backup of `nodes` nodes.
fn scope_of(citus: bool, nodes: usize) -> RestorePointScope {
    if citus {
        RestorePointScope::Cluster
    } else if nodes > 1 {
        RestorePointScope::PerNode
    } else {
        RestorePointScope::Node
    }
}
