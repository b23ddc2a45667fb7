//! One node's held session: connect and check, start, heartbeat, stop, archive progress.

use std::sync::Mutex;
use std::time::Instant;

use postgres::Client;

use crate::error::{Error, Result};
use crate::inventory::source::{self, Chosen};
use crate::pg::api::{self, ArchiveMode, ArchiverStats, ServerFacts, StopOutput};
use crate::pg::conninfo::ConnInfo;
use crate::pg::label::BackupLabel;
use crate::pg::wal::{self, Lsn};
use crate::protocol::{InventoryFile, InventoryStatus, NodeStatus, StopResult};
use crate::rundir::RunDir;

use super::lock;

pub struct Node {
    pub name: String,
    pub conninfo: String,
    pub facts: ServerFacts,
    client: Mutex<Client>,
    pub state: Mutex<NodeState>,
    /// For a standby: a session on its primary (`pre --node-primary`), where the backup's
    /// restore point is created and the archiving of the WAL it needs is checked.
    pub primary: Option<Primary>,
    /// Where this node's inventories are read from (chosen right after connecting).
    pub inventory_source: Chosen,
}

pub struct Primary {
    pub conninfo: String,
    pub facts: ServerFacts,
    client: Mutex<Client>,
}

#[derive(Clone, Debug, Default)]
pub struct NodeState {
    pub start_lsn: Option<Lsn>,
    /// Why this node's backup is lost, if it is.
    pub failure: Option<String>,
    pub stop: Option<StopResult>,
    pub last_heartbeat: Option<Instant>,
    /// The backup was stopped and its label thrown away (abort).
    pub discarded: bool,
    pub inventory: InventoryStatus,
}

/// Which of a node's two inventories.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Moment {
    /// Right after the backup started.
    Start,
    /// Right after it stopped.
    Stop,
}

impl Moment {
    /// The word in the run dir's file names.
    pub fn as_str(self) -> &'static str {
        match self {
            Moment::Start => "start",
            Moment::Stop => "stop",
        }
    }
}

/// Warnings found while checking a node; errors end the whole backup.
pub struct Checked {
    pub node: Node,
    pub warnings: Vec<String>,
}
impl Node {
    /// Connect, turn off session timeouts, learn the server's facts, and check that the
    /// node can give a restorable backup at all (version, WAL archiving).
    pub fn connect(name: &str, info: &ConnInfo, backup_id: &str) -> Result<Checked> {
        let mut client = crate::pg::tls::connect(info, &format!("pg-backup-hooks {}", backup_id))?;
        let version_num = api::server_version_num(&mut client)?;
        api::check_supported(version_num)?;
        api::prepare_session(&mut client, version_num)?;
        let facts = api::server_facts(&mut client, version_num)?;
        let mut warnings = check_archiving(&facts)?;
        warnings.extend(archiver_warning(&mut client));
        Ok(Checked {
            node: Node {
                name: name.to_string(),
                conninfo: info.redacted(),
                facts,
                client: Mutex::new(client),
                state: Mutex::new(NodeState::default()),
                primary: None,
                inventory_source: Chosen::None("not chosen yet".into()),
            },
            warnings,
        })
    }

    /// Attach the primary of this standby (`pre --node-primary`): it must be a primary of the
    /// same cluster (system identifier) that archives WAL.
    pub fn attach_primary(&mut self, info: &ConnInfo, backup_id: &str) -> Result<()> {
        if !self.facts.in_recovery {
            return Err(err!("--node-primary is only for a standby node, and this node is a primary"));
        }
        let mut client = crate::pg::tls::connect(info, &format!("pg-backup-hooks {}", backup_id))
            .map_err(|e| e.within("its primary"))?;
        let version_num = api::server_version_num(&mut client)?;
        api::prepare_session(&mut client, version_num)?;
        let facts = api::server_facts(&mut client, version_num)?;
        if facts.in_recovery {
            return Err(err!("--node-primary {} is itself a standby: give the primary", info.redacted()));
        }
        if facts.system_identifier != self.facts.system_identifier {
            return Err(err!(
                "--node-primary {} belongs to system {}, this standby to {}: give this standby's own primary",
                info.redacted(),
                facts.system_identifier,
                self.facts.system_identifier
            ));
        }
        if facts.archive_mode == ArchiveMode::Off {
            return Err(err!("--node-primary {}: archive_mode is off there", info.redacted()));
        }
        self.primary = Some(Primary { conninfo: info.redacted(), facts, client: Mutex::new(client) });
        Ok(())
    }

