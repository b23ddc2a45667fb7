//! `restore-test`: restore-prep, a private test server, recovery, the checks and the stop on
//! a scratch copy, with one report; with `--node NAME=DIR` per node, on every node of a
//! multi-node backup. The work is in restore_test; see docs/restore-test.md.

use std::path::PathBuf;
use std::time::Duration;

use crate::cli::RestoreTestArgs;
use crate::error::{exit, Error, Result};
use crate::ids;
use crate::restore::recovery::{ArchiveMode, TargetAction};
use crate::restore::{Options, WalSource};
use crate::restore_test::{self, nodes, Request};

/// One node to test: its name (None: the backup's only node) and its scratch directory.
struct Node {
    name: Option<String>,
    pgdata: PathBuf,
}

pub fn run(a: RestoreTestArgs) -> Result<i32> {
    ids::validate(&a.backup_id)?;
    let list = node_list(&a)?;
    // DIR given several times: the last one counts.
    let (mut every, per_node) = crate::nodes::split_archive_dirs(&a.archive_dir);
    let common = every.pop();
    let exe = std::env::current_exe().map_err(|e| err!("cannot find this program's own path: {}", e))?;
    if list.len() > 1 {
        let names: Vec<&str> = list.iter().filter_map(|n| n.name.as_deref()).collect();
        nodes::check_names(&a.sidecar_dir, &a.backup_id, &names)?;
    }
    let mut reqs = Vec::new();
    for n in &list {
        let source = source(&a, n, &common, &per_node, list.len() > 1)?;
        let pgdata = std::fs::canonicalize(&n.pgdata).map_err(|e| err!("--pgdata {}: {}", n.pgdata.display(), e))?;
        if let Some(other) = reqs.iter().find(|r: &&Request| r.prep.pgdata == pgdata) {
            return Err(Error::usage(format!(
                "--node {}: the directory {} is node {}'s too: each node needs its own scratch copy",
                n.name.as_deref().unwrap_or("?"),
                pgdata.display(),
                other.prep.node.as_deref().unwrap_or("?")
            )));
        }
        reqs.push(request(&a, n.name.clone(), pgdata, source, exe.clone()));
    }
    if reqs.len() > 1 {
        return many(reqs, a.json);
    }
    let req = reqs.pop().ok_or_else(|| Error::usage("give --pgdata DIR, or --node NAME=DIR once per node"))?;
    one(req, a.json)
}

/// `--pgdata DIR [--node NAME]`, or `--node NAME=DIR` once per node (never both).
fn node_list(a: &RestoreTestArgs) -> Result<Vec<Node>> {
    let with_dir: Vec<&String> = a.nodes.iter().filter(|n| n.contains('=')).collect();
    if with_dir.is_empty() {
        let pgdata = a.pgdata.clone().ok_or_else(|| {
            Error::usage("give --pgdata DIR (the scratch copy), or --node NAME=DIR once per node of the backup")
        })?;
        if a.nodes.len() > 1 {
            return Err(Error::usage(
                "several --node NAME without a directory: give each node's scratch copy as --node NAME=DIR (and no --pgdata)",
            ));
        }
        return Ok(vec![Node { name: a.nodes.first().cloned(), pgdata }]);
    }
    if a.pgdata.is_some() || with_dir.len() != a.nodes.len() {
        return Err(Error::usage(
            "--node NAME=DIR names each node's scratch copy: give it for every node and leave out --pgdata (or test one node with --node NAME --pgdata DIR)",
        ));
    }
    let mut out: Vec<Node> = Vec::new();
    for spec in with_dir {
        let (name, dir) = spec.split_once('=').unwrap_or((spec, ""));
        if !crate::nodes::valid_name(name) || dir.is_empty() {
            return Err(Error::usage(format!("--node {:?}: expected NAME=DIR, NAME a node of the backup", spec)));
        }
        if out.iter().any(|n| n.name.as_deref() == Some(name)) {
            return Err(Error::usage(format!("--node {} is given twice", name)));
        }
        out.push(Node { name: Some(name.to_string()), pgdata: PathBuf::from(dir) });
    }
    Ok(out)
}

