//! `list`: the backups that can be restored, newest first, from sidecar directories (their
//! manifests) and plain WAL archive directories (their backup history files). A backup found
//! in both is one entry: sidecar and archive are matched by backup id, and nodes by system
//! identifier (the history file has none: its start segment's header gives it).

use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::cli::ListArgs;
use crate::error::{exit, Result};
use crate::ids;
use crate::pg::history::{self, History};
use crate::pg::wal::{self, Lsn};
use crate::restore::archive;
use crate::sidecar::{self, Manifest, Status};

#[derive(Serialize, Debug, Clone)]
struct NodeRow {
    /// The node's name in the sidecar; None for a backup known from the archive only.
    name: Option<String>,
    system_identifier: Option<String>,
    timeline: u32,
    start_lsn: Lsn,
    stop_lsn: Lsn,
    from_standby: bool,
    backup_history_file: Option<String>,
    label_in_archive: bool,
}

#[derive(Serialize, Debug)]
struct Entry {
    backup_id: String,
    /// complete or archive-pending (serialized as the manifest spells it)
    status: Status,
    started_at: Option<String>,
    stopped_at: Option<String>,
    sidecar_present: bool,
    sidecar_dirs: Vec<PathBuf>,
    /// Every primary node's backup history file is in a listed archive directory.
    label_in_archive: bool,
    nodes: Vec<NodeRow>,
    #[serde(skip)]
    sort_key: i64,
}

pub fn run(a: ListArgs) -> Result<i32> {
    let mut entries: Vec<Entry> = Vec::new();
    for d in &a.sidecar_dir {
        add_sidecar_dir(&mut entries, d)?;
    }
    for d in &a.archive_dir {
        add_archive_dir(&mut entries, d)?;
    }
    for e in entries.iter_mut() {
        let primaries: Vec<&NodeRow> = e.nodes.iter().filter(|n| !n.from_standby).collect();
        e.label_in_archive = !primaries.is_empty() && primaries.iter().all(|n| n.label_in_archive);
    }
    entries.sort_by(|x, y| y.sort_key.cmp(&x.sort_key).then_with(|| y.backup_id.cmp(&x.backup_id)));
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
    let yes = |b: bool| if b { "yes" } else { "no" };
    for e in entries {
        println!(
            "{}  {}  started {}  stopped {}  sidecar: {}  label in archive: {}",
            e.backup_id,
            status_word(e.status),
            e.started_at.as_deref().unwrap_or("?"),
            e.stopped_at.as_deref().unwrap_or("?"),
            yes(e.sidecar_present),
            yes(e.label_in_archive)
        );
        for n in &e.nodes {
            println!(
                "  node {}{}: start {} stop {} timeline {}{}",
                n.name.as_deref().unwrap_or("?"),
                n.system_identifier.as_deref().map(|s| format!(" (system {})", s)).unwrap_or_default(),
                n.start_lsn,
                n.stop_lsn,
                n.timeline,
                if n.from_standby { ", from a standby (no history file)".to_string() } else { String::new() }
            );
        }
    }
}

/// A status as the text listing (and the JSON) spells it.
fn status_word(s: Status) -> &'static str {
    match s {
        Status::Complete => "complete",
        Status::ArchivePending => "archive-pending",
    }
}

/// Seconds since the epoch of a manifest's RFC 3339 time or a history file's
/// `2026-11-23 11:00:00 UTC` (zone UTC/GMT or a numeric offset; other zones read as UTC).
fn epoch(t: &str) -> Option<i64> {
    if let Ok(d) = chrono::DateTime::parse_from_rfc3339(t) {
        return Some(d.timestamp());
    }
    let naive = chrono::NaiveDateTime::parse_from_str(t.get(..19)?, "%Y-%m-%d %H:%M:%S").ok()?;
    let zone = t.get(19..).unwrap_or("").trim();
    let offset = match zone.parse::<i64>() {
        Ok(h) if zone.len() <= 3 => h * 3600,
        Ok(hm) => (hm / 100) * 3600 + (hm % 100) * 60,
        Err(_) => 0,
    };
    Some(naive.and_utc().timestamp() - offset)
}

fn add_sidecar_dir(entries: &mut Vec<Entry>, dir: &Path) -> Result<()> {
    let rd = std::fs::read_dir(dir).map_err(|e| err!("cannot list sidecar directory {}: {}", dir.display(), e))?;
    let mut ids: Vec<String> = rd
        .filter_map(|e| e.ok())
        .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| !n.starts_with('.') && ids::validate(n).is_ok())
        .collect();
    ids.sort();
    for id in ids {
        match sidecar::read_manifest(dir, &id) {
            Ok(Some(m)) => merge_manifest(entries, dir, m),
            Ok(None) => {}
            Err(e) => eprintln!("pg-backup-hooks: warning: {}", e.msg),
        }
    }
    Ok(())
}

