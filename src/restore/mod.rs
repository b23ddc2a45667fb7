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
pub mod files;
pub mod from_archive;
pub mod install;
pub mod links;
pub mod next_steps;
pub mod outcome;
pub mod privs;
pub mod record;
pub mod recovery;
pub mod wal_proof;

use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::error::{Error, Result};
use crate::restore::recovery::{ArchiveMode, FileWrite, Target, TargetAction};

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
    pub target_action: TargetAction,
    pub tablespace_map: Vec<String>,
    pub archive_mode: ArchiveMode,
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
    /// `--accept-unverified-files`: missing or older files are reported, not refused.
    pub accept_unverified_files: bool,
}

#[derive(Serialize, Debug)]
pub struct Plan {
    pub backup_id: String,
    pub node: String,
    pub pgdata: PathBuf,
    pub server_major: u32,
    pub target: String,
    pub target_action: TargetAction,
    pub restore_command: String,
    pub checks: Vec<String>,
    pub warnings: Vec<String>,
    /// Files to write, in order (see [`PlannedWrite`]).
    pub writes: Vec<PlannedWrite>,
    pub removes: Vec<PathBuf>,
    pub start_command: String,
    /// What the start command needs besides (see next_steps).
    pub start_notes: Vec<String>,
    /// The exact restore-check command line (None: no sidecar to check against).
    pub check_command: Option<String>,
    /// sha256 of the sidecar's manifest.json, as post printed it into the job log.
    pub manifest_sha256: String,
    /// How far the archive reaches from the backup (None when it cannot be listed).
    pub archive_reach: Option<wal_proof::ArchiveReach>,
    /// The copy's files against the inventory (see [`files`]).
    pub copy_proof: files::Proof,
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

/// One file restore-prep writes, as the report and `--json` show it.
#[derive(Serialize, Debug)]
pub struct PlannedWrite {
    pub path: PathBuf,
    /// Where its content comes from, or what it does.
    pub what: String,
    /// The file already holds exactly this (an earlier run wrote it): it is not written again.
    pub unchanged: bool,
}

/// Check everything and compute the changes. Touches nothing.
pub fn prepare(o: &Options) -> Result<Plan> {
    let pgdata = o.pgdata.clone();
    let rebuilt = if o.label_from_archive { Some(rebuild_label(o)?) } else { None };
    let c = run_checks(o, rebuilt.as_ref())?;
    let mut warnings = c.warnings.clone();
    let mut passed = check_lines(&c, rebuilt.as_ref());
    label_source_checks(o, rebuilt.as_ref(), &c, &mut passed, &mut warnings)?;
    let target = choose_target(o, &c, &mut warnings)?;
    let restore_command = restore_command(o, &c)?;
    let archive_reach = prove_wal(o, &c, &mut passed, &mut warnings)?;
    warn_archive_into_source(o, &mut warnings)?;
    let (map_text, map) = install::remap(&c.spcmap_text, c.major, &o.tablespace_map)?;
    let (tablespaces, wal) = check_links(o, &map, &mut warnings)?;
    // The copy's files against the inventory, its tablespaces where they will be.
    let mapped = map.iter().map(|t| (t.oid.clone(), PathBuf::from(&t.path))).collect();
    let copy_proof =
        files::prove(&o.pgdata, &c.sidecar_dir, &o.backup_id, &c.node, o.accept_unverified_files, &mapped)?;
    passed.push(copy_proof.line.clone());
    warnings.extend(copy_proof.accepted.clone());
    passed.extend(wal.note.iter().cloned());
    if !map.is_empty() {
        passed.push(format!(
            "{} tablespace(s) in place: {}",
            map.len(),
            map.iter().map(|t| t.path.as_str()).collect::<Vec<_>>().join(", ")
        ));
    }
    let rec = recovery::plan(&pgdata, c.major, &restore_command, &target, o.target_action, o.archive_mode)?;
    let mut removes = cleanup::find(&pgdata, &wal.dir, c.stale_pid, &tablespaces, map.is_empty())?;
    removes.extend(rec.removes.iter().cloned());
    passed.extend(standby_end_check(&c));
    let map_text = (!map.is_empty()).then_some(map_text);
    let record =
        record::Record { target: Some(target.spec()), ..record::Record::new(&o.backup_id, &c.node.name, &copy_proof) }
            .write(&pgdata)?;
    let files = files_to_write(o, &c, rebuilt.as_ref(), map_text, rec.writes, record)?;
    let roots: Vec<PathBuf> =
        [pgdata.clone(), wal.dir.clone()].into_iter().chain(tablespaces.iter().cloned()).collect();
    let next = next_steps::plan(&next_steps::Request {
        pgdata: &pgdata,
        major: c.major,
        owner: c.owner.0,
        backup_id: &o.backup_id,
        node: &c.node.name,
        sidecar_dirs: &o.sidecar_dirs,
        exe: &o.exe,
    });
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
        target_action: o.target_action,
        restore_command,
        checks: passed,
        warnings,
        writes,
        removes,
        start_command: next.start_command,
        start_notes: next.start_notes,
        check_command: next.check_command,
        manifest_sha256: c.manifest_sha256.clone(),
        archive_reach,
        copy_proof,
        files,
        wal,
        roots,
        owner: c.owner,
    })
}

