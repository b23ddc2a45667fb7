//! The sidecar: what `post` stores so that a copy can be restored.
//!
//! ```text
//! DIR/ID/manifest.json
//! DIR/ID/NODE/backup_label
//! DIR/ID/NODE/tablespace_map      (always present, empty without tablespaces)
//! ```
//! Files are 0600, directories 0700. A sidecar is staged in a hidden sibling directory,
//! every file and directory fsynced, then renamed into place: a reader sees all or nothing.
//! A complete sidecar is never replaced.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::error::{Context, Error, Result};
use crate::fsutil;
use crate::pg::label::BackupLabel;
use crate::pg::wal::Lsn;
use crate::protocol::{NodeStatus, RestorePointScope, StopResult};

pub const FORMAT_VERSION: u32 = 1;
pub const MANIFEST: &str = "manifest.json";
pub const LABEL_FILE: &str = "backup_label";
pub const SPCMAP_FILE: &str = "tablespace_map";

#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum Status {
    /// Every node stopped and its WAL is archived: restorable.
    Complete,
    /// Labels are stored but archiving had not caught up: NOT restorable yet; run post again.
    ArchivePending,
}

#[derive(Serialize, Deserialize, Debug, Clone)]
pub struct FileEntry {
    pub sha256: String,
    pub size: u64,
}

#[derive(Serialize, Deserialize, Debug, Clone)]
pub struct NodeEntry {
    pub name: String,
    pub conninfo: String,
    pub server_version_num: i32,
    pub server_version: String,
    pub system_identifier: String,
    pub timeline: u32,
    pub start_lsn: Lsn,
    pub stop_lsn: Lsn,
    pub start_wal_file: String,
    pub stop_wal_file: String,
    /// `<start segment>.<offset>.backup` (primaries only); absent in manifests of old builds.
    #[serde(default)]
    pub backup_history_file: Option<String>,
    pub from_standby: bool,
    pub data_directory: Option<String>,
    pub wal_segment_size: u64,
    pub archived: bool,
    pub archive_note: Option<String>,
    pub files: BTreeMap<String, FileEntry>,
}

impl NodeEntry {
    /// The manifest's entry for a node whose backup started at `start` and stopped with `stop`.
    pub fn new(n: &NodeStatus, start: Lsn, stop: &StopResult) -> NodeEntry {
        let mut files = BTreeMap::new();
        files.insert(LABEL_FILE.to_string(), file_entry(stop.labelfile.as_bytes()));
        files.insert(SPCMAP_FILE.to_string(), file_entry(stop.spcmapfile.as_bytes()));
        NodeEntry {
            name: n.name.clone(),
            conninfo: n.conninfo.clone(),
            server_version_num: n.server_version_num,
            server_version: n.server_version.clone(),
            system_identifier: n.system_identifier.clone(),
            timeline: stop.timeline,
            start_lsn: start,
            stop_lsn: stop.stop_lsn,
            start_wal_file: stop.start_wal_file.clone(),
            stop_wal_file: stop.stop_wal_file.clone(),
            backup_history_file: stop.backup_history_file.clone(),
            from_standby: n.from_standby,
            data_directory: n.data_directory.clone(),
            wal_segment_size: n.wal_segment_size,
            archived: stop.archived,
            archive_note: stop.archive_note.clone(),
            files,
        }
    }
}

#[derive(Serialize, Deserialize, Debug, Clone)]
pub struct RestorePoint {
    pub name: String,
    /// "cluster" (citus_create_restore_point), "per-node" (pg_create_restore_point on each of
    /// several nodes) or "node" (pg_create_restore_point on the only node).
    pub scope: RestorePointScope,
    pub lsns: BTreeMap<String, Lsn>,
}

#[derive(Serialize, Deserialize, Debug, Clone)]
pub struct Manifest {
    pub format_version: u32,
    pub tool_version: String,
    pub backup_id: String,
    pub status: Status,
    pub started_at: String,
    pub stopped_at: String,
    pub written_at: String,
    pub nodes: Vec<NodeEntry>,
    pub restore_point: Option<RestorePoint>,
    /// Why there is no restore point, when post could not create one.
    #[serde(default)]
    pub restore_point_note: Option<String>,
}

/// One node's files as they go into the sidecar.
pub struct NodeFiles {
    pub name: String,
    pub labelfile: String,
    pub spcmapfile: String,
}

