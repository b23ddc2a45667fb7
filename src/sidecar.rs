//! The sidecar: what `post` stores so that a copy can be restored.
//!
//! ```text
//! DIR/ID/manifest.json
//! DIR/ID/NODE/backup_label
//! DIR/ID/NODE/tablespace_map      (always present, empty without tablespaces)
//! DIR/ID/NODE/inventory-start.zst (the node's files right after its backup started; when
//! DIR/ID/NODE/inventory-stop.zst   an inventory source was found: see src/inventory/)
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
/// The node's inventory taken right after its backup started (src/inventory/, stored form).
pub const INVENTORY_START_FILE: &str = "inventory-start.zst";
/// The node's inventory taken right after its backup stopped.
pub const INVENTORY_STOP_FILE: &str = "inventory-stop.zst";

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
    /// Where the node's inventories were read from; None when none was recorded (older
    /// builds, or no source: then `inventory_note` says why).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub inventory_source: Option<crate::inventory::Source>,
    /// Why there is no inventory, when there is none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub inventory_note: Option<String>,
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
            inventory_source: None,
            inventory_note: None,
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

/// A node's file beyond the labels (its inventories), stored as given.
pub struct ExtraFile {
    pub node: String,
    /// The file's name in the node's directory, e.g. [`INVENTORY_START_FILE`].
    pub name: &'static str,
    pub data: Vec<u8>,
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

/// The ids of the backups stored in `dirs`, newest (by start time) first, each once.
pub fn stored_ids(dirs: &[PathBuf]) -> Vec<String> {
    let mut found: Vec<(i64, String)> = Vec::new();
    for d in dirs {
        let Ok(entries) = fs::read_dir(d) else { continue };
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if name.starts_with('.') || found.iter().any(|(_, id)| *id == name) {
                continue;
            }
            if let Ok(Some(m)) = read_manifest(d, &name) {
                let at = chrono::DateTime::parse_from_rfc3339(&m.started_at).map(|t| t.timestamp()).unwrap_or(0);
                found.push((at, name));
            }
        }
    }
    found.sort_by(|a, b| b.cmp(a));
    found.into_iter().map(|(_, id)| id).collect()
}

/// The error for a backup id no sidecar directory holds: where it looked, and a few of the
/// ids that are there, newest first.
pub fn not_found(dirs: &[PathBuf], id: &str) -> Error {
    const SHOWN: usize = 5;
    let list = |v: &[PathBuf]| v.iter().map(|d| d.display().to_string()).collect::<Vec<_>>().join(", ");
    let ids = stored_ids(dirs);
    let there = match ids.len() {
        0 => "no backup is stored there: check --sidecar-dir (the directory post wrote into)".to_string(),
        n if n <= SHOWN => format!("the backups there, newest first: {}: check --backup-id", ids.join(", ")),
        n => format!(
            "the newest {} of the {} backups there: {}: check --backup-id (pg-backup-hooks list --sidecar-dir {} shows them all)",
            SHOWN,
            n,
            ids[..SHOWN].join(", "),
            dirs.iter().map(|d| d.display().to_string()).collect::<Vec<_>>().join(":")
        ),
    };
    err!("no sidecar for backup {} in {}; {}", id, list(dirs), there)
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
    write_with(sidecar, manifest, files, &[])
}

/// [`write`], with the nodes' other files (their inventories) in the same atomic sidecar.
pub fn write_with(sidecar: &Path, manifest: &Manifest, files: &[NodeFiles], extra: &[ExtraFile]) -> Result<bool> {
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
            for x in extra.iter().filter(|x| x.node == f.name) {
                fsutil::write_new_nofollow(&nd.join(x.name), &x.data, 0o600)?;
            }
            fsutil::fsync_dir(&nd)?;
        }
        let json = serde_json::to_vec_pretty(manifest).context(|| "cannot encode manifest")?;
        fsutil::write_new_nofollow(&stage.join(MANIFEST), &json, 0o600)?;
        fsutil::fsync_dir(&stage)?;
        // An earlier, incomplete sidecar (archive pending) is moved aside, then removed.
        let old = sidecar.join(format!(".{}.old.{}", id, fsutil::random_suffix()?));
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

