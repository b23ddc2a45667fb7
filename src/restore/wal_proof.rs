//! restore-prep's proof that the archive holds the backup's WAL, made before anything is
//! changed (dry run and `--json` too); `--force` overrides none of it.
//!
//! - `--archive-dir`: every segment from the label's start to the backup's stop is there, on
//!   the backup's timeline, and its first page header names this system identifier and its
//!   own segment; so is the backup history file post waited for (primaries). Then how far
//!   the archive reaches without a gap along the timeline `latest` follows.
//! - `--restore-command`: the start and stop segments are fetched (one try each, bounded in
//!   time) and their headers checked; the archive cannot be listed, so its reach is unknown.

use std::time::Duration;

use serde::Serialize;

use crate::archive::scan::{self, Scan};
use crate::error::Result;
use crate::pg::wal::Lsn;
use crate::restore::archive::Archive;
use crate::sidecar::NodeEntry;

/// How long one fetch through restore_command may take.
pub const FETCH_LIMIT: Duration = Duration::from_secs(60);

/// How far the archive reaches from the backup: as far as recovery to `latest` can go.
#[derive(Serialize, Debug, Clone)]
pub struct ArchiveReach {
    /// The newest segment of the unbroken run from the backup's start.
    pub newest_segment: String,
    pub timeline: u32,
    /// The end of that segment.
    pub end_lsn: Lsn,
    /// When that segment was archived (its file's time), RFC 3339.
    pub newest_time: Option<String>,
}

/// What the proof found: its report lines, warnings, and the archive's reach when listed.
#[derive(Debug)]
pub struct Proof {
    pub lines: Vec<String>,
    pub warnings: Vec<String>,
    pub reach: Option<ArchiveReach>,
}

/// The WAL a backup needs, from its node entry.
struct Needed<'a> {
    backup_id: &'a str,
    node: &'a NodeEntry,
    timeline: u32,
    start: u64,
    stop: u64,
    sysid: u64,
}

/// Prove that `archive` (a directory, or restore_command) holds the WAL that node `node` of
/// backup `backup_id` needs; refuse in one line naming the node and the first file missing.
pub fn prove(backup_id: &str, node: &NodeEntry, archive: &Archive) -> Result<Proof> {
    let seg_size = node.wal_segment_size;
    let parse = |name: &str, what: &str| {
        scan::parse_segment_name(name, seg_size)
            .ok_or_else(|| err!("node {}: the sidecar's {} {:?} is not a WAL segment name", node.name, what, name))
    };
    let (timeline, start) = parse(&node.start_wal_file, "start_wal_file")?;
    let (_, stop) = parse(&node.stop_wal_file, "stop_wal_file")?;
    let sysid = node.system_identifier.parse().map_err(|_| {
        err!("node {}: the sidecar's system identifier {:?} is not a number", node.name, node.system_identifier)
    })?;
    let need = Needed { backup_id, node, timeline, start, stop, sysid };
    match archive {
        Archive::Dir(d) => {
            prove_dir(&need, &Scan::read(d, seg_size).map_err(|e| e.within(format!("node {}", node.name)))?)
        }
        Archive::Command { .. } => prove_command(&need, archive),
    }
}

/// `--archive-dir`: the segments, their headers, the history file, then the reach.
fn prove_dir(n: &Needed, s: &Scan) -> Result<Proof> {
    if let Some(missing) = s.first_missing(n.timeline, n.start, n.stop) {
        if expired(s, missing) {
            return Err(err!(
                "node {}: backup {} has expired: the {} holds no segment as old as its start {} (its oldest are newer: expire removed what only older backups needed); restore a newer backup (pg-backup-hooks list --archive-dir shows which are restorable)",
                n.node.name, n.backup_id, archive_what(s), n.node.start_wal_file
            ));
        }
        return Err(missing_segment(n, &archive_what(s), &s.segment_name(n.timeline, missing)));
    }
    for segno in n.start..=n.stop {
        let stored = s.stored_segment_name(n.timeline, segno).unwrap_or_default();
        let head = crate::archive::file::read_head(s.dir(), &stored, scan::HEAD_BYTES)
            .map_err(|e| e.within(format!("node {}: segment {} of backup {}", n.node.name, stored, n.backup_id)))?;
        check_head(n, &archive_what(s), &s.segment_name(n.timeline, segno), segno * s.seg_size(), head)?;
    }
    let mut lines = vec![format!(
        "the archive holds all {} segment(s) of the backup, {} to {} on timeline {}, each of this cluster (system identifier {})",
        n.stop - n.start + 1,
        n.node.start_wal_file,
        n.node.stop_wal_file,
        n.timeline,
        n.sysid
    )];
    lines.extend(check_history_file(n, s)?);
    let mut warnings: Vec<String> = s.problems.iter().map(|p| format!("archive: {}", p)).collect();
    let reach = reach(n, s, &mut lines, &mut warnings);
    Ok(Proof { lines, warnings, reach })
}