    pub fn start(&self, label: &str, fast: bool) -> Result<Lsn> {
        let lsn = api::start_backup(&mut lock(&self.client), self.facts.version_num, label, fast)?;
        lock(&self.state).start_lsn = Some(lsn);
        Ok(lsn)
    }

    /// Choose where this node's inventories come from; `off` (a benchmark switch) chooses none.
    pub fn choose_inventory_source(&mut self, off: bool) -> &Chosen {
        self.inventory_source = if off {
            Chosen::None("no inventory: turned off (PGBH_NO_INVENTORY, a switch for benchmarks)".into())
        } else {
            source::choose(&self.facts, &mut lock(&self.client))
        };
        let mut st = lock(&self.state);
        st.inventory.source = self.inventory_source.source();
        if let Chosen::None(why) = &self.inventory_source {
            st.inventory.note = Some(why.clone());
        }
        drop(st);
        &self.inventory_source
    }

    /// Take this node's inventory at `when` and keep it in the run dir; Ok without a source.
    pub fn take_inventory(&self, run: &RunDir, id: &str, when: Moment) -> Result<()> {
        if when == Moment::Stop && lock(&self.state).inventory.start.is_none() {
            return Ok(()); // no start inventory: a stop inventory proves nothing alone
        }
        let t0 = Instant::now();
        // At stop, names and kinds are all the proof needs (missing, stale): no stat per file.
        let Some(inv) = source::take(&self.inventory_source, &self.client, when == Moment::Stop)? else {
            return Ok(());
        };
        let data = inv.encode()?;
        crate::fsutil::write_atomic(&run.inventory_file(id, &self.name, when.as_str()), &data, 0o600, None)?;
        let file = InventoryFile {
            sha256: crate::sidecar::sha256_hex(&data),
            size: data.len() as u64,
            entries: inv.entries.len() as u64,
        };
        log::info!(
            "node {}: {} inventory: {} entries from {} in {:.3} s ({} bytes)",
            self.name,
            when.as_str(),
            file.entries,
            inv.source,
            t0.elapsed().as_secs_f64(),
            file.size
        );
        let mut st = lock(&self.state);
        match when {
            Moment::Start => st.inventory.start = Some(file),
            Moment::Stop => st.inventory.stop = Some(file),
        }
        Ok(())
    }

    /// An inventory could not be taken: the node has none, and the note says why.
    pub fn lose_inventory(&self, when: Moment, why: &str) {
        let note = format!(
            "the {} inventory could not be taken ({}): this copy's files cannot be verified",
            when.as_str(),
            why
        );
        log::warn!("node {}: {}", self.name, note);
        let mut st = lock(&self.state);
        st.inventory.source = None;
        st.inventory.note.get_or_insert(note);
    }

    pub fn failure(&self) -> Option<String> {
        lock(&self.state).failure.clone()
    }

    pub fn fail(&self, why: String) {
        let mut st = lock(&self.state);
        if st.failure.is_none() {
            log::error!("node {}: {}", self.name, why);
            st.failure = Some(why);
        }
    }

