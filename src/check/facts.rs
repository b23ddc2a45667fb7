//! What `check` looks at, gathered once and read-only: each node's server (pg_monitor is
//! enough), the newest complete backup of each node in the sidecars (archive::catalog, the
//! same listing `list` prints) with its sidecar verified, the archive from that backup's
//! start to its newest segment (archive::scan: one listing per directory, each segment's
//! header read once), and the helpers holding backups (the run directory). A node that cannot
//! be reached or a directory that cannot be read is a fact, never an error.

use std::collections::HashMap;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::archive::catalog::{self, ArchiveDir, Catalog, Entry, NodeRow};
use crate::archive::file;
use crate::archive::scan::{self, Scan};
use crate::archive::store;
use crate::error::Result;
use crate::helper::client;
use crate::pg::api::{self, ArchiverStats};
use crate::pg::conninfo::ConnInfo;
use crate::pg::discovery;
use crate::pg::wal::Lsn;
use crate::protocol::{Reply, Request};
use crate::rundir::{self, RunDir};
use crate::sidecar::{self, Status as SidecarStatus};

/// What to check: the nodes (already parsed, conninfo with secrets), where their backups and
/// WAL are, and the run directory of their helpers (the thresholds are the judge's).
pub struct Config {
    pub nodes: Vec<(String, String)>,
    pub discover_citus: bool,
    pub sidecar_dirs: Vec<PathBuf>,
    /// `--archive-dir DIR`: for every node.
    pub archive_dirs: Vec<PathBuf>,
    /// `--archive-dir NODE=DIR`.
    pub archive_of: Vec<(String, PathBuf)>,
    /// None: the default run directory, when it exists.
    pub run_dir: Option<PathBuf>,
}

/// The session name check's connections show in pg_stat_activity.
const APPLICATION_NAME: &str = "pg-backup-hooks check";

/// connect_timeout when neither the conninfo nor PGCONNECT_TIMEOUT sets one: a monitoring
/// check must answer within its runner's timeout (Nagios: 10 s by default), and an
/// unreachable node is a finding, not a wait.
const CONNECT_TIMEOUT: &str = "5";

/// How long one statement of check may run.
const STATEMENT_TIMEOUT: &str = "SET statement_timeout = '5s'";

/// Everything gathered: per node, plus what belongs to no node given.
pub struct Gathered {
    pub nodes: Vec<NodeFacts>,
    /// Backups held by helpers whose nodes are none of the nodes checked.
    pub other_held: Vec<Held>,
    /// What could not be read and belongs to no node (the run directory, a helper).
    pub other_errors: Vec<String>,
}

/// One node's facts.
#[derive(Serialize, Debug, Default)]
pub struct NodeFacts {
    pub name: String,
    /// Without its password.
    pub conninfo: String,
    pub server: Option<ServerSide>,
    /// Why the server could not be asked (then `server` is None).
    pub connect_error: Option<String>,
    /// The newest complete backup of this node in the sidecars.
    pub backup: Option<BackupFacts>,
    /// Why the sidecars (or archives) could not be read.
    pub catalog_error: Option<String>,
    /// Archive-pending backups newer than `backup`.
    pub newer_pending: Vec<String>,
    /// The archive directory judged for this node, and why it was chosen.
    pub archive_dir: Option<PathBuf>,
    /// Backups a helper holds open for this node.
    pub held: Vec<Held>,
}

/// What the server says (pg_monitor is enough for all of it).
#[derive(Serialize, Debug, Clone)]
pub struct ServerSide {
    pub version: String,
    pub system_identifier: String,
    pub timeline: u32,
    pub in_recovery: bool,
    pub archive_mode: String,
    pub archive_command: String,
    pub archive_library: String,
    pub wal_segment_size: u64,
    pub archiver: ArchiverStats,
    /// The segment being written (None on a standby).
    pub current_wal_file: Option<String>,
    /// Finished segments not archived yet (None: on a standby, or not computable).
    pub lag_segments: Option<u64>,
    /// Seconds since the last successful archiving, when segments wait (0 when none wait).
    pub lag_seconds: Option<f64>,
    /// wal-archive's --archive-dir in archive_command.
    pub archive_command_dir: Option<PathBuf>,
    /// Whether the server's user can write that directory (None: not checked, see the note).
    pub archive_dir_writable: Option<bool>,
    pub archive_dir_note: Option<String>,
}