/// "archive directory D" for messages.
fn archive_what(s: &Scan) -> String {
    format!("archive directory {}", s.dir().display())
}

/// The backup history file post waited for (primaries): it must be in the archive.
fn check_history_file(n: &Needed, s: &Scan) -> Result<Option<String>> {
    let Some(h) = n.node.backup_history_file.as_deref().filter(|_| !n.node.from_standby) else {
        return Ok(None);
    };
    if s.backup_file(h).is_some() {
        return Ok(Some(format!("the backup history file {} is in the archive", h)));
    }
    Err(err!(
        "node {}: {} lacks backup history file {}, which post waited for when it stored backup {}: this is not the archive the backup was taken into, or files were removed from it; give --archive-dir the archive this cluster's archive_command writes to, or restore another backup",
        n.node.name,
        archive_what(s),
        h,
        n.backup_id
    ))
}

/// The report line and `--json` field saying how far `latest` can go.
fn reach(n: &Needed, s: &Scan, lines: &mut Vec<String>, warnings: &mut Vec<String>) -> Option<ArchiveReach> {
    let r = s.reach(n.timeline, Lsn(n.start * s.seg_size()))?;
    let time = s
        .mtime(&r.stored)
        .map(|t| chrono::DateTime::<chrono::Utc>::from(t).to_rfc3339_opts(chrono::SecondsFormat::Secs, true));
    lines.push(format!(
        "the archive reaches without a gap to segment {} (timeline {}, WAL up to {}{}): as far as recovery to latest can go",
        r.name,
        r.timeline,
        r.end,
        time.as_deref().map(|t| format!(", archived {}", t)).unwrap_or_default()
    ));
    if let Some(latest) = r.latest_not_descendant {
        warnings.push(format!(
            "the archive's newest timeline {} does not descend from this backup (it branched off before the backup's start, or from another timeline): recovery to latest would refuse to start; give --target backup-end, a time or a name, or recovery_target_timeline {}",
            latest, r.target_timeline
        ));
    }
    Some(ArchiveReach { newest_segment: r.name, timeline: r.timeline, end_lsn: r.end, newest_time: time })
}

/// `--restore-command`: fetch the start and stop segments (one try each) and check them.
fn prove_command(n: &Needed, archive: &Archive) -> Result<Proof> {
    let what = archive.describe();
    let mut segnos = vec![n.start];
    if n.stop != n.start {
        segnos.push(n.stop);
    }
    for segno in segnos {
        let name = scan::segment_name(n.timeline, segno, n.node.wal_segment_size);
        let head = archive.fetch_within(&name, scan::HEAD_BYTES, Some(FETCH_LIMIT)).map_err(|e| {
            e.within(format!("node {}: fetching segment {} of backup {}", n.node.name, name, n.backup_id))
        })?;
        if head.is_none() {
            return Err(missing_segment(n, &what, &name));
        }
        check_head(n, &what, &name, segno * n.node.wal_segment_size, head)?;
    }
    let lines = vec![
        format!(
            "restore_command fetched the backup's start segment {} and stop segment {}: both of this cluster (system identifier {})",
            n.node.start_wal_file, n.node.stop_wal_file, n.sysid
        ),
        "the archive cannot be listed through restore_command: how far recovery to latest can go is found by recovery itself".into(),
    ];
    Ok(Proof { lines, warnings: Vec::new(), reach: None })
}

