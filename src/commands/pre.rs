//! `pre`: check, spawn the helper, wait until every node's backup has started.

use std::time::{Duration, Instant};

use crate::cli::PreArgs;
use crate::error::{Error, Result};
use crate::helper::spawn::{self, Next};
use crate::helper::HelperConfig;
use crate::ids;
use crate::pg::conninfo::{redact_text, ConnInfo};
use crate::pg::discovery;
use crate::pg::patroni::Seen;
use crate::protocol::StartEvent;
use crate::rundir::{self, RunDir};
use crate::sidecar;

/// Checks that need no server and no file: they fail before anything starts.
fn check_before_start(a: &PreArgs) -> Result<()> {
    let run = RunDir { dir: a.run.run_dir.clone().unwrap_or_else(rundir::default_dir) };
    run.socket(&a.backup_id)?;
    Ok(())
}

/// `--node-primary NAME=CONNINFO`: NAME must be one of the backup's nodes, each at most once.
fn node_primaries(specs: &[String], nodes: &[(String, String)]) -> Result<Vec<(String, String)>> {
    let mut out: Vec<(String, String)> = Vec::new();
    for spec in specs.iter().filter(|s| !s.trim().is_empty()) {
        let (name, ci) = crate::nodes::parse(spec.trim())?;
        if !nodes.iter().any(|(n, _)| *n == name) {
            return Err(Error::usage(format!(
                "--node-primary {}: no --node {} in this backup (nodes: {})",
                name,
                name,
                nodes.iter().map(|(n, _)| n.as_str()).collect::<Vec<_>>().join(", ")
            )));
        }
        if out.iter().any(|(n, _)| *n == name) {
            return Err(Error::usage(format!("--node-primary {} is given twice", name)));
        }
        out.push((name, ci));
    }
    Ok(out)
}

/// Check, start the helper, and wait until it reports every node's backup started.
pub fn run(a: PreArgs) -> Result<i32> {
    ids::validate(&a.backup_id)?;
    check_before_start(&a)?;
    let (nodes, discovered_primaries, patroni_seen) = nodes(&a)?;
    let mut node_primaries = node_primaries(&a.node_primaries, &nodes)?;
    for (name, ci) in discovered_primaries {
        if node_primaries.iter().any(|(n, _)| *n == name) {
            return Err(Error::usage(format!("--node-primary {}: --discover patroni already gives its leader", name)));
        }
        node_primaries.push((name, ci));
    }
    for dir in &a.sidecar_dir {
        sidecar::check_writable(dir, &a.backup_id)?;
    }
    let run = claim_id(&a)?;
    save_patroni_seen(&run, &a.backup_id, patroni_seen.as_ref())?;
    let cfg = HelperConfig {
        backup_id: a.backup_id.clone(),
        nodes,
        node_primaries,
        fast: a.fast,
        require_inventory: a.require_inventory,
        no_inventory: a.no_inventory,
        max_duration_secs: a.max_duration,
        heartbeat_secs: a.heartbeat,
        sidecar_dirs: a.sidecar_dir.iter().map(|d| std::fs::canonicalize(d).unwrap_or_else(|_| d.clone())).collect(),
    };
    let mut child = spawn::spawn(&run, &cfg)?;
    wait_started(&mut child, &run, &a)
}

/// The backup's nodes: each `--node` once, or what `--discover citus` finds, or `default`
/// (libpq's environment and defaults) when none is given.
/// `--discover patroni` also gives a replica's leader (its `--node-primary`) and what post
/// compares the cluster against.
type Nodes = (Vec<(String, String)>, Vec<(String, String)>, Option<Seen>);

/// Where pre keeps what it saw of the Patroni cluster for post (`<id>.patroni.json`).
pub fn patroni_seen_path(run: &RunDir, id: &str) -> std::path::PathBuf {
    run.path(id, "patroni.json")
}

fn save_patroni_seen(run: &RunDir, id: &str, seen: Option<&Seen>) -> Result<()> {
    let path = patroni_seen_path(run, id);
    let _ = std::fs::remove_file(&path);
    let Some(seen) = seen else { return Ok(()) };
    let json = serde_json::to_vec(seen).map_err(|e| err!("{}", e))?;
    crate::fsutil::write_atomic(&path, &json, 0o600, None)
}

fn nodes(a: &PreArgs) -> Result<Nodes> {
    let mut nodes = crate::nodes::parse_all(&a.nodes)?;
    let (mut primaries, mut seen) = (Vec::new(), None);
    match a.discover.as_deref() {
        Some("citus") => nodes = discover(a, &nodes)?,
        Some(kind) => {
            let urls = kind.strip_prefix("patroni=").unwrap_or(kind);
            (nodes, primaries, seen) = discover_patroni(a, &nodes, urls)?;
        }
        None => {}
    }
    if nodes.is_empty() {
        nodes.push(("default".to_string(), String::new()));
    }
    Ok((nodes, primaries, seen))
}

