//! `restore-check`: after the first start of restored nodes, wait (bounded) until each one's
//! recovery has ended and prove it ended where the backup's manifest says. See
//! docs/restore.md; the SQL and what it can prove are in restore::outcome.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::cli::RestoreCheckArgs;
use crate::error::{exit, Error, Result};
use crate::ids;
use crate::pg::wal::Lsn;
use crate::pg::{api, conninfo::ConnInfo, tls};
use crate::restore::outcome::{self, Observed, Verdict};
use crate::restore::record;
use crate::restore::recovery::{self, Target};
use crate::sidecar::{self, Manifest, NodeEntry};

#[derive(Serialize)]
struct NodeReport {
    name: String,
    target: Option<String>,
    /// --target as given, when one was.
    asked: Option<String>,
    proven: bool,
    lines: Vec<String>,
    /// What restore-prep's record says of the copy's files (see restore::record).
    restore_prep: Option<String>,
    observed: Option<Observed>,
}

fn load_manifest(dirs: &[PathBuf], id: &str) -> Result<Manifest> {
    for d in dirs {
        if let Some(m) = sidecar::read_manifest(d, id)? {
            return Ok(m);
        }
    }
    Err(sidecar::not_found(dirs, id))
}

/// The nodes to check and how to reach them: every --node, or the only node like psql.
fn select_nodes(m: &Manifest, specs: &[String]) -> Result<Vec<(NodeEntry, ConnInfo)>> {
    let names = || m.nodes.iter().map(|n| n.name.as_str()).collect::<Vec<_>>().join(", ");
    let specs: Vec<&String> = specs.iter().filter(|s| !s.trim().is_empty()).collect();
    if specs.is_empty() {
        if m.nodes.len() == 1 {
            return Ok(vec![(m.nodes[0].clone(), ConnInfo::default().with_env_defaults())]);
        }
        return Err(Error::usage(format!(
            "backup {} has {} nodes ({}): give each restored node with --node NAME=CONNINFO",
            m.backup_id,
            m.nodes.len(),
            names()
        )));
    }
    let mut out: Vec<(NodeEntry, ConnInfo)> = Vec::new();
    for spec in specs {
        let (name, ci) = crate::nodes::parse(spec.trim())?;
        let node = m.nodes.iter().find(|n| n.name == name).ok_or_else(|| {
            Error::usage(format!("backup {} has no node {:?}; its nodes are: {}", m.backup_id, name, names()))
        })?;
        if out.iter().any(|(n, _)| n.name == name) {
            return Err(Error::usage(format!("--node {} is given twice", name)));
        }
        out.push((node.clone(), ConnInfo::parse(&ci)?.with_env_defaults()));
    }
    Ok(out)
}