/// The segment's first page header must name this cluster and this segment.
fn check_head(n: &Needed, what: &str, name: &str, addr: u64, head: Option<Vec<u8>>) -> Result<()> {
    let Some(h) = head.as_deref().and_then(scan::parse_head) else {
        return Err(err!(
            "node {}: segment {} in the {} has no WAL page header (it is empty, truncated or not WAL): recovery would stop there; put the right segment back from the backup of the archive, or restore another backup",
            n.node.name, name, what
        ));
    };
    if h.system_identifier != n.sysid {
        return Err(err!(
            "node {}: segment {} in the {} belongs to the cluster with system identifier {}, not to this backup's {}: another cluster archives into the same place, or the file was copied there; give the archive of this cluster (see pg_controldata's \"Database system identifier\")",
            n.node.name, name, what, h.system_identifier, n.sysid
        ));
    }
    if h.pageaddr.0 != addr || u64::from(h.seg_size) != n.node.wal_segment_size {
        return Err(err!(
            "node {}: segment {} in the {} holds the WAL at {} (segment size {}), not its own at {}: the file was renamed or damaged; put the right segment back from the backup of the archive, or restore another backup",
            n.node.name, name, what, h.pageaddr, h.seg_size, Lsn(addr)
        ));
    }
    Ok(())
}

/// The archive holds segments, every one newer than `missing` on every timeline: the older
/// ones were removed (by expire or by hand), not lost in a gap.
fn expired(s: &Scan, missing: u64) -> bool {
    let firsts: Vec<u64> = s.timelines().filter_map(|t| s.segments(t).first().map(|x| x.segno)).collect();
    !firsts.is_empty() && firsts.iter().all(|&f| f > missing)
}

/// The refusal for the first segment of the backup the archive lacks.
fn missing_segment(n: &Needed, what: &str, name: &str) -> crate::error::Error {
    let range = format!(
        "backup {} needs every segment from its start {} to its stop {}",
        n.backup_id, n.node.start_wal_file, n.node.stop_wal_file
    );
    if n.node.from_standby {
        return err!(
            "node {}: the {} lacks segment {} ({}); the node was backed up from a standby, which archives nothing itself without archive_mode = always: its WAL reaches the archive from the primary, so give the primary's archive, and if it is, wait until the primary has archived that segment (SELECT pg_switch_wal() on the primary ends it), then run restore-prep again",
            n.node.name, what, name, range
        );
    }
    err!(
        "node {}: the {} lacks segment {} ({}), so recovery could never reach the end of the backup: give the archive this cluster's archive_command writes to, or put the missing segments back from the backup of the archive, or restore another backup",
        n.node.name, what, name, range
    )
}

/// Segments with real page headers, for unit tests.
#[cfg(test)]
pub mod fixture {
    use std::path::Path;

    /// The first bytes of segment `segno` (16 MiB) of timeline `tli` of cluster `sysid`.
    pub fn segment(sysid: u64, tli: u32, segno: u64) -> Vec<u8> {
        let seg: u64 = 16 << 20;
        let mut b = vec![0u8; 8192];
        b[0..2].copy_from_slice(&0xD110u16.to_ne_bytes());
        b[2..4].copy_from_slice(&0x0002u16.to_ne_bytes());
        b[4..8].copy_from_slice(&tli.to_ne_bytes());
        b[8..16].copy_from_slice(&(segno * seg).to_ne_bytes());
        b[24..32].copy_from_slice(&sysid.to_ne_bytes());
        b[32..36].copy_from_slice(&(seg as u32).to_ne_bytes());
        b[36..40].copy_from_slice(&8192u32.to_ne_bytes());
        b
    }

