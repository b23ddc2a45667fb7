//! The checks restore-prep makes before it touches anything. Each refusal is one line that
//! says what is wrong and what to do.

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::pg::control::{self, ControlFile};
use crate::pg::label::BackupLabel;
use crate::pg::wal::Lsn;
use crate::sidecar::{self, Manifest, NodeEntry, Problem, ProblemKind, Status};

/// What the checks found; everything later steps need.
pub struct Checked {
    pub major: u32,
    pub owner: (u32, u32),
    pub manifest: Manifest,
    pub node: NodeEntry,
    pub label_text: String,
    pub spcmap_text: String,
    pub control: ControlFile,
    /// postmaster.pid exists but names no live postgres process.
    pub stale_pid: bool,
    /// A backup_label identical to ours is already in place.
    pub label_in_place: bool,
    /// One line per check passed, for the report.
    pub passed: Passed,
    pub warnings: Vec<String>,
    /// sha256 of the sidecar's manifest.json (post prints it into the job log).
    pub manifest_sha256: String,
}

/// The report line of each check passed, by check (in the order they are made). The caller
/// assembles the report: it adds lines of its own and may replace `sidecar`.
pub struct Passed {
    /// PG_VERSION and pg_control are there: "DIR is a PostgreSQL N data directory".
    pub data_directory: String,
    /// No server runs on the directory.
    pub not_running: String,
    /// pg_control's CRC is right, and the cluster state it was copied in.
    pub control: String,
    /// The sidecar's checksums and label match the backup.
    pub sidecar: String,
    /// The node was backed up from the directory's major version.
    pub major: String,
    /// The copy's system identifier is the node's.
    pub system_identifier: String,
    /// The copy's last checkpoint lies within the backup.
    pub belongs: String,
}

/// PG_VERSION's major: "15" → 15, "9.6" → 9 (refused later).
fn read_major(pgdata: &Path) -> Result<u32> {
    let p = pgdata.join("PG_VERSION");
    let text = fs::read_to_string(&p).map_err(|e| err!("cannot read {}: {}", p.display(), e))?;
    let t = text.trim();
    let major = t.split('.').next().and_then(|m| m.parse::<u32>().ok());
    match major {
        Some(m) if m >= 10 => Ok(m),
        Some(_) => Err(err!("{} says PostgreSQL {}: pg-backup-hooks supports 10 and later", p.display(), t)),
        None => Err(err!(
            "{} holds {:?}, not a PostgreSQL version: the data directory is damaged; restore it again",
            p.display(),
            t
        )),
    }
}

pub fn data_directory(pgdata: &Path) -> Result<(u32, (u32, u32))> {
    let meta = fs::metadata(pgdata).map_err(|e| {
        Error::usage(format!("--pgdata {}: {} (give the directory the backup program restored)", pgdata.display(), e))
    })?;
    if !meta.is_dir() {
        return Err(Error::usage(format!("--pgdata {} is not a directory", pgdata.display())));
    }
    for f in ["PG_VERSION", control::CONTROL_FILE] {
        if !pgdata.join(f).is_file() {
            return Err(err!(
                "{} is not a PostgreSQL data directory (no {}): restore the data directory first, and give --pgdata the directory that holds PG_VERSION",
                pgdata.display(),
                f
            ));
        }
    }
    Ok((read_major(pgdata)?, (meta.uid(), meta.gid())))
}

/// Is a server running on this directory? Ok(true) when postmaster.pid is stale.
pub fn not_running(pgdata: &Path, warnings: &mut Vec<String>) -> Result<bool> {
    let p = pgdata.join("postmaster.pid");
    let text = match fs::read_to_string(&p) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(false),
        Err(e) => return Err(err!("cannot read {}: {}", p.display(), e)),
    };
    let pid = text.lines().next().and_then(|l| l.trim().parse::<i32>().ok()).filter(|p| *p > 0);
    let Some(pid) = pid else {
        warnings.push(format!("{} holds no process id: treated as stale and removed", p.display()));
        return Ok(true);
    };
    // A server that was just stopped can still be exiting (its pid file already gone from
    // the original directory): give a live-looking process a few seconds to disappear.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(3);
    loop {
        match pid_owner(pid, pgdata) {
            PidState::Gone => return Ok(true),
            PidState::Other(what) => {
                warnings.push(format!(
                    "{} names pid {}, which is {}: treated as stale and removed",
                    p.display(),
                    pid,
                    what
                ));
                return Ok(true);
            }
            PidState::Server if std::time::Instant::now() < deadline => {
                std::thread::sleep(std::time::Duration::from_millis(100))
            }
            PidState::Server => break,
        }
    }
    Err(err!(
        "a PostgreSQL server (pid {}) is running on {}: stop it first; if it was started on the restored copy before restore-prep, the copy is no longer usable: restore the data directory again, then run restore-prep",
        pid,
        pgdata.display()
    ))
}

enum PidState {
    Gone,
    Other(String),
    Server,
}