pub fn sha256_hex(data: &[u8]) -> String {
    Sha256::digest(data).iter().map(|b| format!("{:02x}", b)).collect()
}

/// sha256 of a stored manifest.json: post prints it into the job log and restore-prep
/// prints it, so an admin can see that the sidecar restore-prep trusts is the one post wrote.
pub fn manifest_sha256(path: &Path) -> Result<String> {
    let data = fs::read(path).map_err(|e| err!("cannot read {}: {}", path.display(), e))?;
    Ok(sha256_hex(&data))
}

pub fn file_entry(data: &[u8]) -> FileEntry {
    FileEntry { sha256: sha256_hex(data), size: data.len() as u64 }
}

pub fn backup_dir(sidecar: &Path, id: &str) -> PathBuf {
    sidecar.join(id)
}

/// Read a stored manifest; Ok(None) when there is none.
pub fn read_manifest(sidecar: &Path, id: &str) -> Result<Option<Manifest>> {
    let p = backup_dir(sidecar, id).join(MANIFEST);
    let text = match fs::read_to_string(&p) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(err!("cannot read {}: {}", p.display(), e)),
    };
    let m: Manifest = serde_json::from_str(&text)
        .map_err(|e| err!("{} is not a valid manifest ({}): the sidecar is damaged", p.display(), e))?;
    if m.format_version != FORMAT_VERSION {
        return Err(err!(
            "{} has format version {}, this build reads {}: use a matching pg-backup-hooks",
            p.display(),
            m.format_version,
            FORMAT_VERSION
        ));
    }
    Ok(Some(m))
}

/// Refuse a sidecar directory that someone else could tamper with: one writable by group or
/// others, or owned by a user other than root and the one running the tool. Such a user
/// could plant links where pre probes and post stages, or swap what post renames.
pub fn check_dir_trusted(sidecar: &Path) -> Result<()> {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let meta = fs::metadata(sidecar).map_err(|e| {
        err!("sidecar directory {}: {} (create it, or check that its file system is mounted)", sidecar.display(), e)
    })?;
    if !meta.is_dir() {
        return Err(err!("sidecar directory {} is not a directory", sidecar.display()));
    }
    let me = nix::unistd::geteuid().as_raw();
    if meta.uid() != me && meta.uid() != 0 {
        return Err(err!(
            "sidecar directory {} is owned by uid {}, neither root nor us (uid {}): that user could plant links in it; chown {} {} (or use a directory of your own)",
            sidecar.display(),
            meta.uid(),
            me,
            me,
            sidecar.display()
        ));
    }
    let mode = meta.permissions().mode();
    if mode & 0o022 != 0 {
        return Err(err!(
            "sidecar directory {} is writable by group or others (mode {:o}): they could plant links in it; chmod go-w {}",
            sidecar.display(),
            mode & 0o7777,
            sidecar.display()
        ));
    }
    Ok(())
}

/// Check that a sidecar directory can take a backup before the backup starts.
pub fn check_writable(sidecar: &Path, id: &str) -> Result<()> {
    check_dir_trusted(sidecar)?;
    if let Some(m) = read_manifest(sidecar, id)? {
        if m.status == Status::Complete {
            return Err(Error::usage(format!(
                "backup {} is already stored complete in {}: every backup needs a new id",
                id,
                sidecar.display()
            )));
        }
    }
    // A new file under a name nobody can guess, never through a link.
    let (f, probe) = fsutil::create_temp_in(sidecar, ".pg-backup-hooks-probe.", 0o600)
        .map_err(|e| err!("sidecar directory {} is not writable: {}", sidecar.display(), e.msg))?;
    drop(f);
    let _ = fs::remove_file(&probe);
    Ok(())
}

