//! The facts judged: one finding per check and node, each OK, WARNING, CRITICAL or UNKNOWN
//! (docs/check.md says what each means). Pure: no server, no file.

use serde::Serialize;

use crate::check::facts::{ArchiveFacts, BackupFacts, Gathered, Held, NodeFacts, ServerSide};

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
    pub facts: NodeFacts,
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

/// Every node's findings, the other findings, and the worst status of all.
pub fn judge(g: Gathered, t: &Thresholds) -> Report {
    let nodes: Vec<NodeReport> = g
        .nodes
        .into_iter()
        .map(|f| {
            let findings = node_findings(&f, t);
            NodeReport { name: f.name.clone(), status: worst(&findings), findings, facts: f }
        })
        .collect();
    let mut other: Vec<Finding> = g.other_held.iter().map(|h| held_finding(h, t)).collect();
    other.extend(g.other_errors.into_iter().map(|m| finding("helper", Status::Unknown, m)));
    let status = nodes.iter().map(|n| n.status).chain(other.iter().map(|f| f.status)).max().unwrap_or(Status::Ok);
    Report { status, checked_at: String::new(), duration_seconds: 0.0, thresholds: t.clone(), nodes, other }
}

/// The worst status among findings (OK when there are none).
pub fn worst(f: &[Finding]) -> Status {
    f.iter().map(|f| f.status).max().unwrap_or(Status::Ok)
}

fn finding(check: &'static str, status: Status, message: impl Into<String>) -> Finding {
    Finding { check, status, message: message.into() }
}

/// A node's findings, in the order docs/check.md lists the checks.
fn node_findings(n: &NodeFacts, t: &Thresholds) -> Vec<Finding> {
    let mut out = vec![connect(n)];
    out.extend(backup(n, t));
    if let Some(s) = &n.server {
        out.push(archiver(s));
        out.push(archive_lag(s, t));
        out.push(archive_settings(s, n));
    }
    out.extend(n.held.iter().map(|h| held_finding(h, t)));
    out
}

fn connect(n: &NodeFacts) -> Finding {
    match (&n.server, &n.connect_error) {
        (Some(s), _) => finding(
            "connect",
            Status::Ok,
            format!(
                "PostgreSQL {}, {}, system identifier {}",
                s.version,
                if s.in_recovery { "standby" } else { "primary" },
                s.system_identifier
            ),
        ),
        (None, e) => finding(
            "connect",
            Status::Critical,
            format!("cannot be reached: {}", e.as_deref().unwrap_or("no connection settings")),
        ),
    }
}

/// The newest complete backup: there, of this cluster, young enough, its sidecar sound, its
/// WAL in the archive.
fn backup(n: &NodeFacts, t: &Thresholds) -> Vec<Finding> {
    if let Some(e) = &n.catalog_error {
        return vec![finding("backup", Status::Critical, format!("cannot read the backups: {}", e))];
    }
    let Some(b) = &n.backup else {
        let pending = if n.newer_pending.is_empty() {
            String::new()
        } else {
            format!(" (archive-pending: {}; run post again once archiving works)", n.newer_pending.join(", "))
        };
        return vec![finding("backup", Status::Critical, format!("no complete backup in the sidecars{}", pending))];
    };
    let mut out = vec![backup_found(n, b)];
    out.push(age(b, t));
    out.push(if b.sidecar_problems.is_empty() {
        finding("sidecar", Status::Ok, format!("the sidecar of backup {} verifies", b.backup_id))
    } else {
        finding(
            "sidecar",
            Status::Critical,
            format!("the sidecar of backup {} does not verify: {}", b.backup_id, b.sidecar_problems.join("; ")),
        )
    });
    out.push(match &b.archive {
        Some(a) => archive(b, a),
        None => finding(
            "archive",
            Status::Unknown,
            "not checked: give --archive-dir (or archive with pg-backup-hooks wal-archive into a local directory)",
        ),
    });
    out
}

fn backup_found(n: &NodeFacts, b: &BackupFacts) -> Finding {
    let server = n.server.as_ref().map(|s| s.system_identifier.as_str());
    if let (Some(s), Some(want)) = (server, b.system_identifier.as_deref()) {
        if s != want {
            return finding(
                "backup",
                Status::Critical,
                format!(
                    "the server is another cluster (system identifier {}) than its newest backup {} (system identifier {}): back it up",
                    s, b.backup_id, want
                ),
            );
        }
    }
    let stopped = b.stopped_at.as_deref().unwrap_or("at an unknown time");
    if !n.newer_pending.is_empty() {
        // post exited 3 for these: NOT restorable until archiving catches up and post runs again.
        return finding(
            "backup",
            Status::Warning,
            format!(
                "newer backup(s) {} are archive-pending (not restorable yet: run post again once archiving works); newest complete backup {} stopped {}",
                n.newer_pending.join(", "),
                b.backup_id,
                stopped
            ),
        );
    }
    finding("backup", Status::Ok, format!("newest complete backup {} stopped {}", b.backup_id, stopped))
}

