//! `check`: whether every node can be restored now, for monitoring (docs/check.md).
//!
//! Three steps, each its own module: [`facts`] gathers what each node's server, the sidecars,
//! the archives and the run directory say (read-only; an unreachable node is a fact, never
//! an error); [`judge`] turns the facts into findings, each OK, WARNING, CRITICAL or UNKNOWN
//! against the thresholds; [`render`] prints them as text, JSON, a Nagios status line or the
//! Prometheus text exposition format.

pub mod facts;
pub mod judge;
pub mod render;

use std::path::PathBuf;

use serde::Serialize;

/// How a finding, a node and the whole check end; the order is severity (worst last, but
/// UNKNOWN below CRITICAL as Nagios ranks it: a known failure beats an unknown one).
#[derive(Serialize, Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
#[serde(rename_all = "UPPERCASE")]
pub enum Status {
    Ok,
    Warning,
    Unknown,
    Critical,
}

impl Status {
    /// The word Nagios and the text output print.
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Ok => "OK",
            Status::Warning => "WARNING",
            Status::Unknown => "UNKNOWN",
            Status::Critical => "CRITICAL",
        }
    }

    /// The plugin exit code (and the Prometheus value): 0 OK, 1 WARNING, 2 CRITICAL, 3 UNKNOWN.
    pub fn code(self) -> i32 {
        match self {
            Status::Ok => 0,
            Status::Warning => 1,
            Status::Critical => 2,
            Status::Unknown => 3,
        }
    }
}

/// The output formats of `--format`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    Text,
    Json,
    Nagios,
    Prometheus,
}

/// The limits the facts are judged against, in seconds or segments.
#[derive(Debug, Clone, Serialize)]
pub struct Thresholds {
    pub max_age: Option<u64>,
    pub lag_segments_warn: u64,
    pub lag_segments_crit: u64,
    pub lag_warn: u64,
    pub lag_crit: u64,
    pub held_warn: u64,
    pub held_crit: u64,
}

/// What to check: the nodes (already parsed, conninfo with secrets), where their backups and
/// WAL are, and the run directory of their helpers.
pub struct Config {
    pub nodes: Vec<(String, String)>,
    pub discover_citus: bool,
    pub sidecar_dirs: Vec<PathBuf>,
    /// `--archive-dir DIR`: for every node.
    pub archive_dirs: Vec<PathBuf>,
    /// `--archive-dir NODE=DIR`.
    pub archive_of: Vec<(String, PathBuf)>,
    /// None: the default run directory, when it exists.
    pub run_dir: Option<PathBuf>,
    pub thresholds: Thresholds,
}

/// One thing judged about a node.
#[derive(Serialize, Debug, Clone)]
pub struct Finding {
    /// What was checked: connect, backup, backup_age, sidecar, archive, archiver, archive_lag,
    /// archive_settings, helper.
    pub check: &'static str,
    pub status: Status,
    pub message: String,
}

/// A node's findings and the facts behind them.
#[derive(Serialize, Debug)]
pub struct NodeReport {
    pub name: String,
    pub status: Status,
    pub findings: Vec<Finding>,
    pub facts: facts::NodeFacts,
}

/// The whole check: the worst status first, then each node; `other` holds findings that
/// belong to no node given (a helper holding another cluster's backup, an unreadable run dir).
#[derive(Serialize, Debug)]
pub struct Report {
    pub status: Status,
    pub checked_at: String,
    pub duration_seconds: f64,
    pub thresholds: Thresholds,
    pub nodes: Vec<NodeReport>,
    pub other: Vec<Finding>,
}

/// Gather, then judge.
pub fn run(cfg: &Config) -> Report {
    let started = std::time::Instant::now();
    let now = chrono::Utc::now();
    let facts = facts::gather(cfg, now);
    let mut report = judge::judge(facts, &cfg.thresholds);
    report.checked_at = crate::archive::catalog::utc(now);
    report.duration_seconds = started.elapsed().as_secs_f64();
    report
}