/// Where the node's WAL comes from: its own --archive-dir NAME=DIR, the common one, or
/// --restore-command.
fn source(
    a: &RestoreTestArgs,
    n: &Node,
    common: &Option<PathBuf>,
    per_node: &[(String, PathBuf)],
    several: bool,
) -> Result<WalSource> {
    let own = per_node.iter().find(|(name, _)| n.name.as_deref() == Some(name)).map(|(_, d)| d.clone());
    if !several && own.is_none() && !per_node.is_empty() && common.is_none() && a.restore_command.is_none() {
        // The single-node form with --node NAME and --archive-dir NAME=DIR for another node.
        return Err(Error::usage("--archive-dir NAME=DIR names another node than the one tested"));
    }
    match (own.or_else(|| common.clone()), &a.restore_command) {
        (Some(d), None) => Ok(WalSource::ArchiveDir(d)),
        (None, Some(c)) => Ok(WalSource::Command(c.clone())),
        (Some(_), Some(_)) => Err(Error::usage("give exactly one of --archive-dir and --restore-command")),
        (None, None) if several => Err(Error::usage(format!(
            "node {}: give --archive-dir DIR (every node), --archive-dir {}=DIR, or --restore-command",
            n.name.as_deref().unwrap_or("?"),
            n.name.as_deref().unwrap_or("NAME")
        ))),
        (None, None) => Err(Error::usage("give exactly one of --archive-dir and --restore-command")),
    }
}

fn request(a: &RestoreTestArgs, node: Option<String>, pgdata: PathBuf, source: WalSource, exe: PathBuf) -> Request {
    let prep = Options {
        backup_id: a.backup_id.clone(),
        sidecar_dirs: a.sidecar_dir.clone(),
        pgdata,
        node,
        source,
        target: a.target.clone(),
        target_action: TargetAction::Promote,
        tablespace_map: a.tablespace_map.iter().filter(|s| !s.trim().is_empty()).cloned().collect(),
        archive_mode: ArchiveMode::Off,
        force: false,
        wal_dir: a.wal_dir.clone(),
        reuse_original_dirs: false,
        exe,
        label_from_archive: false,
        backup_history_file: None,
        accept_unverified_files: false,
    };
    Request {
        prep,
        amcheck: a.amcheck,
        keep: a.keep,
        timeout: Duration::from_secs(a.timeout),
        stop_timeout: Duration::from_secs(a.stop_timeout),
    }
}

fn one(req: Request, json: bool) -> Result<i32> {
    let rep = restore_test::run(req)?;
    if json {
        println!("{}", serde_json::to_string_pretty(&rep).map_err(|e| err!("{}", e))?);
    } else {
        rep.print_text();
    }
    if rep.passed {
        return Ok(exit::OK);
    }
    let failed = rep.failed();
    Err(Error::with_code(
        exit::NOT_PROVEN,
        format!(
            "restore-test of backup {}: FAILED at {}: see the report above{}",
            rep.backup_id,
            if failed.is_empty() { "an unfinished step".to_string() } else { failed.join(", ") },
            rep.log_file.as_ref().map(|l| format!(" and the server log {}", l.display())).unwrap_or_default()
        ),
    ))
}

fn many(reqs: Vec<Request>, json: bool) -> Result<i32> {
    let rep = nodes::run(reqs)?;
    if json {
        println!("{}", serde_json::to_string_pretty(&rep).map_err(|e| err!("{}", e))?);
    } else {
        rep.print_text();
    }
    if rep.passed {
        return Ok(exit::OK);
    }
    // The nodes with a failed step; a node only held back by another's refusal is not named.
    let mut what: Vec<String> = rep
        .nodes
        .iter()
        .filter(|r| !r.failed().is_empty())
        .map(|r| format!("node {} at {}", r.node.as_deref().unwrap_or("?"), r.failed().join(", ")))
        .collect();
    if what.is_empty() {
        what = rep.failed_nodes().iter().map(|n| format!("node {} at an unfinished step", n)).collect();
    }
    if rep.across_nodes.outcome == restore_test::report::Outcome::Failed {
        what.push("across nodes".into());
    }
    Err(Error::with_code(
        exit::NOT_PROVEN,
        format!(
            "restore-test of backup {}: FAILED {}: see the report above and each node's server log",
            rep.backup_id,
            what.join("; ")
        ),
    ))
}
