//! The checks restore-prep makes before it touches anything. Each refusal is one line that
//! says what is wrong and what to do.

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::pg::control::{self, ControlFile};
use crate::pg::label::BackupLabel;
use crate::sidecar::{self, Manifest, NodeEntry, Status};

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
    pub passed: Vec<String>,
    pub warnings: Vec<String>,
    /// sha256 of the sidecar's manifest.json (post prints it into the job log).
    pub manifest_sha256: String,
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

/// The first sidecar directory that holds this backup (a sound one is preferred).
fn load_sidecar(dirs: &[PathBuf], id: &str) -> Result<(PathBuf, Manifest, Vec<String>)> {
    let mut first: Option<(PathBuf, Manifest, Vec<String>)> = None;
    let mut errors = Vec::new();
    for d in dirs {
        match sidecar::verify(d, id) {
            Ok((m, problems)) => {
                if problems.is_empty() {
                    return Ok((d.clone(), m, problems));
                }
                if first.is_none() {
                    first = Some((d.clone(), m, problems));
                }
            }
            Err(e) => errors.push(e.msg),
        }
    }
    first.ok_or_else(|| {
        err!(
            "{}: check --sidecar-dir and --backup-id (the sidecar is the directory post wrote, holding ID/manifest.json)",
            errors.join("; ")
        )
    })
}

