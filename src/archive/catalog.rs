//! The backups that can be restored, from sidecar directories (their manifests) and plain WAL
//! archive directories (their backup history files): what `list` prints and `expire` applies
//! retention to. A backup found in both is one entry: sidecar and archive are matched by
//! backup id, and nodes by system identifier (the history file has none: its start segment's
//! header gives it).
//!
//! With an archive directory, each node also says whether it can be restored from it now
//! (every segment from its start to its stop, no gap: see archive::scan) and its recovery
//! window: from the backup's end to the newest segment the archive holds without a gap.
//! Every time is in one format, RFC 3339 in UTC.

use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::archive::file;
use crate::archive::scan::{self, Scan};
use crate::error::Result;
use crate::ids;
use crate::pg::history::{self, History};
use crate::pg::wal::Lsn;
use crate::sidecar::{self, Manifest, Status};

/// Every backup found, newest first, and the archive directories as listed once.
pub struct Catalog {
    pub entries: Vec<Entry>,
    pub archives: Vec<ArchiveDir>,
}

/// Find the backups in `sidecar_dirs` and `archive_dirs`, and judge them against the archives.
pub fn discover(sidecar_dirs: &[PathBuf], archive_dirs: &[PathBuf]) -> Result<Catalog> {
    let mut entries: Vec<Entry> = Vec::new();
    for d in sidecar_dirs {
        add_sidecar_dir(&mut entries, d)?;
    }
    let mut archives = archive_dirs.iter().map(|d| ArchiveDir::read(d)).collect::<Result<Vec<_>>>()?;
    for d in archives.iter_mut() {
        add_archive_dir(&mut entries, d)?;
    }
    name_archive_nodes(&mut entries);
    if !archives.is_empty() {
        for e in entries.iter_mut() {
            judge(e, &mut archives)?;
        }
    }
    entries.sort_by(|x, y| y.sort_key.cmp(&x.sort_key).then_with(|| y.backup_id.cmp(&x.backup_id)));
    Ok(Catalog { entries, archives })
}

#[derive(Serialize, Debug, Clone)]
pub struct NodeRow {
    /// The node's name in the sidecar; for a backup known from the archive only, the name its
    /// cluster has in another backup's sidecar, else None.
    pub name: Option<String>,
    pub system_identifier: Option<String>,
    pub timeline: u32,
    pub start_lsn: Lsn,
    pub stop_lsn: Lsn,
    pub from_standby: bool,
    pub backup_history_file: Option<String>,
    /// Where its history file is (None: not found, or no archive directory given).
    pub label_archive_dir: Option<PathBuf>,
    /// What the archive holds for it (None without --archive-dir).
    pub archive: Option<NodeArchive>,
    /// Where its inventory was read from: restore-prep can verify a copy's files (None: it
    /// cannot; `inventory_note` says why).
    pub inventory_source: Option<crate::inventory::Source>,
    pub inventory_note: Option<String>,
    #[serde(skip)]
    pub seg_size: u64,
}

/// One node's WAL in the archive.
#[derive(Serialize, Debug, Clone)]
pub struct NodeArchive {
    /// The archive directory holding its start segment (of its cluster).
    pub dir: Option<PathBuf>,
    /// Every segment from its start to its stop is there.
    pub restorable: bool,
    /// The first segment of the backup the archive lacks.
    pub first_missing: Option<String>,
    /// From the backup's end to the newest segment the archive holds without a gap.
    pub window: Option<Window>,
}

/// A recovery window: where and when a restore of this backup can end.
#[derive(Serialize, Debug, Clone)]
pub struct Window {
    pub from_lsn: Lsn,
    pub from_time: Option<String>,
    pub to_lsn: Lsn,
    /// When the newest contiguous segment was archived (its file's time).
    pub to_time: Option<String>,
    pub newest_segment: String,
    pub timeline: u32,
}

#[derive(Serialize, Debug)]
pub struct Entry {
    pub backup_id: String,
    /// complete or archive-pending (serialized as the manifest spells it)
    pub status: Status,
    pub started_at: Option<String>,
    pub stopped_at: Option<String>,
    pub sidecar_present: bool,
    pub sidecar_dirs: Vec<PathBuf>,
    /// Every primary node's backup history file is in a listed archive directory (None: no
    /// archive directory was given, so nobody looked).
    pub label_in_archive: Option<bool>,
    /// Complete, and every node's WAL from start to stop is in the archive (None: no archive
    /// directory given).
    pub restorable: Option<bool>,
    pub nodes: Vec<NodeRow>,
    #[serde(skip)]
    pub sort_key: i64,
}

/// An archive directory, listed once; its scans built once per WAL segment size.
pub struct ArchiveDir {
    pub dir: PathBuf,
    pub names: Vec<String>,
    pub set: std::collections::HashSet<String>,
    pub scans: Vec<Scan>,
}

