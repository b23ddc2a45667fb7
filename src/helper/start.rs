//! Starting the backup: connect to and check every node, then start every node's backup.
//! All or nothing: a node that fails stops the ones that started.

use crate::error::{Error, Result};
use crate::inventory::source::Chosen;
use crate::pg::conninfo::ConnInfo;
use crate::protocol::StartEvent;
use crate::rundir::RunDir;

use super::node::{self, Moment, Node};
use super::{lock, HelperConfig, Reporter};

/// Connect to every node in parallel and check each; all must pass.
pub(super) fn connect_all(cfg: &HelperConfig, rep: &mut Reporter) -> Result<Vec<Node>> {
    let mut nodes = Vec::new();
    let mut errors = Vec::new();
    for (name, r) in connect_each(cfg) {
        match r {
            Ok(c) => {
                for w in c.warnings {
                    log::warn!("node {}: {}", name, w);
                    rep.send(&StartEvent::Warning { node: name.clone(), message: w });
                }
                nodes.push(c.node);
            }
            Err(e) => errors.push(format!("node {}: {}", name, e)),
        }
    }
    for (name, conninfo) in &cfg.node_primaries {
        let Some(n) = nodes.iter_mut().find(|n| n.name == *name) else { continue };
        let r = ConnInfo::parse(conninfo).and_then(|ci| n.attach_primary(&ci.with_env_defaults(), &cfg.backup_id));
        if let Err(e) = r {
            errors.push(format!("node {}: {}", name, e));
        }
    }
    choose_inventory_sources(cfg, &mut nodes, &mut errors, rep);
    if !errors.is_empty() {
        return Err(err!("{}; no backup was started", errors.join("; ")));
    }
    Ok(nodes)
}

/// Choose each node's inventory source; a node without one is a warning, or an error under
/// --require-inventory.
fn choose_inventory_sources(cfg: &HelperConfig, nodes: &mut [Node], errors: &mut Vec<String>, rep: &mut Reporter) {
    for n in nodes.iter_mut() {
        let name = n.name.clone();
        match n.choose_inventory_source(cfg.no_inventory) {
            Chosen::None(why) if cfg.require_inventory => {
                errors.push(format!("node {}: --require-inventory: {}", name, why));
            }
            Chosen::None(why) => {
                log::warn!("node {}: {}", name, why);
                rep.send(&StartEvent::Warning { node: name, message: why.clone() });
            }
            chosen => log::info!("node {}: inventory source {}", name, chosen.describe()),
        }
    }
}

/// Take every node's start inventory, in parallel, before pre reports ready (the copy must
/// not begin before it). A node whose listing fails has no inventory; under
/// --require-inventory that fails pre, and every node's backup is discarded.
pub(super) fn inventory_all(cfg: &HelperConfig, run: &RunDir, nodes: &[Node], rep: &mut Reporter) -> Result<()> {
    if nodes.iter().all(|n| n.inventory_source.source().is_none()) {
        return Ok(());
    }
    run.create_inventory_dir(&cfg.backup_id)?;
    let errors: Vec<String> = std::thread::scope(|s| {
        let handles: Vec<_> = nodes
            .iter()
            .map(|n| {
                s.spawn(move || {
                    let r = n.take_inventory(run, &cfg.backup_id, Moment::Start);
                    r.err().map(|e| {
                        n.lose_inventory(Moment::Start, &e.msg);
                        format!("node {}: the start inventory could not be taken: {}", n.name, e.msg)
                    })
                })
            })
            .collect();
        handles
            .into_iter()
            .filter_map(|h| h.join().unwrap_or(Some("internal error: inventory thread panicked".into())))
            .collect()
    });
    if errors.is_empty() {
        return Ok(());
    }
    if !cfg.require_inventory {
        for n in nodes {
            if let (Some(note), true) = (lock(&n.state).inventory.note.clone(), n.inventory_source.source().is_some()) {
                rep.send(&StartEvent::Warning { node: n.name.clone(), message: note });
            }
        }
        return Ok(());
    }
    std::thread::scope(|s| {
        for n in nodes {
            s.spawn(move || n.discard());
        }
    });
    Err(err!("{}; --require-inventory: every node's backup was stopped and discarded", errors.join("; ")))
}

/// Connect to and check each node, one thread per node; (name, outcome) in the given order.
fn connect_each(cfg: &HelperConfig) -> Vec<(String, Result<node::Checked>)> {
    std::thread::scope(|s| {
        let handles: Vec<_> = cfg
            .nodes
            .iter()
            .map(|(name, conninfo)| {
                let id = cfg.backup_id.clone();
                s.spawn(move || {
                    let r = ConnInfo::parse(conninfo).and_then(|ci| Node::connect(name, &ci.with_env_defaults(), &id));
                    (name.clone(), r)
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap_or_else(|_| ("?".into(), Err(Error::new("internal error: node thread panicked")))))
            .collect()
    })
}

/// Start every node's backup in parallel; on any failure, stop the ones that started.
pub(super) fn start_all(cfg: &HelperConfig, nodes: &[Node]) -> Result<()> {
    let errors: Vec<String> = std::thread::scope(|s| {
        let handles: Vec<_> = nodes
            .iter()
            .map(|n| {
                s.spawn(move || match n.start(&cfg.backup_id, cfg.fast) {
                    Ok(lsn) => {
                        log::info!("node {}: backup started at {}", n.name, lsn);
                        None
                    }
                    Err(e) => Some(format!("node {}: the server refused to start the backup: {}", n.name, e)),
                })
            })
            .collect();
        handles
            .into_iter()
            .filter_map(|h| h.join().unwrap_or(Some("internal error: start thread panicked".into())))
            .collect()
    });
    if errors.is_empty() {
        return Ok(());
    }
    let started: Vec<&Node> = nodes.iter().filter(|n| n.status().start_lsn.is_some()).collect();
    let undone = started.len();
    std::thread::scope(|s| {
        for n in started {
            s.spawn(move || n.discard());
        }
    });
    Err(err!("{}; the {} node(s) that had started were stopped and their backups discarded", errors.join("; "), undone))
}
