//! Messages between the commands (pre's child pipe, post, abort, status) and the helper.
//! Newline-delimited JSON; every message carries the protocol version `v`.

use std::io::{BufRead, Write};
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::error::Result;
use crate::pg::api::ArchiverStats;
use crate::pg::wal::Lsn;

pub const VERSION: u32 = 1;
/// A request or reply line longer than this is refused (labels are a few hundred bytes).
pub const MAX_LINE: usize = 1 << 20;

/// What a command asks the helper, one request per connection.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Request {
    /// `status`: what the helper knows. Answered by [`Reply::Status`].
    Status,
    /// `post`: stop every node (if not yet stopped) and wait for archiving, up to the timeout.
    /// Answered by [`Reply::Progress`] lines while it waits, then [`Reply::Stopped`] or
    /// [`Reply::Error`].
    Stop { archive_timeout_secs: u64 },
    /// `post`, after the sidecar is durably written: the helper may forget the labels and exit.
    /// Answered by [`Reply::Ok`], or [`Reply::Error`] when the backup is not stopped and archived.
    Stored,
    /// `abort`: stop and discard every node's backup. Answered by [`Reply::Ok`].
    Abort,
}

/// What the helper answers; every request ends with exactly one reply that is not
/// [`Reply::Progress`].
#[derive(Serialize, Deserialize, Debug, Clone)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Reply {
    /// To [`Request::Stop`], every 30 s while the archive wait goes on: who still waits for what.
    Progress { message: String },
    /// To [`Request::Status`]: the helper's view of the backup.
    Status { backup: BackupStatus },
    /// To [`Request::Stop`]: the backups are stopped; `archived` says whether every node's WAL
    /// reached the archive, and `message` what is still missing when it did not.
    Stopped { backup: BackupStatus, archived: bool, message: Option<String> },
    /// To [`Request::Stored`] (the helper is released) and [`Request::Abort`] (the backups
    /// were discarded, or the helper was already ending).
    Ok { message: String },
    /// To any request the helper refuses or that failed: an unreadable request, a stop of a
    /// failed or ending backup, a `Stored` before everything is archived. `backup` is the
    /// helper's state when it has one to show.
    Error { message: String, backup: Option<BackupStatus> },
}

#[derive(Serialize, Deserialize, Debug, Clone)]
pub struct Envelope<T> {
    pub v: u32,
    #[serde(flatten)]
    pub body: T,
}

/// What the helper knows about the backup; also what `status --json` prints.
#[derive(Serialize, Deserialize, Debug, Clone)]
pub struct BackupStatus {
    pub backup_id: String,
    pub helper_pid: u32,
    pub started_at: String,
    pub phase: Phase,
    pub sidecar_dirs: Vec<PathBuf>,
    pub nodes: Vec<NodeStatus>,
    pub restore_point: Option<RestorePointInfo>,
    /// Why there is no restore point, when creating one failed.
    pub restore_point_note: Option<String>,
}

#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum Phase {
    /// Every node's backup started; the helper holds the sessions.
    Running,
    /// A post is stopping the nodes.
    Stopping,
    /// Stopped, waiting for (or having given up waiting for) WAL archiving.
    Stopped,
    /// A node's backup was lost (session ended, standby promoted, stop failed).
    Failed,
    /// Discarded on request, by a signal or by --max-duration.
    Aborted,
}

impl Phase {
    /// The word in the JSON, also what `status` prints.
    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Running => "running",
            Phase::Stopping => "stopping",
            Phase::Stopped => "stopped",
            Phase::Failed => "failed",
            Phase::Aborted => "aborted",
        }
    }
}

#[derive(Serialize, Deserialize, Debug, Clone)]
pub struct NodeStatus {
    pub name: String,
    pub conninfo: String,
    pub server_version_num: i32,
    pub server_version: String,
    pub system_identifier: String,
    pub timeline: u32,
    pub from_standby: bool,
    pub data_directory: Option<String>,
    pub wal_segment_size: u64,
    pub start_lsn: Option<Lsn>,
    /// "ok", or what went wrong with this node's session.
    pub health: String,
    pub failed: bool,
    pub stop: Option<StopResult>,
    /// The node's inventories (absent from helpers of older builds).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub inventory: Option<InventoryStatus>,
}