    /// Cheap liveness check; notices a lost session and a standby promoted mid-backup.
    /// Skips a node whose session is busy (a stop or archive check in progress).
    pub fn heartbeat(&self) {
        if self.failure().is_some() || lock(&self.state).stop.is_some() {
            return;
        }
        let Ok(mut c) = self.client.try_lock() else { return };
        match api::heartbeat(&mut c) {
            Ok(in_recovery) if in_recovery != self.facts.in_recovery => {
                self.fail("the standby was promoted during the backup: this copy cannot be restored".into())
            }
            Ok(_) => lock(&self.state).last_heartbeat = Some(Instant::now()),
            Err(e) => self.fail(format!("session lost during the backup ({}): the server ended the backup", e)),
        }
    }

    /// Stop this node's backup (no server-side archive wait). Idempotent once stopped.
    pub fn stop(&self) -> Result<StopResult> {
        if let Some(s) = lock(&self.state).stop.clone() {
            return Ok(s);
        }
        if let Some(f) = self.failure() {
            return Err(Error::new(f));
        }
        let out = match api::stop_backup(&mut lock(&self.client), self.facts.version_num) {
            Ok(o) => o,
            Err(e) => {
                let why = if e.msg.contains("promoted") {
                    format!("the standby was promoted during the backup ({})", e)
                } else {
                    format!("stopping the backup failed: {}", e)
                };
                self.fail(why.clone());
                return Err(Error::new(why));
            }
        };
        let result = self.stop_result(out)?;
        lock(&self.state).stop = Some(result.clone());
        Ok(result)
    }

    /// What the stop function returned, with the WAL files the backup needs named and what
    /// post waits for noted; a label we cannot read loses the node's backup.
    fn stop_result(&self, out: StopOutput) -> Result<StopResult> {
        let label = BackupLabel::parse(&out.labelfile).map_err(|e| {
            let why = format!("the server returned a label we cannot read ({}): {:?}", e, out.labelfile);
            self.fail(why.clone());
            Error::new(why)
        })?;
        let tli = label.start_timeline.or(label.start_file_timeline()).unwrap_or(self.facts.timeline);
        let seg = self.facts.wal_segment_size;
        let standby = self.facts.in_recovery;
        let mut result = StopResult {
            stop_lsn: out.lsn,
            stopped_at: chrono::Utc::now().to_rfc3339(),
            timeline: tli,
            start_wal_file: label.start_wal_file.clone(),
            stop_wal_file: wal::stop_segment_name(tli, out.lsn, seg),
            backup_history_file: (!standby).then(|| wal::backup_history_name(tli, label.start_lsn, seg)),
            labelfile: out.labelfile,
            spcmapfile: out.spcmapfile,
            archived: false,
            archive_note: None,
            archiver: None,
            restore_point_lsn: None,
            restore_point_wal_file: None,
        };
        if let (true, Some(p)) = (standby, &self.primary) {
            result.archive_note = Some(format!(
                "taken from a standby: post waited for segment {} and the restore point in its primary's archive ({})",
                result.stop_wal_file, p.conninfo
            ));
        } else if standby && self.facts.archive_mode != ArchiveMode::Always {
            result.archived = true;
            result.archive_note = Some(format!(
                "taken from a standby without archive_mode = always: segment {} must reach the archive from the primary; post did not wait for it",
                result.stop_wal_file
            ));
        }
        Ok(result)
    }

    /// Stop and throw away the label (abort). Errors are logged: the session closing ends
    /// the backup anyway.
    pub fn discard(&self) {
        {
            let mut st = lock(&self.state);
            if st.stop.is_some() || st.start_lsn.is_none() || st.failure.is_some() || st.discarded {
                return;
            }
            st.discarded = true;
        }
        match api::stop_backup(&mut lock(&self.client), self.facts.version_num) {
            Ok(_) => log::info!("node {}: backup stopped and discarded", self.name),
            Err(e) => {
                log::warn!("node {}: stop while discarding failed ({}); closing the session ends it", self.name, e)
            }
        }
    }

