//! restore-test of every node of a multi-node backup: each node's copy restored into its own
//! scratch directory. restore-prep is planned for every node before anything is written, and
//! written for every node before any server starts, so a refusal changes nothing started.
//! Then every test server is started (each its own private socket and port), every recovery
//! waited for (bounded), checked and stopped; a started server not yet finished is stopped by
//! its Drop guard on every way out. Across nodes: every node ended at the backup's one restore
//! point and on a new timeline (see [`across`]).

use std::time::Instant;

use serde::Serialize;

use crate::error::{Error, Result};
use crate::protocol::RestorePointScope;
use crate::restore::{self, recovery};
use crate::restore_test::report::{Outcome, Report};
use crate::restore_test::{self as rt, server, Request, Running};
use crate::sidecar::Manifest;

/// The cross-node result.
#[derive(Serialize, Debug)]
pub struct Across {
    pub outcome: Outcome,
    pub lines: Vec<String>,
}

#[derive(Serialize, Debug)]
pub struct MultiReport {
    pub backup_id: String,
    pub target: String,
    pub nodes: Vec<Report>,
    pub across_nodes: Across,
    pub total_seconds: f64,
    pub passed: bool,
}

/// Test every node; `reqs` has one request per node, `prep.node` set. Errors before anything
/// is changed (usage, no such backup, a node missing or unknown) are returned.
pub fn run(mut reqs: Vec<Request>) -> Result<MultiReport> {
    server::catch_signals()?;
    let t0 = Instant::now();
    let Some(first) = reqs.first() else { return Err(Error::usage("restore-test needs at least one --node")) };
    let m = rt::load_manifest(&first.prep.sidecar_dirs, &first.prep.backup_id)?;
    let target = recovery::parse_target(first.prep.target.as_deref(), &m)?;
    check_nodes(&reqs, &m)?;
    reqs.iter_mut().for_each(rt::force_test_settings);
    let mut reps: Vec<Report> = reqs.iter().map(rt::new_report).collect();
    let starts = vec![t0; reqs.len()];
    if let Some(plans) = prepare_all(&reqs, &mut reps) {
        let running = start_all(&reqs, &m, &plans, &mut reps);
        finish_all(&reqs, &m, &target, running, &starts, &mut reps);
    }
    for rep in reps.iter_mut() {
        rt::conclude(rep, t0);
    }
    let across_nodes = across(&m, &target, &reps);
    let passed = reps.iter().all(|r| r.passed) && across_nodes.outcome != Outcome::Failed;
    Ok(MultiReport {
        backup_id: m.backup_id.clone(),
        target: target.describe(),
        nodes: reps,
        across_nodes,
        total_seconds: t0.elapsed().as_secs_f64(),
        passed,
    })
}

/// Before anything else (even the WAL sources): the backup's nodes are exactly `given`.
pub fn check_names(sidecar_dirs: &[std::path::PathBuf], backup_id: &str, given: &[&str]) -> Result<()> {
    check_given(given, &rt::load_manifest(sidecar_dirs, backup_id)?)
}

fn check_nodes(reqs: &[Request], m: &Manifest) -> Result<()> {
    let given: Vec<&str> = reqs.iter().filter_map(|r| r.prep.node.as_deref()).collect();
    check_given(&given, m)
}

/// Every node of the backup given once, and no other: a partial cluster proves nothing.
fn check_given(given: &[&str], m: &Manifest) -> Result<()> {
    let all: Vec<&str> = m.nodes.iter().map(|n| n.name.as_str()).collect();
    let unknown: Vec<&str> = given.iter().copied().filter(|g| !all.contains(g)).collect();
    if !unknown.is_empty() {
        return Err(Error::usage(format!(
            "backup {} has no node {} (its nodes: {})",
            m.backup_id,
            unknown.join(", "),
            all.join(", ")
        )));
    }
    let missing: Vec<&str> = all.iter().copied().filter(|a| !given.contains(a)).collect();
    if !missing.is_empty() {
        return Err(Error::usage(format!(
            "backup {} has node(s) {} that no --node NAME=DIR gives: a restore test of part of a cluster proves nothing about the cluster; restore every node and give each, or test one node alone with --node NAME --pgdata DIR",
            m.backup_id,
            missing.join(", ")
        )));
    }
    Ok(())
}

