//! `restore-prep --label-from-archive`: when the sidecar is lost, rebuild the backup's label
//! from the backup history file PostgreSQL archives at stop.
//!
//! A primary's stop writes `<start segment>.<offset 8 hex>.backup` into pg_wal, and it is
//! archived like a segment (post waits for it). It holds every line of the backup_label the
//! stop returned, in the same order, plus three STOP lines (STOP WAL LOCATION after the
//! first line; STOP TIME and, from 11, STOP TIMELINE at the end): the label is the history
//! file without them (xlog.c do_pg_stop_backup up to 14, xlogbackup.c build_backup_content
//! from 15). A standby's stop writes none.
//!
//! The history file is found by its LABEL line (the backup id), and it must fit the copy:
//! the start segment's header names the copy's system identifier. The rebuilt label goes
//! into a private, temporary sidecar, so that every check restore-prep makes on a sidecar
//! is made on it too.

use std::fs;
use std::io::Read;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::pg::control::{self, ControlFile};
use crate::pg::label::BackupLabel;
use crate::pg::wal::{self, Lsn};
use crate::restore::install::{self, Tablespace};
use crate::sidecar::{self, Manifest, NodeEntry, NodeFiles, Status};

/// With --restore-command the archive cannot be listed: this many names derived from the
/// copy's pg_control are tried at most.
pub const MAX_GUESSES: u64 = 16;
/// A history file is a few hundred bytes; anything bigger is not one.
const MAX_HISTORY_BYTES: usize = 64 * 1024;
const STOP_KEYS: [&str; 3] = ["STOP WAL LOCATION: ", "STOP TIME: ", "STOP TIMELINE: "];

/// A parsed backup history file.
#[derive(Clone, Debug)]
pub struct History {
    pub name: String,
    pub text: String,
    pub label: BackupLabel,
    pub stop_lsn: Lsn,
    pub stop_timeline: Option<u32>,
    pub stop_time: Option<String>,
}

/// `000000010000000000000009.00000028.backup`?
pub fn is_history_name(name: &str) -> bool {
    let b = name.as_bytes();
    b.len() == 40
        && name.ends_with(".backup")
        && b[24] == b'.'
        && b[..24].iter().chain(&b[25..33]).all(|c| c.is_ascii_hexdigit())
}

/// The backup_label the stop returned: the history file without its STOP lines.
pub fn label_text(history: &str) -> String {
    history.split_inclusive('\n').filter(|l| !STOP_KEYS.iter().any(|k| l.starts_with(k))).collect()
}

fn field<'a>(text: &'a str, key: &str) -> Option<&'a str> {
    text.lines().find_map(|l| l.strip_prefix(key))
}

impl History {
    pub fn parse(name: &str, text: &str) -> std::result::Result<History, String> {
        let label = BackupLabel::parse(&label_text(text))?;
        let stop = field(text, STOP_KEYS[0]).ok_or("no STOP WAL LOCATION line")?;
        let stop_lsn = stop.split(' ').next().unwrap_or("").parse::<Lsn>()?;
        Ok(History {
            name: name.to_string(),
            text: text.to_string(),
            label,
            stop_lsn,
            stop_timeline: field(text, STOP_KEYS[2]).and_then(|t| t.trim().parse().ok()),
            stop_time: field(text, STOP_KEYS[1]).map(str::to_string),
        })
    }

    /// Timeline the backup started on (START TIMELINE, or the start segment's name on 10).
    pub fn timeline(&self) -> u32 {
        self.label.start_timeline.or(self.label.start_file_timeline()).unwrap_or(1)
    }
}

/// The system identifier in a WAL segment's long page header (u64 at 24), if it has one.
pub fn segment_sysid(head: &[u8]) -> Option<u64> {
    let b: [u8; 8] = head.get(24..32)?.try_into().ok()?;
    Some(u64::from_ne_bytes(b))
}

/// Where the archive is: a plain directory, or a restore_command that fetches one file.
pub enum Archive<'a> {
    Dir(&'a Path),
    Command { cmd: &'a str, pgdata: &'a Path, owner: (u32, u32) },
}