/// Where a node's inventories come from and what the helper keeps of them in the run dir
/// (the files themselves never cross the socket: they are large).
#[derive(Serialize, Deserialize, Debug, Clone, Default, PartialEq)]
pub struct InventoryStatus {
    /// None: no source (then `note` says why).
    pub source: Option<crate::inventory::Source>,
    /// Why there is no inventory (or only one of the two).
    pub note: Option<String>,
    pub start: Option<InventoryFile>,
    pub stop: Option<InventoryFile>,
}

/// Where a node's inventory comes from and how many entries it has, for pre, post and status.
pub fn describe_inventory(inv: Option<&InventoryStatus>) -> String {
    let Some(inv) = inv else { return "inventory: unknown (a helper of an older build)".into() };
    let count = |f: &Option<InventoryFile>, what: &str| {
        f.as_ref().map(|f| format!(", {} entries at {}", f.entries, what)).unwrap_or_default()
    };
    match inv.source {
        Some(s) => format!("inventory source {}{}{}", s, count(&inv.start, "start"), count(&inv.stop, "stop")),
        None => format!("inventory source none: {}", inv.note.as_deref().unwrap_or("no inventory was taken")),
    }
}

/// One inventory in the run dir, as the helper wrote it.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct InventoryFile {
    pub sha256: String,
    pub size: u64,
    pub entries: u64,
}

#[derive(Serialize, Deserialize, Debug, Clone)]
pub struct StopResult {
    pub stop_lsn: Lsn,
    pub stopped_at: String,
    pub timeline: u32,
    pub labelfile: String,
    pub spcmapfile: String,
    pub start_wal_file: String,
    pub stop_wal_file: String,
    pub backup_history_file: Option<String>,
    /// The WAL files this backup needs were archived (or no wait applies, see archive_note).
    pub archived: bool,
    pub archive_note: Option<String>,
    pub archiver: Option<ArchiverStats>,
    /// Where this node's copy of the backup's restore point was written, if it was.
    pub restore_point_lsn: Option<Lsn>,
    /// The segment holding it, which must be archived too.
    pub restore_point_wal_file: Option<String>,
}

/// The restore point post creates after every node stopped.
#[derive(Serialize, Deserialize, Debug, Clone)]
pub struct RestorePointInfo {
    pub name: String,
    pub scope: RestorePointScope,
}

/// Where a backup's restore point was made; serialized as "cluster", "per-node" or "node"
/// (in the socket protocol and in manifest.json).
#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
pub enum RestorePointScope {
    /// citus_create_restore_point on the coordinator: one instant for every node.
    #[serde(rename = "cluster")]
    Cluster,
    /// pg_create_restore_point on each node of several: close in time, not one instant.
    #[serde(rename = "per-node")]
    PerNode,
    /// pg_create_restore_point on the backup's only node.
    #[serde(rename = "node")]
    Node,
}

impl RestorePointScope {
    /// The word in the JSON, also what post prints.
    pub fn as_str(self) -> &'static str {
        match self {
            RestorePointScope::Cluster => "cluster",
            RestorePointScope::PerNode => "per-node",
            RestorePointScope::Node => "node",
        }
    }
}

impl std::fmt::Display for RestorePointScope {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Pre's child pipe: what the helper tells `pre` while it starts.
#[derive(Serialize, Deserialize, Debug, Clone)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum StartEvent {
    /// While checking the nodes: something pre prints as a warning (the backup goes on).
    Warning { node: String, message: String },
    /// After every node's backup started, once per node.
    NodeStarted { node: String, start_lsn: Lsn, server_version: String },
    /// Last, on success: the helper serves its socket; pre prints this and exits 0.
    Ready { backup: BackupStatus },
    /// Last, on failure: why nothing was started (any node that had started was discarded).
    Failed { message: String },
}