/// restore-prep's plans for every node, then its writes for every node; None (and every
/// node's report says why) when one node is refused.
fn prepare_all(reqs: &[Request], reps: &mut [Report]) -> Option<Vec<restore::Plan>> {
    // Each node's own planning time, so that its step's time is its own.
    let mut took = Vec::new();
    let planned: Vec<Result<restore::Plan>> = reqs
        .iter()
        .map(|r| {
            let t = Instant::now();
            let p = restore::prepare(&r.prep);
            took.push(t.elapsed());
            p
        })
        .collect();
    let since = |i: usize| Instant::now().checked_sub(took[i]).unwrap_or_else(Instant::now);
    let refused: Vec<String> = reqs
        .iter()
        .zip(&planned)
        .filter(|(_, p)| p.is_err())
        .map(|(r, _)| r.prep.node.clone().unwrap_or_default())
        .collect();
    if !refused.is_empty() {
        for (i, (rep, p)) in reps.iter_mut().zip(planned).enumerate() {
            match p {
                Err(e) => rep.step("restore-prep", since(i), false, vec![e.msg]),
                Ok(_) => rep.skip(
                    "restore-prep",
                    format!("not applied: restore-prep refused node(s) {}, so no node was changed", refused.join(", ")),
                ),
            }
        }
        return None;
    }
    let mut plans = Vec::new();
    let mut failed: Option<String> = None;
    for (i, (rep, p)) in reps.iter_mut().zip(planned).enumerate() {
        if let Some(f) = &failed {
            rep.skip(
                "restore-prep",
                format!("not applied: restore-prep's writes failed on node {}; no server was started", f),
            );
            continue;
        }
        match rt::apply_step(p, since(i), rep) {
            Some(plan) => plans.push(plan),
            None => failed = Some(rep.node.clone().unwrap_or_default()),
        }
    }
    if failed.is_some() {
        return None;
    }
    Some(plans)
}

/// Start every node's test server; None for a node whose server did not start.
fn start_all(reqs: &[Request], m: &Manifest, plans: &[restore::Plan], reps: &mut [Report]) -> Vec<Option<Running>> {
    let mut running = Vec::new();
    for ((r, plan), rep) in reqs.iter().zip(plans).zip(reps.iter_mut()) {
        running.push(if server::interrupted().is_some() { None } else { rt::start_step(r, m, plan, rep) });
    }
    running
}

/// Wait for each recovery, check and stop each server. The servers not yet reached keep
/// running (recovering in parallel) and are stopped by their Drop guard if this ends early.
fn finish_all(
    reqs: &[Request],
    m: &Manifest,
    target: &recovery::Target,
    running: Vec<Option<Running>>,
    starts: &[Instant],
    reps: &mut [Report],
) {
    for (((r, run), t0), rep) in reqs.iter().zip(running).zip(starts).zip(reps.iter_mut()) {
        if let Some(run) = run {
            rt::finish(r, m, target, run, *t0, rep);
        }
    }
}

/// Checks across nodes that hold for any multi-node backup: every node ended recovery at the
/// backup's one restore point (same name) and on a new timeline. A Citus restore point is
/// cluster-wide (one instant for every node); a per-node one is not.
pub fn across(m: &Manifest, target: &recovery::Target, reps: &[Report]) -> Across {
    let rp = m.restore_point.as_ref();
    let name = match (target, rp) {
        (recovery::Target::Name(n), Some(rp)) if &rp.name == n => n.clone(),
        _ => {
            return Across {
                outcome: Outcome::Skipped,
                lines: vec![format!(
                    "not checked: the target is {}, not the backup's restore point{}",
                    target.describe(),
                    rp.map(|r| format!(" {:?}", r.name)).unwrap_or_default()
                )],
            }
        }
    };
    let want = format!("at restore point \"{}\"", name);
    let mut lines = Vec::new();
    let mut ok = true;
    for rep in reps {
        let node = rep.node.clone().unwrap_or_default();
        let before = m.nodes.iter().find(|n| n.name == node).map(|n| n.timeline);
        let at = rep.stop_reason.as_deref() == Some(want.as_str());
        let new_tl = matches!((rep.timeline, before), (Some(now), Some(b)) if now > b);
        ok &= at && new_tl;
        lines.push(format!(
            "node {}: {}, {}",
            node,
            match &rep.stop_reason {
                Some(r) if at => format!("stopped {}", r),
                Some(r) => format!("stopped {}, not at restore point {:?}", r, name),
                None => format!("did not show that it stopped at restore point {:?}", name),
            },
            match (rep.timeline, before) {
                (Some(now), Some(b)) if now > b => format!("new timeline {} (the backup's was {})", now, b),
                (Some(now), Some(b)) => format!("timeline {}, not a new one (the backup's was {})", now, b),
                _ => "its timeline is not known".to_string(),
            }
        ));
    }
    if ok {
        lines.insert(0, format!("every node ended at restore point {:?} on a new timeline", name));
    } else {
        lines.insert(0, format!("not every node ended at restore point {:?} on a new timeline", name));
    }
    lines.push(match rp.map(|r| r.scope) {
        Some(RestorePointScope::Cluster) => format!(
            "restore point {:?} is cluster-wide (citus_create_restore_point): the nodes are at one instant of the cluster",
            name
        ),
        _ => format!(
            "restore point {:?} was made on each node in turn (pg_create_restore_point): close in time, not one instant of a cluster",
            name
        ),
    });
    Across { outcome: if ok { Outcome::Passed } else { Outcome::Failed }, lines }
}