impl Archive<'_> {
    pub fn describe(&self) -> String {
        match self {
            Archive::Dir(d) => format!("archive directory {}", d.display()),
            Archive::Command { cmd, .. } => format!("archive (restore_command {})", cmd),
        }
    }

    /// Up to `max` bytes of archived file `name`; None when the archive does not have it.
    pub fn fetch(&self, name: &str, max: usize) -> Result<Option<Vec<u8>>> {
        match self {
            Archive::Dir(d) => read_regular(&d.join(name), max),
            Archive::Command { cmd, pgdata, owner } => fetch_with_command(cmd, pgdata, *owner, name, max),
        }
    }
}

/// Read a regular file (never through a symlink); None when it does not exist.
pub fn read_regular(p: &Path, max: usize) -> Result<Option<Vec<u8>>> {
    let f = fs::OpenOptions::new().read(true).custom_flags(nix::libc::O_NOFOLLOW).open(p);
    let f = match f {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(Error::new(format!("cannot open {}: {} (it must be a regular file)", p.display(), e))),
    };
    let meta = f.metadata().map_err(|e| Error::new(format!("cannot stat {}: {}", p.display(), e)))?;
    if !meta.is_file() {
        return Err(Error::new(format!("{} is not a regular file", p.display())));
    }
    let mut buf = Vec::new();
    f.take(max as u64).read_to_end(&mut buf).map_err(|e| Error::new(format!("cannot read {}: {}", p.display(), e)))?;
    Ok(Some(buf))
}

/// A private directory for fetched files and the staged sidecar, removed on drop.
pub struct TempDir(PathBuf);

