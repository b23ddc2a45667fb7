//! `restore-prep --label-from-archive`: when the sidecar is lost, rebuild the backup's label
//! from the backup history file PostgreSQL archives at stop (see pg::history).
//!
//! The history file is found by its LABEL line (the backup id), and it must fit the copy:
//! the start segment's header names the copy's system identifier, and it is on the copy's
//! timeline. The rebuilt label goes into a private, temporary sidecar, so that every check
//! restore-prep makes on a sidecar is made on it too.

use std::fs;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::pg::control::{self, ControlFile};
use crate::pg::history::{is_history_name, label_text, segment_sysid, History, MAX_HISTORY_BYTES};
use crate::pg::wal::{self, Lsn};
use crate::restore::archive::{read_regular, Archive, TempDir};
use crate::restore::install::{self, Tablespace};
use crate::sidecar::{self, Manifest, NodeEntry, NodeFiles, Status};

/// With --restore-command the archive cannot be listed: this many names derived from the
/// copy's pg_control are tried at most.
pub const MAX_GUESSES: u64 = 16;

/// What the copy's pg_control says about where it is: its checkpoint's redo location and
/// timeline, and the WAL segment size.
#[derive(Clone, Copy, Debug)]
pub struct CopyPosition {
    pub redo: Lsn,
    pub timeline: u32,
    pub seg_size: u64,
}

/// Read the copy's checkpoint (checkPointCopy: redo u64, ThisTimeLineID u32; at 48 on 10,
/// which still has prevCheckPoint, else at 40) and xlog_seg_size (found after the
/// floatFormat check value 1234567.0, then blcksz, relseg_size, xlog_blcksz).
pub fn copy_position(pgdata: &Path, c: &ControlFile) -> Result<CopyPosition> {
    let p = pgdata.join(control::CONTROL_FILE);
    let b = fs::read(&p).map_err(|e| err!("cannot read {}: {}", p.display(), e))?;
    let at = if c.pg_control_version == 1002 { 48 } else { 40 };
    let u64_at = |o: usize| b.get(o..o + 8).and_then(|s| s.try_into().ok()).map(u64::from_ne_bytes);
    let u32_at = |o: usize| b.get(o..o + 4).and_then(|s| s.try_into().ok()).map(u32::from_ne_bytes);
    let float = 1234567.0f64.to_ne_bytes();
    let seg = (0..280usize)
        .step_by(8)
        .find(|&o| b.get(o..o + 8) == Some(&float[..]))
        .and_then(|o| u32_at(o + 20))
        .map(u64::from)
        .filter(|s| s.is_power_of_two() && (1 << 20..=1 << 30).contains(s));
    Ok(CopyPosition {
        redo: Lsn(control::original_checkpoint(Lsn(u64_at(at).unwrap_or(0))).0),
        timeline: u32_at(at + 8).unwrap_or(1),
        seg_size: seg.unwrap_or(16 << 20),
    })
}

/// History file names to try when the archive cannot be listed: the one for a backup that
/// started at the copy's checkpoint (no checkpoint completed between the start and the copy
/// of pg_control), then, going back segment by segment, one starting right after the WAL
/// switch the start makes (offset 0x28, behind the segment's long page header).
pub fn guesses(pos: &CopyPosition) -> Vec<String> {
    let mut out = vec![wal::backup_history_name(pos.timeline, pos.redo, pos.seg_size)];
    let segno = pos.redo.0 / pos.seg_size;
    for back in 0..MAX_GUESSES.min(segno) {
        let start = Lsn((segno - back) * pos.seg_size + 0x28);
        let n = wal::backup_history_name(pos.timeline, start, pos.seg_size);
        if !out.contains(&n) {
            out.push(n);
        }
    }
    out
}

/// Was this copy taken from a standby? Its pg_control then says "in archive recovery" (or
/// "shut down in recovery").
pub fn copied_from_standby(c: &ControlFile) -> bool {
    matches!(c.state, 2 | 5)
}

/// What was asked for, and what the copy is.
pub struct Lookup<'a> {
    pub backup_id: &'a str,
    pub archive: Archive<'a>,
    /// --backup-history-file: only this name.
    pub name: Option<&'a str>,
    pub control: &'a ControlFile,
    pub position: CopyPosition,
}

/// The history file of this backup, and what was checked to pick it.
pub struct Found {
    pub history: History,
    pub checks: Vec<String>,
    pub warnings: Vec<String>,
}

