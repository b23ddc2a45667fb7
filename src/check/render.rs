//! A check's report as text, JSON, a Nagios plugin status line, or the Prometheus text
//! exposition format (metric names in docs/check.md).

use std::fmt::Write as _;

use crate::check::judge::{Report, Status};
use crate::error::Result;

/// The output formats of `--format`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    Text,
    Json,
    Nagios,
    Prometheus,
}

/// The report in `format`, ending with a newline.
pub fn render(r: &Report, format: Format) -> Result<String> {
    Ok(match format {
        Format::Text => text(r),
        Format::Json => serde_json::to_string_pretty(r).map_err(|e| err!("cannot encode the report: {}", e))? + "\n",
        Format::Nagios => nagios(r),
        Format::Prometheus => prometheus(r),
    })
}

/// For people: the verdict, then each node's findings.
pub fn text(r: &Report) -> String {
    let mut s = format!("PGBH CHECK {}: {}\n", r.status.as_str(), summary(r));
    for n in &r.nodes {
        let _ = writeln!(s, "node {}: {}", n.name, n.status.as_str());
        for f in &n.findings {
            let _ = writeln!(s, "  {:<8} {}: {}", f.status.as_str(), f.check, f.message);
        }
    }
    for f in &r.other {
        let _ = writeln!(s, "{:<8} {}: {}", f.status.as_str(), f.check, f.message);
    }
    s
}

/// What is wrong, worst first, or that all is well: one line.
fn summary(r: &Report) -> String {
    let mut bad: Vec<(Status, String)> = r
        .nodes
        .iter()
        .flat_map(|n| {
            n.findings
                .iter()
                .filter(|f| f.status != Status::Ok)
                .map(move |f| (f.status, format!("{}: {}", n.name, f.message)))
        })
        .chain(r.other.iter().filter(|f| f.status != Status::Ok).map(|f| (f.status, f.message.clone())))
        .collect();
    bad.sort_by_key(|b| std::cmp::Reverse(b.0));
    if bad.is_empty() {
        let names: Vec<&str> = r.nodes.iter().map(|n| n.name.as_str()).collect();
        return format!("{} node(s) restorable now ({})", names.len(), names.join(", "));
    }
    bad.into_iter().map(|(_, m)| m).collect::<Vec<_>>().join("; ")
}

/// The Nagios plugin output: `PGBH CHECK STATUS - text|perfdata`, one line; the text never
/// holds a `|` (it would start the perfdata).
pub fn nagios(r: &Report) -> String {
    let text = summary(r).replace('|', "/").replace(['\n', '\r'], " ");
    let mut perf = Vec::new();
    for n in &r.nodes {
        let f = &n.facts;
        let label = |what: &str| format!("'{}_{}'", n.name.replace('\'', "''"), what);
        if let Some(b) = &f.backup {
            if let Some(age) = b.age_seconds {
                let crit = r.thresholds.max_age.map(|m| m.to_string()).unwrap_or_default();
                perf.push(format!("{}={}s;;{};0;", label("backup_age"), age, crit));
            }
        }
        if let Some(s) = &f.server {
            if let Some(l) = s.lag_segments {
                perf.push(format!(
                    "{}={};{};{};0;",
                    label("archive_lag_segments"),
                    l,
                    r.thresholds.lag_segments_warn,
                    r.thresholds.lag_segments_crit
                ));
            }
            if let Some(l) = s.lag_seconds {
                perf.push(format!(
                    "{}={:.0}s;{};{};0;",
                    label("archive_lag"),
                    l,
                    r.thresholds.lag_warn,
                    r.thresholds.lag_crit
                ));
            }
            perf.push(format!("{}={}c;;;0;", label("archive_failed_count"), s.archiver.failed_count));
        }
        if let Some(h) = f.held.iter().map(|h| h.held_seconds).max() {
            perf.push(format!("{}={}s;{};{};0;", label("held"), h, r.thresholds.held_warn, r.thresholds.held_crit));
        }
    }
    perf.push(format!("'check_duration'={:.3}s;;;0;", r.duration_seconds));
    format!("PGBH CHECK {} - {}|{}\n", r.status.as_str(), text, perf.join(" "))
}