/// Write the sidecar for one directory, atomically. Refuses to replace a complete one
/// (returns Ok(false) when a complete one is already there).
pub fn write(sidecar: &Path, manifest: &Manifest, files: &[NodeFiles]) -> Result<bool> {
    check_dir_trusted(sidecar)?;
    let id = &manifest.backup_id;
    let target = backup_dir(sidecar, id);
    if let Some(existing) = read_manifest(sidecar, id).ok().flatten() {
        if existing.status == Status::Complete {
            return Ok(false);
        }
    }
    // Staged under a name nobody can guess, in a directory only we (or root) can write.
    let stage = fsutil::create_temp_dir_in(sidecar, &format!(".{}.tmp.", id), 0o700)?;
    let result = (|| {
        for f in files {
            let nd = stage.join(&f.name);
            fsutil::create_dir_mode(&nd, 0o700)?;
            fsutil::write_new_nofollow(&nd.join(LABEL_FILE), f.labelfile.as_bytes(), 0o600)?;
            fsutil::write_new_nofollow(&nd.join(SPCMAP_FILE), f.spcmapfile.as_bytes(), 0o600)?;
            fsutil::fsync_dir(&nd)?;
        }
        let json = serde_json::to_vec_pretty(manifest).context(|| "cannot encode manifest")?;
        fsutil::write_new_nofollow(&stage.join(MANIFEST), &json, 0o600)?;
        fsutil::fsync_dir(&stage)?;
        // An earlier, incomplete sidecar (archive pending) is moved aside, then removed.
        let old = sidecar.join(format!(".{}.old.{}", id, fsutil::unpredictable_suffix()?));
        let had_old = fs::symlink_metadata(&target).is_ok();
        if had_old {
            fs::rename(&target, &old).context(|| format!("cannot move aside {}", target.display()))?;
        }
        fs::rename(&stage, &target).context(|| format!("cannot rename {} to {}", stage.display(), target.display()))?;
        fsutil::fsync_dir(sidecar)?;
        if had_old {
            let _ = fs::remove_dir_all(&old);
        }
        Ok(true)
    })();
    if result.is_err() {
        let _ = fs::remove_dir_all(&stage);
    }
    result
}

/// Everything wrong with a stored sidecar, as one-line findings; empty when it is sound.
pub fn verify(sidecar: &Path, id: &str) -> Result<(Manifest, Vec<String>)> {
    let dir = backup_dir(sidecar, id);
    let m = read_manifest(sidecar, id)?.ok_or_else(|| {
        err!("no sidecar for backup {} in {} ({} is missing)", id, sidecar.display(), dir.join(MANIFEST).display())
    })?;
    let mut problems = Vec::new();
    if m.backup_id != id {
        problems.push(format!("manifest names backup {:?}, not {:?}", m.backup_id, id));
    }
    if m.status != Status::Complete {
        problems.push("backup is not complete (archiving had not finished when post last ran): run post again".into());
    }
    if m.nodes.is_empty() {
        problems.push("manifest lists no nodes".into());
    }
    for n in &m.nodes {
        for fname in [LABEL_FILE, SPCMAP_FILE] {
            let p = dir.join(&n.name).join(fname);
            let Some(entry) = n.files.get(fname) else {
                problems.push(format!("node {}: manifest has no checksum for {}", n.name, fname));
                continue;
            };
            match fs::read(&p) {
                Err(e) => problems.push(format!("node {}: cannot read {}: {}", n.name, p.display(), e)),
                Ok(data) => {
                    if sha256_hex(&data) != entry.sha256 {
                        problems.push(format!(
                            "node {}: {} does not match its sha256 in the manifest (edited or damaged)",
                            n.name,
                            p.display()
                        ));
                    } else if fname == LABEL_FILE {
                        match BackupLabel::parse(&String::from_utf8_lossy(&data)) {
                            Err(e) => {
                                problems.push(format!("node {}: {} is not a backup label: {}", n.name, p.display(), e))
                            }
                            Ok(l) => {
                                if l.label != id {
                                    problems.push(format!(
                                        "node {}: {} has LABEL {:?}, not the backup id",
                                        n.name,
                                        p.display(),
                                        l.label
                                    ));
                                }
                                if l.start_lsn != n.start_lsn {
                                    problems.push(format!(
                                        "node {}: label starts at {}, manifest says {}",
                                        n.name, l.start_lsn, n.start_lsn
                                    ));
                                }
                            }
                        }
                    }
                }
            }
        }
    }
    Ok((m, problems))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_manifest_without_backup_history_file_still_reads() {
        let node = r#"{"name":"default","conninfo":"","server_version_num":150000,"server_version":"15",
            "system_identifier":"1","timeline":1,"start_lsn":"0/2000028","stop_lsn":"0/2000100",
            "start_wal_file":"000000010000000000000002","stop_wal_file":"000000010000000000000002",
            "from_standby":false,"data_directory":null,"wal_segment_size":16777216,"archived":true,
            "archive_note":null,"files":{}}"#;
        let n: NodeEntry = serde_json::from_str(node).unwrap();
        assert_eq!(n.backup_history_file, None);
    }
}
