//! `status`: the running helpers, their nodes and the nodes' health.

use crate::cli::StatusArgs;
use crate::error::{exit, Error, Result};
use crate::helper::client;
use crate::ids;
use crate::protocol::{Reply, Request};
use crate::rundir::RunDir;

pub fn run(a: StatusArgs) -> Result<i32> {
    if let Some(id) = &a.backup_id {
        ids::validate(id)?;
    }
    let run = RunDir::open(a.run.run_dir.clone(), false)?;
    let ids = match &a.backup_id {
        Some(id) => vec![id.clone()],
        None => run.ids(),
    };
    let mut out = Vec::new();
    for id in &ids {
        let entry = match client::request(&run, id, &Request::Status, &mut |_| {}) {
            Ok(Some(Reply::Status { backup })) => {
                serde_json::to_value(&backup).map_err(|e| Error::new(e.to_string()))?
            }
            Ok(Some(other)) => {
                serde_json::json!({"backup_id": id, "phase": "unknown", "error": format!("{:?}", other)})
            }
            Ok(None) => {
                let why = client::no_helper_error(&run, id).msg;
                serde_json::json!({"backup_id": id, "phase": "not-running", "error": why})
            }
            Err(e) => serde_json::json!({"backup_id": id, "phase": "unreachable", "error": e.msg}),
        };
        out.push(entry);
    }
    if a.json {
        println!("{}", serde_json::to_string_pretty(&out).map_err(|e| Error::new(e.to_string()))?);
    } else if out.is_empty() {
        println!("no backups in progress in {}", run.dir.display());
    } else {
        for b in &out {
            print_human(b);
        }
    }
    let none_running = out.iter().all(|b| b["phase"] == "not-running");
    Ok(if a.backup_id.is_some() && none_running { exit::NO_BACKUP } else { exit::OK })
}

fn print_human(b: &serde_json::Value) {
    let s = |v: &serde_json::Value| v.as_str().map(str::to_string).unwrap_or_else(|| v.to_string());
    if let Some(err) = b.get("error") {
        println!("backup {}: {} ({})", s(&b["backup_id"]), s(&b["phase"]), s(err));
        return;
    }
    let age = chrono::DateTime::parse_from_rfc3339(b["started_at"].as_str().unwrap_or(""))
        .map(|t| format!("{} s", (chrono::Utc::now() - t.with_timezone(&chrono::Utc)).num_seconds()))
        .unwrap_or_else(|_| "?".into());
    println!("backup {}: {} (helper pid {}, age {})", s(&b["backup_id"]), s(&b["phase"]), b["helper_pid"], age);
    for n in b["nodes"].as_array().into_iter().flatten() {
        let stop = n["stop"].get("stop_lsn").map(|l| format!(", stopped at {}", s(l))).unwrap_or_default();
        println!(
            "  node {}: {} start {}{}; {} [{}]",
            s(&n["name"]),
            s(&n["server_version"]),
            s(&n["start_lsn"]),
            stop,
            s(&n["health"]),
            s(&n["conninfo"])
        );
    }
}