impl TempDir {
    pub fn new(owner: Option<(u32, u32)>) -> Result<TempDir> {
        let base = std::env::temp_dir();
        for i in 0..100u32 {
            let p = base.join(format!("pg-backup-hooks-label.{}.{}", std::process::id(), i));
            match fs::create_dir(&p) {
                Ok(()) => {
                    let d = TempDir(p);
                    fs::set_permissions(&d.0, fs::Permissions::from_mode(0o700))
                        .map_err(|e| Error::new(format!("cannot set mode of {}: {}", d.0.display(), e)))?;
                    if let Some((uid, gid)) = owner {
                        crate::fsutil::chown(&d.0, uid, gid)?;
                    }
                    return Ok(d);
                }
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
                Err(e) => return Err(Error::new(format!("cannot create a directory in {}: {}", base.display(), e))),
            }
        }
        Err(Error::new(format!("cannot create a private directory in {}", base.display())))
    }

    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

/// restore_command's substitutions: %f the file, %p where to put it, %r a restart point
/// (the lowest name, so that a cleanup step in the command removes nothing), %% a percent.
pub fn substitute(cmd: &str, file: &str, dest: &str) -> String {
    let mut out = String::new();
    let mut it = cmd.chars();
    while let Some(c) = it.next() {
        if c != '%' {
            out.push(c);
            continue;
        }
        match it.next() {
            Some('f') => out.push_str(file),
            Some('p') => out.push_str(dest),
            Some('r') => out.push_str("000000000000000000000000"),
            Some('%') => out.push('%'),
            Some(o) => {
                out.push('%');
                out.push(o);
            }
            None => out.push('%'),
        }
    }
    out
}

/// Run restore_command for one file into a private temporary file, as the server would: by
/// sh -c in the data directory, as the data directory's owner when we are root.
fn fetch_with_command(cmd: &str, pgdata: &Path, owner: (u32, u32), name: &str, max: usize) -> Result<Option<Vec<u8>>> {
    use std::os::unix::process::CommandExt;
    let root = nix::unistd::Uid::effective().is_root();
    let tmp = TempDir::new(root.then_some(owner))?;
    let dest = tmp.path().join(name);
    let line = substitute(cmd, name, &dest.to_string_lossy());
    let mut c = std::process::Command::new("/bin/sh");
    c.arg("-c").arg(&line).current_dir(pgdata).stdin(std::process::Stdio::null());
    c.stdout(std::process::Stdio::null()).stderr(std::process::Stdio::piped());
    if root && owner.0 != 0 {
        c.uid(owner.0).gid(owner.1);
    }
    // "Not in the archive" is an ordinary answer here: what the command printed for it is noise.
    let out = c.output().map_err(|e| Error::new(format!("cannot run restore_command {:?}: {}", line, e)))?;
    match out.status.code() {
        Some(0) => read_regular(&dest, max),
        Some(code) if code <= 125 => Ok(None),
        _ => Err(Error::new(format!(
            "restore_command {:?} failed for {} ({}{}): PostgreSQL would stop recovery on this too; fix the command",
            line,
            name,
            out.status,
            String::from_utf8_lossy(&out.stderr).lines().last().map(|l| format!(": {}", l)).unwrap_or_default()
        ))),
    }
}

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
    let b = fs::read(&p).map_err(|e| Error::new(format!("cannot read {}: {}", p.display(), e)))?;
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
            let rd = fs::read_dir(d).map_err(|e| Error::new(format!("cannot list {}: {}", d.display(), e)))?;
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

/// Does the history file's start segment belong to the copy's cluster? Err(why) when not.
fn fits_cluster(l: &Lookup, h: &History) -> Result<std::result::Result<Option<String>, String>> {
    if h.timeline() != l.position.timeline {
        return Ok(Err(format!(
            "{} is a backup on timeline {}, but the copy's checkpoint is on timeline {}",
            h.name,
            h.timeline(),
            l.position.timeline
        )));
    }
    let seg = &h.label.start_wal_file;
    let Some(head) = l.archive.fetch(seg, 40)? else {
        return Ok(Ok(Some(format!(
            "the archive has no start segment {} for {}: the system identifier could not be checked",
            seg, h.name
        ))));
    };
    match segment_sysid(&head) {
        Some(s) if s == l.control.system_identifier => Ok(Ok(None)),
        Some(s) => Ok(Err(format!(
            "{} belongs to the cluster with system identifier {} (its start segment {} says so), not to this copy's {}",
            h.name, s, seg, l.control.system_identifier
        ))),
        None => Ok(Ok(Some(format!("start segment {} is too short to check its system identifier", seg)))),
    }
}

/// Find the history file whose LABEL is the backup id and that fits the copy.
pub fn find(l: &Lookup) -> Result<Found> {
    let (names, guessed) = candidate_names(l)?;
    let mut rejected = Vec::new();
    let mut hits: Vec<(History, Option<String>)> = Vec::new();
    let mut looked = 0;
    for n in &names {
        let bytes = match l.archive.fetch(n, MAX_HISTORY_BYTES) {
            Ok(Some(b)) => b,
            Ok(None) => continue,
            Err(e) => {
                rejected.push(e.msg);
                continue;
            }
        };
        looked += 1;
        let h = match History::parse(n, &String::from_utf8_lossy(&bytes)) {
            Ok(h) => h,
            Err(e) => {
                rejected.push(format!("{} cannot be read ({})", n, e));
                continue;
            }
        };
        if h.label.label != l.backup_id {
            continue;
        }
        match fits_cluster(l, &h)? {
            Ok(warning) => hits.push((h, warning)),
            Err(why) => rejected.push(why),
        }
        if guessed && !hits.is_empty() {
            break;
        }
    }
    if hits.len() > 1 {
        return Err(Error::new(format!(
            "the {} holds {} backup history files with LABEL {} for this cluster ({}): give the one to use with --backup-history-file NAME",
            l.archive.describe(),
            hits.len(),
            l.backup_id,
            hits.iter().map(|(h, _)| h.name.as_str()).collect::<Vec<_>>().join(", ")
        )));
    }
    let Some((history, warning)) = hits.pop() else {
        return Err(not_found(l, &names, guessed, looked, &rejected));
    };
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
    Ok(Found { history, checks, warnings: warning.into_iter().collect() })
}

fn not_found(l: &Lookup, names: &[String], guessed: bool, looked: usize, rejected: &[String]) -> Error {
    let id = l.backup_id;
    if copied_from_standby(l.control) {
        return Error::new(format!(
            "this copy was taken from a standby (its pg_control says {}): a standby's backup writes no backup history file, so its label can only come from the sidecar; restore the sidecar of backup {}, or restore a backup taken from the primary",
            control::state_name(l.control.state),
            id
        ));
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
    Error::new(format!(
        "{}: pg_backup_stop writes it and post waits until it is archived, so it is missing when post did not complete (WAL archiving was failing at post time: post exited 3 and stored the backup as archive-pending, or it was never run), when the archive was pruned, or when the backup was taken from a standby (standbys write no history file); without it or the sidecar this copy cannot be restored: restore the sidecar or another backup",
        what
    ))
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
        Err(e) => return Err(Error::new(format!("cannot list {}: {}", dir.display(), e))),
    };
    for e in rd {
        let e = e.map_err(|e| Error::new(format!("cannot list {}: {}", dir.display(), e)))?;
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
    Err(Error::new(format!(
        "{} and backup history file {} in the {} disagree (line {}: sidecar {:?}, archive {:?}): one of them was changed after post; compare them, remove the wrong one, and run restore-prep again",
        sidecar_what,
        h.name,
        archive,
        first + 1,
        a.get(first).copied().unwrap_or(""),
        b.get(first).copied().unwrap_or("")
    )))
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
        return Err(Error::new(format!(
            "node {} of backup {} was taken from a standby ({} says BACKUP FROM: standby): a standby's backup writes no backup history file, so there is nothing in the archive to rebuild the label from; restore without --label-from-archive, using that sidecar",
            n.name,
            r.backup_id,
            p.display()
        )));
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
            return Err(Error::new(format!(
                "the WAL up to the end of backup {} (segment {}) is not in {}: the backup never became restorable (archiving had not caught up; post called it archive-pending); check the archive, or restore another backup",
                r.backup_id,
                stop_seg,
                d.display()
            )));
        }
        checks.push(format!("the WAL up to the backup's end (segment {}) is in the archive", stop_seg));
    } else {
        warnings.push("with --restore-command the archive cannot be listed: that it holds the WAL up to the backup's end is checked by recovery itself".into());
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
        .map_err(|e| Error::new(format!("{} in {} is not a backup history file: {}", name, dir.display(), e)))?;
    let archive = format!("archive directory {}", dir.display());
    check_agree(&format!("the sidecar's label for node {}", node.name), label, &h, &archive)?;
    Ok(Some(format!("the sidecar's label agrees with backup history file {} in the archive", name)))
}

#[cfg(test)]
mod tests {
    use super::*;