fn candidate_names(l: &Lookup) -> Result<(Vec<String>, bool)> {
    if let Some(n) = l.name {
        if !is_history_name(n) {
            return Err(Error::usage(format!(
                "--backup-history-file {:?} is not a backup history file name (like 000000010000000000000009.00000028.backup)",
                n
            )));
        }
        return Ok((vec![n.to_string()], false));
    }
    match &l.archive {
        Archive::Dir(d) => {
            let rd = fs::read_dir(d).map_err(|e| err!("cannot list {}: {}", d.display(), e))?;
            let mut names: Vec<String> = rd
                .filter_map(|e| e.ok().map(|e| e.file_name().to_string_lossy().into_owned()))
                .filter(|n| is_history_name(n))
                .collect();
            names.sort();
            names.reverse();
            Ok((names, false))
        }
        Archive::Command { .. } => Ok((guesses(&l.position), true)),
    }
}

/// Does a history file fit the copy's cluster? (See [`fits_cluster`].)
enum Fit {
    /// Same timeline, and its start segment names the copy's system identifier.
    Yes,
    /// Same timeline, but the system identifier could not be checked: the warning.
    Unchecked(String),
    /// Another timeline or another cluster: why.
    No(String),
}

/// Does the history file's start segment belong to the copy's cluster?
fn fits_cluster(l: &Lookup, h: &History) -> Result<Fit> {
    if h.timeline() != l.position.timeline {
        return Ok(Fit::No(format!(
            "{} is a backup on timeline {}, but the copy's checkpoint is on timeline {}",
            h.name,
            h.timeline(),
            l.position.timeline
        )));
    }
    let seg = &h.label.start_wal_file;
    let Some(head) = l.archive.fetch(seg, 40)? else {
        return Ok(Fit::Unchecked(format!(
            "the archive has no start segment {} for {}: the system identifier could not be checked",
            seg, h.name
        )));
    };
    match segment_sysid(&head) {
        Some(s) if s == l.control.system_identifier => Ok(Fit::Yes),
        Some(s) => Ok(Fit::No(format!(
            "{} belongs to the cluster with system identifier {} (its start segment {} says so), not to this copy's {}",
            h.name, s, seg, l.control.system_identifier
        ))),
        None => Ok(Fit::Unchecked(format!("start segment {} is too short to check its system identifier", seg))),
    }
}

/// What one candidate name is, as [`examine`] found it.
enum Candidate {
    /// The archive does not have it.
    Absent,
    /// It could not be fetched: why.
    Unfetchable(String),
    /// Fetched, but unreadable or of another cluster: why.
    Rejected(String),
    /// Another backup's history file.
    OtherBackup,
    /// This backup's, fitting the copy; with a warning when the fit could not be fully checked.
    Hit(Box<History>, Option<String>),
}

/// Fetch one candidate and check its LABEL and that it fits the copy.
fn examine(l: &Lookup, n: &str) -> Result<Candidate> {
    let bytes = match l.archive.fetch(n, MAX_HISTORY_BYTES) {
        Ok(Some(b)) => b,
        Ok(None) => return Ok(Candidate::Absent),
        Err(e) => return Ok(Candidate::Unfetchable(e.msg)),
    };
    let h = match History::parse(n, &String::from_utf8_lossy(&bytes)) {
        Ok(h) => h,
        Err(e) => return Ok(Candidate::Rejected(format!("{} cannot be read ({})", n, e))),
    };
    if h.label.label != l.backup_id {
        return Ok(Candidate::OtherBackup);
    }
    Ok(match fits_cluster(l, &h)? {
        Fit::Yes => Candidate::Hit(Box::new(h), None),
        Fit::Unchecked(warning) => Candidate::Hit(Box::new(h), Some(warning)),
        Fit::No(why) => Candidate::Rejected(why),
    })
}

/// Find the history file whose LABEL is the backup id and that fits the copy.
pub fn find(l: &Lookup) -> Result<Found> {
    let (names, guessed) = candidate_names(l)?;
    let mut rejected = Vec::new();
    let mut hits: Vec<(History, Option<String>)> = Vec::new();
    let mut looked = 0;
    for n in &names {
        match examine(l, n)? {
            Candidate::Absent => continue,
            Candidate::Unfetchable(why) => {
                rejected.push(why);
                continue;
            }
            Candidate::Rejected(why) => rejected.push(why),
            Candidate::OtherBackup => {}
            Candidate::Hit(h, warning) => hits.push((*h, warning)),
        }
        looked += 1;
        if guessed && !hits.is_empty() {
            break;
        }
    }
    if hits.len() > 1 {
        return Err(err!(
            "the {} holds {} backup history files with LABEL {} for this cluster ({}): give the one to use with --backup-history-file NAME",
            l.archive.describe(),
            hits.len(),
            l.backup_id,
            hits.iter().map(|(h, _)| h.name.as_str()).collect::<Vec<_>>().join(", ")
        ));
    }
    let Some((history, warning)) = hits.pop() else {
        return Err(not_found(l, &names, guessed, looked, &rejected));
    };
    Ok(found(l, history, warning))
}