/// Connect and wait until recovery has ended (or paused at its target); progress on stderr.
fn wait_ended(name: &str, info: &ConnInfo, deadline: Instant, timeout: u64) -> Result<(postgres::Client, i32)> {
    let started = Instant::now();
    let mut last_note = Instant::now();
    let mut last_err;
    loop {
        match probe(info) {
            Ok((c, v, false, _)) => return Ok((c, v)),
            Ok((_, _, true, replay)) => {
                last_err =
                    format!("still in recovery, replayed to {}", replay.map(|l| l.to_string()).unwrap_or("-".into()))
            }
            Err(e) => last_err = e.msg,
        }
        if Instant::now() >= deadline {
            return Err(err!(
                "recovery had not ended after {} s (--timeout): {}; if the server stopped, its log says why (from PostgreSQL 13 a recovery target that is not in the WAL stops it with FATAL \"recovery ended before configured recovery target was reached\")",
                timeout, last_err
            ));
        }
        if last_note.elapsed() >= Duration::from_secs(10) {
            eprintln!("restore-check: node {}: {} ({} s)", name, last_err, started.elapsed().as_secs());
            last_note = Instant::now();
        }
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// One connection attempt: the client, its version, whether it is still recovering, and
/// how far it has replayed.
fn probe(info: &ConnInfo) -> Result<(postgres::Client, i32, bool, Option<Lsn>)> {
    let mut c = tls::connect(info, "pg-backup-hooks restore-check").map_err(|e| err!("{}", e))?;
    let v = api::server_version_num(&mut c).map_err(|e| err!("{}", e))?;
    let (recovering, replay) = outcome::still_recovering(&mut c, v)?;
    Ok((c, v, recovering, replay))
}

/// Which target to judge by: --target, else what the server was configured with. A server
/// configured for none (latest) whose restore-prep record names another target had its recovery
/// settings cleared after the promotion (Patroni does after a bootstrap): the record says.
fn resolve_target(m: &Manifest, given: Option<&str>, o: &Observed, recorded: Option<&str>) -> Result<Target> {
    let mut configured = o.configured_target.as_deref().map(|t| recovery::parse_target(Some(t), m));
    if let (Some(Ok(Target::Latest)), Some(Ok(rec))) =
        (&configured, recorded.map(|t| recovery::parse_target(Some(t), m)))
    {
        configured = Some(Ok(rec));
    }
    match (given, configured) {
        (Some(g), conf) => {
            let want = recovery::parse_target(Some(g), m)?;
            if let Some(Ok(c)) = conf {
                if c != want {
                    return Err(err!(
                        "--target {} asks for {}, but restore-prep configured the server for {}: give the --target restore-prep was given, or leave --target out to judge by what the server was configured for",
                        g,
                        want.describe(),
                        c.describe()
                    ));
                }
            }
            Ok(want)
        }
        (None, Some(Ok(c))) => Ok(c),
        (None, Some(Err(e))) => Err(err!("the configured recovery target cannot be read ({}): give --target", e.msg)),
        (None, None) => Err(err!(
            "cannot read the configured recovery target (10/11 keep it in recovery.done, read with pg_read_file: superuser): give --target"
        )),
    }
}

/// One node's check: wait for the end of recovery, read where it ended, choose the target,
/// judge. Anything that goes wrong is the report's one line.
fn check_node(m: &Manifest, node: &NodeEntry, info: &ConnInfo, a: &RestoreCheckArgs, deadline: Instant) -> NodeReport {
    let mut r = NodeReport {
        name: node.name.clone(),
        target: None,
        asked: a.target.clone(),
        proven: false,
        lines: Vec::new(),
        restore_prep: None,
        observed: None,
    };
    let observed = wait_ended(&node.name, info, deadline, a.timeout).and_then(|(mut c, v)| {
        let o = outcome::observe(&mut c, v).map_err(|e| e.within("reading the recovery state"))?;
        let rec = record::read(&mut c);
        Ok((o, restore_prep_line(&rec, &m.backup_id), rec.ok().flatten().filter(|r| r.backup_id == m.backup_id)))
    });
    let (o, recorded) = match observed {
        Ok((o, prep, rec)) => {
            r.restore_prep = Some(prep);
            (o, rec.and_then(|r| r.target))
        }
        Err(e) => {
            r.lines.push(e.msg);
            return r;
        }
    };
    match resolve_target(m, a.target.as_deref(), &o, recorded.as_deref()) {
        Ok(t) => {
            let Verdict { proven, lines } = outcome::judge(node, m, &t, &o);
            r.target = Some(t.describe());
            r.proven = proven;
            r.lines = lines;
        }
        Err(e) => r.lines.push(e.msg),
    }
    r.observed = Some(o);
    r
}

/// restore-prep's record of the copy's files, as one line (never a failure of the check).
fn restore_prep_line(rec: &Result<Option<record::Record>>, id: &str) -> String {
    match rec {
        Ok(Some(r)) if r.backup_id == id => r.summary(),
        Ok(Some(r)) => format!(
            "restore-prep's record names backup {}, not {}: this copy was prepared for another backup",
            r.backup_id, id
        ),
        Ok(None) => format!("no restore-prep record ({}): the copy's files are not known to be verified", record::FILE),
        Err(e) => e.msg.clone(),
    }
}

pub fn run(a: RestoreCheckArgs) -> Result<i32> {
    ids::validate(&a.backup_id)?;
    // The backup's manifest, from the sidecar restore-prep used.
    let m = load_manifest(&a.sidecar_dir, &a.backup_id)?;
    // A --target the backup cannot have been restored to is refused before any connection.
    check_target(&m, a.target.as_deref())?;
    // The restored nodes to check and how to reach them.
    let nodes = select_nodes(&m, &a.nodes)?;
    // Each node, one after the other, within one overall --timeout.
    let deadline = Instant::now() + Duration::from_secs(a.timeout);
    let reports: Vec<NodeReport> = nodes.iter().map(|(n, info)| check_node(&m, n, info, &a, deadline)).collect();
    // The nodes of the backup that no --node named.
    let unchecked: Vec<&str> =
        m.nodes.iter().filter(|n| !reports.iter().any(|r| r.name == n.name)).map(|n| n.name.as_str()).collect();
    // What was found, as JSON or as text.
    if a.json {
        print_json(&m, &reports, &unchecked)?;
    } else {
        print_text(&reports, &unchecked);
    }
    // The verdict: exit 0 only when every checked node is proven.
    verdict(&m, &reports)
}

/// `--json`: one document for the backup.
fn print_json(m: &Manifest, reports: &[NodeReport], unchecked: &[&str]) -> Result<()> {
    let proven = reports.iter().all(|r| r.proven);
    let v = serde_json::json!({"backup_id": m.backup_id, "proven": proven, "nodes": reports, "not_checked": unchecked});
    println!("{}", serde_json::to_string_pretty(&v).map_err(|e| err!("{}", e))?);
    Ok(())
}

/// --target parses for this backup; else what was asked and what the sidecar offers.
fn check_target(m: &Manifest, given: Option<&str>) -> Result<()> {
    let Some(given) = given else { return Ok(()) };
    recovery::parse_target(Some(given), m).map(|_| ()).map_err(|e| {
        // The list of forms parse_target ends with is the one the sidecar's offer repeats.
        let why = e.msg.strip_prefix(&format!("--target {:?}: ", given.trim())).unwrap_or(&e.msg);
        let why = if why.starts_with("use ") { String::new() } else { format!(" ({})", why) };
        Error::usage(format!(
            "--target {:?} was asked, which backup {} cannot have been restored to{}; the sidecar offers: {}",
            given,
            m.backup_id,
            why,
            recovery::offered_targets(m)
        ))
    })
}

/// One verdict line per node, then what was shown or what is wrong.
fn print_text(reports: &[NodeReport], unchecked: &[&str]) {
    for r in reports {
        let verdict = if r.proven { "PROVEN" } else { "NOT PROVEN" };
        let target = match (&r.target, &r.asked) {
            (Some(t), _) => t.clone(),
            (None, Some(asked)) => format!("--target {} asked: see the problem below", asked),
            (None, None) => "target unknown: see the problem below".to_string(),
        };
        println!("node {}: {} ({})", r.name, verdict, target);
        for l in &r.lines {
            println!("  {}: {}", if r.proven { "ok" } else { "problem" }, l);
        }
        if let Some(p) = &r.restore_prep {
            println!("  files: {}", p);
        }
    }
    for n in unchecked {
        println!("node {}: not checked (no --node for it)", n);
    }
}

/// Exit 0 when every checked node is proven, else NOT_PROVEN naming the nodes that are not.
fn verdict(m: &Manifest, reports: &[NodeReport]) -> Result<i32> {
    let failed: Vec<&str> = reports.iter().filter(|r| !r.proven).map(|r| r.name.as_str()).collect();
    if failed.is_empty() {
        return Ok(exit::OK);
    }
    Err(Error::with_code(
        exit::NOT_PROVEN,
        format!(
            "backup {}: node(s) {} not proven to have recovered where the backup says: do not put them into service; see the problems above",
            m.backup_id,
            failed.join(", ")
        ),
    ))
}
