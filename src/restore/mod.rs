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

pub mod archive;
pub mod autoconf;
pub mod checks;
pub mod cleanup;
pub mod from_archive;
pub mod install;
pub mod links;
pub mod outcome;
pub mod privs;
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
    /// `--wal-dir`: re-point a pg_wal link to this directory (see links).
    pub wal_dir: Option<PathBuf>,
    /// `--reuse-original-dirs`: the original server is gone; its WAL directory and
    /// tablespaces (where the copy's links point) may be used, unless a server runs on them.
    pub reuse_original_dirs: bool,
    /// The program restore_command runs for --archive-dir (normally our own executable).
    pub exe: PathBuf,
    /// Rebuild the label from the backup history file in the archive (the sidecar is lost).
    pub label_from_archive: bool,
    /// With label_from_archive: the history file's name (needed with some restore_commands).
    pub backup_history_file: Option<String>,
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
    /// sha256 of the sidecar's manifest.json, as post printed it into the job log.
    pub manifest_sha256: String,
    #[serde(skip)]
    files: Vec<FileWrite>,
    #[serde(skip)]
    wal: links::WalPlan,
    /// The directories `removes` lie below (data directory, WAL directory, tablespaces).
    #[serde(skip)]
    roots: Vec<PathBuf>,
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
    let rebuilt = if o.label_from_archive { Some(rebuild_label(o)?) } else { None };
    let sidecar_dirs = match &rebuilt {
        Some(r) => vec![r.sidecar.path().to_path_buf()],
        None => o.sidecar_dirs.clone(),
    };
    let c = checks::run(&checks::Request {
        pgdata: &pgdata,
        sidecar_dirs: &sidecar_dirs,
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
    label_source_checks(o, rebuilt.as_ref(), &c, &mut passed, &mut warnings)?;

    let target = recovery::parse_target(o.target.as_deref(), &c.manifest)?;
    if let (Target::Name(name), Some(rp)) = (&target, &c.manifest.restore_point) {
        if *name == rp.name && rp.scope != crate::protocol::RestorePointScope::Cluster && !rp.lsns.contains_key(&c.node.name) {
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
            if dir.to_string_lossy().contains(|c: char| c.is_control()) {
                return Err(Error::usage(format!(
                    "--archive-dir {:?} contains a line break or control character: it would go into restore_command; rename the directory",
                    dir
                )));
            }
            if !dir.is_dir() {
                return Err(Error::usage(format!(
                    "--archive-dir {} is not a directory: give the directory archive_command copies WAL into",
                    dir.display()
                )));
            }
            let dir = std::fs::canonicalize(dir).unwrap_or_else(|_| dir.clone());
            let program = recovery::wal_restore_program(&o.exe);
            warn_unreachable(&program.path, c.owner, &mut warnings);
            recovery::wal_restore_command(&program, &dir, &c.node.system_identifier)
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
    let (tablespaces, wal) = check_links(o, &map, &mut warnings)?;
    passed.extend(wal.note.iter().cloned());
    if !map.is_empty() {
        passed.push(format!(
            "{} tablespace(s) in place: {}",
            map.len(),
            map.iter().map(|t| t.path.as_str()).collect::<Vec<_>>().join(", ")
        ));
    }

    let rec = recovery::plan(&pgdata, c.major, &restore_command, &target, &o.target_action, o.archive_mode_off)?;
    let mut removes = cleanup::find(&pgdata, &wal.dir, c.stale_pid, &tablespaces, map.is_empty())?;
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
    if let Some(r) = &rebuilt {
        let from = format!("rebuilt from backup history file {}", r.history);
        files.iter_mut().for_each(|f| f.what = f.what.replace("from the sidecar", &from));
    }
    for f in &files {
        install::refuse_link(&f.path)?;
    }
    let roots: Vec<PathBuf> =
        [pgdata.clone(), wal.dir.clone()].into_iter().chain(tablespaces.iter().cloned()).collect();
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
        manifest_sha256: c.manifest_sha256.clone(),
        files,
        wal,
        roots,
        owner: c.owner,
    })
}

/// Where the copy's links lead (see [`links`]): the tablespaces' final directories, checked,
/// and what happens to pg_wal. Refuses a link out of the data directory that was not
/// re-pointed or explicitly reused, and any directory a running server uses.
fn check_links(
    o: &Options,
    map: &[install::Tablespace],
    warnings: &mut Vec<String>,
) -> Result<(Vec<PathBuf>, links::WalPlan)> {
    install::validate_map(map, &o.pgdata)?;
    let tablespaces = install::check_tablespaces(map)?;
    let live = links::LiveDirs::scan();
    warnings.extend(links::check_tablespaces(&o.pgdata, map, o.reuse_original_dirs, &live)?);
    let wal = links::plan_wal(&o.pgdata, o.wal_dir.as_deref(), o.reuse_original_dirs, &live)?;
    Ok((tablespaces, wal))
}

/// Where the label came from: the archive's history file (whose checks replace the staged
/// sidecar's line), or the sidecar, which must agree with a history file in --archive-dir.
fn label_source_checks(
    o: &Options,
    rebuilt: Option<&from_archive::Rebuilt>,
    c: &checks::Checked,
    passed: &mut Vec<String>,
    warnings: &mut Vec<String>,
) -> Result<()> {
    if let Some(r) = rebuilt {
        let at = passed.iter().position(|p| p.starts_with("sidecar ")).unwrap_or(passed.len());
        passed.splice(at..(at + 1).min(passed.len()), r.checks.iter().cloned());
        warnings.extend(r.warnings.iter().cloned());
    } else if let WalSource::ArchiveDir(dir) = &o.source {
        passed.extend(from_archive::check_sidecar_against_dir(dir, &c.node, &c.label_text)?);
    }
    Ok(())
}

/// --label-from-archive: the label from the archive's history file, staged as a sidecar.
fn rebuild_label(o: &Options) -> Result<from_archive::Rebuilt> {
    let (archive_dir, restore_command) = match &o.source {
        WalSource::ArchiveDir(d) => (Some(d.as_path()), None),
        WalSource::Command(c) => (None, Some(c.as_str())),
    };
    from_archive::rebuild(&from_archive::Request {
        backup_id: &o.backup_id,
        pgdata: &o.pgdata,
        node: o.node.as_deref(),
        sidecar_dirs: &o.sidecar_dirs,
        archive_dir,
        restore_command,
        history_file: o.backup_history_file.as_deref(),
        tablespace_map: &o.tablespace_map,
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
/// Everything inside the data directory, the WAL directory and the tablespaces is done with
/// the data directory owner's rights ([`privs::as_owner`]); only a missing `--wal-dir` is
/// created first as the caller (its parent may be root's) and given to the owner.
pub fn apply(plan: &Plan) -> Result<Vec<PathBuf>> {
    if let Some(new) = &plan.wal.repoint {
        links::create_wal_dir(new, plan.owner)?;
    }
    privs::as_owner(plan.owner, || {
        if let Some(new) = &plan.wal.repoint {
            links::repoint(&plan.pgdata, new)?;
        }
        cleanup::remove(&plan.roots, &plan.removes)?;
        install::write_all(&plan.files, plan.owner)
    })
}