/// The newest complete backup of a node, and what the sidecars and the archive say of it.
#[derive(Serialize, Debug, Clone)]
pub struct BackupFacts {
    pub backup_id: String,
    pub started_at: Option<String>,
    pub stopped_at: Option<String>,
    /// Seconds since it stopped.
    pub age_seconds: Option<i64>,
    pub system_identifier: Option<String>,
    pub timeline: u32,
    pub start_lsn: Lsn,
    pub stop_lsn: Lsn,
    pub sidecar_dirs: Vec<PathBuf>,
    /// What `verify` finds wrong with its sidecar copies (empty: sound).
    pub sidecar_problems: Vec<String>,
    /// None without an archive directory for this node.
    pub archive: Option<ArchiveFacts>,
}

/// The archive from a backup's start to the archive's newest segment.
#[derive(Serialize, Debug, Clone, Default)]
pub struct ArchiveFacts {
    pub dir: PathBuf,
    /// The first segment missing between the backup's start and the newest archived segment.
    pub first_missing: Option<String>,
    /// The end of the unbroken run from the backup's start.
    pub reach_segment: Option<String>,
    /// The newest segment archived on the timeline the run ends on.
    pub newest_segment: Option<String>,
    /// How many segment headers were read (every one from the start to the end of the run).
    pub segments_checked: u64,
    /// The first segment whose header names another cluster.
    pub foreign_segment: Option<String>,
    /// The wal-archive marker names another cluster, or cannot be read.
    pub marker_problem: Option<String>,
    /// What could not be read.
    pub errors: Vec<String>,
    /// The cluster the segments must belong to (the backup's system identifier).
    #[serde(skip)]
    pub want: Option<u64>,
    /// The segments whose headers are still to be read, in order.
    #[serde(skip)]
    pub to_check: Vec<String>,
}

/// A backup a helper holds open.
#[derive(Serialize, Debug, Clone)]
pub struct Held {
    pub backup_id: String,
    pub phase: String,
    pub helper_pid: u32,
    pub started_at: String,
    pub held_seconds: i64,
    pub nodes: Vec<String>,
}

/// Gather every fact `cfg` asks for.
pub fn gather(cfg: &Config, now: chrono::DateTime<chrono::Utc>) -> Gathered {
    let mut nodes = resolve_nodes(cfg);
    ask_servers(&mut nodes);
    let mut dirs: Vec<PathBuf> = cfg.archive_dirs.clone();
    dirs.extend(cfg.archive_of.iter().map(|(_, d)| d.clone()));
    for (n, _) in &nodes {
        if let Some(d) = archive_dir_for(cfg, n) {
            dirs.push(d);
        }
    }
    dirs.sort();
    dirs.dedup();
    let mut out: Vec<NodeFacts> = nodes.into_iter().map(|(n, _)| n).collect();
    match catalog::discover(&cfg.sidecar_dirs, &dirs) {
        Ok(mut cat) => {
            for n in out.iter_mut() {
                n.archive_dir = archive_dir_for(cfg, n);
                backup_facts(n, &mut cat, &cfg.archive_dirs, now);
            }
            check_heads(&mut out);
        }
        Err(e) => {
            for n in out.iter_mut() {
                n.catalog_error = Some(e.msg.clone());
            }
        }
    }
    let (other_held, other_errors) = held(cfg, &mut out, now);
    Gathered { nodes: out, other_held, other_errors }
}