/// Is `pid` a server on this data directory? The pid may have been reused since the copy was
/// made, by anything or by a server of another cluster: every server process runs in its
/// data directory (/proc/PID/cwd), and a zombie is no server.
fn pid_owner(pid: i32, pgdata: &Path) -> PidState {
    use nix::errno::Errno;
    use nix::sys::signal::kill;
    use nix::unistd::Pid;
    match kill(Pid::from_raw(pid), None) {
        Ok(()) | Err(Errno::EPERM) => {}
        Err(_) => return PidState::Gone,
    }
    if let Ok(stat) = fs::read_to_string(format!("/proc/{}/stat", pid)) {
        // "pid (comm) S ...": the state follows the last ')'.
        let state = stat.rsplit_once(')').and_then(|(_, rest)| rest.trim_start().chars().next());
        if matches!(state, Some('Z') | Some('X')) {
            return PidState::Gone;
        }
    }
    if let Ok(cwd) = fs::read_link(format!("/proc/{}/cwd", pid)) {
        let here = fs::canonicalize(pgdata).unwrap_or_else(|_| pgdata.to_path_buf());
        if cwd != here {
            return PidState::Other(format!("running in {}, not in this directory", cwd.display()));
        }
    }
    if let Ok(comm) = fs::read_to_string(format!("/proc/{}/comm", pid)) {
        let comm = comm.trim();
        if !(comm.starts_with("postgres") || comm.starts_with("postmaster")) {
            return PidState::Other(format!("running {:?}, not PostgreSQL", comm));
        }
    }
    PidState::Server
}

/// A sidecar directory that holds the backup, and what verify found wrong with it.
struct Sidecar {
    dir: PathBuf,
    manifest: Manifest,
    problems: Vec<Problem>,
}

/// The first sidecar directory that holds this backup, a sound one preferred; a warning for
/// each copy passed over (damaged, unreadable, missing), saying why.
fn load_sidecar(dirs: &[PathBuf], id: &str, warnings: &mut Vec<String>) -> Result<Sidecar> {
    let mut damaged: Vec<Sidecar> = Vec::new();
    let mut passed_over: Vec<String> = Vec::new();
    let mut errors = Vec::new();
    for d in dirs {
        let shown = sidecar::backup_dir(d, id).display().to_string();
        let verified = match sidecar::read_manifest(d, id) {
            Ok(None) => None,
            Ok(Some(_)) => Some(sidecar::verify(d, id)),
            Err(e) => Some(Err(e)),
        };
        match verified {
            Some(Ok((manifest, problems))) => {
                let found = Sidecar { dir: d.clone(), manifest, problems };
                if found.problems.is_empty() {
                    warnings.extend(passed_over.iter().map(|why| format!("{}: using the copy in {}", why, shown)));
                    return Ok(found);
                }
                let list = found.problems.iter().map(|p| p.to_string()).collect::<Vec<_>>().join("; ");
                passed_over.push(format!("sidecar copy {} failed verification ({})", shown, list));
                damaged.push(found);
            }
            None => passed_over.push(format!("no sidecar copy of backup {} in {}", id, d.display())),
            Some(Err(e)) => {
                passed_over.push(format!("sidecar copy {} cannot be used ({})", shown, e.msg));
                errors.push(e.msg);
            }
        }
    }
    if let Some(first) = damaged.into_iter().next() {
        return Ok(first);
    }
    if errors.is_empty() {
        return Err(sidecar::not_found(dirs, id));
    }
    Err(err!(
        "{}: check --sidecar-dir and --backup-id (the sidecar is the directory post wrote, holding ID/manifest.json)",
        errors.join("; ")
    ))
}

/// The label's START and CHECKPOINT lines against the copy's pg_control. A redo location
/// precedes its checkpoint record. When pg_control holds the label's own checkpoint (it was
/// copied before any later checkpoint or restartpoint), its redo location and timeline are
/// the label's START WAL LOCATION and START TIMELINE exactly; when it holds a later one (the
/// copier took pg_control late, which is legitimate), that checkpoint's redo lies at or after
/// the label's start. Anything else is an edited label or a copy from elsewhere.
fn check_label_against_control(pgdata: &Path, label: &BackupLabel, ck: Lsn, id: &str) -> Result<()> {
    let (redo, tli) = control::checkpoint_redo(pgdata)?;
    let why = if label.start_lsn > label.checkpoint_lsn {
        Some(format!(
            "its START WAL LOCATION {} lies after its CHECKPOINT LOCATION {}",
            label.start_lsn, label.checkpoint_lsn
        ))
    } else if ck == label.checkpoint_lsn && redo != label.start_lsn {
        Some(format!(
            "pg_control holds the label's checkpoint {}, whose redo location is {}, but the label says START WAL LOCATION {}",
            ck, redo, label.start_lsn
        ))
    } else if ck == label.checkpoint_lsn && label.start_timeline.is_some_and(|t| t != tli) {
        Some(format!(
            "pg_control's checkpoint {} is on timeline {}, but the label says START TIMELINE {}",
            ck,
            tli,
            label.start_timeline.unwrap_or_default()
        ))
    } else if redo < label.start_lsn {
        Some(format!(
            "pg_control's redo location {} lies before the label's START WAL LOCATION {}",
            redo, label.start_lsn
        ))
    } else {
        None
    };
    match why {
        Some(why) => Err(err!(
            "the label of backup {} does not fit the copy in {}: {}; the sidecar was edited or belongs to another copy: use another copy of the sidecar (--sidecar-dir) or restore another backup",
            id,
            pgdata.display(),
            why
        )),
        None => Ok(()),
    }
}