fn age(b: &BackupFacts, t: &Thresholds) -> Finding {
    let Some(age) = b.age_seconds else {
        return finding("backup_age", Status::Unknown, format!("backup {} has no readable stop time", b.backup_id));
    };
    match t.max_age {
        Some(max) if age > max as i64 => finding(
            "backup_age",
            Status::Critical,
            format!(
                "newest complete backup {} is {} old, more than --max-age {}",
                b.backup_id,
                human(age),
                human(max as i64)
            ),
        ),
        Some(max) => finding(
            "backup_age",
            Status::Ok,
            format!("newest complete backup is {} old (--max-age {})", human(age), human(max as i64)),
        ),
        None => {
            finding("backup_age", Status::Ok, format!("newest complete backup is {} old (no --max-age)", human(age)))
        }
    }
}

fn archive(b: &BackupFacts, a: &ArchiveFacts) -> Finding {
    let crit = |m: String| finding("archive", Status::Critical, m);
    let dir = a.dir.display();
    if !a.errors.is_empty() {
        return crit(format!("archive {}: {}", dir, a.errors.join("; ")));
    }
    if let Some(p) = &a.marker_problem {
        return crit(format!("archive {}: {}", dir, p));
    }
    if let Some(m) = &a.first_missing {
        let upto = match &a.reach_segment {
            Some(r) => format!("backup {} can be recovered only up to segment {}", b.backup_id, r),
            None => format!("backup {} cannot be restored from it", b.backup_id),
        };
        return crit(format!("archive {}: segment {} is missing: {}", dir, m, upto));
    }
    if let Some(f) = &a.foreign_segment {
        return crit(format!("archive {}: segment {}, not this cluster's", dir, f));
    }
    finding(
        "archive",
        Status::Ok,
        format!(
            "archive {} holds every segment from backup {}'s start to {}, {} checked to be this cluster's",
            dir,
            b.backup_id,
            a.newest_segment.as_deref().unwrap_or("?"),
            a.segments_checked
        ),
    )
}

fn archiver(s: &ServerSide) -> Finding {
    let a = &s.archiver;
    if s.in_recovery && s.archive_mode != "always" {
        return finding("archiver", Status::Ok, "a standby with archive_mode on archives nothing itself");
    }
    if a.failing {
        return finding(
            "archiver",
            Status::Critical,
            format!(
                "archiving fails: last failure {} at {} ({} failures), last success {} at {}",
                a.last_failed_wal.as_deref().unwrap_or("?"),
                a.last_failed_time.as_deref().unwrap_or("?"),
                a.failed_count,
                a.last_archived_wal.as_deref().unwrap_or("none"),
                a.last_archived_time.as_deref().unwrap_or("never")
            ),
        );
    }
    finding(
        "archiver",
        Status::Ok,
        format!(
            "archiving works: last archived {} at {}",
            a.last_archived_wal.as_deref().unwrap_or("nothing yet"),
            a.last_archived_time.as_deref().unwrap_or("-")
        ),
    )
}

fn archive_lag(s: &ServerSide, t: &Thresholds) -> Finding {
    let Some(segs) = s.lag_segments else {
        let why = if s.in_recovery {
            "a standby has no current WAL position to compare"
        } else {
            "the last archived file is not a segment (a timeline history file after a promotion)"
        };
        return finding("archive_lag", Status::Ok, format!("not measured: {}", why));
    };
    let secs = s.lag_seconds.unwrap_or(0.0);
    let status = if segs >= t.lag_segments_crit || (segs > 0 && secs >= t.lag_crit as f64) {
        Status::Critical
    } else if segs >= t.lag_segments_warn || (segs > 0 && secs >= t.lag_warn as f64) {
        Status::Warning
    } else {
        Status::Ok
    };
    finding(
        "archive_lag",
        status,
        format!(
            "{} finished segment(s) wait to be archived (current {}), {} since the last success (warn {}/{}, crit {}/{})",
            segs,
            s.current_wal_file.as_deref().unwrap_or("?"),
            human(secs as i64),
            t.lag_segments_warn,
            human(t.lag_warn as i64),
            t.lag_segments_crit,
            human(t.lag_crit as i64)
        ),
    )
}