/// The nodes to check with their connection settings: each --node, or what --discover citus
/// finds (a coordinator that cannot be asked is a node with its error), or `default`.
fn resolve_nodes(cfg: &Config) -> Vec<(NodeFacts, Option<ConnInfo>)> {
    let parsed = |name: &str, ci: &str| {
        let mut f = NodeFacts { name: name.to_string(), ..NodeFacts::default() };
        match ConnInfo::parse(ci) {
            Ok(ci) => {
                let mut ci = ci.with_env_defaults();
                if ci.get("connect_timeout").is_none_or(str::is_empty) {
                    ci.set("connect_timeout", CONNECT_TIMEOUT);
                }
                f.conninfo = ci.redacted();
                (f, Some(ci))
            }
            Err(e) => {
                f.connect_error = Some(crate::pg::conninfo::redact_text(&e.msg));
                (f, None)
            }
        }
    };
    let mut nodes: Vec<(NodeFacts, Option<ConnInfo>)> = cfg.nodes.iter().map(|(n, ci)| parsed(n, ci)).collect();
    if nodes.is_empty() {
        nodes.push(parsed("default", ""));
    }
    if !cfg.discover_citus {
        return nodes;
    }
    let Some((mut coord, ci)) = nodes.into_iter().next() else { return Vec::new() };
    coord.name = discovery::COORDINATOR.into();
    let Some(ci) = ci else { return vec![(coord, None)] };
    match discovery::citus(&ci, discovery::Role::Primary) {
        Ok(found) => found.into_iter().map(|(name, ci)| parsed(&name, &ci.to_secret_string())).collect(),
        Err(e) => {
            coord.connect_error = Some(e.msg);
            vec![(coord, None)]
        }
    }
}

/// Ask every server at once (one session each, closed at once).
fn ask_servers(nodes: &mut [(NodeFacts, Option<ConnInfo>)]) {
    std::thread::scope(|s| {
        let jobs: Vec<_> = nodes
            .iter_mut()
            .filter(|(f, _)| f.connect_error.is_none())
            .filter_map(|(f, ci)| ci.as_ref().map(|ci| (f, ci)))
            .map(|(f, ci)| (f, s.spawn(move || server_side(ci))))
            .collect();
        for (f, job) in jobs {
            match job.join() {
                Ok(Ok(server)) => f.server = Some(server),
                Ok(Err(e)) => f.connect_error = Some(e.msg),
                Err(_) => f.connect_error = Some("the check of this node panicked".into()),
            }
        }
    });
}

/// One server's facts.
fn server_side(ci: &ConnInfo) -> Result<ServerSide> {
    let mut c = crate::pg::tls::connect(ci, APPLICATION_NAME)?;
    let where_ = |e: crate::error::Error| e.within(ci.endpoint());
    c.batch_execute(STATEMENT_TIMEOUT).map_err(|e| err!("{}: {}", ci.endpoint(), crate::error::pg_error(&e)))?;
    let v = api::server_version_num(&mut c).map_err(where_)?;
    let f = api::server_facts(&mut c, v).map_err(where_)?;
    let archiver = api::archiver_stats(&mut c).map_err(where_)?;
    let (current, since_archived) = api::archive_position(&mut c).map_err(where_)?;
    let seg = f.wal_segment_size;
    let segno = |name: &str| name.get(..24).and_then(|n| scan::parse_segment_name(n, seg)).map(|(_, s)| s);
    let lag_segments = match (&current, &archiver.last_archived_wal) {
        (Some(cur), Some(last)) => segno(cur).zip(segno(last)).map(|(c, l)| c.saturating_sub(l + 1)),
        (Some(cur), None) => segno(cur).map(|c| c.saturating_sub(1)),
        _ => None,
    };
    let lag_seconds = match lag_segments {
        Some(0) => Some(0.0),
        Some(_) => since_archived,
        None => None,
    };
    let archive_command_dir = wal_archive_dir(&f.archive_command);
    let (archive_dir_writable, archive_dir_note) = match &archive_command_dir {
        Some(d) => writable_by_server(d, f.data_directory.as_deref()),
        None => (None, Some("archive_command is not pg-backup-hooks wal-archive with --archive-dir".into())),
    };
    Ok(ServerSide {
        version: f.version,
        system_identifier: f.system_identifier.to_string(),
        timeline: f.timeline,
        in_recovery: f.in_recovery,
        archive_mode: api::archive_mode_word(f.archive_mode).into(),
        archive_command: f.archive_command,
        archive_library: f.archive_library,
        wal_segment_size: seg,
        archiver,
        current_wal_file: current,
        lag_segments,
        lag_seconds,
        archive_command_dir,
        archive_dir_writable,
        archive_dir_note,
    })
}