/// The history file found, with the lines saying what was checked.
fn found(l: &Lookup, history: History, warning: Option<String>) -> Found {
    let mut checks = vec![format!(
        "backup history file {} found in the {}: LABEL {}, start {}, stop {}",
        history.name,
        l.archive.describe(),
        l.backup_id,
        history.label.start_lsn,
        history.stop_lsn
    )];
    if warning.is_none() {
        checks.push(format!(
            "its start segment {} names this copy's system identifier {}",
            history.label.start_wal_file, l.control.system_identifier
        ));
    }
    Found { history, checks, warnings: warning.into_iter().collect() }
}

fn not_found(l: &Lookup, names: &[String], guessed: bool, looked: usize, rejected: &[String]) -> Error {
    let id = l.backup_id;
    if copied_from_standby(l.control) {
        return err!(
            "this copy was taken from a standby (its pg_control says {}): a standby's backup writes no backup history file, so its label can only come from the sidecar; restore the sidecar of backup {}, or restore a backup taken from the primary",
            control::state_name(l.control.state),
            id
        );
    }
    let rejected = if rejected.is_empty() { String::new() } else { format!(" ({})", rejected.join("; ")) };
    let what = if guessed {
        format!(
            "none of the {} names derived from the copy's pg_control (checkpoint redo {} on timeline {}; tried {}) is a history file with LABEL {}{}; list the archive for *.backup files whose LABEL line is {} and give it with --backup-history-file NAME",
            names.len(), l.position.redo, l.position.timeline, names.join(", "), id, rejected, id
        )
    } else {
        format!(
            "no backup history file with LABEL {} is in the {} ({} looked at){}",
            id,
            l.archive.describe(),
            looked,
            rejected
        )
    };
    err!(
        "{}: pg_backup_stop writes it and post waits until it is archived, so it is missing when post did not complete (WAL archiving was failing at post time: post exited 3 and stored the backup as archive-pending, or it was never run), when the archive was pruned, or when the backup was taken from a standby (standbys write no history file); without it or the sidecar this copy cannot be restored: restore the sidecar or another backup",
        what
    )
}

/// tablespace_map from the copy's pg_tblspc links (what the stop would have returned, in OID
/// order); a tablespace given as `--tablespace-map OID=PATH` that the copy has no link for
/// is added (the copy holds no link when the backup program did not keep symlinks).
pub fn map_from_links(pgdata: &Path, specs: &[String], warnings: &mut Vec<String>) -> Result<Vec<Tablespace>> {
    let dir = pgdata.join("pg_tblspc");
    let mut map = Vec::new();
    let rd = match fs::read_dir(&dir) {
        Ok(rd) => rd,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(map),
        Err(e) => return Err(err!("cannot list {}: {}", dir.display(), e)),
    };
    for e in rd {
        let e = e.map_err(|e| err!("cannot list {}: {}", dir.display(), e))?;
        let oid = e.file_name().to_string_lossy().into_owned();
        if oid.is_empty() || !oid.bytes().all(|b| b.is_ascii_digit()) {
            continue;
        }
        let p = e.path();
        match fs::read_link(&p) {
            Ok(target) => map.push(Tablespace { oid, path: target.to_string_lossy().into_owned() }),
            Err(_) => warnings.push(format!(
                "{} is not a symbolic link: it is left as a directory inside the data directory",
                p.display()
            )),
        }
    }
    for s in specs {
        if let Some((old, new)) = s.split_once('=') {
            if !old.is_empty() && old.bytes().all(|b| b.is_ascii_digit()) && !map.iter().any(|t| t.oid == old) {
                map.push(Tablespace { oid: old.to_string(), path: new.to_string() });
            }
        }
    }
    map.sort_by_key(|t| t.oid.parse::<u64>().unwrap_or(u64::MAX));
    Ok(map)
}