pub struct Request<'a> {
    pub pgdata: &'a Path,
    pub sidecar_dirs: &'a [PathBuf],
    pub backup_id: &'a str,
    pub node: Option<&'a str>,
    pub force: bool,
}

/// The checks, in order; the first that fails refuses with its own message.
pub fn run(r: &Request) -> Result<Checked> {
    let (pgdata, id) = (r.pgdata, r.backup_id);
    let mut warnings = Vec::new();
    let (major, owner) = data_directory(pgdata)?;
    let stale_pid = not_running(pgdata, &mut warnings)?;
    let control = read_control(pgdata, major)?;
    let sidecar = load_sidecar(r.sidecar_dirs, id, &mut warnings)?;
    let manifest_sha256 = sidecar::manifest_sha256(&sidecar::backup_dir(&sidecar.dir, id).join(sidecar::MANIFEST))?;
    require_complete(&sidecar, id)?;
    let node = pick_node(&sidecar.manifest, r.node, &control, id, &mut warnings)?;
    trust_sidecar(&sidecar, &node, id)?;
    same_major(pgdata, major, &node, id)?;
    same_system(pgdata, &control, &node, id)?;
    let files = read_node_files(&sidecar.dir, &node, id)?;
    refuse_recovered(pgdata, &control, &files.label_text, &node, id)?;
    let copy = copy_within_backup(pgdata, &control, &node, &files.label, id)?;
    check_label_against_control(pgdata, &files.label, copy.checkpoint, id)?;
    if node.from_standby {
        warnings.push(
            "backup taken from a standby: only checked that the copy's checkpoint is not before the backup's".into(),
        );
    }
    let label_in_place = label_in_place(pgdata, &files.label_text, r.force, id, &mut warnings)?;
    let passed = Passed {
        data_directory: format!("{} is a PostgreSQL {} data directory", pgdata.display(), major),
        not_running: if stale_pid {
            "no server is running on it (postmaster.pid is stale)".to_string()
        } else {
            "no server is running on it".to_string()
        },
        control: format!(
            "global/pg_control is intact (CRC ok; cluster state when copied: {})",
            control::state_name(control.state)
        ),
        sidecar: format!(
            "sidecar {} is intact (checksums and label match backup {})",
            sidecar::backup_dir(&sidecar.dir, id).display(),
            id
        ),
        major: format!("major version {} matches the backup", major),
        system_identifier: format!("system identifier {} matches node {}", control.system_identifier, node.name),
        belongs: copy.describe(&files.label, &node),
    };
    Ok(Checked {
        major,
        owner,
        manifest: sidecar.manifest,
        node,
        label_text: files.label_text,
        spcmap_text: files.spcmap_text,
        control,
        stale_pid,
        label_in_place,
        passed,
        warnings,
        manifest_sha256,
    })
}

/// pg_control reads and its CRC is right, and its version is the one PG_VERSION's major writes.
fn read_control(pgdata: &Path, major: u32) -> Result<ControlFile> {
    let control = control::read(pgdata)?;
    match control::expected_version(major) {
        Some(v) if v != control.pg_control_version => Err(err!(
            "{} has control-file version {}, but PG_VERSION says {} (which writes {}): the data directory is a mix of two versions; restore it again",
            pgdata.join(control::CONTROL_FILE).display(),
            control.pg_control_version,
            major,
            v
        )),
        _ => Ok(control),
    }
}

/// The backup is complete: its WAL reached the archive when post last ran.
fn require_complete(s: &Sidecar, id: &str) -> Result<()> {
    if s.manifest.status == Status::Complete {
        return Ok(());
    }
    Err(err!(
        "backup {} is archive-pending in {}: its WAL had not reached the archive when post last ran, so this copy is not restorable yet; run post for it again (or check that the WAL is in the archive), or restore another backup",
        id,
        s.dir.display()
    ))
}

