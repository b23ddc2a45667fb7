//! restore-prep: turn a restored copy plus its sidecar into a data directory that starts
//! in archive recovery and becomes consistent.
//!
//! `prepare` runs every check and computes every change without touching anything (that is
//! also the dry run); `apply` then makes the changes in a crash-safe order:
//! 1. remove what must not survive (stale pid file, copied WAL, temporary files...);
//! 2. write tablespace_map and backup_label;
//! 3. invalidate pg_control's checkpoint location, so that the directory refuses to start if
//!    the label is ever deleted (see pg::control::invalidate);
//! 4. write the recovery settings, and last the file that starts recovery (recovery.signal,
//!    or recovery.conf before 12).
//!
//! Interrupted before step 4, a server started on the directory finds a label but no signal
//! and refuses to start (it cannot find the checkpoint in the emptied pg_wal) instead of
//! silently starting from the copy's later checkpoint. Running restore-prep again finishes.

pub mod autoconf;
pub mod checks;
pub mod cleanup;
pub mod install;
pub mod outcome;
pub mod recovery;

use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::error::{Error, Result};
use crate::restore::recovery::{FileWrite, Target};

pub enum WalSource {
    ArchiveDir(PathBuf),
    Command(String),
}

pub struct Options {
    pub backup_id: String,
    pub sidecar_dirs: Vec<PathBuf>,
    pub pgdata: PathBuf,
    pub node: Option<String>,
    pub source: WalSource,
    pub target: Option<String>,
    pub target_action: String,
    pub tablespace_map: Vec<String>,
    pub archive_mode_off: bool,
    pub force: bool,
    /// The program restore_command runs for --archive-dir (normally our own executable).
    pub exe: PathBuf,
}

#[derive(Serialize, Debug)]
pub struct Plan {
    pub backup_id: String,
    pub node: String,
    pub pgdata: PathBuf,
    pub server_major: u32,
    pub target: String,
    pub target_action: String,
    pub restore_command: String,
    pub checks: Vec<String>,
    pub warnings: Vec<String>,
    /// Files to write, in order: (path, what, already in place).
    pub writes: Vec<PlannedWrite>,
    pub removes: Vec<PathBuf>,
    pub start_command: String,
    #[serde(skip)]
    files: Vec<FileWrite>,
    #[serde(skip)]
    owner: (u32, u32),
}

#[derive(Serialize, Debug)]
pub struct PlannedWrite {
    pub path: PathBuf,
    pub what: String,
    pub unchanged: bool,
}

fn start_command(pgdata: &Path, owner: u32) -> String {
    let d = recovery::shell_quote(&pgdata.to_string_lossy());
    let me = nix::unistd::Uid::effective().as_raw();
    if me != owner {
        if let Ok(Some(u)) = nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(owner)) {
            return format!("runuser -u {} -- pg_ctl -D {} start", u.name, d);
        }
    }
    format!("pg_ctl -D {} start", d)
}