    /// Write segments `segnos` of timeline 1 of `sysid` into `dir`.
    pub fn archive(dir: &Path, sysid: u64, segnos: &[u64]) {
        std::fs::create_dir_all(dir).unwrap();
        for &n in segnos {
            let name = crate::archive::scan::segment_name(1, n, 16 << 20);
            std::fs::write(dir.join(name), segment(sysid, 1, n)).unwrap();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::restore::checks::fixture::SYSID;

    fn node(start: &str, stop: &str) -> NodeEntry {
        serde_json::from_value(serde_json::json!({
            "name": "n1", "conninfo": "", "server_version_num": 160000, "server_version": "16",
            "system_identifier": SYSID.to_string(), "timeline": 1, "start_lsn": "0/9000028",
            "stop_lsn": "0/B000100", "start_wal_file": start, "stop_wal_file": stop,
            "backup_history_file": "000000010000000000000009.00000028.backup", "from_standby": false,
            "data_directory": null, "wal_segment_size": 16777216, "archived": true, "archive_note": null,
            "files": {}
        }))
        .unwrap()
    }

    const START: &str = "000000010000000000000009";
    const STOP: &str = "00000001000000000000000B";

    #[test]
    fn a_complete_archive_passes_and_says_how_far_it_reaches() {
        let d = tempfile::tempdir().unwrap();
        fixture::archive(d.path(), SYSID, &[9, 10, 11, 12, 14]);
        std::fs::write(d.path().join("000000010000000000000009.00000028.backup"), "x").unwrap();
        let p = prove("b", &node(START, STOP), &Archive::Dir(d.path())).unwrap();
        let r = p.reach.unwrap();
        assert_eq!(r.newest_segment, "00000001000000000000000C");
        assert_eq!(r.end_lsn.to_string(), "0/D000000");
        assert!(p.lines[0].starts_with("the archive holds all 3 segment(s) of the backup"), "{:?}", p.lines);
        assert!(p.lines.last().unwrap().contains("00000001000000000000000C"), "{:?}", p.lines);
    }

    #[test]
    fn a_backup_whose_wal_expire_removed_is_refused_as_expired() {
        let d = tempfile::tempdir().unwrap();
        fixture::archive(d.path(), SYSID, &[12, 13, 14]);
        let e = prove("b", &node(START, STOP), &Archive::Dir(d.path())).unwrap_err();
        assert!(e.msg.contains("backup b has expired") && e.msg.contains("restore a newer backup"), "{}", e.msg);
        fixture::archive(d.path(), SYSID, &[9]);
        let e = prove("b", &node(START, STOP), &Archive::Dir(d.path())).unwrap_err();
        assert!(!e.msg.contains("expired") && e.msg.contains("lacks segment 00000001000000000000000A"), "{}", e.msg);
    }

    #[test]
    fn each_fault_is_refused_naming_the_node_and_the_file() {
        let d = tempfile::tempdir().unwrap();
        let n = node(START, STOP);
        let e = prove("b", &n, &Archive::Dir(d.path())).unwrap_err();
        assert!(
            e.msg.starts_with("node n1: the archive directory")
                && e.msg.contains("lacks segment 000000010000000000000009"),
            "{}",
            e.msg
        );
        fixture::archive(d.path(), SYSID, &[9, 11]);
        let e = prove("b", &n, &Archive::Dir(d.path())).unwrap_err();
        assert!(e.msg.contains("lacks segment 00000001000000000000000A"), "{}", e.msg);
        fixture::archive(d.path(), SYSID + 1, &[10]);
        let e = prove("b", &n, &Archive::Dir(d.path())).unwrap_err();
        assert!(e.msg.contains(&format!("segment 00000001000000000000000A in the archive directory {} belongs to the cluster with system identifier {}", d.path().display(), SYSID + 1)), "{}", e.msg);
        std::fs::write(d.path().join("00000001000000000000000A"), fixture::segment(SYSID, 1, 11)).unwrap();
        let e = prove("b", &n, &Archive::Dir(d.path())).unwrap_err();
        assert!(e.msg.contains("holds the WAL at 0/B000000"), "{}", e.msg);
        fixture::archive(d.path(), SYSID, &[10]);
        let e = prove("b", &n, &Archive::Dir(d.path())).unwrap_err();
        assert!(e.msg.contains("lacks backup history file 000000010000000000000009.00000028.backup"), "{}", e.msg);
        let mut standby = n.clone();
        standby.from_standby = true;
        assert!(prove("b", &standby, &Archive::Dir(d.path())).is_ok(), "a standby writes no history file");
        std::fs::remove_file(d.path().join(STOP)).unwrap();
        let e = prove("b", &standby, &Archive::Dir(d.path())).unwrap_err();
        assert!(
            e.msg.contains("lacks segment 00000001000000000000000B") && e.msg.contains("give the primary's archive"),
            "{}",
            e.msg
        );
    }

    #[test]
    fn restore_command_fetches_the_start_and_stop_segments() {
        let d = tempfile::tempdir().unwrap();
        let arch = d.path().join("arch");
        fixture::archive(&arch, SYSID, &[9, 11]);
        let me = (nix::unistd::geteuid().as_raw(), nix::unistd::getegid().as_raw());
        let cmd = format!("cp {}/%f %p", arch.display());
        let a = Archive::Command { cmd: &cmd, pgdata: d.path(), owner: me };
        let p = prove("b", &node(START, STOP), &a).unwrap();
        assert!(p.reach.is_none());
        assert!(p.lines[0].starts_with("restore_command fetched the backup's start segment"), "{:?}", p.lines);
        std::fs::remove_file(arch.join(START)).unwrap();
        let e = prove("b", &node(START, STOP), &a).unwrap_err();
        assert!(e.msg.contains("lacks segment 000000010000000000000009"), "{}", e.msg);
    }
}
