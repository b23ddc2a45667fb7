//! `status`: the running helpers, their nodes and the nodes' health.

use serde::Serialize;

use crate::cli::StatusArgs;
use crate::error::{exit, Result};
use crate::helper::client;
use crate::ids;
use crate::protocol::{BackupStatus, Reply, Request};
use crate::rundir::RunDir;

/// One backup id's line in `status`: what its helper says, or why no helper says anything.
/// Serialized as the helper's `BackupStatus`, or as `{"backup_id", "phase", "error"}`.
#[derive(Serialize, Debug)]
#[serde(untagged)]
enum Entry {
    /// The helper answered.
    Running(BackupStatus),
    /// No answer from a helper for this id.
    Unavailable { backup_id: String, phase: Unavailable, error: String },
}

/// Why there is no helper status; `status --json` shows it as the entry's phase.
#[derive(Serialize, Debug, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
enum Unavailable {
    /// No helper listens for this id (the error says what the run dir remembers).
    NotRunning,
    /// A helper listens but could not be talked to.
    Unreachable,
    /// The helper answered something that is not a status.
    Unknown,
}

impl Unavailable {
    fn as_str(self) -> &'static str {
        match self {
            Unavailable::NotRunning => "not-running",
            Unavailable::Unreachable => "unreachable",
            Unavailable::Unknown => "unknown",
        }
    }
}

pub fn run(a: StatusArgs) -> Result<i32> {
    if let Some(id) = &a.backup_id {
        ids::validate(id)?;
    }
    let run = RunDir::open(a.run.run_dir.clone(), false)?;
    let ids = match &a.backup_id {
        Some(id) => vec![id.clone()],
        None => run.ids(),
    };
    let out: Vec<Entry> = ids.iter().map(|id| entry(&run, id)).collect();
    if a.json {
        println!("{}", to_json(&out)?);
    } else if out.is_empty() {
        println!("no backups in progress in {}", run.dir.display());
    } else {
        for b in &out {
            print_human(b);
        }
    }
    let none_running = out.iter().all(|b| matches!(b, Entry::Unavailable { phase: Unavailable::NotRunning, .. }));
    Ok(if a.backup_id.is_some() && none_running { exit::NO_BACKUP } else { exit::OK })
}

/// Ask the helper of one backup id for its status.
fn entry(run: &RunDir, id: &str) -> Entry {
    let unavailable = |phase, error| Entry::Unavailable { backup_id: id.to_string(), phase, error };
    match client::request(run, id, &Request::Status, &mut |_| {}) {
        Ok(Some(Reply::Status { backup })) => Entry::Running(backup),
        Ok(Some(other)) => unavailable(Unavailable::Unknown, format!("{:?}", other)),
        Ok(None) => unavailable(Unavailable::NotRunning, client::no_helper(run, id).message().to_string()),
        Err(e) => unavailable(Unavailable::Unreachable, e.msg),
    }
}

/// `status --json`. Through `serde_json::Value`, whose maps sort their keys: the document
/// has always listed every object's keys in alphabetical order.
fn to_json(out: &[Entry]) -> Result<String> {
    let value = serde_json::to_value(out).map_err(|e| err!("{}", e))?;
    serde_json::to_string_pretty(&value).map_err(|e| err!("{}", e))
}

fn print_human(b: &Entry) {
    let b = match b {
        Entry::Unavailable { backup_id, phase, error } => {
            println!("backup {}: {} ({})", backup_id, phase.as_str(), error);
            return;
        }
        Entry::Running(b) => b,
    };
    let age = chrono::DateTime::parse_from_rfc3339(&b.started_at)
        .map(|t| format!("{} s", (chrono::Utc::now() - t.with_timezone(&chrono::Utc)).num_seconds()))
        .unwrap_or_else(|_| "?".into());
    println!("backup {}: {} (helper pid {}, age {})", b.backup_id, b.phase.as_str(), b.helper_pid, age);
    for n in &b.nodes {
        let stop = n.stop.as_ref().map(|s| format!(", stopped at {}", s.stop_lsn)).unwrap_or_default();
        let start = n.start_lsn.map(|l| l.to_string()).unwrap_or_else(|| "null".into());
        println!("  node {}: {} start {}{}; {} [{}]", n.name, n.server_version, start, stop, n.health, n.conninfo);
        if let Some(inv) = &n.inventory {
            println!("    {}", crate::protocol::describe_inventory(Some(inv)));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unavailable(phase: Unavailable) -> Entry {
        Entry::Unavailable { backup_id: "b1".into(), phase, error: "why".into() }
    }

    #[test]
    fn entries_without_a_helper_keep_their_json() {
        // What the code before #17 wrote with serde_json::json! (keys sorted).
        for (phase, word) in [
            (Unavailable::NotRunning, "not-running"),
            (Unavailable::Unreachable, "unreachable"),
            (Unavailable::Unknown, "unknown"),
        ] {
            let want = format!(
                "[\n  {{\n    \"backup_id\": \"b1\",\n    \"error\": \"why\",\n    \"phase\": \"{}\"\n  }}\n]",
                word
            );
            assert_eq!(to_json(&[unavailable(phase)]).unwrap(), want);
            assert_eq!(phase.as_str(), word);
        }
    }

    #[test]
    fn a_running_backup_keeps_its_json() {
        // A helper's status as the socket carries it (field order as the helper writes it).
        let socket = r#"{"backup_id":"b1","helper_pid":42,"started_at":"2026-01-01T00:00:00+00:00","phase":"stopped",
            "sidecar_dirs":["/s"],"nodes":[{"name":"n1","conninfo":"host=h","server_version_num":160000,
            "server_version":"16.2","system_identifier":"7","timeline":1,"from_standby":false,"data_directory":null,
            "wal_segment_size":16777216,"start_lsn":"0/2000028","health":"ok","failed":false,"stop":null}],
            "restore_point":{"name":"b1","scope":"per-node"},"restore_point_note":null}"#;
        let backup: BackupStatus = serde_json::from_str(socket).unwrap();
        let old = serde_json::to_string_pretty(&serde_json::json!([
            serde_json::from_str::<serde_json::Value>(socket).unwrap()
        ]))
        .unwrap();
        assert_eq!(to_json(&[Entry::Running(backup)]).unwrap(), old);
        assert!(old.find("\"backup_id\"").unwrap() < old.find("\"helper_pid\"").unwrap());
        assert!(old.find("\"phase\"").unwrap() < old.find("\"restore_point\"").unwrap());
    }
}