/// `--discover patroni=URL,...`: the member with the wanted role, reached with the one
/// `--node`'s settings (or the libpq environment's) at the member's host and port.
fn discover_patroni(a: &PreArgs, given: &[(String, String)], urls: &str) -> Result<Nodes> {
    if given.len() > 1 {
        return Err(Error::usage(
            "--discover patroni takes at most one --node: the connection settings for the members",
        ));
    }
    let template = match given.first() {
        Some((_, ci)) => ConnInfo::parse(ci)?,
        None => ConnInfo::default(),
    }
    .with_env_defaults();
    let urls: Vec<String> = urls.split(',').map(|u| u.trim().to_string()).filter(|u| !u.is_empty()).collect();
    let found = discovery::patroni(&template, &urls, a.discover_role)?;
    if !crate::nodes::valid_name(&found.name) {
        return Err(err!(
            "--discover patroni: member {:?} cannot name a node: use 1-63 characters from A-Z a-z 0-9 _ - . starting with a letter or digit (rename the member in Patroni's configuration, `name:`)",
            redact_text(&found.name)
        ));
    }
    let name = found.name.clone();
    println!("discovered Patroni member {}: {}", found.described, found.conninfo.redacted());
    let primaries = match &found.primary {
        Some(p) => {
            println!("node {}: restore point and WAL switch on the leader {}", name, p.redacted());
            vec![(name.clone(), p.to_secret_string())]
        }
        None => vec![],
    };
    Ok((vec![(name, found.conninfo.to_secret_string())], primaries, Some(found.seen)))
}

/// `--discover citus`: the coordinator (the one `--node`, or the defaults) and its workers.
fn discover(a: &PreArgs, given: &[(String, String)]) -> Result<Vec<(String, String)>> {
    if given.len() > 1 {
        return Err(Error::usage("--discover citus takes at most one --node: the coordinator"));
    }
    let coordinator = match given.first() {
        Some((_, ci)) => ConnInfo::parse(ci)?,
        None => ConnInfo::default(),
    }
    .with_env_defaults();
    let nodes: Vec<(String, String)> = discovery::citus(&coordinator, a.discover_role)?
        .into_iter()
        .map(|(name, ci)| (name, ci.to_secret_string()))
        .collect();
    for (name, ci) in &nodes {
        if let Ok(c) = ConnInfo::parse(ci) {
            println!("discovered node {}: {}", name, c.redacted());
        }
    }
    Ok(nodes)
}

/// Open the run dir and make sure no helper runs for this id; clear what an earlier run of
/// the id left, and prune old markers.
fn claim_id(a: &PreArgs) -> Result<RunDir> {
    let run = RunDir::open(a.run.run_dir.clone(), true)?;
    let id = &a.backup_id;
    if run.helper_alive(id) {
        return Err(err!(
            "a backup with id {} is already in progress (see pg-backup-hooks status --backup-id {}); finish it with post or abort, or use a new id",
            id, id
        ));
    }
    run.clean_stale(id);
    run.clear_markers(id);
    run.prune(30);
    Ok(run)
}

/// Relay the helper's start events until it is ready (exit 0) or failed, or --start-timeout
/// passes (the helper is then killed, which ends any backup it had started).
fn wait_started(child: &mut spawn::Spawned, run: &RunDir, a: &PreArgs) -> Result<i32> {
    let id = &a.backup_id;
    // cli caps --start-timeout far below overflow; checked_add keeps a panic impossible anyway.
    let deadline = Instant::now().checked_add(Duration::from_secs(a.start_timeout)).unwrap_or_else(Instant::now);
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let ev = match child.next(left) {
            Next::Event(ev) => ev,
            Next::TimedOut => {
                child.kill();
                return Err(err!(
                    "the backup did not start on every node within {} s (a spread checkpoint can take minutes: use --fast or a larger --start-timeout); the helper was stopped and its sessions closed, which ends any backup it had started",
                    a.start_timeout
                ));
            }
            Next::Closed => {
                let _ = child.child.wait();
                return Err(err!("the helper exited before the backup started: see {}", run.log(id).display()));
            }
            Next::Garbled(e) => {
                child.kill();
                return Err(err!("unreadable message from the helper ({}): see {}", e, run.log(id).display()));
            }
        };
        if let Some(done) = on_event(child, id, ev) {
            return done;
        }
    }
}

/// Print one start event; Some(outcome) for the last one (ready or failed).
fn on_event(child: &mut spawn::Spawned, id: &str, ev: StartEvent) -> Option<Result<i32>> {
    match ev {
        StartEvent::Warning { node, message } => eprintln!("pg-backup-hooks: warning: node {}: {}", node, message),
        StartEvent::NodeStarted { node, start_lsn, server_version } => {
            println!("node {}: backup started at {} (PostgreSQL {})", node, start_lsn, server_version)
        }
        StartEvent::Ready { backup } => {
            for n in &backup.nodes {
                println!("node {}: {}", n.name, crate::protocol::describe_inventory(n.inventory.as_ref()));
            }
            println!(
                "backup {} started on {} node(s); helper pid {} holds the sessions until post or abort",
                id,
                backup.nodes.len(),
                backup.helper_pid
            );
            return Some(Ok(0));
        }
        StartEvent::Failed { message } => {
            let _ = child.child.wait();
            return Some(Err(Error::new(message)));
        }
    }
    None
}