/// Which node is this copy? By --node, or the only one, or by system identifier.
fn pick_node(
    m: &Manifest,
    wanted: Option<&str>,
    control: &ControlFile,
    id: &str,
    warnings: &mut Vec<String>,
) -> Result<NodeEntry> {
    let names = || m.nodes.iter().map(|n| n.name.as_str()).collect::<Vec<_>>().join(", ");
    if let Some(name) = wanted {
        let found = m.nodes.iter().find(|n| n.name == name).cloned();
        return found
            .ok_or_else(|| Error::usage(format!("backup {} has no node {:?}; its nodes are: {}", id, name, names())));
    }
    if m.nodes.len() == 1 {
        return Ok(m.nodes[0].clone());
    }
    let sysid = control.system_identifier.to_string();
    let matching: Vec<&NodeEntry> = m.nodes.iter().filter(|n| n.system_identifier == sysid).collect();
    let [only] = matching[..] else {
        return Err(Error::usage(format!(
            "backup {} has {} nodes ({}): say which one this data directory is with --node",
            id,
            m.nodes.len(),
            names()
        )));
    };
    warnings.push(format!("--node not given: this data directory's system identifier is node {}'s", only.name));
    Ok(only.clone())
}

/// The problems verify found that concern restoring `node`: the manifest's own and this
/// node's files; another node's damaged files do not stop this node's restore. Archive-pending
/// is left out: [`require_complete`] refuses it first, with its own message.
fn problems_for<'a>(problems: &'a [Problem], node: &str) -> Vec<&'a Problem> {
    problems
        .iter()
        .filter(|p| p.node.as_deref().is_none_or(|n| n == node))
        .filter(|p| p.kind != ProblemKind::NotComplete)
        .collect()
}

/// The sidecar's manifest and this node's label and tablespace_map are intact.
fn trust_sidecar(s: &Sidecar, node: &NodeEntry, id: &str) -> Result<()> {
    let problems = problems_for(&s.problems, &node.name);
    if problems.is_empty() {
        return Ok(());
    }
    Err(err!(
        "the sidecar of backup {} in {} cannot be trusted: {}; use another copy of the sidecar (--sidecar-dir) or restore another backup",
        id,
        s.dir.display(),
        problems.iter().map(|p| p.to_string()).collect::<Vec<_>>().join("; ")
    ))
}

/// The node was backed up from the major version the data directory is.
fn same_major(pgdata: &Path, major: u32, node: &NodeEntry, id: &str) -> Result<()> {
    let backup_major = (node.server_version_num / 10000) as u32;
    if backup_major == major {
        return Ok(());
    }
    Err(err!(
        "{} is a PostgreSQL {} data directory (PG_VERSION), but node {} of backup {} was taken from PostgreSQL {}: restore this backup into a PostgreSQL {} data directory, or pick the backup that belongs to this copy",
        pgdata.display(),
        major,
        node.name,
        id,
        backup_major,
        backup_major
    ))
}

/// The copy is of the cluster the node was backed up from (same system identifier).
fn same_system(pgdata: &Path, control: &ControlFile, node: &NodeEntry, id: &str) -> Result<()> {
    let sysid = control.system_identifier.to_string();
    if node.system_identifier == sysid {
        return Ok(());
    }
    Err(err!(
        "{} belongs to the cluster with system identifier {}, but node {} of backup {} was taken from system {}: this copy is from another cluster or another node; give the --node (or backup) this copy belongs to",
        pgdata.display(),
        sysid,
        node.name,
        id,
        node.system_identifier
    ))
}

/// The node's files in the sidecar.
struct NodeFiles {
    label_text: String,
    label: BackupLabel,
    spcmap_text: String,
}

/// Read the node's backup_label (it must parse) and tablespace_map from the sidecar.
fn read_node_files(sidecar_dir: &Path, node: &NodeEntry, id: &str) -> Result<NodeFiles> {
    let ndir = sidecar::backup_dir(sidecar_dir, id).join(&node.name);
    let read = |p: &Path| fs::read_to_string(p).map_err(|e| err!("cannot read {}: {}", p.display(), e));
    let label_path = ndir.join(sidecar::LABEL_FILE);
    let label_text = read(&label_path)?;
    let label = BackupLabel::parse(&label_text)
        .map_err(|e| err!("{} is not a backup label ({}): the sidecar is damaged", label_path.display(), e))?;
    let spcmap_text = read(&ndir.join(sidecar::SPCMAP_FILE))?;
    Ok(NodeFiles { label_text, label, spcmap_text })
}

/// The copy's last checkpoint, as [`copy_within_backup`] found it.
struct CopyCheckpoint {
    checkpoint: Lsn,
    /// An earlier restore-prep run invalidated pg_control's checkpoint location.
    invalidated: bool,
}

impl CopyCheckpoint {
    /// The report line.
    fn describe(&self, label: &BackupLabel, node: &NodeEntry) -> String {
        format!(
            "the copy belongs to this backup (checkpoint {} lies between {} and {}){}",
            self.checkpoint,
            label.checkpoint_lsn,
            node.stop_lsn,
            if self.invalidated {
                "; pg_control's checkpoint location was already invalidated by an earlier run"
            } else {
                ""
            }
        )
    }
}