/// Read one line, bounded; Ok(None) at end of stream.
pub fn read_line<R: BufRead>(r: &mut R) -> std::io::Result<Option<String>> {
    let mut buf = Vec::new();
    let n = std::io::Read::take(r, MAX_LINE as u64 + 1).read_until(b'\n', &mut buf)?;
    if n == 0 {
        return Ok(None);
    }
    if buf.len() > MAX_LINE {
        return Err(std::io::Error::new(std::io::ErrorKind::InvalidData, "message too long"));
    }
    String::from_utf8(buf)
        .map(|s| Some(s.trim_end_matches('\n').to_string()))
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::InvalidData, "message is not UTF-8"))
}

pub fn write_msg<W: Write, T: Serialize>(w: &mut W, body: &T) -> std::io::Result<()> {
    let mut line = serde_json::to_vec(&Envelope { v: VERSION, body })?;
    line.push(b'\n');
    w.write_all(&line)?;
    w.flush()
}

/// Decode one line, checking the version first so an unknown version gets its own message.
pub fn decode<T: for<'de> Deserialize<'de>>(line: &str) -> Result<T> {
    let value: serde_json::Value = serde_json::from_str(line).map_err(|e| err!("malformed message: {}", e))?;
    match value.get("v").and_then(|v| v.as_u64()) {
        Some(v) if v == VERSION as u64 => {}
        Some(v) => return Err(err!("unsupported protocol version {} (this build speaks {})", v, VERSION)),
        None => return Err(err!("message has no protocol version")),
    }
    serde_json::from_value(value).map_err(|e| err!("malformed message: {}", e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_round_trip() {
        let mut buf = Vec::new();
        write_msg(&mut buf, &Request::Stop { archive_timeout_secs: 5 }).unwrap();
        let line = String::from_utf8(buf).unwrap();
        assert!(line.starts_with("{\"v\":1,"));
        let r: Request = decode(line.trim_end()).unwrap();
        assert_eq!(r, Request::Stop { archive_timeout_secs: 5 });
    }

    #[test]
    fn bad_messages_are_refused() {
        assert!(decode::<Request>("{").unwrap_err().msg.contains("malformed"));
        assert!(decode::<Request>("{\"op\":\"status\"}").unwrap_err().msg.contains("no protocol version"));
        assert!(decode::<Request>("{\"v\":99,\"op\":\"status\"}").unwrap_err().msg.contains("version 99"));
        assert!(decode::<Request>("{\"v\":1,\"op\":\"drop_database\"}").is_err());
    }

    #[test]
    fn restore_point_scope_keeps_its_words() {
        for (scope, word) in [
            (RestorePointScope::Cluster, "cluster"),
            (RestorePointScope::PerNode, "per-node"),
            (RestorePointScope::Node, "node"),
        ] {
            let json = format!("{{\"name\":\"b1\",\"scope\":\"{}\"}}", word);
            let rp: RestorePointInfo = serde_json::from_str(&json).unwrap();
            assert_eq!(rp.scope, scope);
            assert_eq!(serde_json::to_string(&rp).unwrap(), json);
            assert_eq!(scope.to_string(), word);
        }
        assert!(serde_json::from_str::<RestorePointInfo>("{\"name\":\"b1\",\"scope\":\"PerNode\"}").is_err());
    }

    #[test]
    fn phase_words_are_the_serialized_ones() {
        for p in [Phase::Running, Phase::Stopping, Phase::Stopped, Phase::Failed, Phase::Aborted] {
            assert_eq!(serde_json::to_value(p).unwrap(), p.as_str());
        }
    }

    #[test]
    fn oversized_line_is_refused() {
        let big = vec![b'a'; MAX_LINE + 10];
        let mut r = std::io::BufReader::new(&big[..]);
        assert!(read_line(&mut r).is_err());
    }
}