    // A PostgreSQL 15 history file, as pg_backup_stop wrote it.
    const HISTORY: &str = "START WAL LOCATION: 0/9000028 (file 000000010000000000000009)\n\
STOP WAL LOCATION: 0/9000100 (file 000000010000000000000009)\n\
CHECKPOINT LOCATION: 0/9000060\nBACKUP METHOD: streamed\nBACKUP FROM: primary\n\
START TIME: 2026-11-23 11:00:00 UTC\nLABEL: job-42\nSTART TIMELINE: 1\n\
STOP TIME: 2026-11-23 11:00:05 UTC\nSTOP TIMELINE: 1\n";

    #[test]
    fn label_is_the_history_without_its_stop_lines() {
        let label = label_text(HISTORY);
        assert_eq!(
            label,
            "START WAL LOCATION: 0/9000028 (file 000000010000000000000009)\nCHECKPOINT LOCATION: 0/9000060\n\
BACKUP METHOD: streamed\nBACKUP FROM: primary\nSTART TIME: 2026-11-23 11:00:00 UTC\nLABEL: job-42\nSTART TIMELINE: 1\n"
        );
        let h = History::parse("000000010000000000000009.00000028.backup", HISTORY).unwrap();
        assert_eq!(h.stop_lsn.to_string(), "0/9000100");
        assert_eq!(h.label.label, "job-42");
        assert_eq!(h.stop_timeline, Some(1));
        assert_eq!(h.stop_time.as_deref(), Some("2026-11-23 11:00:05 UTC"));
        assert!(History::parse("x", &label).is_err(), "a label alone is no history file");
    }

    #[test]
    fn history_names() {
        assert!(is_history_name("000000010000000000000009.00000028.backup"));
        assert!(!is_history_name("000000010000000000000009"));
        assert!(!is_history_name("00000002.history"));
        assert!(!is_history_name("000000010000000000000009.0000002G.backup"));
    }

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

    #[test]
    fn restore_command_substitutions() {
        assert_eq!(
            substitute("cp /a/%f %p && echo 100%% %r %x", "F", "/t/F"),
            "cp /a/F /t/F && echo 100% 000000000000000000000000 %x"
        );
    }
}