/// The label belongs to this copy: the copy's last checkpoint lies within the backup.
/// An earlier restore-prep run may have invalidated the checkpoint location already; it
/// keeps the copy's own (see control::invalidate).
fn copy_within_backup(
    pgdata: &Path,
    control: &ControlFile,
    node: &NodeEntry,
    label: &BackupLabel,
    id: &str,
) -> Result<CopyCheckpoint> {
    let invalidated = control::is_invalidated(control.checkpoint);
    let ck = control::original_checkpoint(control.checkpoint);
    let too_late = !node.from_standby && ck >= node.stop_lsn;
    if ck < label.checkpoint_lsn || too_late {
        return Err(err!(
            "the copy in {} does not belong to backup {}: its last checkpoint {} is {} the backup (checkpoint {} to stop {}); it is a copy from another backup, or it was started after it was restored: restore the data directory made during backup {} again, or use the backup this copy was made in",
            pgdata.display(),
            id,
            ck,
            if too_late { "after" } else { "before" },
            label.checkpoint_lsn,
            node.stop_lsn,
            id
        ));
    }
    Ok(CopyCheckpoint { checkpoint: ck, invalidated })
}

/// A copy that has already recovered from this backup (it was prepared, started and stopped)
/// is not another backup's copy: its label was consumed (PostgreSQL renamed it to
/// backup_label.old, which is ours) and pg_control's checkpoint is newer than the label's.
/// Say so, and what to do.
fn refuse_recovered(pgdata: &Path, control: &ControlFile, label_text: &str, node: &NodeEntry, id: &str) -> Result<()> {
    let ck = control.checkpoint;
    let label = BackupLabel::parse(label_text).map_err(|e| err!("backup {}'s label: {}", id, e))?;
    let old = pgdata.join("backup_label.old");
    let consumed = !pgdata.join("backup_label").exists() && fs::read(&old).is_ok_and(|b| b == label_text.as_bytes());
    if !consumed || control::is_invalidated(ck) || ck <= label.checkpoint_lsn {
        return Ok(());
    }
    let how_far = if ck >= node.stop_lsn {
        format!("its last checkpoint {} is past the backup's end {}", ck, node.stop_lsn)
    } else {
        format!("recovery has replayed to checkpoint {} (the backup ends at {})", ck, node.stop_lsn)
    };
    let still = pgdata.join("recovery.signal").exists() || pgdata.join("recovery.conf").exists();
    Err(err!(
        "the copy in {} has already {} from backup {}: the server consumed the label ({} is this backup's label) and {} (cluster state: {}); nothing needs doing: {}; to recover it again (e.g. to another --target), restore the data directory again and run restore-prep on the fresh copy",
        pgdata.display(),
        if still { "begun recovering" } else { "recovered" },
        id,
        old.display(),
        how_far,
        control::state_name(control.state),
        if still { "start it and it goes on recovering" } else { "start it as it is" }
    ))
}

/// Is a backup_label identical to ours already in place? Another one is refused, or with
/// --force replaced (with a warning).
fn label_in_place(pgdata: &Path, label_text: &str, force: bool, id: &str, warnings: &mut Vec<String>) -> Result<bool> {
    let existing = pgdata.join("backup_label");
    let b = match fs::read(&existing) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(false),
        Err(e) => return Err(err!("cannot read {}: {}", existing.display(), e)),
    };
    if b == label_text.as_bytes() {
        return Ok(true);
    }
    let other =
        BackupLabel::parse(&String::from_utf8_lossy(&b)).map(|l| l.label).unwrap_or_else(|_| "unreadable".into());
    if !force {
        return Err(err!(
            "{} already exists and is not backup {}'s label (its LABEL: {}): restore the data directory again, or rerun with --force to replace it",
            existing.display(),
            id,
            other
        ));
    }
    warnings.push(format!("--force: replacing {} (LABEL: {})", existing.display(), other));
    Ok(false)
}

/// A restored copy and its sidecar on disk, for the unit tests here and in restore/mod.rs.
#[cfg(test)]
pub(crate) mod fixture {
    use std::collections::BTreeMap;
    use std::fs;
    use std::path::{Path, PathBuf};

    use crate::pg::wal::Lsn;
    use crate::sidecar::{self, Manifest, NodeEntry, NodeFiles, Status};

    pub const ID: &str = "job-42";
    pub const SYSID: u64 = 7_300_000_000_000_000_001;
    /// The label's START WAL LOCATION (the copy's redo) and CHECKPOINT LOCATION.
    pub const START: u64 = 0x900_0028;
    pub const CHECKPOINT: u64 = 0x900_0060;
    pub const STOP: u64 = 0x900_0138;

    pub fn label(id: &str) -> String {
        format!(
            "START WAL LOCATION: 0/9000028 (file 000000010000000000000009)\nCHECKPOINT LOCATION: 0/9000060\n\
             BACKUP METHOD: streamed\nBACKUP FROM: primary\nSTART TIME: 2026-11-23 11:00:00 UTC\nLABEL: {}\n\
             START TIMELINE: 1\n",
            id
        )
    }