fn merge_manifest(entries: &mut Vec<Entry>, dir: &Path, m: Manifest) {
    let complete = m.status == Status::Complete;
    if let Some(e) = entries.iter_mut().find(|e| e.backup_id == m.backup_id && e.sidecar_present) {
        e.sidecar_dirs.push(dir.to_path_buf());
        if complete {
            e.status = Status::Complete;
        }
        return;
    }
    let nodes = m
        .nodes
        .iter()
        .map(|n| NodeRow {
            name: Some(n.name.clone()),
            system_identifier: Some(n.system_identifier.clone()),
            timeline: n.timeline,
            start_lsn: n.start_lsn,
            stop_lsn: n.stop_lsn,
            from_standby: n.from_standby,
            backup_history_file: n.backup_history_file.clone(),
            label_in_archive: false,
        })
        .collect();
    entries.push(Entry {
        sort_key: epoch(&m.started_at).unwrap_or(0),
        backup_id: m.backup_id,
        status: m.status,
        started_at: Some(m.started_at),
        stopped_at: Some(m.stopped_at),
        sidecar_present: true,
        sidecar_dirs: vec![dir.to_path_buf()],
        label_in_archive: false,
        nodes,
    });
}

/// One history file in an archive directory, with what its neighbours say.
struct Archived {
    history: History,
    sysid: Option<u64>,
    complete: bool,
}

fn read_archived(dir: &Path, name: &str) -> Result<Option<Archived>> {
    let Some(bytes) = archive::read_regular(&dir.join(name), history::MAX_HISTORY_BYTES)? else { return Ok(None) };
    let history = match History::parse(name, &String::from_utf8_lossy(&bytes)) {
        Ok(h) => h,
        Err(e) => {
            eprintln!("pg-backup-hooks: warning: {} in {} is not a backup history file: {}", name, dir.display(), e);
            return Ok(None);
        }
    };
    let head = archive::read_regular(&dir.join(&history.label.start_wal_file), 40)?;
    let sysid = head.as_deref().and_then(history::segment_sysid);
    let seg_size = head
        .as_deref()
        .and_then(|h| h.get(32..36))
        .and_then(|b| b.try_into().ok())
        .map(|b| u32::from_ne_bytes(b) as u64)
        .filter(|s| s.is_power_of_two() && *s >= 1 << 20)
        .unwrap_or(16 << 20);
    let tli = history.stop_timeline.unwrap_or(history.timeline());
    let complete = dir.join(wal::stop_segment_name(tli, history.stop_lsn, seg_size)).exists();
    Ok(Some(Archived { history, sysid, complete }))
}

fn add_archive_dir(entries: &mut Vec<Entry>, dir: &Path) -> Result<()> {
    let rd = std::fs::read_dir(dir).map_err(|e| err!("cannot list archive directory {}: {}", dir.display(), e))?;
    let mut names: Vec<String> = rd
        .filter_map(|e| e.ok().map(|e| e.file_name().to_string_lossy().into_owned()))
        .filter(|n| history::is_history_name(n))
        .collect();
    names.sort();
    for n in names {
        if let Some(a) = read_archived(dir, &n)? {
            merge_archived(entries, a);
        }
    }
    Ok(())
}

fn merge_archived(entries: &mut Vec<Entry>, a: Archived) {
    let h = &a.history;
    let sysid = a.sysid.map(|s| s.to_string());
    let id = h.label.label.clone();
    if let Some(e) = entries.iter_mut().find(|e| e.backup_id == id) {
        let same = |n: &NodeRow| {
            n.backup_history_file.as_deref() == Some(h.name.as_str())
                && (sysid.is_none() || n.system_identifier.is_none() || n.system_identifier == sysid)
        };
        if let Some(n) = e.nodes.iter_mut().find(|n| same(n)) {
            n.label_in_archive = true;
            return;
        }
        e.nodes.push(node_row(&a, sysid));
        return;
    }
    entries.push(Entry {
        sort_key: epoch(&h.label.start_time).unwrap_or(0),
        backup_id: id,
        status: if a.complete { Status::Complete } else { Status::ArchivePending },
        started_at: Some(h.label.start_time.clone()),
        stopped_at: h.stop_time.clone(),
        sidecar_present: false,
        sidecar_dirs: Vec::new(),
        label_in_archive: true,
        nodes: vec![node_row(&a, sysid)],
    });
}

fn node_row(a: &Archived, sysid: Option<String>) -> NodeRow {
    NodeRow {
        name: None,
        system_identifier: sysid,
        timeline: a.history.timeline(),
        start_lsn: a.history.label.start_lsn,
        stop_lsn: a.history.stop_lsn,
        from_standby: false,
        backup_history_file: Some(a.history.name.clone()),
        label_in_archive: true,
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
                label_in_archive: false,
                nodes: Vec::new(),
                sort_key: 0,
            };
            let v: serde_json::Value = serde_json::to_value(&e).unwrap();
            assert_eq!(v["status"], word);
            assert_eq!(status_word(s), word);
        }
    }

    #[test]
    fn times_from_manifests_and_history_files_compare() {
        let a = epoch("2026-11-23T11:00:00+00:00").unwrap();
        assert_eq!(epoch("2026-11-23 11:00:00 UTC"), Some(a));
        assert_eq!(epoch("2026-11-23 14:00:00 +03"), Some(a));
        assert_eq!(epoch("2026-11-23 16:30:00 +0530"), Some(a));
        assert!(epoch("yesterday").is_none());
    }
}