    /// Has the WAL this backup needs reached the archive? Updates the node's stop result.
    pub fn check_archived(&self) -> Result<bool> {
        let Some(stop) = lock(&self.state).stop.clone() else { return Ok(false) };
        if stop.archived {
            return Ok(true);
        }
        // A standby with a known primary: that primary archives the WAL the backup needs.
        let (mut c, v) = match &self.primary {
            Some(p) => (lock(&p.client), p.facts.version_num),
            None => (lock(&self.client), self.facts.version_num),
        };
        let mut segments = vec![stop.stop_wal_file.clone()];
        segments.extend(stop.restore_point_wal_file.iter().cloned());
        let stats = api::archiver_stats(&mut c).map_err(|e| e.within("cannot read pg_stat_archiver"))?;
        let covered = |names: &[String]| {
            stats.last_archived_wal.as_deref().is_some_and(|last| {
                last.get(..24).is_some_and(wal::is_segment_name) && names.iter().all(|n| last >= n.as_str())
            })
        };
        let segments_done = covered(&segments) || api::archive_status_done(&mut c, v, &segments) == Some(true);
        // The history file's .ready appears after the stop's WAL switch, so the archiver can
        // take later segments first: its own status decides when it can be read.
        let history_done = match &stop.backup_history_file {
            None => true,
            Some(h) => {
                let one = std::slice::from_ref(h);
                api::archive_status_done(&mut c, v, one).unwrap_or_else(|| covered(one) && covered(&segments))
            }
        };
        let done = segments_done && history_done;
        drop(c);
        let mut st = lock(&self.state);
        if let Some(s) = st.stop.as_mut() {
            s.archiver = Some(stats);
            s.archived = done;
        }
        Ok(done)
    }

    /// Run `f` on this node's session (restore points, WAL switch).
    pub fn with_client<T>(&self, f: impl FnOnce(&mut Client) -> Result<T>) -> Result<T> {
        f(&mut lock(&self.client))
    }

    /// Run `f` where this node's restore point is written: its own session on a primary,
    /// its primary's for a standby given one; None for a standby without.
    pub fn with_restore_point_client<T>(&self, f: impl FnOnce(&mut Client) -> Result<T>) -> Option<Result<T>> {
        match (&self.primary, self.facts.in_recovery) {
            (Some(p), _) => Some(f(&mut lock(&p.client))),
            (None, false) => Some(f(&mut lock(&self.client))),
            (None, true) => None,
        }
    }

    /// Record where the restore point landed on this node; the archive wait then also
    /// waits for the segment holding it. `after` is a location at or after the record.
    pub fn set_restore_point(&self, after: Lsn) {
        let seg = self.facts.wal_segment_size;
        let mut st = lock(&self.state);
        if let Some(s) = st.stop.as_mut() {
            s.restore_point_lsn = Some(after);
            s.restore_point_wal_file = Some(wal::stop_segment_name(s.timeline, after, seg));
            if s.archive_note.is_none() || self.primary.is_some() {
                s.archived = false;
            }
        }
    }

    /// Stopped, and the WAL its backup needs is archived (or no wait applies).
    pub fn is_archived(&self) -> bool {
        lock(&self.state).stop.as_ref().is_some_and(|s| s.archived)
    }

    pub fn archiver(&self) -> Option<ArchiverStats> {
        lock(&self.state).stop.as_ref().and_then(|s| s.archiver.clone())
    }

    pub fn status(&self) -> NodeStatus {
        let st = lock(&self.state).clone();
        NodeStatus {
            name: self.name.clone(),
            conninfo: self.conninfo.clone(),
            server_version_num: self.facts.version_num,
            server_version: self.facts.version.clone(),
            system_identifier: self.facts.system_identifier.to_string(),
            timeline: self.facts.timeline,
            from_standby: self.facts.in_recovery,
            data_directory: self.facts.data_directory.clone(),
            wal_segment_size: self.facts.wal_segment_size,
            start_lsn: st.start_lsn,
            health: st.failure.clone().unwrap_or_else(|| "ok".into()),
            failed: st.failure.is_some(),
            stop: st.stop,
            inventory: Some(st.inventory),
        }
    }
}