/// One thing wrong with a stored sidecar (see [`verify`]). Displays as the one-line finding
/// `verify` prints: "node NAME: ..." for a node's files, plain for the backup as a whole.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// The node whose files are wrong; None: the manifest itself.
    pub node: Option<String>,
    pub kind: ProblemKind,
}

/// What is wrong, in [`Problem`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProblemKind {
    /// The manifest was written for another backup id.
    WrongBackupId { found: String, wanted: String },
    /// The status is archive-pending: archiving had not finished when post last ran.
    NotComplete,
    /// The manifest lists no nodes.
    NoNodes,
    /// The manifest has no checksum for one of the node's files.
    NoChecksum { file: &'static str },
    /// A node's file cannot be read.
    Unreadable { path: PathBuf, error: String },
    /// A node's file does not match its sha256 in the manifest.
    ChecksumMismatch { path: PathBuf },
    /// The node's backup_label does not parse.
    NotALabel { path: PathBuf, error: String },
    /// The node's backup_label has another LABEL than the backup id.
    WrongLabel { path: PathBuf, label: String },
    /// The node's backup_label starts elsewhere than the manifest says.
    WrongStart { label: Lsn, manifest: Lsn },
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if let Some(n) = &self.node {
            write!(f, "node {}: ", n)?;
        }
        match &self.kind {
            ProblemKind::WrongBackupId { found, wanted } => {
                write!(f, "manifest names backup {:?}, not {:?}", found, wanted)
            }
            ProblemKind::NotComplete => {
                f.write_str("backup is not complete (archiving had not finished when post last ran): run post again")
            }
            ProblemKind::NoNodes => f.write_str("manifest lists no nodes"),
            ProblemKind::NoChecksum { file } => write!(f, "manifest has no checksum for {}", file),
            ProblemKind::Unreadable { path, error } => write!(f, "cannot read {}: {}", path.display(), error),
            ProblemKind::ChecksumMismatch { path } => {
                write!(f, "{} does not match its sha256 in the manifest (edited or damaged)", path.display())
            }
            ProblemKind::NotALabel { path, error } => write!(f, "{} is not a backup label: {}", path.display(), error),
            ProblemKind::WrongLabel { path, label } => {
                write!(f, "{} has LABEL {:?}, not the backup id", path.display(), label)
            }
            ProblemKind::WrongStart { label, manifest } => {
                write!(f, "label starts at {}, manifest says {}", label, manifest)
            }
        }
    }
}

/// Everything wrong with a stored sidecar, in the order found; empty when it is sound.
pub fn verify(sidecar: &Path, id: &str) -> Result<(Manifest, Vec<Problem>)> {
    let dir = backup_dir(sidecar, id);
    let m = read_manifest(sidecar, id)?.ok_or_else(|| {
        err!("no sidecar for backup {} in {} ({} is missing)", id, sidecar.display(), dir.join(MANIFEST).display())
    })?;
    let mut problems: Vec<Problem> =
        manifest_problems(&m, id).into_iter().map(|kind| Problem { node: None, kind }).collect();
    for n in &m.nodes {
        let node_dir = dir.join(&n.name);
        let kinds = [LABEL_FILE, SPCMAP_FILE]
            .into_iter()
            .chain(inventory_files(n))
            .flat_map(|f| node_file_problems(&node_dir, n, f, id));
        problems.extend(kinds.map(|kind| Problem { node: Some(n.name.clone()), kind }));
    }
    Ok((m, problems))
}

/// The inventory files a node's entry promises: both when it names a source, else those it
/// has checksums for.
fn inventory_files(n: &NodeEntry) -> Vec<&'static str> {
    [INVENTORY_START_FILE, INVENTORY_STOP_FILE]
        .into_iter()
        .filter(|f| n.inventory_source.is_some() || n.files.contains_key(*f))
        .collect()
}