/// The node entry a lost sidecar would have held, from the history file and the copy.
fn node_entry(name: &str, h: &History, major: u32, sysid: u64, seg: u64, label: &str, map: &str) -> NodeEntry {
    let tli = h.timeline();
    let mut files = std::collections::BTreeMap::new();
    files.insert(sidecar::LABEL_FILE.to_string(), sidecar::file_entry(label.as_bytes()));
    files.insert(sidecar::SPCMAP_FILE.to_string(), sidecar::file_entry(map.as_bytes()));
    NodeEntry {
        name: name.to_string(),
        conninfo: String::new(),
        server_version_num: (major * 10000) as i32,
        server_version: major.to_string(),
        system_identifier: sysid.to_string(),
        timeline: tli,
        start_lsn: h.label.start_lsn,
        stop_lsn: h.stop_lsn,
        start_wal_file: h.label.start_wal_file.clone(),
        stop_wal_file: wal::stop_segment_name(h.stop_timeline.unwrap_or(tli), h.stop_lsn, seg),
        backup_history_file: Some(h.name.clone()),
        from_standby: false,
        data_directory: None,
        wal_segment_size: seg,
        archived: true,
        archive_note: Some(format!("rebuilt from backup history file {}", h.name)),
        inventory_source: None,
        inventory_note: Some("the label was rebuilt from the archive, which holds no inventory".into()),
        files,
    }
}

/// Write the rebuilt label and map as a one-node sidecar in a private temporary directory.
pub fn stage_sidecar(id: &str, node: NodeEntry, label: &str, map: &str, stopped_at: String) -> Result<TempDir> {
    let tmp = TempDir::new(None)?;
    let m = Manifest {
        format_version: sidecar::FORMAT_VERSION,
        tool_version: env!("CARGO_PKG_VERSION").to_string(),
        backup_id: id.to_string(),
        status: Status::Complete,
        started_at: String::new(),
        stopped_at,
        written_at: chrono::Utc::now().to_rfc3339(),
        nodes: vec![node.clone()],
        restore_point: None,
        restore_point_note: Some("rebuilt from the WAL archive: restore points are not recorded there".into()),
    };
    let files = [NodeFiles { name: node.name.clone(), labelfile: label.to_string(), spcmapfile: map.to_string() }];
    sidecar::write(tmp.path(), &m, &files)?;
    Ok(tmp)
}

/// A sidecar's label for this node, if a sidecar directory holds one (damaged ones are
/// skipped: the archive is the source then). (directory, node entry, label text)
pub fn sidecar_label(
    dirs: &[PathBuf],
    id: &str,
    node: Option<&str>,
    sysid: u64,
) -> Option<(PathBuf, NodeEntry, String)> {
    for d in dirs {
        let Ok(Some(m)) = sidecar::read_manifest(d, id) else { continue };
        let sysid = sysid.to_string();
        let n = match node {
            Some(name) => m.nodes.iter().find(|n| n.name == name),
            None => m.nodes.iter().find(|n| n.system_identifier == sysid),
        };
        let Some(n) = n else { continue };
        let p = sidecar::backup_dir(d, id).join(&n.name).join(sidecar::LABEL_FILE);
        if let Ok(text) = fs::read_to_string(&p) {
            return Some((p, n.clone(), text));
        }
    }
    None
}

/// The sidecar's label and the archive's history file must say the same.
pub fn check_agree(sidecar_what: &str, sidecar_label: &str, h: &History, archive: &str) -> Result<()> {
    let rebuilt = label_text(&h.text);
    if rebuilt == sidecar_label {
        return Ok(());
    }
    let a: Vec<&str> = sidecar_label.lines().collect();
    let b: Vec<&str> = rebuilt.lines().collect();
    let first = (0..a.len().max(b.len())).find(|&i| a.get(i) != b.get(i)).unwrap_or(0);
    Err(err!(
        "{} and backup history file {} in the {} disagree (line {}: sidecar {:?}, archive {:?}): one of them was changed after post; compare them, remove the wrong one, and run restore-prep again",
        sidecar_what,
        h.name,
        archive,
        first + 1,
        a.get(first).copied().unwrap_or(""),
        b.get(first).copied().unwrap_or("")
    ))
}

/// The label rebuilt from the archive, staged as a sidecar that restore-prep then checks
/// like any other.
pub struct Rebuilt {
    pub sidecar: TempDir,
    pub history: String,
    pub checks: Vec<String>,
    pub warnings: Vec<String>,
}

/// Everything `restore-prep --label-from-archive` needs before the usual checks.
pub struct Request<'a> {
    pub backup_id: &'a str,
    pub pgdata: &'a Path,
    pub node: Option<&'a str>,
    pub sidecar_dirs: &'a [PathBuf],
    pub archive_dir: Option<&'a Path>,
    pub restore_command: Option<&'a str>,
    pub history_file: Option<&'a str>,
    pub tablespace_map: &'a [String],
}