    /// A pg_control of this version (1201, 1300 or 1700) with a right CRC: checkpoint, its redo
    /// location and timeline, cluster state "in production".
    pub fn control(version: u32, checkpoint: u64, redo: u64, tli: u32) -> Vec<u8> {
        let mut b = vec![0u8; 8192];
        b[0..8].copy_from_slice(&SYSID.to_ne_bytes());
        b[8..12].copy_from_slice(&version.to_ne_bytes());
        b[16..20].copy_from_slice(&6u32.to_ne_bytes());
        b[32..40].copy_from_slice(&checkpoint.to_ne_bytes());
        b[40..48].copy_from_slice(&redo.to_ne_bytes());
        b[48..52].copy_from_slice(&tli.to_ne_bytes());
        let crc = crc32c::crc32c(&b[..288]);
        b[288..292].copy_from_slice(&crc.to_ne_bytes());
        b
    }

    fn node(name: &str, major: u32, label: &str) -> NodeEntry {
        let files = [(sidecar::LABEL_FILE, label), (sidecar::SPCMAP_FILE, "")]
            .into_iter()
            .map(|(f, text)| (f.to_string(), sidecar::file_entry(text.as_bytes())))
            .collect::<BTreeMap<_, _>>();
        NodeEntry {
            name: name.into(),
            conninfo: String::new(),
            server_version_num: (major * 10000) as i32,
            server_version: major.to_string(),
            system_identifier: SYSID.to_string(),
            timeline: 1,
            start_lsn: Lsn(START),
            stop_lsn: Lsn(STOP),
            start_wal_file: "000000010000000000000009".into(),
            stop_wal_file: "000000010000000000000009".into(),
            backup_history_file: None,
            from_standby: false,
            data_directory: None,
            wal_segment_size: 16 << 20,
            archived: true,
            archive_note: None,
            inventory_source: None,
            inventory_note: None,
            files,
        }
    }

    /// A PostgreSQL 16 copy of node "default" (`pgdata`), and `sidecar` holding backup [`ID`]
    /// with the given nodes (all of the same cluster, all with the same label).
    pub struct Copy {
        pub _tmp: tempfile::TempDir,
        pub pgdata: PathBuf,
        pub sidecar: PathBuf,
    }

    impl Copy {
        pub fn new(nodes: &[&str]) -> Copy {
            let tmp = tempfile::tempdir().unwrap();
            let pgdata = tmp.path().join("data");
            let sidecar = tmp.path().join("sidecar");
            fs::create_dir_all(pgdata.join("global")).unwrap();
            fs::create_dir_all(pgdata.join("pg_wal")).unwrap();
            fs::create_dir(&sidecar).unwrap();
            fs::write(pgdata.join("PG_VERSION"), "16\n").unwrap();
            fs::write(pgdata.join("global/pg_control"), control(1300, CHECKPOINT, START, 1)).unwrap();
            let label = label(ID);
            let manifest = Manifest {
                format_version: sidecar::FORMAT_VERSION,
                tool_version: "test".into(),
                backup_id: ID.into(),
                status: Status::Complete,
                started_at: String::new(),
                stopped_at: String::new(),
                written_at: String::new(),
                nodes: nodes.iter().map(|n| node(n, 16, &label)).collect(),
                restore_point: None,
                restore_point_note: None,
            };
            let files: Vec<NodeFiles> = nodes
                .iter()
                .map(|n| NodeFiles { name: n.to_string(), labelfile: label.clone(), spcmapfile: String::new() })
                .collect();
            assert!(sidecar::write(&sidecar, &manifest, &files).unwrap());
            Copy { _tmp: tmp, pgdata, sidecar }
        }

        /// The node's file in the sidecar.
        pub fn sidecar_file(&self, node: &str, file: &str) -> PathBuf {
            sidecar::backup_dir(&self.sidecar, ID).join(node).join(file)
        }

        pub fn pgdata(&self) -> &Path {
            &self.pgdata
        }
    }
}

#[cfg(test)]
mod tests {
    use super::fixture::{self, Copy, ID};
    use super::*;

    fn check(copy: &Copy, node: Option<&str>, force: bool) -> Result<Checked> {
        let dirs = [copy.sidecar.clone()];
        run(&Request { pgdata: copy.pgdata(), sidecar_dirs: &dirs, backup_id: ID, node, force })
    }

    fn refusal(copy: &Copy, node: Option<&str>) -> String {
        match check(copy, node, false) {
            Ok(_) => panic!("the checks passed"),
            Err(e) => e.msg,
        }
    }

    #[test]
    fn a_sound_copy_passes_and_each_check_has_its_line() {
        let copy = Copy::new(&["default"]);
        let c = check(&copy, None, false).unwrap();
        assert_eq!(c.node.name, "default");
        assert_eq!(c.passed.data_directory, format!("{} is a PostgreSQL 16 data directory", copy.pgdata.display()));
        assert_eq!(c.passed.not_running, "no server is running on it");
        assert_eq!(c.passed.control, "global/pg_control is intact (CRC ok; cluster state when copied: in production)");
        assert!(c.passed.sidecar.starts_with("sidecar "), "{}", c.passed.sidecar);
        assert_eq!(
            c.passed.belongs,
            "the copy belongs to this backup (checkpoint 0/9000060 lies between 0/9000060 and 0/9000138)"
        );
        assert!(!c.label_in_place && c.warnings.is_empty(), "{:?}", c.warnings);
    }