/// What is wrong with the manifest itself.
fn manifest_problems(m: &Manifest, id: &str) -> Vec<ProblemKind> {
    let mut out = Vec::new();
    if m.backup_id != id {
        out.push(ProblemKind::WrongBackupId { found: m.backup_id.clone(), wanted: id.to_string() });
    }
    if m.status != Status::Complete {
        out.push(ProblemKind::NotComplete);
    }
    if m.nodes.is_empty() {
        out.push(ProblemKind::NoNodes);
    }
    out
}

/// What is wrong with one of a node's files: its checksum, and for the label its content.
fn node_file_problems(node_dir: &Path, n: &NodeEntry, fname: &'static str, id: &str) -> Vec<ProblemKind> {
    let path = node_dir.join(fname);
    let Some(entry) = n.files.get(fname) else {
        return vec![ProblemKind::NoChecksum { file: fname }];
    };
    let data = match fs::read(&path) {
        Ok(data) => data,
        Err(e) => return vec![ProblemKind::Unreadable { path, error: e.to_string() }],
    };
    if sha256_hex(&data) != entry.sha256 {
        return vec![ProblemKind::ChecksumMismatch { path }];
    }
    if fname != LABEL_FILE {
        return Vec::new();
    }
    label_problems(path, &data, n, id)
}