impl ArchiveDir {
    pub fn read(dir: &Path) -> Result<ArchiveDir> {
        let rd = std::fs::read_dir(dir).map_err(|e| err!("cannot list archive directory {}: {}", dir.display(), e))?;
        let mut names = Vec::new();
        for e in rd {
            let e = e.map_err(|e| err!("cannot list archive directory {}: {}", dir.display(), e))?;
            names.push(e.file_name().to_string_lossy().into_owned());
        }
        let set = names.iter().cloned().collect();
        Ok(ArchiveDir { dir: dir.to_path_buf(), names, set, scans: Vec::new() })
    }

    pub fn scan(&mut self, seg_size: u64) -> Result<&Scan> {
        if let Some(i) = self.scans.iter().position(|s| s.seg_size() == seg_size) {
            return Ok(&self.scans[i]);
        }
        let s = Scan::from_names(&self.dir, seg_size, self.names.clone())?;
        for p in &s.problems {
            eprintln!("pg-backup-hooks: warning: {}", p);
        }
        let i = self.scans.len();
        self.scans.push(s);
        Ok(&self.scans[i])
    }
}

/// A node known from the archive only takes the name its cluster (system identifier) has in
/// another backup's sidecar.
fn name_archive_nodes(entries: &mut [Entry]) {
    let named: Vec<(String, String)> = entries
        .iter()
        .flat_map(|e| e.nodes.iter())
        .filter_map(|n| Some((n.system_identifier.clone()?, n.name.clone()?)))
        .collect();
    for n in entries.iter_mut().flat_map(|e| e.nodes.iter_mut()).filter(|n| n.name.is_none()) {
        n.name = named.iter().find(|(s, _)| n.system_identifier.as_ref() == Some(s)).map(|(_, name)| name.clone());
    }
}

/// Whether each node and the backup can be restored from the archives, and their windows.
fn judge(e: &mut Entry, archives: &mut [ArchiveDir]) -> Result<()> {
    let stopped_at = e.stopped_at.clone();
    for n in e.nodes.iter_mut() {
        n.archive = Some(node_archive(n, stopped_at.as_deref(), archives)?);
    }
    let primaries: Vec<&NodeRow> = e.nodes.iter().filter(|n| !n.from_standby).collect();
    e.label_in_archive = Some(!primaries.is_empty() && primaries.iter().all(|n| n.label_archive_dir.is_some()));
    let all = e.nodes.iter().all(|n| n.archive.as_ref().is_some_and(|a| a.restorable));
    e.restorable = Some(e.status == Status::Complete && !e.nodes.is_empty() && all);
    Ok(())
}

/// The node's WAL in the first archive that holds its start segment (of its cluster), else
/// in the one holding its history file, else in the only one given.
fn node_archive(n: &NodeRow, stopped_at: Option<&str>, archives: &mut [ArchiveDir]) -> Result<NodeArchive> {
    let mut pick = None;
    for (i, a) in archives.iter_mut().enumerate() {
        if holds_start(n, a.scan(n.seg_size)?)? {
            pick = Some(i);
            break;
        }
    }
    let pick = pick
        .or_else(|| archives.iter().position(|a| n.label_archive_dir.as_deref() == Some(a.dir.as_path())))
        .or_else(|| (archives.len() == 1).then_some(0));
    let Some(i) = pick else {
        return Ok(NodeArchive { dir: None, restorable: false, first_missing: None, window: None });
    };
    let s = archives[i].scan(n.seg_size)?;
    let (start, stop) = (s.segno_of(n.start_lsn), s.segno_of(Lsn(n.stop_lsn.0.saturating_sub(1))));
    let missing = s.first_missing(n.timeline, start, stop);
    let window = if missing.is_none() { window(n, stopped_at, s) } else { None };
    Ok(NodeArchive {
        dir: Some(s.dir().to_path_buf()),
        restorable: missing.is_none(),
        first_missing: missing.map(|m| s.segment_name(n.timeline, m)),
        window,
    })
}

/// The archive has the node's start segment, and its header names the node's cluster.
fn holds_start(n: &NodeRow, s: &Scan) -> Result<bool> {
    let Some(stored) = s.stored_segment_name(n.timeline, s.segno_of(n.start_lsn)) else { return Ok(false) };
    let Some(want) = &n.system_identifier else { return Ok(true) };
    let head = file::read_head(s.dir(), &stored, scan::HEAD_BYTES)?;
    Ok(head.as_deref().and_then(scan::parse_head).is_some_and(|h| h.system_identifier.to_string() == *want))
}

/// From the backup's end to how far the archive reaches from its start.
fn window(n: &NodeRow, stopped_at: Option<&str>, s: &Scan) -> Option<Window> {
    let r = s.reach(n.timeline, n.start_lsn)?;
    Some(Window {
        from_lsn: n.stop_lsn,
        from_time: stopped_at.map(str::to_string),
        to_lsn: r.end,
        to_time: s.mtime(&r.stored).map(|t| utc(chrono::DateTime::<chrono::Utc>::from(t))),
        newest_segment: r.name,
        timeline: r.timeline,
    })
}

