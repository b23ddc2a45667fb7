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

pub use facts::Config;
pub use judge::{Finding, NodeReport, Report, Status, Thresholds};
pub use render::Format;

/// Gather, then judge.
pub fn run(cfg: &Config, thresholds: &Thresholds) -> Report {
    let started = std::time::Instant::now();
    let now = chrono::Utc::now();
    let facts = facts::gather(cfg, now);
    let mut report = judge::judge(facts, thresholds);
    report.checked_at = crate::archive::catalog::utc(now);
    report.duration_seconds = started.elapsed().as_secs_f64();
    report
}