/// What is wrong with a node's backup_label whose checksum matches: its LABEL and start.
fn label_problems(path: PathBuf, data: &[u8], n: &NodeEntry, id: &str) -> Vec<ProblemKind> {
    let l = match BackupLabel::parse(&String::from_utf8_lossy(data)) {
        Ok(l) => l,
        Err(e) => return vec![ProblemKind::NotALabel { path, error: e.to_string() }],
    };
    let mut out = Vec::new();
    if l.label != id {
        out.push(ProblemKind::WrongLabel { path, label: l.label });
    }
    if l.start_lsn != n.start_lsn {
        out.push(ProblemKind::WrongStart { label: l.start_lsn, manifest: n.start_lsn });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::{mode, names};

    #[test]
    fn an_unknown_id_lists_the_stored_ones_newest_first() {
        let d = tempfile::tempdir().unwrap();
        let (a, b) = (d.path().join("a"), d.path().join("b"));
        for dir in [&a, &b] {
            fs::create_dir(dir).unwrap();
        }
        let store = |dir: &Path, id: &str, started: &str| {
            let m = Manifest {
                format_version: FORMAT_VERSION,
                tool_version: "t".into(),
                backup_id: id.into(),
                status: Status::Complete,
                started_at: started.into(),
                stopped_at: String::new(),
                written_at: String::new(),
                nodes: Vec::new(),
                restore_point: None,
                restore_point_note: None,
            };
            assert!(write(dir, &m, &[]).unwrap());
        };
        store(&a, "monday", "2026-11-23T01:00:00+00:00");
        store(&a, "wednesday", "2026-11-25T01:00:00+00:00");
        store(&b, "tuesday", "2026-11-24T01:00:00+00:00");
        store(&b, "monday", "2026-11-23T01:00:00+00:00");
        let msg = not_found(&[a.clone(), b.clone()], "thursday").msg;
        assert_eq!(
            msg,
            format!(
                "no sidecar for backup thursday in {}, {}; the backups there, newest first: wednesday, tuesday, monday: check --backup-id",
                a.display(),
                b.display()
            )
        );
        let empty = d.path().join("empty");
        fs::create_dir(&empty).unwrap();
        assert!(not_found(&[empty], "x")
            .msg
            .ends_with("no backup is stored there: check --sidecar-dir (the directory post wrote into)"));
    }

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

    use std::os::unix::fs::{symlink, PermissionsExt};

    /// A manifest.json as post writes it (format 1): the JSON is the contract, so the tests
    /// build their manifests from it rather than from the structs.
    const MANIFEST_JSON: &str = r#"{
  "format_version": 1,
  "tool_version": "0.9.0",
  "backup_id": "nightly-1",
  "status": "archive-pending",
  "started_at": "2026-11-23T11:00:00+00:00",
  "stopped_at": "2026-11-23T11:05:00+00:00",
  "written_at": "2026-11-23T11:05:01+00:00",
  "nodes": [
    {
      "name": "n1",
      "conninfo": "host=db1 port=5432",
      "server_version_num": 150004,
      "server_version": "15.4",
      "system_identifier": "7311789012345678901",
      "timeline": 1,
      "start_lsn": "0/2000028",
      "stop_lsn": "0/2000100",
      "start_wal_file": "000000010000000000000002",
      "stop_wal_file": "000000010000000000000002",
      "backup_history_file": "000000010000000000000002.00000028.backup",
      "from_standby": false,
      "data_directory": "/var/lib/postgresql/15/main",
      "wal_segment_size": 16777216,
      "archived": true,
      "archive_note": null,
      "files": {
        "backup_label": {
          "sha256": "1aca80e8b55c802f7b43740da2990e1b5735bbb323d93eb5ebda8395b04025e2",
          "size": 5
        },
        "tablespace_map": {
          "sha256": "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
          "size": 0
        }
      }
    }
  ],
  "restore_point": {
    "name": "nightly-1",
    "scope": "per-node",
    "lsns": {
      "n1": "0/2000158"
    }
  },
  "restore_point_note": null
}"#;

    fn manifest(status: &str) -> Manifest {
        serde_json::from_str(&MANIFEST_JSON.replace("\"archive-pending\"", &format!("{:?}", status))).unwrap()
    }

    fn files(label: &str) -> Vec<NodeFiles> {
        vec![NodeFiles { name: "n1".into(), labelfile: label.into(), spcmapfile: String::new() }]
    }

    /// A sidecar directory as an operator makes it: 0700.
    fn sidecar_dir() -> tempfile::TempDir {
        let d = tempfile::tempdir().unwrap();
        fs::set_permissions(d.path(), fs::Permissions::from_mode(0o700)).unwrap();
        d
    }

    #[test]
    fn a_manifest_post_wrote_reads_and_writes_back_byte_for_byte() {
        for (from, to) in [("", ""), ("\"per-node\"", "\"cluster\""), ("\"archive-pending\"", "\"complete\"")] {
            let text = MANIFEST_JSON.replace(from, to);
            let m: Manifest = serde_json::from_str(&text).unwrap();
            assert_eq!(String::from_utf8(serde_json::to_vec_pretty(&m).unwrap()).unwrap(), text);
        }
        assert_eq!(manifest("complete").status, Status::Complete);
        assert_eq!(manifest("archive-pending").status, Status::ArchivePending);
    }

    #[test]
    fn write_stores_labels_and_manifest_0600_in_0700_directories_and_leaves_no_stage() {
        let d = sidecar_dir();
        assert!(write(d.path(), &manifest("complete"), &files("LABEL: nightly-1\n")).unwrap());
        let dir = backup_dir(d.path(), "nightly-1");
        assert_eq!(names(d.path()), vec!["nightly-1"], "nothing but the sidecar is left");
        assert_eq!(names(&dir), vec!["manifest.json", "n1"]);
        assert_eq!(fs::read_to_string(dir.join("n1").join(LABEL_FILE)).unwrap(), "LABEL: nightly-1\n");
        assert_eq!(fs::read(dir.join("n1").join(SPCMAP_FILE)).unwrap(), b"");
        for p in [dir.clone(), dir.join("n1")] {
            assert_eq!(mode(&p), 0o700, "{}", p.display());
        }
        for p in [dir.join(MANIFEST), dir.join("n1/backup_label"), dir.join("n1/tablespace_map")] {
            assert_eq!(mode(&p), 0o600, "{}", p.display());
        }
        assert_eq!(
            fs::read_to_string(dir.join(MANIFEST)).unwrap(),
            MANIFEST_JSON.replace("archive-pending", "complete")
        );
        let m = read_manifest(d.path(), "nightly-1").unwrap().unwrap();
        assert_eq!((m.backup_id.as_str(), m.status), ("nightly-1", Status::Complete));
    }

    #[test]
    fn a_pending_sidecar_is_replaced_and_a_complete_one_never() {
        let d = sidecar_dir();
        let label = || backup_dir(d.path(), "nightly-1").join("n1").join(LABEL_FILE);
        assert!(write(d.path(), &manifest("archive-pending"), &files("first")).unwrap());
        assert!(write(d.path(), &manifest("complete"), &files("second")).unwrap());
        assert_eq!(fs::read_to_string(label()).unwrap(), "second");
        assert_eq!(names(d.path()), vec!["nightly-1"], "the old sidecar is gone");
        assert!(!write(d.path(), &manifest("archive-pending"), &files("third")).unwrap());
        assert_eq!(fs::read_to_string(label()).unwrap(), "second");
        assert_eq!(read_manifest(d.path(), "nightly-1").unwrap().unwrap().status, Status::Complete);
        assert_eq!(names(d.path()), vec!["nightly-1"], "no stage left");
    }

    #[test]
    fn a_link_planted_at_the_backups_name_is_replaced_not_written_through() {
        let d = sidecar_dir();
        let outside = tempfile::tempdir().unwrap();
        fs::write(outside.path().join("keep"), b"not yours").unwrap();
        symlink(outside.path(), d.path().join("nightly-1")).unwrap();
        assert!(write(d.path(), &manifest("complete"), &files("label")).unwrap());
        assert_eq!(names(outside.path()), vec!["keep"], "nothing written or removed where the link pointed");
        assert!(fs::symlink_metadata(d.path().join("nightly-1")).unwrap().is_dir());
        assert_eq!(names(d.path()), vec!["nightly-1"]);
    }

    #[test]
    fn a_sidecar_directory_others_could_tamper_with_is_refused_by_name() {
        let d = sidecar_dir();
        let shown = d.path().display().to_string();
        check_dir_trusted(d.path()).unwrap();
        fs::set_permissions(d.path(), fs::Permissions::from_mode(0o775)).unwrap();
        let e = check_dir_trusted(d.path()).unwrap_err();
        assert!(e.msg.contains(&shown) && e.msg.contains("mode 775") && e.msg.contains("chmod go-w"), "{}", e.msg);
        assert!(write(d.path(), &manifest("complete"), &files("x")).is_err());
        assert!(names(d.path()).is_empty(), "nothing written into an untrusted directory");
        let e = check_dir_trusted(&d.path().join("missing")).unwrap_err();
        assert!(e.msg.contains("missing") && e.msg.contains("create it"), "{}", e.msg);
        fs::write(d.path().join("file"), b"").unwrap();
        assert!(check_dir_trusted(&d.path().join("file")).unwrap_err().msg.contains("is not a directory"));
        if nix::unistd::geteuid().is_root() {
            fs::set_permissions(d.path(), fs::Permissions::from_mode(0o700)).unwrap();
            std::os::unix::fs::chown(d.path(), Some(65534), Some(65534)).unwrap();
            let e = check_dir_trusted(d.path()).unwrap_err();
            assert!(e.msg.contains("owned by uid 65534"), "{}", e.msg);
        }
    }

    #[test]
    fn a_missing_damaged_or_foreign_manifest() {
        let d = sidecar_dir();
        assert!(read_manifest(d.path(), "nightly-1").unwrap().is_none());
        let p = backup_dir(d.path(), "nightly-1").join(MANIFEST);
        fs::create_dir(p.parent().unwrap()).unwrap();
        fs::write(&p, &MANIFEST_JSON[..200]).unwrap();
        let e = read_manifest(d.path(), "nightly-1").unwrap_err();
        assert!(e.msg.contains(&p.display().to_string()) && e.msg.contains("damaged"), "{}", e.msg);
        fs::write(&p, MANIFEST_JSON.replace("\"format_version\": 1", "\"format_version\": 2")).unwrap();
        let e = read_manifest(d.path(), "nightly-1").unwrap_err();
        assert!(e.msg.contains("format version 2"), "{}", e.msg);
    }
}