/// The one format every time is printed in: RFC 3339, UTC, whole seconds.
pub fn utc(t: chrono::DateTime<chrono::Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

/// A manifest's RFC 3339 time or a history file's `2026-11-23 11:00:00 UTC` in that format
/// (as given when it cannot be read).
pub fn normalized(t: &str) -> String {
    epoch(t).and_then(|s| chrono::DateTime::from_timestamp(s, 0)).map(utc).unwrap_or_else(|| t.to_string())
}

/// Seconds since the epoch of a manifest's RFC 3339 time or a history file's
/// `2026-11-23 11:00:00 UTC` (zone UTC/GMT or a numeric offset; other zones read as UTC).
pub fn epoch(t: &str) -> Option<i64> {
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
            label_archive_dir: None,
            archive: None,
            inventory_source: n.inventory_source,
            inventory_note: match (&n.inventory_source, &n.inventory_note) {
                (None, None) => Some("no inventory was recorded (a sidecar of an older build)".into()),
                (_, note) => note.clone(),
            },
            seg_size: n.wal_segment_size,
        })
        .collect();
    entries.push(Entry {
        sort_key: epoch(&m.started_at).unwrap_or(0),
        backup_id: m.backup_id,
        status: m.status,
        started_at: Some(normalized(&m.started_at)),
        stopped_at: Some(normalized(&m.stopped_at)),
        sidecar_present: true,
        sidecar_dirs: vec![dir.to_path_buf()],
        label_in_archive: None,
        restorable: None,
        nodes,
    });
}

/// One history file in an archive directory, with what its neighbours say.
struct Archived {
    pub dir: PathBuf,
    pub history: History,
    pub sysid: Option<u64>,
    pub seg_size: u64,
    pub complete: bool,
}

/// The history file stored as `stored` in `dir`, its start segment's system identifier and
/// segment size, and whether its stop segment is there.
fn read_archived(a: &mut ArchiveDir, name: &str, stored: &str) -> Result<Option<Archived>> {
    let Some(bytes) = file::read_head(&a.dir, stored, history::MAX_HISTORY_BYTES)? else { return Ok(None) };
    let history = match History::parse(name, &String::from_utf8_lossy(&bytes)) {
        Ok(h) => h,
        Err(e) => {
            eprintln!("pg-backup-hooks: warning: {} in {} is not a backup history file: {}", name, a.dir.display(), e);
            return Ok(None);
        }
    };
    let start = &history.label.start_wal_file;
    let stored_start = file::Compression::ALL.iter().map(|&c| file::stored_name(start, c)).find(|n| a.set.contains(n));
    let head = match stored_start {
        Some(s) => file::read_head(&a.dir, &s, scan::HEAD_BYTES)?.and_then(|h| scan::parse_head(&h)),
        None => None,
    };
    let seg_size =
        head.map(|h| u64::from(h.seg_size)).filter(|s| s.is_power_of_two() && *s >= 1 << 20).unwrap_or(16 << 20);
    let tli = history.stop_timeline.unwrap_or(history.timeline());
    let s = a.scan(seg_size)?;
    let complete = s.segment(tli, s.segno_of(Lsn(history.stop_lsn.0.saturating_sub(1)))).is_some();
    Ok(Some(Archived { dir: a.dir.clone(), history, sysid: head.map(|h| h.system_identifier), seg_size, complete }))
}

fn add_archive_dir(entries: &mut Vec<Entry>, a: &mut ArchiveDir) -> Result<()> {
    let mut found: Vec<(String, String)> = a
        .names
        .iter()
        .filter_map(|n| {
            file::parse_stored(n)
                .filter(|(_, k, _)| *k == file::Kind::Backup)
                .map(|(w, _, _)| (w.to_string(), n.clone()))
        })
        .collect();
    found.sort();
    for (name, stored) in found {
        if let Some(h) = read_archived(a, &name, &stored)? {
            merge_archived(entries, h);
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
            n.label_archive_dir = Some(a.dir.clone());
            return;
        }
        e.nodes.push(node_row(&a, sysid));
        return;
    }
    entries.push(Entry {
        sort_key: epoch(&h.label.start_time).unwrap_or(0),
        backup_id: id,
        status: if a.complete { Status::Complete } else { Status::ArchivePending },
        started_at: Some(normalized(&h.label.start_time)),
        stopped_at: h.stop_time.as_deref().map(normalized),
        sidecar_present: false,
        sidecar_dirs: Vec::new(),
        label_in_archive: Some(true),
        restorable: None,
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
        label_archive_dir: Some(a.dir.clone()),
        archive: None,
        inventory_source: None,
        inventory_note: Some("the archive holds no inventory".into()),
        seg_size: a.seg_size,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_from_manifests_and_history_files_compare() {
        let a = epoch("2026-11-23T11:00:00+00:00").unwrap();
        assert_eq!(epoch("2026-11-23 11:00:00 UTC"), Some(a));
        assert_eq!(epoch("2026-11-23 14:00:00 +03"), Some(a));
        assert_eq!(epoch("2026-11-23 16:30:00 +0530"), Some(a));
        assert!(epoch("yesterday").is_none());
        assert_eq!(normalized("2026-11-23 14:00:00 +03"), "2026-11-23T11:00:00Z");
        assert_eq!(normalized("2026-11-23T11:00:00.123456+00:00"), "2026-11-23T11:00:00Z");
    }
}