/// The checks of the copy against the sidecar (the staged one when the label was rebuilt
/// from the archive).
fn run_checks(o: &Options, rebuilt: Option<&from_archive::Rebuilt>) -> Result<checks::Checked> {
    let sidecar_dirs = match rebuilt {
        Some(r) => vec![r.sidecar.path().to_path_buf()],
        None => o.sidecar_dirs.clone(),
    };
    checks::run(&checks::Request {
        pgdata: &o.pgdata,
        sidecar_dirs: &sidecar_dirs,
        backup_id: &o.backup_id,
        node: o.node.as_deref(),
        force: o.force,
    })
}

/// The report's check lines in the order the checks were made: the data directory, the
/// server, pg_control, where the label comes from (the sidecar, or the history file it was
/// rebuilt from, whose lines replace the staged sidecar's), the node, the copy, the label.
fn check_lines(c: &checks::Checked, rebuilt: Option<&from_archive::Rebuilt>) -> Vec<String> {
    let p = &c.passed;
    let mut lines = vec![p.data_directory.clone(), p.not_running.clone(), p.control.clone()];
    match rebuilt {
        Some(r) => lines.extend(r.checks.iter().cloned()),
        None => lines.push(p.sidecar.clone()),
    }
    lines.extend([p.major.clone(), p.system_identifier.clone(), p.belongs.clone()]);
    if c.label_in_place {
        lines.push("backup_label is already in place (identical)".into());
    }
    lines
}

