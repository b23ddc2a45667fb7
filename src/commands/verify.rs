//! `verify`: check each stored copy of a sidecar and say precisely what is wrong with it.

use std::path::PathBuf;

use crate::cli::VerifyArgs;
use crate::error::Result;
use crate::ids;
use crate::sidecar;

/// One copy's verdict: where it is, its nodes and status when it is there, what is wrong.
struct CopyReport {
    dir: PathBuf,
    found: Option<sidecar::Manifest>,
    problems: Vec<String>,
}

pub fn run(a: VerifyArgs) -> Result<i32> {
    ids::validate(&a.backup_id)?;
    let reports: Vec<CopyReport> = a.sidecar_dir.iter().map(|d| check_copy(d, &a.backup_id)).collect();
    if reports.iter().all(|r| r.found.is_none() && r.problems.is_empty()) {
        return Err(sidecar::not_found(&a.sidecar_dir, &a.backup_id));
    }
    if a.json {
        print_json(&a.backup_id, &reports);
    } else {
        print_text(&a.backup_id, &reports);
    }
    let bad: Vec<String> = reports
        .iter()
        .filter(|r| r.found.is_none() || !r.problems.is_empty())
        .map(|r| {
            let what = if r.problems.is_empty() { "no copy there".to_string() } else { r.problems.join("; ") };
            format!("sidecar {} is not usable: {}", sidecar::backup_dir(&r.dir, &a.backup_id).display(), what)
        })
        .collect();
    if bad.is_empty() {
        return Ok(0);
    }
    let sound = reports.iter().filter(|r| r.found.is_some() && r.problems.is_empty()).count();
    Err(err!(
        "{}{}",
        bad.join("; "),
        if sound > 0 { " (restore-prep passes over it and uses a sound copy)" } else { "" }
    ))
}

/// verify one directory's copy.
fn check_copy(dir: &std::path::Path, id: &str) -> CopyReport {
    let mut r = CopyReport { dir: dir.to_path_buf(), found: None, problems: Vec::new() };
    match sidecar::read_manifest(dir, id) {
        Ok(None) => {}
        Ok(Some(_)) => match sidecar::verify(dir, id) {
            Ok((m, problems)) => {
                r.problems = problems.iter().map(ToString::to_string).collect();
                r.found = Some(m);
            }
            Err(e) => r.problems.push(e.msg),
        },
        Err(e) => r.problems.push(e.msg),
    }
    r
}

/// `--json`: the backup's verdict and one entry per copy.
fn print_json(id: &str, reports: &[CopyReport]) {
    let copies: Vec<serde_json::Value> = reports
        .iter()
        .map(|r| {
            serde_json::json!({
                "sidecar_dir": r.dir,
                "found": r.found.is_some(),
                "ok": r.found.is_some() && r.problems.is_empty(),
                "problems": r.problems,
                "nodes": r.found.iter().flat_map(|m| m.nodes.iter().map(|n| &n.name)).collect::<Vec<_>>(),
            })
        })
        .collect();
    let ok = reports.iter().all(|r| r.found.is_some() && r.problems.is_empty());
    let first = reports.iter().find(|r| r.found.is_some());
    let nodes: Vec<&String> =
        first.iter().flat_map(|r| r.found.iter().flat_map(|m| m.nodes.iter().map(|n| &n.name))).collect();
    let problems: Vec<&String> = reports.iter().flat_map(|r| r.problems.iter()).collect();
    println!(
        "{}",
        serde_json::json!({"backup_id": id, "ok": ok, "problems": problems, "nodes": nodes, "copies": copies})
    );
}

/// One line per sound copy on stdout (the damaged ones are in the error).
fn print_text(id: &str, reports: &[CopyReport]) {
    for r in reports {
        if let (Some(m), true) = (&r.found, r.problems.is_empty()) {
            println!(
                "backup {}: sidecar OK in {} ({} node(s), {:?})",
                id,
                sidecar::backup_dir(&r.dir, id).display(),
                m.nodes.len(),
                m.status
            );
        }
    }
}