/// wal-archive's `--archive-dir` in an archive_command (`pg-backup-hooks-wal-archive` or
/// `pg-backup-hooks wal-archive`, the value as the next word or after `=`).
pub fn wal_archive_dir(command: &str) -> Option<PathBuf> {
    let words = shell_words(command);
    let at = words.iter().enumerate().position(|(i, w)| {
        w.ends_with("pg-backup-hooks-wal-archive")
            || (w.ends_with("pg-backup-hooks") && words.get(i + 1).map(String::as_str) == Some("wal-archive"))
    })?;
    let rest = &words[at..];
    rest.iter().enumerate().find_map(|(i, w)| {
        if w == "--archive-dir" {
            rest.get(i + 1).map(PathBuf::from)
        } else {
            w.strip_prefix("--archive-dir=").map(PathBuf::from)
        }
    })
}

/// A command line split into words as sh would (quotes and backslashes; nothing expanded).
fn shell_words(s: &str) -> Vec<String> {
    let (mut words, mut cur, mut in_word) = (Vec::new(), String::new(), false);
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        match c {
            '\'' => {
                in_word = true;
                cur.extend(chars.by_ref().take_while(|&c| c != '\''));
            }
            '"' => {
                in_word = true;
                while let Some(c) = chars.next() {
                    match c {
                        '"' => break,
                        '\\' => cur.extend(chars.next()),
                        c => cur.push(c),
                    }
                }
            }
            '\\' => {
                in_word = true;
                cur.extend(chars.next());
            }
            c if c.is_whitespace() || ";&|".contains(c) => {
                if in_word {
                    words.push(std::mem::take(&mut cur));
                    in_word = false;
                }
            }
            c => {
                in_word = true;
                cur.push(c);
            }
        }
    }
    if in_word {
        words.push(cur);
    }
    words
}

/// Can the server's user (the owner of its data directory, when that is local) write the
/// archive directory? (None, why) when it cannot be told from here.
fn writable_by_server(dir: &Path, data_directory: Option<&str>) -> (Option<bool>, Option<String>) {
    let Some(data) = data_directory else {
        return (None, Some("the server's data directory is not visible to this role (pg_read_all_settings)".into()));
    };
    let owner = match std::fs::metadata(data) {
        Ok(m) => (m.uid(), m.gid()),
        Err(_) => return (None, Some(format!("the data directory {} is not on this machine", data))),
    };
    let m = match std::fs::metadata(dir) {
        Ok(m) if m.is_dir() => m,
        Ok(_) => return (Some(false), Some(format!("{} is not a directory", dir.display()))),
        Err(e) => return (None, Some(format!("{}: {} (not on this machine?)", dir.display(), e))),
    };
    let mode = m.mode();
    let bits = if owner.0 == 0 {
        0o300
    } else if m.uid() == owner.0 {
        (mode >> 6) & 0o3
    } else if m.gid() == owner.1 {
        (mode >> 3) & 0o3
    } else {
        mode & 0o3
    };
    if owner.0 == 0 || bits == 0o3 {
        (Some(true), None)
    } else {
        (
            Some(false),
            Some(format!(
                "{} (owner uid {}, mode {:o}) is not writable by the server's user (uid {}, gid {})",
                dir.display(),
                m.uid(),
                mode & 0o7777,
                owner.0,
                owner.1
            )),
        )
    }
}

/// The archive directory given for a node: its NODE=DIR, else the only DIR, else none (the
/// catalog then picks the one holding its backup's start), else the local directory its
/// archive_command writes.
fn archive_dir_for(cfg: &Config, n: &NodeFacts) -> Option<PathBuf> {
    if let Some((_, d)) = cfg.archive_of.iter().find(|(name, _)| *name == n.name) {
        return Some(d.clone());
    }
    if cfg.archive_dirs.len() == 1 {
        return cfg.archive_dirs.first().cloned();
    }
    if !cfg.archive_dirs.is_empty() {
        return None;
    }
    n.server.as_ref().and_then(|s| s.archive_command_dir.clone()).filter(|d| d.is_dir())
}