/// Check everything and compute the changes. Touches nothing.
pub fn prepare(o: &Options) -> Result<Plan> {
    let pgdata = o.pgdata.clone();
    let c = checks::run(&checks::Request {
        pgdata: &pgdata,
        sidecar_dirs: &o.sidecar_dirs,
        backup_id: &o.backup_id,
        node: o.node.as_deref(),
        force: o.force,
    })?;
    let mut warnings = c.warnings.clone();
    let mut passed = c.passed.clone();
    passed.insert(
        2,
        format!(
            "global/pg_control is intact (CRC ok; cluster state when copied: {})",
            crate::pg::control::state_name(c.control.state)
        ),
    );
    if c.label_in_place {
        passed.push("backup_label is already in place (identical)".into());
    }

    let target = recovery::parse_target(o.target.as_deref(), &c.manifest)?;
    if let (Target::Name(name), Some(rp)) = (&target, &c.manifest.restore_point) {
        if *name == rp.name && rp.scope != "cluster" && !rp.lsns.contains_key(&c.node.name) {
            return Err(Error::usage(format!(
                "node {} has no copy of restore point {:?} (it was backed up from a standby, and restore points are written on primaries): choose another --target for it",
                c.node.name, rp.name
            )));
        }
    }
    if c.manifest.nodes.len() > 1 && matches!(target, Target::Latest) {
        warnings.push(format!(
            "target latest on a {}-node backup replays each node to the end of its own archive: the nodes end at different moments; use --target restore-point for a consistent cluster",
            c.manifest.nodes.len()
        ));
    }
    if c.major < 13 && !matches!(target, Target::Latest) {
        warnings.push(format!(
            "PostgreSQL {} promotes silently at the end of WAL when the target is never reached: after the start, pg-backup-hooks restore-check proves whether it was reached",
            c.major
        ));
    }
    let restore_command = match &o.source {
        WalSource::Command(cmd) => {
            recovery::check_restore_command(cmd)?;
            cmd.clone()
        }
        WalSource::ArchiveDir(dir) => {
            if !dir.is_dir() {
                return Err(Error::usage(format!(
                    "--archive-dir {} is not a directory: give the directory archive_command copies WAL into",
                    dir.display()
                )));
            }
            let dir = std::fs::canonicalize(dir).unwrap_or_else(|_| dir.clone());
            warn_unreachable(&o.exe, c.owner, &mut warnings);
            recovery::wal_restore_command(&o.exe, &dir, &c.node.system_identifier)
        }
    };
    if let WalSource::ArchiveDir(dir) = &o.source {
        if let Some(cmd) = recovery::effective_archive_command(&pgdata, o.archive_mode_off)? {
            let canon = std::fs::canonicalize(dir).unwrap_or_else(|_| dir.clone());
            let hits = [dir.to_string_lossy().trim_end_matches('/').to_string(), canon.to_string_lossy().to_string()];
            if hits.iter().any(|h| !h.is_empty() && cmd.contains(h.as_str())) {
                warnings.push(format!(
                    "the restored server's archive_command ({}) writes into {}, the archive restore_command reads from: once promoted it would archive into the production archive; use --archive-mode off for a test restore",
                    cmd,
                    dir.display()
                ));
            }
        }
    }

    let (map_text, map) = install::remap(&c.spcmap_text, c.major, &o.tablespace_map)?;
    let tablespaces = install::check_tablespaces(&map)?;
    if !map.is_empty() {
        passed.push(format!(
            "{} tablespace(s) in place: {}",
            map.len(),
            map.iter().map(|t| t.path.as_str()).collect::<Vec<_>>().join(", ")
        ));
    }

    let rec = recovery::plan(&pgdata, c.major, &restore_command, &target, &o.target_action, o.archive_mode_off)?;
    let mut removes = cleanup::find(&pgdata, c.stale_pid, &tablespaces, map.is_empty())?;
    removes.extend(rec.removes.iter().cloned());

    let mut files = Vec::new();
    if !map.is_empty() {
        files.push(FileWrite {
            path: pgdata.join("tablespace_map"),
            data: map_text.into_bytes(),
            what: if o.tablespace_map.is_empty() {
                "from the sidecar".into()
            } else {
                "from the sidecar, with --tablespace-map applied".into()
            },
            keep: None,
        });
    }
    files.push(install::label_write(&pgdata, &c.label_text));
    // Only once the label is in place: the server then reads the label's checkpoint, and
    // without the label it finds none (issue 7: backup_label deleted after restore-prep).
    let raise = c.node.from_standby.then_some((c.node.stop_lsn, c.node.timeline));
    if let Some(line) = standby_end_check(&c) {
        passed.push(line);
    }
    files.push(install::control_write(&pgdata, raise)?);
    files.extend(rec.writes);
    let writes = files
        .iter()
        .map(|w| PlannedWrite { path: w.path.clone(), what: w.what.clone(), unchanged: install::unchanged(w) })
        .collect();

    Ok(Plan {
        backup_id: o.backup_id.clone(),
        node: c.node.name.clone(),
        pgdata: pgdata.clone(),
        server_major: c.major,
        target: target.describe(),
        target_action: o.target_action.clone(),
        restore_command,
        checks: passed,
        warnings,
        writes,
        removes,
        start_command: start_command(&pgdata, c.owner.0),
        files,
        owner: c.owner,
    })
}

/// The check line for a standby copy: recovery of a `BACKUP FROM: standby` label ends the
/// backup at pg_control's minRecoveryPoint, which restore-prep raises to post's stop location
/// (issue 12), so the order the backup program copied the files in does not matter.
fn standby_end_check(c: &checks::Checked) -> Option<String> {
    if !c.node.from_standby {
        return None;
    }
    let copied = c.control.min_recovery_point;
    let stop = c.node.stop_lsn;
    Some(if copied < stop {
        format!(
            "backup from a standby: pg_control's minimum recovery point raised from {} (as copied) to the backup's stop location {} (timeline {}), so recovery replays to the true end of the backup whatever order the files were copied in",
            copied, stop, c.node.timeline
        )
    } else if copied == stop {
        format!("backup from a standby: pg_control's minimum recovery point is the backup's stop location {}", stop)
    } else {
        format!(
            "backup from a standby: pg_control's minimum recovery point {} is already past the backup's stop location {} (pg_control was copied after the stop): recovery replays at least to it",
            copied, stop
        )
    })
}

/// The server user runs restore_command: warn when it could not execute our binary.
fn warn_unreachable(exe: &Path, owner: (u32, u32), warnings: &mut Vec<String>) {
    use std::os::unix::fs::MetadataExt;
    let mut p = Some(exe);
    while let Some(cur) = p {
        if let Ok(m) = std::fs::metadata(cur) {
            let ok = m.uid() == owner.0 || (m.gid() == owner.1 && m.mode() & 0o010 != 0) || m.mode() & 0o001 != 0;
            if !ok {
                warnings.push(format!(
                    "the server runs restore_command as uid {}, which cannot reach {} ({} is mode {:o}): install pg-backup-hooks where that user can run it (e.g. /usr/local/bin)",
                    owner.0,
                    exe.display(),
                    cur.display(),
                    m.mode() & 0o7777
                ));
                return;
            }
        }
        p = cur.parent();
    }
}

/// Make the changes. Returns the paths written (files already in place are skipped).
pub fn apply(plan: &Plan) -> Result<Vec<PathBuf>> {
    cleanup::remove(&plan.removes)?;
    install::write_all(&plan.files, plan.owner)
}
