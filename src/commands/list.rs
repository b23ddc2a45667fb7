//! `list`: the backups that can be restored, newest first, from sidecar directories and plain
//! WAL archive directories (found by archive::catalog), with whether each can be restored
//! from the archive now and its recovery window. Every time is printed in RFC 3339, UTC.

use crate::archive::catalog::{self, Entry, NodeRow};
use crate::cli::ListArgs;
use crate::error::{exit, Result};
use crate::sidecar::Status;

pub fn run(a: ListArgs) -> Result<i32> {
    let entries = catalog::discover(&a.sidecar_dir, &a.archive_dir)?.entries;
    if a.json {
        println!("{}", serde_json::to_string_pretty(&entries).map_err(|e| err!("{}", e))?);
    } else {
        print_text(&entries);
    }
    Ok(exit::OK)
}

fn print_text(entries: &[Entry]) {
    if entries.is_empty() {
        println!("no backups found");
    }
    let yes = |b: Option<bool>| match b {
        Some(true) => "yes",
        Some(false) => "no",
        None => "not checked (no --archive-dir)",
    };
    for e in entries {
        println!(
            "{}  {}  started {}  stopped {}  sidecar: {}  label in archive: {}  restorable: {}",
            e.backup_id,
            status_word(e.status),
            e.started_at.as_deref().unwrap_or("?"),
            e.stopped_at.as_deref().unwrap_or("?"),
            yes(Some(e.sidecar_present)),
            yes(e.label_in_archive),
            yes(e.restorable)
        );
        for n in &e.nodes {
            print_node(n);
        }
    }
}

/// A node's line, and its archive's.
fn print_node(n: &NodeRow) {
    let name = match (&n.name, &n.label_archive_dir) {
        (Some(name), _) => name.clone(),
        (None, Some(d)) => format!("in archive {}", d.display()),
        (None, None) => "(unnamed)".into(),
    };
    println!(
        "  node {}{}: start {} stop {} timeline {}{}",
        name,
        n.system_identifier.as_deref().map(|s| format!(" (system {})", s)).unwrap_or_default(),
        n.start_lsn,
        n.stop_lsn,
        n.timeline,
        if n.from_standby { ", from a standby (no history file)" } else { "" }
    );
    match (&n.inventory_source, &n.inventory_note) {
        (Some(src), _) => println!("    files: inventory ({}): restore-prep verifies a restored copy", src),
        (None, note) => println!(
            "    files: not verifiable, restore-prep can only say so{}",
            note.as_deref().map(|w| format!(" ({})", w)).unwrap_or_default()
        ),
    }
    let Some(a) = &n.archive else { return };
    let Some(dir) = &a.dir else {
        println!("    archive: no listed archive directory holds its start segment: not restorable from them");
        return;
    };
    match (&a.first_missing, &a.window) {
        (Some(m), _) => println!("    archive {}: segment {} is missing: not restorable from it", dir.display(), m),
        (None, Some(w)) => println!(
            "    archive {}: restorable; recovery window {} ({}) to {} ({}, segment {})",
            dir.display(),
            w.from_time.as_deref().unwrap_or("?"),
            w.from_lsn,
            w.to_time.as_deref().unwrap_or("?"),
            w.to_lsn,
            w.newest_segment
        ),
        (None, None) => println!("    archive {}: restorable", dir.display()),
    }
}

/// A status as the text listing (and the JSON) spells it.
fn status_word(s: Status) -> &'static str {
    match s {
        Status::Complete => "complete",
        Status::ArchivePending => "archive-pending",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_is_spelled_as_before_in_json_and_text() {
        for (s, word) in [(Status::Complete, "complete"), (Status::ArchivePending, "archive-pending")] {
            let e = Entry {
                backup_id: "b".into(),
                status: s,
                started_at: None,
                stopped_at: None,
                sidecar_present: false,
                sidecar_dirs: Vec::new(),
                label_in_archive: None,
                restorable: None,
                nodes: Vec::new(),
                sort_key: 0,
            };
            let v: serde_json::Value = serde_json::to_value(&e).unwrap();
            assert_eq!(v["status"], word);
            assert_eq!(status_word(s), word);
        }
    }
}
