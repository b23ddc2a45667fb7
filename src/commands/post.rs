//! `post`: stop, wait for archiving, store the sidecar in every directory.

use std::path::PathBuf;

use crate::cli::PostArgs;
use crate::error::{exit, Error, Result};
use crate::helper::client::{self, NoHelper};
use crate::ids;
use crate::protocol::NodeStatus;
use crate::protocol::{BackupStatus, Reply, Request};
use crate::rundir::{Marker, RunDir};
use crate::sidecar::{self, ExtraFile, Manifest, NodeEntry, NodeFiles, Status};

pub fn run(a: PostArgs) -> Result<i32> {
    ids::validate(&a.backup_id)?;
    let id = &a.backup_id;
    let run = RunDir::open(a.run.run_dir.clone(), false)?;
    if let Some(what) = patroni_changed(&run, id) {
        let _ = client::request(&run, id, &Request::Abort, &mut |m| eprintln!("pg-backup-hooks: {}", m));
        let _ = std::fs::remove_file(crate::commands::pre::patroni_seen_path(&run, id));
        return Err(err!(
            "backup {} failed: Patroni: {}. The backup was aborted (its sessions closed) and is NOT restorable; the next backup discovers the new topology",
            id, what
        ));
    }
    let req = Request::Stop { archive_timeout_secs: a.archive_timeout };
    let reply = client::request(&run, id, &req, &mut |m| eprintln!("pg-backup-hooks: {}", m))?;
    let Some(reply) = reply else {
        return already_or_gone(&run, id);
    };
    match reply {
        Reply::Stopped { backup, archived, message } => {
            let stored = store(&run, id, &backup, archived, message);
            if stored.is_ok() {
                let _ = std::fs::remove_file(crate::commands::pre::patroni_seen_path(&run, id));
            }
            stored
        }
        Reply::Error { message, .. } => Err(err!("backup {} failed: {}", id, message)),
        other => Err(err!("unexpected answer from the helper: {:?}", other)),
    }
}

/// `pre --discover patroni`: what changed in the Patroni cluster since pre that makes the
/// backup unusable (a switchover or failover), if anything. When no REST API answers, post
/// goes on (with a warning) and relies on PostgreSQL's own checks.
fn patroni_changed(run: &RunDir, id: &str) -> Option<String> {
    let text = std::fs::read(crate::commands::pre::patroni_seen_path(run, id)).ok()?;
    let seen: crate::pg::patroni::Seen = serde_json::from_slice(&text).ok()?;
    match crate::pg::patroni::cluster(&seen.urls) {
        Ok((_, now)) => seen.changed(&now),
        Err(e) => {
            eprintln!("pg-backup-hooks: warning: cannot check the Patroni cluster for a switchover: {}", e.msg);
            None
        }
    }
}