/// The label's START and CHECKPOINT lines against the copy's pg_control. A redo location
/// precedes its checkpoint record. When pg_control holds the label's own checkpoint (it was
/// copied before any later checkpoint or restartpoint), its redo location and timeline are
/// the label's START WAL LOCATION and START TIMELINE exactly; when it holds a later one (the
/// copier took pg_control late, which is legitimate), that checkpoint's redo lies at or after
/// the label's start. Anything else is an edited label or a copy from elsewhere.
fn check_label_against_control(pgdata: &Path, label: &BackupLabel, ck: crate::pg::wal::Lsn, id: &str) -> Result<()> {
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

pub fn run(r: &Request) -> Result<Checked> {
    let mut passed = Vec::new();
    let mut warnings = Vec::new();
    let pgdata = r.pgdata;

    let (major, owner) = data_directory(pgdata)?;
    passed.push(format!("{} is a PostgreSQL {} data directory", pgdata.display(), major));

    let stale_pid = not_running(pgdata, &mut warnings)?;
    passed.push(if stale_pid {
        "no server is running on it (postmaster.pid is stale)".to_string()
    } else {
        "no server is running on it".to_string()
    });

    let control = control::read(pgdata)?;
    if let Some(v) = control::expected_version(major) {
        if v != control.pg_control_version {
            return Err(err!(
                "{} has control-file version {}, but PG_VERSION says {} (which writes {}): the data directory is a mix of two versions; restore it again",
                pgdata.join(control::CONTROL_FILE).display(),
                control.pg_control_version,
                major,
                v
            ));
        }
    }

    let (sidecar_dir, manifest, problems) = load_sidecar(r.sidecar_dirs, r.backup_id)?;
    let id = r.backup_id;
    let manifest_sha256 = sidecar::manifest_sha256(&sidecar::backup_dir(&sidecar_dir, id).join(sidecar::MANIFEST))?;
    if manifest.status != Status::Complete {
        return Err(err!(
            "backup {} is archive-pending in {}: its WAL had not reached the archive when post last ran, so this copy is not restorable yet; run post for it again (or check that the WAL is in the archive), or restore another backup",
            id,
            sidecar_dir.display()
        ));
    }

    // Which node is this copy? By --node, or the only one, or by system identifier.
    let sysid = control.system_identifier.to_string();
    let node = match r.node {
        Some(name) => manifest.nodes.iter().find(|n| n.name == name).cloned().ok_or_else(|| {
            Error::usage(format!(
                "backup {} has no node {:?}; its nodes are: {}",
                id,
                name,
                manifest.nodes.iter().map(|n| n.name.as_str()).collect::<Vec<_>>().join(", ")
            ))
        })?,
        None if manifest.nodes.len() == 1 => manifest.nodes[0].clone(),
        None => {
            let matching: Vec<&NodeEntry> = manifest.nodes.iter().filter(|n| n.system_identifier == sysid).collect();
            if matching.len() != 1 {
                return Err(Error::usage(format!(
                    "backup {} has {} nodes ({}): say which one this data directory is with --node",
                    id,
                    manifest.nodes.len(),
                    manifest.nodes.iter().map(|n| n.name.as_str()).collect::<Vec<_>>().join(", ")
                )));
            }
            warnings.push(format!(
                "--node not given: this data directory's system identifier is node {}'s",
                matching[0].name
            ));
            matching[0].clone()
        }
    };

    let node_problems: Vec<&String> = problems
        .iter()
        .filter(|p| p.starts_with(&format!("node {}:", node.name)) || !p.starts_with("node "))
        .filter(|p| !p.starts_with("backup is not complete"))
        .collect();
    if !node_problems.is_empty() {
        return Err(err!(
            "the sidecar of backup {} in {} cannot be trusted: {}; use another copy of the sidecar (--sidecar-dir) or restore another backup",
            id,
            sidecar_dir.display(),
            node_problems.iter().map(|s| s.as_str()).collect::<Vec<_>>().join("; ")
        ));
    }
    passed.push(format!(
        "sidecar {} is intact (checksums and label match backup {})",
        sidecar::backup_dir(&sidecar_dir, id).display(),
        id
    ));

    let backup_major = (node.server_version_num / 10000) as u32;
    if backup_major != major {
        return Err(err!(
            "{} is a PostgreSQL {} data directory (PG_VERSION), but node {} of backup {} was taken from PostgreSQL {}: restore this backup into a PostgreSQL {} data directory, or pick the backup that belongs to this copy",
            pgdata.display(),
            major,
            node.name,
            id,
            backup_major,
            backup_major
        ));
    }
    passed.push(format!("major version {} matches the backup", major));

    if node.system_identifier != sysid {
        return Err(err!(
            "{} belongs to the cluster with system identifier {}, but node {} of backup {} was taken from system {}: this copy is from another cluster or another node; give the --node (or backup) this copy belongs to",
            pgdata.display(),
            sysid,
            node.name,
            id,
            node.system_identifier
        ));
    }
    passed.push(format!("system identifier {} matches node {}", sysid, node.name));

    let ndir = sidecar::backup_dir(&sidecar_dir, id).join(&node.name);
    let label_path = ndir.join(sidecar::LABEL_FILE);
    let label_text =
        fs::read_to_string(&label_path).map_err(|e| err!("cannot read {}: {}", label_path.display(), e))?;
    let label = BackupLabel::parse(&label_text)
        .map_err(|e| err!("{} is not a backup label ({}): the sidecar is damaged", label_path.display(), e))?;
    let spcmap_path = ndir.join(sidecar::SPCMAP_FILE);
    let spcmap_text =
        fs::read_to_string(&spcmap_path).map_err(|e| err!("cannot read {}: {}", spcmap_path.display(), e))?;

    // The label belongs to this copy: the copy's last checkpoint lies within the backup.
    // An earlier restore-prep run may have invalidated the checkpoint location already; it
    // keeps the copy's own (see control::invalidate).
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
    check_label_against_control(pgdata, &label, ck, id)?;
    if node.from_standby {
        warnings.push(
            "backup taken from a standby: only checked that the copy's checkpoint is not before the backup's".into(),
        );
    }
    passed.push(format!(
        "the copy belongs to this backup (checkpoint {} lies between {} and {}){}",
        ck,
        label.checkpoint_lsn,
        node.stop_lsn,
        if invalidated { "; pg_control's checkpoint location was already invalidated by an earlier run" } else { "" }
    ));

    let existing = pgdata.join("backup_label");
    let label_in_place = match fs::read(&existing) {
        Ok(b) if b == label_text.as_bytes() => true,
        Ok(b) => {
            let other = BackupLabel::parse(&String::from_utf8_lossy(&b))
                .map(|l| l.label)
                .unwrap_or_else(|_| "unreadable".into());
            if !r.force {
                return Err(err!(
                    "{} already exists and is not backup {}'s label (its LABEL: {}): restore the data directory again, or rerun with --force to replace it",
                    existing.display(),
                    id,
                    other
                ));
            }
            warnings.push(format!("--force: replacing {} (LABEL: {})", existing.display(), other));
            false
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => false,
        Err(e) => return Err(err!("cannot read {}: {}", existing.display(), e)),
    };

    Ok(Checked {
        major,
        owner,
        manifest,
        node,
        label_text,
        spcmap_text,
        control,
        stale_pid,
        label_in_place,
        passed,
        warnings,
        manifest_sha256,
    })
}