fn archive_settings(s: &ServerSide, n: &NodeFacts) -> Finding {
    let crit = |m: String| finding("archive_settings", Status::Critical, m);
    if s.archive_mode == "off" {
        return crit("archive_mode is off: no backup of this node can be restored".into());
    }
    if s.archive_command.trim().is_empty() && s.archive_library.trim().is_empty() {
        return crit("archive_mode is on but neither archive_command nor archive_library is set".into());
    }
    if s.archive_dir_writable == Some(false) {
        return crit(format!("wal-archive cannot write: {}", s.archive_dir_note.as_deref().unwrap_or("?")));
    }
    if let (Some(server), Some(ours)) = (&s.archive_command_dir, &n.archive_dir) {
        let same = match (std::fs::canonicalize(server), std::fs::canonicalize(ours)) {
            (Ok(a), Ok(b)) => a == b,
            _ => server == ours,
        };
        if !same {
            return finding(
                "archive_settings",
                Status::Warning,
                format!("the server archives into {}, but the archive checked is {}", server.display(), ours.display()),
            );
        }
    }
    let note = match (s.archive_dir_writable, &s.archive_dir_note) {
        (Some(true), _) => format!(
            "; {} is writable by the server's user",
            s.archive_command_dir.as_ref().map(|d| d.display().to_string()).unwrap_or_default()
        ),
        (_, Some(n)) => format!("; directory not checked: {}", n),
        _ => String::new(),
    };
    finding("archive_settings", Status::Ok, format!("archive_mode {}, archiving configured{}", s.archive_mode, note))
}

fn held_finding(h: &Held, t: &Thresholds) -> Finding {
    let status = if h.held_seconds >= t.held_crit as i64 {
        Status::Critical
    } else if h.held_seconds >= t.held_warn as i64 || matches!(h.phase.as_str(), "failed" | "aborted") {
        Status::Warning
    } else {
        Status::Ok
    };
    let what = match h.phase.as_str() {
        "failed" => {
            "was lost (a session ended or a standby was promoted): its copy cannot be restored, and its helper waits"
        }
        "aborted" => "was aborted and its helper waits",
        _ if status == Status::Ok => "in progress",
        _ => "held open (did its post never come?)",
    };
    finding(
        "helper",
        status,
        format!(
            "backup {} {} for {} by helper pid {} (phase {}; warn {}, crit {}); end it with post or abort",
            h.backup_id,
            what,
            human(h.held_seconds),
            h.helper_pid,
            h.phase,
            human(t.held_warn as i64),
            human(t.held_crit as i64)
        ),
    )
}

/// Seconds as people read them: `45s`, `12m 05s`, `3h 20m`, `2d 04h`.
pub fn human(s: i64) -> String {
    let a = s.unsigned_abs();
    let sign = if s < 0 { "-" } else { "" };
    match a {
        0..=59 => format!("{}{}s", sign, a),
        60..=3599 => format!("{}{}m {:02}s", sign, a / 60, a % 60),
        3600..=86399 => format!("{}{}h {:02}m", sign, a / 3600, a % 3600 / 60),
        _ => format!("{}{}d {:02}h", sign, a / 86400, a % 86400 / 3600),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t() -> Thresholds {
        Thresholds {
            max_age: Some(3600),
            lag_segments_warn: 16,
            lag_segments_crit: 128,
            lag_warn: 900,
            lag_crit: 3600,
            held_warn: 60,
            held_crit: 120,
        }
    }

    #[test]
    fn held_backups_warn_then_go_critical() {
        let h = |s| Held {
            backup_id: "b".into(),
            phase: "running".into(),
            helper_pid: 1,
            started_at: String::new(),
            held_seconds: s,
            nodes: vec![],
        };
        assert_eq!(held_finding(&h(59), &t()).status, Status::Ok);
        assert_eq!(held_finding(&h(60), &t()).status, Status::Warning);
        assert_eq!(held_finding(&h(500), &t()).status, Status::Critical);
        let lost = Held { phase: "failed".into(), ..h(1) };
        let f = held_finding(&lost, &t());
        assert_eq!(f.status, Status::Warning);
        assert!(f.message.contains("cannot be restored"), "{}", f.message);
    }

    #[test]
    fn unknown_ranks_between_warning_and_critical() {
        let f = |s| finding("x", s, "");
        assert_eq!(worst(&[f(Status::Warning), f(Status::Unknown)]), Status::Unknown);
        assert_eq!(worst(&[f(Status::Critical), f(Status::Unknown)]), Status::Critical);
        assert_eq!(worst(&[]), Status::Ok);
    }

    #[test]
    fn durations_read_as_people_write_them() {
        assert_eq!(human(45), "45s");
        assert_eq!(human(725), "12m 05s");
        assert_eq!(human(12000), "3h 20m");
        assert_eq!(human(2 * 86400 + 4 * 3600), "2d 04h");
    }
}