    #[test]
    fn a_pg_version_that_is_not_10_or_later_is_refused_naming_the_file() {
        let copy = Copy::new(&["default"]);
        let file = copy.pgdata.join("PG_VERSION");
        fs::write(&file, "9.6\n").unwrap();
        let msg = refusal(&copy, None);
        assert_eq!(msg, format!("{} says PostgreSQL 9.6: pg-backup-hooks supports 10 and later", file.display()));
        fs::write(&file, "banana\n").unwrap();
        let msg = refusal(&copy, None);
        assert!(msg.starts_with(&format!("{} holds \"banana\", not a PostgreSQL version", file.display())), "{}", msg);
    }

    #[test]
    fn a_pg_control_of_another_major_is_refused() {
        let copy = Copy::new(&["default"]);
        let file = copy.pgdata.join("global/pg_control");
        fs::write(&file, fixture::control(1700, fixture::CHECKPOINT, fixture::START, 1)).unwrap();
        let msg = refusal(&copy, None);
        assert!(
            msg.starts_with(&format!(
                "{} has control-file version 1700, but PG_VERSION says 16 (which writes 1300)",
                file.display()
            )),
            "{}",
            msg
        );
    }

    #[test]
    fn a_label_that_does_not_fit_pg_control_is_refused_naming_the_copy() {
        let copy = Copy::new(&["default"]);
        // pg_control holds the label's checkpoint, but with another redo location.
        let bad = fixture::control(1300, fixture::CHECKPOINT, fixture::START + 8, 1);
        fs::write(copy.pgdata.join("global/pg_control"), bad).unwrap();
        let msg = refusal(&copy, None);
        assert!(
            msg.starts_with(&format!(
                "the label of backup {} does not fit the copy in {}: pg_control holds the label's checkpoint 0/9000060, whose redo location is 0/9000030, but the label says START WAL LOCATION 0/9000028;",
                ID,
                copy.pgdata.display()
            )),
            "{}",
            msg
        );
    }

    #[test]
    fn a_damaged_sidecar_file_refuses_its_own_node_only() {
        let copy = Copy::new(&["a", "b"]);
        let damaged = copy.sidecar_file("b", sidecar::LABEL_FILE);
        fs::write(&damaged, fixture::label("another")).unwrap();
        // Node a's restore does not depend on node b's label.
        let c = check(&copy, Some("a"), false).unwrap();
        assert_eq!(c.node.name, "a");
        // Node b's does: refused, naming the file.
        let msg = refusal(&copy, Some("b"));
        assert!(
            msg.contains(&format!("cannot be trusted: node b: {} does not match its sha256", damaged.display())),
            "{}",
            msg
        );
        assert!(!msg.contains("node a:"), "{}", msg);
    }

    #[test]
    fn problems_for_a_node_are_the_manifests_and_its_own() {
        let p = |node: Option<&str>, kind: ProblemKind| Problem { node: node.map(String::from), kind };
        let problems = vec![
            p(None, ProblemKind::NotComplete),
            p(None, ProblemKind::NoNodes),
            p(Some("a"), ProblemKind::NoChecksum { file: sidecar::LABEL_FILE }),
            p(Some("ab"), ProblemKind::NoChecksum { file: sidecar::SPCMAP_FILE }),
            p(Some("b"), ProblemKind::ChecksumMismatch { path: PathBuf::from("/s/job/b/backup_label") }),
        ];
        let got: Vec<String> = problems_for(&problems, "a").iter().map(|p| p.to_string()).collect();
        assert_eq!(got, vec!["manifest lists no nodes", "node a: manifest has no checksum for backup_label"]);
    }

    #[test]
    fn a_damaged_first_sidecar_copy_is_named_with_why_and_the_second_is_used() {
        let copy = Copy::new(&["default"]);
        let good = copy.sidecar.parent().unwrap().join("good");
        let status = std::process::Command::new("cp").arg("-a").arg(&copy.sidecar).arg(&good).status().unwrap();
        assert!(status.success());
        let damaged = copy.sidecar_file("default", sidecar::LABEL_FILE);
        fs::write(&damaged, fixture::label("edited")).unwrap();
        let missing = copy.sidecar.parent().unwrap().join("missing");
        fs::create_dir(&missing).unwrap();
        let dirs = [missing.clone(), copy.sidecar.clone(), good.clone()];
        let c = run(&Request { pgdata: copy.pgdata(), sidecar_dirs: &dirs, backup_id: ID, node: None, force: false })
            .unwrap();
        let used = good.join(ID);
        assert_eq!(
            c.warnings,
            vec![
                format!("no sidecar copy of backup {} in {}: using the copy in {}", ID, missing.display(), used.display()),
                format!(
                    "sidecar copy {} failed verification (node default: {} does not match its sha256 in the manifest (edited or damaged)): using the copy in {}",
                    sidecar::backup_dir(&copy.sidecar, ID).display(),
                    damaged.display(),
                    used.display()
                ),
            ]
        );
        assert!(c.passed.sidecar.starts_with(&format!("sidecar {} is intact", used.display())), "{}", c.passed.sidecar);
    }