pub fn rebuild(r: &Request) -> Result<Rebuilt> {
    let (major, owner) = crate::restore::checks::data_directory(r.pgdata)?;
    let control = control::read(r.pgdata)?;
    let sidecar = sidecar_label(r.sidecar_dirs, r.backup_id, r.node, control.system_identifier);
    if let Some((p, n, _)) = sidecar.as_ref().filter(|(_, n, _)| n.from_standby) {
        return Err(err!(
            "node {} of backup {} was taken from a standby ({} says BACKUP FROM: standby): a standby's backup writes no backup history file, so there is nothing in the archive to rebuild the label from; restore without --label-from-archive, using that sidecar",
            n.name,
            r.backup_id,
            p.display()
        ));
    }
    let archive = match (r.archive_dir, r.restore_command) {
        (Some(d), _) => Archive::Dir(d),
        (None, Some(cmd)) => Archive::Command { cmd, pgdata: r.pgdata, owner },
        (None, None) => return Err(Error::usage("--label-from-archive needs --archive-dir or --restore-command")),
    };
    let position = copy_position(r.pgdata, &control)?;
    let lookup = Lookup { backup_id: r.backup_id, archive, name: r.history_file, control: &control, position };
    let Found { history, mut checks, mut warnings } = find(&lookup)?;
    let seg = position.seg_size;
    if let Archive::Dir(d) = &lookup.archive {
        let stop_seg =
            wal::stop_segment_name(history.stop_timeline.unwrap_or(history.timeline()), history.stop_lsn, seg);
        if !d.join(&stop_seg).exists() {
            return Err(err!(
                "the WAL up to the end of backup {} (segment {}) is not in {}: the backup never became restorable (archiving had not caught up; post called it archive-pending); check the archive, or restore another backup",
                r.backup_id,
                stop_seg,
                d.display()
            ));
        }
        checks.push(format!("the WAL up to the backup's end (segment {}) is in the archive", stop_seg));
    }
    let label = label_text(&history.text);
    let map = install::render_map(&map_from_links(r.pgdata, r.tablespace_map, &mut warnings)?, major);
    if let Some((p, _, text)) = &sidecar {
        check_agree(&format!("the sidecar's label {}", p.display()), text, &history, &lookup.archive.describe())?;
        checks.push(format!("the sidecar's label {} agrees with it", p.display()));
    }
    let name = r.node.map(str::to_string).or(sidecar.map(|s| s.1.name)).unwrap_or_else(|| "default".into());
    let node = node_entry(&name, &history, major, control.system_identifier, seg, &label, &map);
    let stopped_at = history.stop_time.clone().unwrap_or_default();
    let staged = stage_sidecar(r.backup_id, node, &label, &map, stopped_at)?;
    Ok(Rebuilt { sidecar: staged, history: history.name, checks, warnings })
}

/// Without --label-from-archive but with --archive-dir: when the archive holds this node's
/// history file, the sidecar's label must agree with it.
pub fn check_sidecar_against_dir(dir: &Path, node: &NodeEntry, label: &str) -> Result<Option<String>> {
    let Some(name) = node.backup_history_file.as_deref().filter(|n| is_history_name(n)) else { return Ok(None) };
    let Some(bytes) = read_regular(&dir.join(name), MAX_HISTORY_BYTES)? else { return Ok(None) };
    let h = History::parse(name, &String::from_utf8_lossy(&bytes))
        .map_err(|e| err!("{} in {} is not a backup history file: {}", name, dir.display(), e))?;
    let archive = format!("archive directory {}", dir.display());
    check_agree(&format!("the sidecar's label for node {}", node.name), label, &h, &archive)?;
    Ok(Some(format!("the sidecar's label agrees with backup history file {} in the archive", name)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn guesses_start_at_the_copys_checkpoint_and_are_bounded() {
        let pos = CopyPosition { redo: "0/99000060".parse().unwrap(), timeline: 1, seg_size: 16 << 20 };
        let g = guesses(&pos);
        assert_eq!(g[0], "000000010000000000000099.00000060.backup");
        assert_eq!(g[1], "000000010000000000000099.00000028.backup");
        assert_eq!(g[2], "000000010000000000000098.00000028.backup");
        assert_eq!(g.len(), 1 + MAX_GUESSES as usize);
        let early = CopyPosition { redo: "0/1000028".parse().unwrap(), timeline: 1, seg_size: 16 << 20 };
        assert_eq!(guesses(&early), vec!["000000010000000000000001.00000028.backup"], "segment 0 never exists");
    }
}
