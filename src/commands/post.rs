//! `post`: stop, wait for archiving, store the sidecar in every directory.

use crate::cli::PostArgs;
use crate::error::{exit, Error, Result};
use crate::helper::client;
use crate::ids;
use crate::protocol::{BackupStatus, Reply, Request};
use crate::rundir::{Marker, RunDir};
use crate::sidecar::{self, Manifest, NodeEntry, NodeFiles, Status};

pub fn run(a: PostArgs) -> Result<i32> {
    ids::validate(&a.backup_id)?;
    let id = &a.backup_id;
    let run = RunDir::open(a.run.run_dir.clone(), false)?;
    let req = Request::Stop { archive_timeout_secs: a.archive_timeout };
    let reply = client::request(&run, id, &req, &mut |m| eprintln!("pg-backup-hooks: {}", m))?;
    let Some(reply) = reply else {
        return already_or_gone(&run, id);
    };
    match reply {
        Reply::Stopped { backup, archived, message } => store(&run, id, &backup, archived, message),
        Reply::Error { message, .. } => Err(err!("backup {} failed: {}", id, message)),
        other => Err(err!("unexpected answer from the helper: {:?}", other)),
    }
}

fn already_or_gone(run: &RunDir, id: &str) -> Result<i32> {
    if let Some(Marker::Done(text)) = run.marker(id) {
        println!("backup {} is already stored: {}", id, text.trim());
        return Ok(exit::OK);
    }
    let e = client::no_helper_error(run, id);
    if run.path(id, "lock").exists() && run.marker(id).is_none() {
        // The helper died: remember why, and clean what it left.
        let _ = run.set_marker(
            id,
            &Marker::Failed(
                "the helper was gone at post time (killed, crashed or machine restarted): this copy cannot be restored"
                    .into(),
            ),
        );
        run.clean_stale(id);
        if !run.helper_alive(id) {
            let _ = std::fs::remove_file(run.path(id, "lock"));
        }
    }
    Err(e)
}

pub fn manifest(backup: &BackupStatus, status: Status) -> Result<(Manifest, Vec<NodeFiles>)> {
    let mut nodes = Vec::new();
    let mut files = Vec::new();
    let mut stopped_at = String::new();
    for n in &backup.nodes {
        let (Some(start), Some(stop)) = (n.start_lsn, n.stop.as_ref()) else {
            return Err(err!("node {} has no stop result: {}", n.name, n.health));
        };
        stopped_at = stopped_at.max(stop.stopped_at.clone());
        nodes.push(NodeEntry::new(n, start, stop));
        files.push(NodeFiles {
            name: n.name.clone(),
            labelfile: stop.labelfile.clone(),
            spcmapfile: stop.spcmapfile.clone(),
        });
    }
    let m = Manifest {
        format_version: sidecar::FORMAT_VERSION,
        tool_version: env!("CARGO_PKG_VERSION").to_string(),
        backup_id: backup.backup_id.clone(),
        status,
        started_at: backup.started_at.clone(),
        stopped_at,
        written_at: chrono::Utc::now().to_rfc3339(),
        restore_point: backup.restore_point.as_ref().map(|rp| sidecar::RestorePoint {
            name: rp.name.clone(),
            scope: rp.scope,
            lsns: backup
                .nodes
                .iter()
                .filter_map(|n| n.stop.as_ref().and_then(|s| s.restore_point_lsn).map(|l| (n.name.clone(), l)))
                .collect(),
        }),
        restore_point_note: backup.restore_point_note.clone(),
        nodes,
    };
    Ok((m, files))
}

fn store(run: &RunDir, id: &str, backup: &BackupStatus, archived: bool, message: Option<String>) -> Result<i32> {
    let status = if archived { Status::Complete } else { Status::ArchivePending };
    let (m, files) = manifest(backup, status)?;
    let mut errors = Vec::new();
    for dir in &backup.sidecar_dirs {
        match sidecar::write(dir, &m, &files) {
            Ok(true) => println!("stored {} in {}", status_word(status), sidecar::backup_dir(dir, id).display()),
            Ok(false) => {
                println!("backup {} is already stored complete in {}", id, sidecar::backup_dir(dir, id).display())
            }
            Err(e) => errors.push(format!("{}: {}", dir.display(), e.msg)),
        }
        if let Ok(h) = sidecar::manifest_sha256(&sidecar::backup_dir(dir, id).join(sidecar::MANIFEST)) {
            println!("manifest sha256: {} ({})", h, sidecar::backup_dir(dir, id).display());
        }
    }
    if !errors.is_empty() {
        // Keep the labels in the job log: they are what makes the copy restorable.
        for f in &files {
            eprintln!("----- node {} backup_label (backup {}) -----\n{}", f.name, id, f.labelfile);
            if !f.spcmapfile.is_empty() {
                eprintln!("----- node {} tablespace_map -----\n{}", f.name, f.spcmapfile);
            }
        }
        return Err(err!(
            "cannot write the sidecar ({}); the helper still holds the labels: fix the directory and run post again",
            errors.join("; ")
        ));
    }
    for n in &m.nodes {
        println!(
            "node {}: backup stopped at {} (start {}, WAL {}..{})",
            n.name, n.stop_lsn, n.start_lsn, n.start_wal_file, n.stop_wal_file
        );
    }
    if let Some(rp) = &m.restore_point {
        println!("restore point {:?} ({}) on {} node(s)", rp.name, rp.scope, rp.lsns.len());
    }
    if let Some(note) = &m.restore_point_note {
        eprintln!("pg-backup-hooks: warning: {}", note);
    }
    if !archived {
        return Err(Error::with_code(
            exit::NOT_RESTORABLE_YET,
            format!(
                "{}; the labels are stored but the backup is NOT restorable yet: fix archiving, then run post again",
                message.unwrap_or_else(|| "WAL archiving has not finished".into())
            ),
        ));
    }
    let dirs: Vec<String> =
        backup.sidecar_dirs.iter().map(|d| sidecar::backup_dir(d, id).display().to_string()).collect();
    run.set_marker(id, &Marker::Done(format!("stored in {}", dirs.join(", "))))?;
    match client::request(run, id, &Request::Stored, &mut |_| {}) {
        Ok(Some(Reply::Ok { .. })) | Ok(None) => {}
        Ok(Some(other)) => log::warn!("helper did not release: {:?}", other),
        Err(e) => log::warn!("{}", e),
    }
    println!("backup {} is complete and restorable", id);
    Ok(exit::OK)
}

fn status_word(s: Status) -> &'static str {
    match s {
        Status::Complete => "complete backup",
        Status::ArchivePending => "labels (archive pending, not restorable yet)",
    }
}