/// The recovery target (--target, or the default), refused when this node has no copy of the
/// restore point; warnings where the target cannot be held to.
fn choose_target(o: &Options, c: &checks::Checked, warnings: &mut Vec<String>) -> Result<Target> {
    let target = recovery::parse_target(o.target.as_deref(), &c.manifest)?;
    if let (Target::Name(name), Some(rp)) = (&target, &c.manifest.restore_point) {
        if *name == rp.name
            && rp.scope != crate::protocol::RestorePointScope::Cluster
            && !rp.lsns.contains_key(&c.node.name)
        {
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
    Ok(target)
}

/// restore_command: --restore-command as given (checked), or our wal-restore on --archive-dir
/// (which the server user must be able to run and read).
fn restore_command(o: &Options, c: &checks::Checked) -> Result<String> {
    let dir = match &o.source {
        WalSource::Command(cmd) => {
            recovery::check_restore_command(cmd)?;
            return Ok(cmd.clone());
        }
        WalSource::ArchiveDir(dir) => dir,
    };
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
    require_reachable(&program.path, &dir, c.owner)?;
    Ok(recovery::wal_restore_command(&program, &dir, &c.node.system_identifier))
}

/// The archive holds the backup's WAL ([`wal_proof`]): its lines and how far it reaches.
fn prove_wal(
    o: &Options,
    c: &checks::Checked,
    passed: &mut Vec<String>,
    warnings: &mut Vec<String>,
) -> Result<Option<wal_proof::ArchiveReach>> {
    let archive = match &o.source {
        WalSource::ArchiveDir(d) => archive::Archive::Dir(d),
        WalSource::Command(cmd) => archive::Archive::Command { cmd, pgdata: &o.pgdata, owner: c.owner },
    };
    let proof = wal_proof::prove(&o.backup_id, &c.node, &archive)?;
    passed.extend(proof.lines);
    warnings.extend(proof.warnings);
    Ok(proof.reach)
}

/// Warn when the restored server, once promoted, would archive into the --archive-dir that
/// restore_command reads from.
fn warn_archive_into_source(o: &Options, warnings: &mut Vec<String>) -> Result<()> {
    let WalSource::ArchiveDir(dir) = &o.source else {
        return Ok(());
    };
    let Some(cmd) = recovery::effective_archive_command(&o.pgdata, o.archive_mode)? else {
        return Ok(());
    };
    let canon = std::fs::canonicalize(dir).unwrap_or_else(|_| dir.clone());
    let hits = [dir.to_string_lossy().trim_end_matches('/').to_string(), canon.to_string_lossy().to_string()];
    if hits.iter().any(|h| !h.is_empty() && cmd.contains(h.as_str())) {
        warnings.push(format!(
            "the restored server's archive_command ({}) writes into {}, the archive restore_command reads from: once promoted it would archive into the production archive; use --archive-mode off for a test restore",
            cmd,
            dir.display()
        ));
    }
    Ok(())
}

/// The files to write, in the order [`apply`] writes them: tablespace_map (`map_text`, when
/// there are tablespaces), backup_label, pg_control, then the recovery settings `recovery`
/// (the file that starts recovery last). None of them may be a link.
fn files_to_write(
    o: &Options,
    c: &checks::Checked,
    rebuilt: Option<&from_archive::Rebuilt>,
    map_text: Option<String>,
    recovery: Vec<FileWrite>,
    record: FileWrite,
) -> Result<Vec<FileWrite>> {
    let mut files = Vec::new();
    if let Some(text) = map_text {
        files.push(FileWrite {
            path: o.pgdata.join("tablespace_map"),
            data: text.into_bytes(),
            what: if o.tablespace_map.is_empty() {
                "from the sidecar".into()
            } else {
                "from the sidecar, with --tablespace-map applied".into()
            },
            keep: None,
        });
    }
    files.push(install::label_write(&o.pgdata, &c.label_text));
    // Only once the label is in place: the server then reads the label's checkpoint, and
    // without the label it finds none (issue 7: backup_label deleted after restore-prep).
    let raise = c.node.from_standby.then_some((c.node.stop_lsn, c.node.timeline));
    files.push(install::control_write(&o.pgdata, raise)?);
    files.extend(recovery);
    files.push(record);
    if let Some(r) = rebuilt {
        let from = format!("rebuilt from backup history file {}", r.history);
        files.iter_mut().for_each(|f| f.what = f.what.replace("from the sidecar", &from));
    }
    for f in &files {
        install::refuse_link(&f.path)?;
    }
    Ok(files)
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

/// Where the label came from: the archive's history file (its check lines are in
/// [`check_lines`]; here its warnings), or the sidecar, which must agree with a history file
/// in --archive-dir.
fn label_source_checks(
    o: &Options,
    rebuilt: Option<&from_archive::Rebuilt>,
    c: &checks::Checked,
    passed: &mut Vec<String>,
    warnings: &mut Vec<String>,
) -> Result<()> {
    if let Some(r) = rebuilt {
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

/// The server user runs restore_command: refuse when it could not run `program` or read
/// the archive directory `dir` (recovery would then be certain to fail).
fn require_reachable(program: &Path, dir: &Path, owner: (u32, u32)) -> Result<()> {
    use nix::unistd::AccessFlags;
    let checks = [
        (program, AccessFlags::X_OK, "run restore_command's program", "install pg-backup-hooks where that user can run it (e.g. /usr/bin or /usr/local/bin)"),
        (dir, AccessFlags::R_OK | AccessFlags::X_OK, "read the --archive-dir", "give that user read access to it (e.g. chgrp -R that user's group and chmod g+rx), or copy the archive where it can read it"),
    ];
    for (path, need, what, fix) in checks {
        if let Some((stop, mode)) = privs::blocked_for(owner, path, need)? {
            let at = if stop == path {
                format!("it is mode {:o}", mode)
            } else {
                format!("{} is mode {:o}", stop.display(), mode)
            };
            return Err(err!(
                "the server runs restore_command as {}, who cannot {} {} ({}): {}",
                privs::user_name(owner.0),
                what,
                path.display(),
                at,
                fix
            ));
        }
    }
    Ok(())
}

/// Make the changes. Returns the paths written (files already in place are skipped).
/// Everything inside the data directory, the WAL directory and the tablespaces is done with
/// the data directory owner's rights ([`privs::as_owner`]); only a missing `--wal-dir` is
/// created first as the caller (its parent may be root's) and given to the owner.
pub fn apply(plan: &Plan) -> Result<Vec<PathBuf>> {
    if let Some(new) = &plan.wal.repoint {
        links::create_wal_dir(new, plan.owner)?;
    }
    if !plan.copy_proof.stale.is_empty() {
        files::create_stale_root(&plan.pgdata, plan.owner)?;
    }
    privs::as_owner(plan.owner, || {
        files::move_stale(&plan.pgdata, &plan.copy_proof)?;
        if let Some(new) = &plan.wal.repoint {
            links::repoint(&plan.pgdata, new)?;
        }
        cleanup::remove(&plan.roots, &plan.removes)?;
        install::write_all(&plan.files, plan.owner)
    })
}

#[cfg(test)]
mod tests {
    use std::fs;

    use super::checks::fixture::{Copy, ID};
    use super::*;
    use crate::sidecar;

    fn options(copy: &Copy) -> Options {
        let arch = copy.sidecar.parent().unwrap().join("archive");
        wal_proof::fixture::archive(&arch, checks::fixture::SYSID, &[9]);
        Options {
            backup_id: ID.into(),
            sidecar_dirs: vec![copy.sidecar.clone()],
            pgdata: copy.pgdata.clone(),
            node: None,
            source: WalSource::Command(format!("cp {}/%f %p", arch.display())),
            target: None,
            target_action: TargetAction::Promote,
            tablespace_map: Vec::new(),
            archive_mode: ArchiveMode::Keep,
            force: false,
            wal_dir: None,
            reuse_original_dirs: false,
            exe: PathBuf::from("/usr/bin/pg-backup-hooks"),
            label_from_archive: false,
            backup_history_file: None,
            accept_unverified_files: false,
        }
    }

    /// Every file below `dir` with its content (links as "-> target").
    fn snapshot(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
        let mut out = Vec::new();
        for e in fs::read_dir(dir).unwrap() {
            let p = e.unwrap().path();
            let m = fs::symlink_metadata(&p).unwrap();
            if m.file_type().is_symlink() {
                out.push((p.clone(), format!("-> {}", fs::read_link(&p).unwrap().display()).into_bytes()));
            } else if m.is_dir() {
                out.extend(snapshot(&p));
            } else {
                out.push((p.clone(), fs::read(&p).unwrap()));
            }
        }
        out.sort();
        out
    }

    #[test]
    fn prepare_touches_nothing_and_reports_the_checks_in_the_order_they_are_made() {
        let copy = Copy::new(&["default"]);
        let before = snapshot(copy.pgdata());
        let plan = prepare(&options(&copy)).unwrap();
        assert_eq!(snapshot(copy.pgdata()), before);
        let firsts: Vec<&str> = plan.checks.iter().map(|c| c.split(' ').next().unwrap()).collect();
        let data = copy.pgdata.display().to_string();
        let want = [
            data.as_str(),
            "no",
            "global/pg_control",
            "sidecar",
            "major",
            "system",
            "the",
            "restore_command",
            "the",
            "files",
        ];
        assert_eq!(firsts, want);
        assert!(plan.checks[9].starts_with("files not verified: "), "{}", plan.checks[9]);
        let written: Vec<PathBuf> =
            plan.writes.iter().map(|w| w.path.strip_prefix(copy.pgdata()).unwrap().into()).collect();
        let names = [
            "backup_label",
            "global/pg_control",
            "postgresql.auto.conf",
            "recovery.signal",
            "pg-backup-hooks-restore.json",
        ];
        assert_eq!(written, names.iter().map(PathBuf::from).collect::<Vec<_>>());
        assert_eq!(plan.target_action, TargetAction::Promote);
    }

    #[test]
    fn a_label_already_in_place_adds_its_line_after_the_checks() {
        let copy = Copy::new(&["default"]);
        fs::write(copy.pgdata.join("backup_label"), checks::fixture::label(ID)).unwrap();
        let plan = prepare(&options(&copy)).unwrap();
        assert_eq!(plan.checks[7], "backup_label is already in place (identical)");
        assert!(plan.writes[0].unchanged);
    }

    #[test]
    fn the_rebuilt_labels_lines_take_the_place_of_the_sidecars() {
        let copy = Copy::new(&["default"]);
        let dirs = [copy.sidecar.clone()];
        let request =
            checks::Request { pgdata: copy.pgdata(), sidecar_dirs: &dirs, backup_id: ID, node: None, force: false };
        let c = checks::run(&request).unwrap();
        let rebuilt = from_archive::Rebuilt {
            sidecar: archive::TempDir::new(None).unwrap(),
            history: "h.backup".into(),
            checks: vec!["history file found".into(), "its start segment fits".into()],
            warnings: Vec::new(),
        };
        let lines = check_lines(&c, Some(&rebuilt));
        assert_eq!(lines.len(), 8);
        assert_eq!(lines[2], c.passed.control);
        assert_eq!(lines[3..5], ["history file found", "its start segment fits"]);
        assert_eq!(lines[5], c.passed.major);
        assert!(!lines.contains(&c.passed.sidecar));
    }

    #[test]
    fn a_planted_link_where_a_file_goes_is_refused_and_nothing_is_written_through_it() {
        let copy = Copy::new(&["default"]);
        let outside = copy.sidecar.parent().unwrap().join("outside");
        fs::write(&outside, "precious").unwrap();
        let signal = copy.pgdata.join("recovery.signal");
        std::os::unix::fs::symlink(&outside, &signal).unwrap();
        let msg = prepare(&options(&copy)).unwrap_err().msg;
        assert!(
            msg.starts_with(&format!("{} is a symbolic link to {}:", signal.display(), outside.display())),
            "{}",
            msg
        );
        assert_eq!(fs::read_to_string(&outside).unwrap(), "precious");
        assert!(!copy.pgdata.join("backup_label").exists());
    }

    #[test]
    fn a_restore_point_this_node_has_no_copy_of_is_refused() {
        let copy = Copy::new(&["default"]);
        let path = sidecar::backup_dir(&copy.sidecar, ID).join(sidecar::MANIFEST);
        let text = fs::read_to_string(&path).unwrap().replace(
            "\"restore_point\": null",
            "\"restore_point\": {\"name\": \"rp\", \"scope\": \"per-node\", \"lsns\": {\"other\": \"0/9000200\"}}",
        );
        fs::write(&path, text).unwrap();
        // The manifest's checksum is not in the manifest: the edit keeps the sidecar sound.
        let mut o = options(&copy);
        o.target = Some("restore-point".into());
        let e = prepare(&o).unwrap_err();
        assert_eq!(e.code, crate::error::exit::USAGE);
        assert!(e.msg.starts_with("node default has no copy of restore point \"rp\""), "{}", e.msg);
    }
}