impl MultiReport {
    pub fn failed_nodes(&self) -> Vec<String> {
        self.nodes.iter().filter(|r| !r.passed).map(|r| r.node.clone().unwrap_or_default()).collect()
    }

    pub fn print_text(&self) {
        println!("restore-test of backup {}: {} node(s), target {}", self.backup_id, self.nodes.len(), self.target);
        for r in &self.nodes {
            println!();
            r.print_text();
        }
        println!();
        let word = match self.across_nodes.outcome {
            Outcome::Passed => "PASSED",
            Outcome::Failed => "FAILED",
            Outcome::Skipped => "skipped",
        };
        println!("across nodes   {}", word);
        for l in &self.across_nodes.lines {
            println!("    {}", l);
        }
        let failed = self.failed_nodes();
        println!(
            "verdict for the cluster: {} ({:.1} s)",
            if self.passed {
                "PASSED: every node restores".to_string()
            } else if failed.is_empty() {
                "FAILED across nodes".to_string()
            } else {
                format!("FAILED on node(s) {}", failed.join(", "))
            },
            self.total_seconds
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sidecar::{NodeEntry, RestorePoint};
    use std::collections::BTreeMap;

    fn node(name: &str) -> NodeEntry {
        NodeEntry {
            name: name.into(),
            conninfo: String::new(),
            server_version_num: 150000,
            server_version: "15.0".into(),
            system_identifier: "7".into(),
            timeline: 1,
            start_lsn: "0/2000028".parse().unwrap(),
            stop_lsn: "0/3000100".parse().unwrap(),
            start_wal_file: String::new(),
            stop_wal_file: String::new(),
            backup_history_file: None,
            from_standby: false,
            data_directory: None,
            wal_segment_size: 16 << 20,
            archived: true,
            archive_note: None,
            inventory_source: None,
            inventory_note: None,
            files: BTreeMap::new(),
        }
    }

    fn manifest(scope: RestorePointScope) -> Manifest {
        Manifest {
            format_version: 1,
            tool_version: String::new(),
            backup_id: "b".into(),
            status: crate::sidecar::Status::Complete,
            started_at: String::new(),
            stopped_at: String::new(),
            written_at: String::new(),
            nodes: vec![node("coordinator"), node("group-1")],
            restore_point: Some(RestorePoint { name: "rp".into(), scope, lsns: BTreeMap::new() }),
            restore_point_note: None,
        }
    }

    fn ended(name: &str, timeline: u32, reason: &str) -> Report {
        Report {
            node: Some(name.into()),
            timeline: Some(timeline),
            stop_reason: Some(reason.into()),
            ..Report::default()
        }
    }

    #[test]
    fn a_citus_restore_point_reached_by_every_node_is_cluster_wide() {
        let m = manifest(RestorePointScope::Cluster);
        let t = recovery::Target::Name("rp".into());
        let a = across(
            &m,
            &t,
            &[ended("coordinator", 2, "at restore point \"rp\""), ended("group-1", 2, "at restore point \"rp\"")],
        );
        assert_eq!(a.outcome, Outcome::Passed, "{:?}", a.lines);
        assert!(a.lines.last().unwrap().contains("is cluster-wide"), "{:?}", a.lines);
    }

    #[test]
    fn a_node_at_another_point_or_on_the_old_timeline_fails_across_nodes() {
        let m = manifest(RestorePointScope::PerNode);
        let t = recovery::Target::Name("rp".into());
        let a = across(
            &m,
            &t,
            &[ended("coordinator", 2, "at restore point \"rp\""), ended("group-1", 2, "at restore point \"other\"")],
        );
        assert_eq!(a.outcome, Outcome::Failed);
        assert!(
            a.lines.iter().any(|l| l.starts_with("node group-1: stopped at restore point \"other\", not at")),
            "{:?}",
            a.lines
        );
        assert!(a.lines.last().unwrap().contains("not one instant"), "{:?}", a.lines);
        let a = across(
            &m,
            &t,
            &[ended("coordinator", 2, "at restore point \"rp\""), ended("group-1", 1, "at restore point \"rp\"")],
        );
        assert_eq!(a.outcome, Outcome::Failed);
        assert!(a.lines.iter().any(|l| l.contains("timeline 1, not a new one")), "{:?}", a.lines);
        // Another target: not checked, and not a failure.
        let a = across(&m, &recovery::Target::Latest, &[]);
        assert_eq!(a.outcome, Outcome::Skipped, "{:?}", a.lines);
    }
}