    #[test]
    fn a_copy_that_has_recovered_is_said_to_have_recovered() {
        let copy = Copy::new(&["default"]);
        fs::write(copy.pgdata.join("backup_label.old"), fixture::label(ID)).unwrap();
        let later = fixture::STOP + 0x1000;
        fs::write(copy.pgdata.join("global/pg_control"), fixture::control(1300, later, later, 2)).unwrap();
        let msg = refusal(&copy, None);
        assert_eq!(
            msg,
            format!(
                "the copy in {} has already recovered from backup {}: the server consumed the label ({}/backup_label.old is this backup's label) and its last checkpoint 0/9001138 is past the backup's end 0/9000138 (cluster state: in production); nothing needs doing: start it as it is; to recover it again (e.g. to another --target), restore the data directory again and run restore-prep on the fresh copy",
                copy.pgdata.display(),
                ID,
                copy.pgdata.display()
            )
        );
        // Another backup's consumed label is not ours: the old refusal stands.
        fs::write(copy.pgdata.join("backup_label.old"), fixture::label("other")).unwrap();
        assert!(refusal(&copy, None).contains("does not belong to backup"));
    }

    #[test]
    fn another_backups_label_in_the_copy_is_refused_unless_forced() {
        let copy = Copy::new(&["default"]);
        let existing = copy.pgdata.join("backup_label");
        fs::write(&existing, fixture::label("older")).unwrap();
        let msg = refusal(&copy, None);
        assert!(
            msg.starts_with(&format!(
                "{} already exists and is not backup {}'s label (its LABEL: older)",
                existing.display(),
                ID
            )),
            "{}",
            msg
        );
        let c = check(&copy, None, true).unwrap();
        assert_eq!(c.warnings, vec![format!("--force: replacing {} (LABEL: older)", existing.display())]);
        fs::write(&existing, fixture::label(ID)).unwrap();
        assert!(check(&copy, None, false).unwrap().label_in_place);
    }

    #[test]
    fn an_archive_pending_backup_is_refused_with_its_own_message() {
        let copy = Copy::new(&["default"]);
        let path = sidecar::backup_dir(&copy.sidecar, ID).join(sidecar::MANIFEST);
        let text = fs::read_to_string(&path).unwrap().replace("\"complete\"", "\"archive-pending\"");
        fs::write(&path, text).unwrap();
        let msg = refusal(&copy, None);
        assert!(
            msg.starts_with(&format!("backup {} is archive-pending in {}:", ID, copy.sidecar.display())),
            "{}",
            msg
        );
    }

    #[test]
    fn problems_display_as_verify_printed_them() {
        let path = PathBuf::from("/s/job-42/a/backup_label");
        let node = |kind| Problem { node: Some("a".into()), kind };
        let whole = |kind| Problem { node: None, kind };
        let cases = [
            (
                whole(ProblemKind::WrongBackupId { found: "x".into(), wanted: "job-42".into() }),
                "manifest names backup \"x\", not \"job-42\"",
            ),
            (
                whole(ProblemKind::NotComplete),
                "backup is not complete (archiving had not finished when post last ran): run post again",
            ),
            (whole(ProblemKind::NoNodes), "manifest lists no nodes"),
            (
                node(ProblemKind::NoChecksum { file: sidecar::SPCMAP_FILE }),
                "node a: manifest has no checksum for tablespace_map",
            ),
            (
                node(ProblemKind::Unreadable { path: path.clone(), error: "denied".into() }),
                "node a: cannot read /s/job-42/a/backup_label: denied",
            ),
            (
                node(ProblemKind::ChecksumMismatch { path: path.clone() }),
                "node a: /s/job-42/a/backup_label does not match its sha256 in the manifest (edited or damaged)",
            ),
            (
                node(ProblemKind::NotALabel { path: path.clone(), error: "no LABEL".into() }),
                "node a: /s/job-42/a/backup_label is not a backup label: no LABEL",
            ),
            (
                node(ProblemKind::WrongLabel { path, label: "old".into() }),
                "node a: /s/job-42/a/backup_label has LABEL \"old\", not the backup id",
            ),
            (
                node(ProblemKind::WrongStart { label: Lsn(0x900_0028), manifest: Lsn(0x800_0028) }),
                "node a: label starts at 0/9000028, manifest says 0/8000028",
            ),
        ];
        for (p, text) in cases {
            assert_eq!(p.to_string(), text);
        }
    }
}