/// One gauge and its samples.
struct Gauge {
    name: &'static str,
    help: &'static str,
    samples: Vec<(Vec<(&'static str, String)>, f64)>,
}

impl Gauge {
    fn new(name: &'static str, help: &'static str) -> Gauge {
        Gauge { name, help, samples: Vec::new() }
    }
    fn add(&mut self, labels: Vec<(&'static str, String)>, v: f64) {
        self.samples.push((labels, v));
    }
}

/// A label value as the exposition format quotes it.
fn escape(v: &str) -> String {
    v.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

/// The text exposition format: one gauge per fact, labelled by node (and backup id).
pub fn prometheus(r: &Report) -> String {
    let b = |x: bool| if x { 1.0 } else { 0.0 };
    let mut status =
        Gauge::new("pgbh_check_status", "Status of each check of a node: 0 OK, 1 WARNING, 2 CRITICAL, 3 UNKNOWN");
    let mut node_status =
        Gauge::new("pgbh_node_status", "Worst status of a node: 0 OK, 1 WARNING, 2 CRITICAL, 3 UNKNOWN");
    let mut up = Gauge::new("pgbh_node_up", "1 when check could connect to the node and read its facts");
    let mut age = Gauge::new("pgbh_backup_age_seconds", "Seconds since the newest complete backup of the node stopped");
    let mut sidecar =
        Gauge::new("pgbh_backup_sidecar_valid", "1 when the sidecar of the newest complete backup verifies");
    let mut restorable = Gauge::new(
        "pgbh_backup_archive_complete",
        "1 when the archive holds every segment from the newest complete backup's start to its newest segment, each of this cluster",
    );
    let mut checked = Gauge::new(
        "pgbh_archive_segments_checked",
        "Segment headers read from the backup's start to the archive's newest segment",
    );
    let mut failing =
        Gauge::new("pgbh_archiver_failing", "1 when pg_stat_archiver's last failure is newer than its last success");
    let mut failed = Gauge::new("pgbh_archiver_failed_count", "pg_stat_archiver.failed_count");
    let mut lag_segs = Gauge::new("pgbh_archive_lag_segments", "Finished WAL segments not archived yet");
    let mut lag_secs = Gauge::new(
        "pgbh_archive_lag_seconds",
        "Seconds since the last successful archiving while segments wait (0 when none wait)",
    );
    let mut settings = Gauge::new(
        "pgbh_archive_settings_valid",
        "1 when archive_mode and archive_command are set and wal-archive's directory is writable by the server",
    );
    let mut held =
        Gauge::new("pgbh_backup_held_seconds", "Seconds a helper has held a backup open (pre without post yet)");
    for n in &r.nodes {
        let node = || vec![("node", n.name.clone())];
        for f in &n.findings {
            status.add(vec![("node", n.name.clone()), ("check", f.check.to_string())], f64::from(f.status.code()));
        }
        node_status.add(node(), f64::from(n.status.code()));
        let facts = &n.facts;
        up.add(node(), b(facts.server.is_some()));
        if let Some(bk) = &facts.backup {
            let nb = || vec![("node", n.name.clone()), ("backup_id", bk.backup_id.clone())];
            if let Some(a) = bk.age_seconds {
                age.add(nb(), a as f64);
            }
            sidecar.add(nb(), b(bk.sidecar_problems.is_empty()));
            if let Some(a) = &bk.archive {
                let ok = a.errors.is_empty()
                    && a.marker_problem.is_none()
                    && a.first_missing.is_none()
                    && a.foreign_segment.is_none();
                restorable.add(nb(), b(ok));
                checked.add(nb(), a.segments_checked as f64);
            }
        }
        if let Some(s) = &facts.server {
            failing.add(node(), b(s.archiver.failing));
            failed.add(node(), s.archiver.failed_count as f64);
            if let Some(l) = s.lag_segments {
                lag_segs.add(node(), l as f64);
            }
            if let Some(l) = s.lag_seconds {
                lag_secs.add(node(), l);
            }
            let st = n.findings.iter().find(|f| f.check == "archive_settings").map(|f| f.status);
            settings.add(node(), b(st == Some(Status::Ok)));
        }
        for h in &facts.held {
            held.add(vec![("node", n.name.clone()), ("backup_id", h.backup_id.clone())], h.held_seconds as f64);
        }
    }
    let mut overall = Gauge::new(
        "pgbh_check_overall_status",
        "Worst status of the whole check: 0 OK, 1 WARNING, 2 CRITICAL, 3 UNKNOWN",
    );
    overall.add(Vec::new(), f64::from(r.status.code()));
    let mut duration = Gauge::new("pgbh_check_duration_seconds", "How long the check took");
    duration.add(Vec::new(), r.duration_seconds);
    let mut when = Gauge::new("pgbh_check_timestamp_seconds", "When the check ran (Unix time)");
    when.add(Vec::new(), crate::archive::catalog::epoch(&r.checked_at).unwrap_or(0) as f64);
    let mut out = String::new();
    for g in [
        overall,
        node_status,
        status,
        up,
        age,
        sidecar,
        restorable,
        checked,
        failing,
        failed,
        lag_segs,
        lag_secs,
        settings,
        held,
        duration,
        when,
    ] {
        let _ = writeln!(out, "# HELP {} {}", g.name, g.help);
        let _ = writeln!(out, "# TYPE {} gauge", g.name);
        for (labels, v) in &g.samples {
            let l: Vec<String> = labels.iter().map(|(k, v)| format!("{}=\"{}\"", k, escape(v))).collect();
            let l = if l.is_empty() { String::new() } else { format!("{{{}}}", l.join(",")) };
            let _ = writeln!(out, "{}{} {}", g.name, l, v);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_values_are_escaped() {
        assert_eq!(escape("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
    }
}