/// The node's newest complete backup in the sidecars, its sidecar verified, its archive judged.
fn backup_facts(n: &mut NodeFacts, cat: &mut Catalog, plain_dirs: &[PathBuf], now: chrono::DateTime<chrono::Utc>) {
    let name = n.name.clone();
    let has_node = |e: &Entry| e.sidecar_present && e.nodes.iter().any(|r| r.name.as_deref() == Some(name.as_str()));
    let Some(i) = cat.entries.iter().position(|e| has_node(e) && e.status == SidecarStatus::Complete) else {
        n.newer_pending = cat.entries.iter().filter(|e| has_node(e)).map(|e| e.backup_id.clone()).collect();
        return;
    };
    n.newer_pending = cat.entries[..i].iter().filter(|e| has_node(e)).map(|e| e.backup_id.clone()).collect();
    let e = &cat.entries[i];
    let Some(row) = e.nodes.iter().find(|r| r.name.as_deref() == Some(name.as_str())).cloned() else { return };
    let mut b = BackupFacts {
        backup_id: e.backup_id.clone(),
        started_at: e.started_at.clone(),
        stopped_at: e.stopped_at.clone(),
        age_seconds: e.stopped_at.as_deref().and_then(catalog::epoch).map(|t| now.timestamp() - t),
        system_identifier: row.system_identifier.clone(),
        timeline: row.timeline,
        start_lsn: row.start_lsn,
        stop_lsn: row.stop_lsn,
        sidecar_dirs: e.sidecar_dirs.clone(),
        sidecar_problems: sidecar_problems(&e.sidecar_dirs, &e.backup_id, &name),
        archive: None,
    };
    if n.archive_dir.is_none() && !plain_dirs.is_empty() {
        n.archive_dir = row.archive.as_ref().and_then(|a| a.dir.clone());
        if n.archive_dir.is_none() {
            b.archive = Some(ArchiveFacts {
                errors: vec![format!(
                    "no --archive-dir holds its start segment {} of this cluster",
                    scan::segment_name(row.timeline, row.start_lsn.0 / row.seg_size.max(1), row.seg_size.max(1))
                )],
                ..ArchiveFacts::default()
            });
        }
    }
    if let Some(dir) = n.archive_dir.clone() {
        b.archive = Some(match cat.archives.iter_mut().find(|a| a.dir == dir) {
            Some(a) => archive_facts(a, &row),
            None => {
                ArchiveFacts { dir, errors: vec!["the archive directory was not listed".into()], ..Default::default() }
            }
        });
    }
    n.backup = Some(b);
}

/// What `verify` finds wrong with each copy of the backup's sidecar, for this node or the
/// backup as a whole.
fn sidecar_problems(dirs: &[PathBuf], id: &str, node: &str) -> Vec<String> {
    let mut out = Vec::new();
    for d in dirs {
        match sidecar::verify(d, id) {
            Ok((_, problems)) => out.extend(
                problems
                    .iter()
                    .filter(|p| p.node.as_deref().is_none_or(|n| n == node))
                    .map(|p| format!("{}: {}", d.display(), p)),
            ),
            Err(e) => out.push(e.msg),
        }
    }
    out
}

/// The archive from the backup's start: the first gap up to the newest segment, the header
/// of every segment of the run, the marker.
fn archive_facts(a: &mut ArchiveDir, row: &NodeRow) -> ArchiveFacts {
    let mut f = ArchiveFacts { dir: a.dir.clone(), ..ArchiveFacts::default() };
    let want: Option<u64> = row.system_identifier.as_deref().and_then(|s| s.parse().ok());
    match store::read_marker(&a.dir) {
        Ok(Some(m)) if want.is_some_and(|w| m.system_identifier != w.to_string()) => {
            f.marker_problem = Some(format!(
                "its marker {} names system identifier {}, not this cluster's",
                scan::MARKER,
                m.system_identifier
            ));
        }
        Ok(_) => {}
        Err(e) => f.marker_problem = Some(e.msg),
    }
    let s = match a.scan(row.seg_size) {
        Ok(s) => s,
        Err(e) => {
            f.errors.push(e.msg);
            return f;
        }
    };
    let (tli, start) = (row.timeline, s.segno_of(row.start_lsn));
    let stop = s.segno_of(Lsn(row.stop_lsn.0.saturating_sub(1)));
    if let Some(m) = s.first_missing(tli, start, stop) {
        f.first_missing = Some(s.segment_name(tli, m));
        return f;
    }
    let Some(r) = s.reach(tli, row.start_lsn) else {
        f.first_missing = Some(s.segment_name(tli, start));
        return f;
    };
    f.reach_segment = Some(r.name.clone());
    let newest = s.segments(r.timeline).last().map(|x| x.segno).unwrap_or(r.segno);
    f.newest_segment = Some(s.segment_name(r.timeline, newest));
    if newest > r.segno {
        f.first_missing = Some(s.segment_name(r.timeline, r.segno + 1));
    }
    f.want = want;
    f.to_check = run_segments(s, tli, start, &r);
    f
}