/// Can this node's backup be restored at all? An error if its WAL is not archived; a
/// warning for a standby whose WAL reaches the archive only from its primary.
fn check_archiving(facts: &ServerFacts) -> Result<Vec<String>> {
    if facts.archive_mode == ArchiveMode::Off {
        return Err(err!(
            "archive_mode is off: a file-level copy can never be restored without the WAL archive; set archive_mode = on and an archive_command (needs a restart), then run the job again"
        ));
    }
    let cmd = facts.archive_command.trim();
    if (cmd.is_empty() || cmd == "(disabled)") && facts.archive_library.trim().is_empty() {
        return Err(err!(
            "archive_mode is on but neither archive_command nor archive_library is set: WAL is not archived, so the copy could not be restored; set archive_command"
        ));
    }
    let mut warnings = Vec::new();
    if facts.in_recovery && facts.archive_mode != ArchiveMode::Always {
        warnings.push(
            "this is a standby without archive_mode = always: the WAL this backup needs must reach the archive from the primary"
                .into(),
        );
    }
    Ok(warnings)
}

/// A warning when the archiver's last attempt failed (post will wait for it).
fn archiver_warning(client: &mut Client) -> Option<String> {
    let st = api::archiver_stats(client).ok().filter(|st| st.failing)?;
    Some(format!(
        "WAL archiving is failing: last failure {} at {} (last success {} at {}); post will wait for it",
        st.last_failed_wal.as_deref().unwrap_or("-"),
        st.last_failed_time.as_deref().unwrap_or("-"),
        st.last_archived_wal.as_deref().unwrap_or("-"),
        st.last_archived_time.as_deref().unwrap_or("-"),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn archive_mode_is_one_of_three_words() {
        assert_eq!(ArchiveMode::parse("off").unwrap(), ArchiveMode::Off);
        assert_eq!(ArchiveMode::parse("on").unwrap(), ArchiveMode::On);
        assert_eq!(ArchiveMode::parse("always").unwrap(), ArchiveMode::Always);
        let Err(e) = ArchiveMode::parse("On") else { panic!("\"On\" is not a setting PostgreSQL shows") };
        assert_eq!(e.msg, "unexpected archive_mode \"On\" (expected off, on or always)");
    }

    fn facts(mode: ArchiveMode, command: &str, library: &str, in_recovery: bool) -> ServerFacts {
        ServerFacts {
            version_num: 160000,
            version: "16".into(),
            system_identifier: 1,
            timeline: 1,
            in_recovery,
            data_directory: None,
            archive_mode: mode,
            archive_command: command.into(),
            archive_library: library.into(),
            wal_segment_size: 16 << 20,
        }
    }

    #[test]
    fn a_node_that_does_not_archive_is_refused() {
        let refused = |f: ServerFacts| check_archiving(&f).err().map(|e| e.msg).unwrap_or_default();
        assert!(refused(facts(ArchiveMode::Off, "cp %p /a/%f", "", false)).starts_with("archive_mode is off"));
        for cmd in ["", "  ", "(disabled)"] {
            assert!(refused(facts(ArchiveMode::On, cmd, "", false)).starts_with("archive_mode is on but neither"));
        }
        assert_eq!(check_archiving(&facts(ArchiveMode::On, "", "basic_archive", false)).unwrap(), Vec::<String>::new());
        assert_eq!(check_archiving(&facts(ArchiveMode::On, "cp %p /a/%f", "", false)).unwrap(), Vec::<String>::new());
    }

    #[test]
    fn a_standby_archiving_only_from_its_primary_is_a_warning() {
        let w = check_archiving(&facts(ArchiveMode::On, "cp %p /a/%f", "", true)).unwrap();
        assert_eq!(w.len(), 1);
        assert!(w[0].starts_with("this is a standby without archive_mode = always"), "{}", w[0]);
        assert!(check_archiving(&facts(ArchiveMode::Always, "cp %p /a/%f", "", true)).unwrap().is_empty());
    }
}