/// No helper answers: the backup was stored already (success), or say what became of it;
/// a helper that died leaves a failed marker and its stale files are cleaned.
fn already_or_gone(run: &RunDir, id: &str) -> Result<i32> {
    if let Some(Marker::Done(text)) = run.marker(id) {
        println!("backup {} is already stored: {}", id, text.trim());
        return Ok(exit::OK);
    }
    let e = match client::no_helper(run, id) {
        NoHelper::Stored(message) => {
            println!("{}", message);
            return Ok(exit::OK);
        }
        NoHelper::Error(e) => e,
    };
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

/// Read each node's two inventories from the run dir (checked against the sha256 the helper
/// reported) into the files to store, and note in the manifest where they came from, or why
/// a node has none. A node without them is said once, plainly: its copy cannot be verified.
fn attach_inventories(run: &RunDir, backup: &BackupStatus, m: &mut Manifest) -> Vec<ExtraFile> {
    let mut extra = Vec::new();
    for (n, entry) in backup.nodes.iter().zip(m.nodes.iter_mut()) {
        match read_inventories(run, &backup.backup_id, n) {
            Ok((source, files)) => {
                for (name, data) in files {
                    entry.files.insert(name.to_string(), sidecar::file_entry(&data));
                    extra.push(ExtraFile { node: n.name.clone(), name, data });
                }
                entry.inventory_source = Some(source);
                println!("node {}: {}", n.name, crate::protocol::describe_inventory(n.inventory.as_ref()));
            }
            Err(why) => {
                eprintln!("pg-backup-hooks: warning: node {}: {}", n.name, why);
                entry.inventory_note = Some(why);
            }
        }
    }
    extra
}

/// A node's files for the sidecar: (name in its directory, content).
type StoredFiles = Vec<(&'static str, Vec<u8>)>;

/// One node's start and stop inventories as the helper wrote them; Err: why there are none.
fn read_inventories(
    run: &RunDir,
    id: &str,
    n: &NodeStatus,
) -> std::result::Result<(crate::inventory::Source, StoredFiles), String> {
    let Some(inv) = n.inventory.as_ref() else {
        return Err("no inventory: the helper that took this backup is of an older build".into());
    };
    let (Some(source), Some(start), Some(stop)) = (inv.source, &inv.start, &inv.stop) else {
        return Err(inv.note.clone().unwrap_or_else(|| "no inventory was taken".into()));
    };
    let mut out = Vec::new();
    for (name, which, want) in
        [(sidecar::INVENTORY_START_FILE, "start", start), (sidecar::INVENTORY_STOP_FILE, "stop", stop)]
    {
        let p = run.inventory_file(id, &n.name, which);
        let data = std::fs::read(&p).map_err(|e| {
            format!("cannot read the {} inventory {} ({}): this copy's files cannot be verified", which, p.display(), e)
        })?;
        if sidecar::sha256_hex(&data) != want.sha256 {
            return Err(format!(
                "the {} inventory {} is not the one the helper wrote (changed since): this copy's files cannot be verified",
                which,
                p.display()
            ));
        }
        out.push((name, data));
    }
    Ok((source, out))
}

/// Write the sidecar into every directory; once the WAL is archived too, mark the backup
/// stored and release the helper.
fn store(run: &RunDir, id: &str, backup: &BackupStatus, archived: bool, message: Option<String>) -> Result<i32> {
    let status = if archived { Status::Complete } else { Status::ArchivePending };
    let (mut m, files) = manifest(backup, status)?;
    let extra = attach_inventories(run, backup, &mut m);
    write_everywhere(id, &backup.sidecar_dirs, &m, &files, &extra)?;
    print_summary(&m);
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
    run.remove_inventory_dir(id);
    release_helper(run, id);
    println!("backup {} is complete and restorable", id);
    crate::commands::expire::after_post(&backup.sidecar_dirs);
    Ok(exit::OK)
}

/// Write the sidecar into each directory, printing where and the manifest's sha256. If any
/// fails, the labels go to stderr (the job log keeps them) and post fails.
fn write_everywhere(id: &str, dirs: &[PathBuf], m: &Manifest, files: &[NodeFiles], extra: &[ExtraFile]) -> Result<()> {
    let mut errors = Vec::new();
    for dir in dirs {
        match sidecar::write_with(dir, m, files, extra) {
            Ok(true) => println!("stored {} in {}", status_word(m.status), sidecar::backup_dir(dir, id).display()),
            Ok(false) => {
                println!("backup {} is already stored complete in {}", id, sidecar::backup_dir(dir, id).display())
            }
            Err(e) => errors.push(format!("{}: {}", dir.display(), e.msg)),
        }
        if let Ok(h) = sidecar::manifest_sha256(&sidecar::backup_dir(dir, id).join(sidecar::MANIFEST)) {
            println!("manifest sha256: {} ({})", h, sidecar::backup_dir(dir, id).display());
        }
    }
    if errors.is_empty() {
        return Ok(());
    }
    // Keep the labels in the job log: they are what makes the copy restorable.
    for f in files {
        eprintln!("----- node {} backup_label (backup {}) -----\n{}", f.name, id, f.labelfile);
        if !f.spcmapfile.is_empty() {
            eprintln!("----- node {} tablespace_map -----\n{}", f.name, f.spcmapfile);
        }
    }
    Err(err!(
        "cannot write the sidecar ({}); the helper still holds the labels: fix the directory and run post again",
        errors.join("; ")
    ))
}

/// Each node's stop, the restore point, and why there is none.
fn print_summary(m: &Manifest) {
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
}

/// Tell the helper the sidecar is stored so it can exit; a helper that does not listen
/// is only logged (the done marker already records the backup as stored).
fn release_helper(run: &RunDir, id: &str) {
    match client::request(run, id, &Request::Stored, &mut |_| {}) {
        Ok(Some(Reply::Ok { .. })) | Ok(None) => {}
        Ok(Some(other)) => log::warn!("helper did not release: {:?}", other),
        Err(e) => log::warn!("{}", e),
    }
}

fn status_word(s: Status) -> &'static str {
    match s {
        Status::Complete => "complete backup",
        Status::ArchivePending => "labels (archive pending, not restorable yet)",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::RestorePointScope;

    /// manifest.json as post wrote it before #17 (a real run, 2026-11-23, PostgreSQL 15).
    const REAL_MANIFEST: &str = r#"{
  "format_version": 1,
  "tool_version": "0.1.0",
  "backup_id": "rt",
  "status": "complete",
  "started_at": "2026-11-23T17:06:09.989172809+00:00",
  "stopped_at": "2026-11-23T17:06:10.695009961+00:00",
  "written_at": "2026-11-23T17:06:10.834685182+00:00",
  "nodes": [
    {
      "name": "default",
      "conninfo": "dbname=postgres host=127.0.0.1 port=40375 user=postgres",
      "server_version_num": 150018,
      "server_version": "15.18 (Debian 15.18-0+deb12u1)",
      "system_identifier": "7711414331563238757",
      "timeline": 1,
      "start_lsn": "0/20014C8",
      "stop_lsn": "0/2006C48",
      "start_wal_file": "000000010000000000000002",
      "stop_wal_file": "000000010000000000000002",
      "backup_history_file": "000000010000000000000002.000014C8.backup",
      "from_standby": false,
      "data_directory": "/tmp/pgbhkZ2N9u/pg/data",
      "wal_segment_size": 16777216,
      "archived": true,
      "archive_note": null,
      "files": {
        "backup_label": {
          "sha256": "a6136f93ea1b697ffa64f412599d5637a35560976cf0f0c626be82d3f98508e7",
          "size": 202
        },
        "tablespace_map": {
          "sha256": "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
          "size": 0
        }
      }
    }
  ],
  "restore_point": {
    "name": "rt",
    "scope": "node",
    "lsns": {
      "default": "0/3000770"
    }
  },
  "restore_point_note": null
}"#;

    #[test]
    fn a_manifest_written_before_17_reads_and_writes_back_byte_for_byte() {
        let m: Manifest = serde_json::from_str(REAL_MANIFEST).unwrap();
        assert_eq!(m.restore_point.as_ref().unwrap().scope, RestorePointScope::Node);
        // sidecar::write encodes with to_vec_pretty.
        assert_eq!(String::from_utf8(serde_json::to_vec_pretty(&m).unwrap()).unwrap(), REAL_MANIFEST);
        for word in ["cluster", "per-node"] {
            let other = REAL_MANIFEST.replace("\"scope\": \"node\"", &format!("\"scope\": \"{}\"", word));
            let m: Manifest = serde_json::from_str(&other).unwrap();
            assert_eq!(serde_json::to_string_pretty(&m).unwrap(), other);
        }
    }

    /// The helper's status for the run above, as it crossed the socket.
    fn backup_status(label: &str) -> BackupStatus {
        let node = serde_json::json!({
            "name": "default", "conninfo": "dbname=postgres host=127.0.0.1 port=40375 user=postgres",
            "server_version_num": 150018, "server_version": "15.18 (Debian 15.18-0+deb12u1)",
            "system_identifier": "7711414331563238757", "timeline": 1, "from_standby": false,
            "data_directory": "/tmp/pgbhkZ2N9u/pg/data", "wal_segment_size": 16777216,
            "start_lsn": "0/20014C8", "health": "ok", "failed": false,
            "stop": {
                "stop_lsn": "0/2006C48", "stopped_at": "2026-11-23T17:06:10.695009961+00:00", "timeline": 1,
                "labelfile": label, "spcmapfile": "",
                "start_wal_file": "000000010000000000000002", "stop_wal_file": "000000010000000000000002",
                "backup_history_file": "000000010000000000000002.000014C8.backup",
                "archived": true, "archive_note": null, "archiver": null,
                "restore_point_lsn": "0/3000770", "restore_point_wal_file": "000000010000000000000003"
            }
        });
        serde_json::from_value(serde_json::json!({
            "backup_id": "rt", "helper_pid": 1, "started_at": "2026-11-23T17:06:09.989172809+00:00",
            "phase": "stopped", "sidecar_dirs": ["/s"], "nodes": [node],
            "restore_point": {"name": "rt", "scope": "node"}, "restore_point_note": null
        }))
        .unwrap()
    }

    #[test]
    fn the_manifest_post_builds_is_the_one_it_built_before() {
        let label = "START WAL LOCATION: 0/20014C8 (file 000000010000000000000002)\n";
        let (m, files) = manifest(&backup_status(label), Status::Complete).unwrap();
        let mut want: serde_json::Value = serde_json::from_str(REAL_MANIFEST).unwrap();
        let mut got = serde_json::to_value(&m).unwrap();
        for v in [&mut want, &mut got] {
            v["written_at"] = serde_json::Value::Null;
            v["tool_version"] = serde_json::Value::Null;
        }
        // The label here is not the real one: its checksum is the only difference.
        want["nodes"][0]["files"]["backup_label"] =
            serde_json::to_value(sidecar::file_entry(label.as_bytes())).unwrap();
        assert_eq!(got, want);
        assert_eq!(files.len(), 1);
        assert_eq!(files[0].labelfile, label);
    }

    #[test]
    fn a_node_that_did_not_stop_gives_no_manifest() {
        let mut b = backup_status("x");
        b.nodes[0].stop = None;
        b.nodes[0].health = "session lost".into();
        let Err(e) = manifest(&b, Status::Complete) else { panic!("a manifest without a stop") };
        assert_eq!(e.msg, "node default has no stop result: session lost");
    }
}