/// The stored names of every segment from the backup's start to the end of the run (on the
/// timelines between), in order.
fn run_segments(s: &Scan, tli: u32, start: u64, r: &scan::Reach) -> Vec<String> {
    let mut out = Vec::new();
    for t in tli..=r.timeline {
        let v = s.segments(t);
        let from = v.partition_point(|x| x.segno < start);
        for x in v[from..].iter().take_while(|x| x.segno <= r.segno) {
            out.push(file::stored_name(&s.segment_name(t, x.segno), x.compression));
        }
    }
    out
}

/// A segment header's system identifier (None: no valid long header), or why it could not
/// be read.
type HeadResult = std::result::Result<Option<u64>, String>;

/// Read every header the nodes' archives need, each (directory, file) once, in parallel,
/// then judge each node's run in order up to the first segment of another cluster.
fn check_heads(nodes: &mut [NodeFacts]) {
    let archives = || nodes.iter().filter_map(|n| n.backup.as_ref()?.archive.as_ref());
    let mut wanted: Vec<(PathBuf, String)> =
        archives().flat_map(|a| a.to_check.iter().map(|n| (a.dir.clone(), n.clone()))).collect();
    wanted.sort_unstable();
    wanted.dedup();
    let heads = read_heads(&wanted);
    for a in nodes.iter_mut().filter_map(|n| n.backup.as_mut()?.archive.as_mut()) {
        let Some(want) = a.want else { continue };
        for stored in std::mem::take(&mut a.to_check) {
            a.segments_checked += 1;
            match heads.get(&(a.dir.clone(), stored.clone())) {
                Some(Ok(Some(id))) if *id == want => continue,
                Some(Ok(Some(id))) => a.foreign_segment = Some(format!("{} has system identifier {}", stored, id)),
                Some(Ok(None)) => a.foreign_segment = Some(format!("{} has no valid WAL segment header", stored)),
                Some(Err(e)) => a.errors.push(e.clone()),
                None => a.errors.push(format!("{}: not read", stored)),
            }
            break;
        }
    }
}

/// The headers of `files`, read by a few threads (reading 40 bytes of many files is bound by
/// system calls, which run in parallel).
fn read_heads(files: &[(PathBuf, String)]) -> HashMap<(PathBuf, String), HeadResult> {
    let threads = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1).clamp(1, 8);
    let chunk = files.len().div_ceil(threads).max(1);
    let read = |(dir, stored): &(PathBuf, String)| -> HeadResult {
        let head = file::read_head(dir, stored, scan::HEAD_BYTES).map_err(|e| e.msg)?;
        Ok(head.as_deref().and_then(scan::parse_head).map(|h| h.system_identifier))
    };
    std::thread::scope(|s| {
        let jobs: Vec<_> = files
            .chunks(chunk)
            .map(|c| s.spawn(move || c.iter().map(|f| (f.clone(), read(f))).collect::<Vec<_>>()))
            .collect();
        jobs.into_iter().flat_map(|j| j.join().unwrap_or_default()).collect()
    })
}

/// The backups helpers hold, each given to the checked nodes it names; the rest, and what
/// could not be asked, belong to no node.
fn held(cfg: &Config, nodes: &mut [NodeFacts], now: chrono::DateTime<chrono::Utc>) -> (Vec<Held>, Vec<String>) {
    let (mut other, mut errors) = (Vec::new(), Vec::new());
    let dir = cfg.run_dir.clone().unwrap_or_else(rundir::default_dir);
    if cfg.run_dir.is_none() && !dir.exists() {
        return (other, errors);
    }
    let run = match RunDir::open(Some(dir), false) {
        Ok(r) => r,
        Err(e) => {
            errors.push(e.msg);
            return (other, errors);
        }
    };
    for id in run.ids() {
        let b = match client::request(&run, &id, &Request::Status, &mut |_| {}) {
            Ok(Some(Reply::Status { backup })) => backup,
            Ok(None) => continue,
            Ok(Some(other)) => {
                errors.push(format!("the helper of backup {} answered {:?}", id, other));
                continue;
            }
            Err(e) => {
                errors.push(format!("the helper of backup {}: {}", id, e.msg));
                continue;
            }
        };
        let held_seconds = chrono::DateTime::parse_from_rfc3339(&b.started_at)
            .map(|t| (now - t.with_timezone(&chrono::Utc)).num_seconds())
            .unwrap_or(0);
        let h = Held {
            backup_id: b.backup_id.clone(),
            phase: b.phase.as_str().into(),
            helper_pid: b.helper_pid,
            started_at: b.started_at.clone(),
            held_seconds,
            nodes: b.nodes.iter().map(|n| n.name.clone()).collect(),
        };
        let mut given = false;
        for n in nodes.iter_mut().filter(|n| h.nodes.contains(&n.name)) {
            n.held.push(h.clone());
            given = true;
        }
        if !given {
            other.push(h);
        }
    }
    (other, errors)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_wal_archives_directory_in_archive_command() {
        let d = |s: &str| wal_archive_dir(s).map(|p| p.display().to_string());
        assert_eq!(d("/usr/bin/pg-backup-hooks-wal-archive --archive-dir /srv/a %p %f").as_deref(), Some("/srv/a"));
        assert_eq!(d("pg-backup-hooks wal-archive --archive-dir='/srv/my a' %p %f").as_deref(), Some("/srv/my a"));
        assert_eq!(d("pg-backup-hooks wal-archive --compress zstd --archive-dir=/x %p %f").as_deref(), Some("/x"));
        assert_eq!(d("test ! -f /a/%f && cp %p /a/%f"), None);
        assert_eq!(d("pg-backup-hooks-wal-archive %p %f"), None);
        assert_eq!(d(""), None);
    }

    #[test]
    fn writable_is_judged_for_the_data_directory_owner() {
        let t = tempfile::tempdir().unwrap();
        let data = t.path().join("data");
        let arch = t.path().join("arch");
        std::fs::create_dir(&data).unwrap();
        std::fs::create_dir(&arch).unwrap();
        let (ok, note) = writable_by_server(&arch, data.to_str());
        assert_eq!(ok, Some(true), "{:?}", note);
        let (ok, note) = writable_by_server(&arch, Some("/nonexistent/data"));
        assert_eq!(ok, None);
        assert!(note.unwrap().contains("not on this machine"));
        let (ok, _) = writable_by_server(&t.path().join("nope"), data.to_str());
        assert_eq!(ok, None);
        if !nix::unistd::geteuid().is_root() {
            return;
        }
        // A server user that is not root: the archive directory's owner and mode decide.
        use std::os::unix::fs::PermissionsExt;
        std::os::unix::fs::chown(&data, Some(54321), Some(54321)).unwrap();
        std::fs::set_permissions(&arch, std::fs::Permissions::from_mode(0o755)).unwrap();
        let (ok, note) = writable_by_server(&arch, data.to_str());
        assert_eq!(ok, Some(false));
        assert!(note.unwrap().contains("not writable by the server's user (uid 54321"));
        std::os::unix::fs::chown(&arch, None, Some(54321)).unwrap();
        std::fs::set_permissions(&arch, std::fs::Permissions::from_mode(0o770)).unwrap();
        assert_eq!(writable_by_server(&arch, data.to_str()).0, Some(true), "group-writable for its group");
        std::os::unix::fs::chown(&arch, Some(54321), Some(0)).unwrap();
        std::fs::set_permissions(&arch, std::fs::Permissions::from_mode(0o500)).unwrap();
        assert_eq!(writable_by_server(&arch, data.to_str()).0, Some(false), "its own, but read-only");
    }
}
