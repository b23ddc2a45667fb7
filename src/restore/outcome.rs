//! restore-check: where did recovery of a restored node end, and is that where the backup's
//! manifest says it should? Everything here is read over SQL from the restored server.
//!
//! What is provable over SQL (PostgreSQL 10 to 18):
//! * `pg_is_in_recovery()` false: recovery ended and the server promoted; the current
//!   timeline is the first 8 hex digits of `pg_walfile_name(pg_current_wal_lsn())`.
//! * The new timeline's history file (`pg_wal/<TLI>.history`, read with pg_read_file, which
//!   needs superuser or pg_read_server_files) ends with the line the startup process wrote at
//!   promotion: the switch point (the end of the last replayed record) and the reason
//!   recovery stopped ("reached consistency", "no recovery target specified", `at restore
//!   point "NAME"`, "before/after transaction XID", "before/after LSN", "before/after TIME").
//!   A target that was never reached (which 12 and older promote silently) leaves the reason
//!   of the target kind with an empty stop: XID 0, LSN 0/0, restore point "", time
//!   2000-01-01 00:00:00+00 (PostgreSQL's zero timestamp).
//! * `pg_last_wal_replay_lsn()`: the end of the last replayed record, also after promotion.
//! * The configured target: `current_setting('recovery_target*')` on 12+ (restore-prep writes
//!   them into postgresql.auto.conf), recovery.done (or recovery.conf while paused) on 10/11.
//! * Paused at the target (`recovery_target_action = 'pause'`): in recovery with replay paused
//!   (pg_get_wal_replay_pause_state() on 14+, pg_is_wal_replay_paused() before).

use postgres::Client;
use serde::Serialize;

use crate::error::{pg_error, Result};
use crate::pg::wal::Lsn;
use crate::restore::autoconf;
use crate::restore::recovery::Target;
use crate::sidecar::{Manifest, NodeEntry};

/// What the restored server says about the end of its recovery.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Observed {
    pub version_num: i32,
    pub system_identifier: String,
    pub in_recovery: bool,
    pub paused: bool,
    pub timeline: u32,
    pub replay_lsn: Option<Lsn>,
    /// The last line of the current timeline's history file: switch point and reason.
    pub switchpoint: Option<Lsn>,
    pub reason: Option<String>,
    /// Why the history file could not be read, when it could not.
    pub history_note: Option<String>,
    /// The recovery target the server was configured with, as restore-prep's --target spells it.
    pub configured_target: Option<String>,
    pub target_inclusive: bool,
}

/// The verdict for one node.
#[derive(Clone, Debug, Serialize)]
pub struct Verdict {
    pub proven: bool,
    /// What was shown (proven) or what is wrong (not proven), one line each.
    pub lines: Vec<String>,
}

fn q(c: &mut Client, sql: &str) -> Result<postgres::Row> {
    c.query_one(sql, &[]).map_err(|e| err!("{}", pg_error(&e)))
}

/// Is recovery still running (and not paused at its target)? Cheap, polled while waiting.
pub fn still_recovering(c: &mut Client, version_num: i32) -> Result<(bool, Option<Lsn>)> {
    let pause =
        if version_num >= 140000 { "pg_get_wal_replay_pause_state() = 'paused'" } else { "pg_is_wal_replay_paused()" };
    let sql = format!(
        "SELECT pg_is_in_recovery(), CASE WHEN pg_is_in_recovery() THEN {} ELSE false END, pg_last_wal_replay_lsn()::text",
        pause
    );
    let row = q(c, &sql)?;
    let (rec, paused): (bool, bool) = (row.get(0), row.get(1));
    let replay = row.get::<_, Option<String>>(2).and_then(|s| s.parse().ok());
    Ok((rec && !paused, replay))
}

/// Read everything restore-check judges by, once recovery has ended (or paused).
pub fn observe(c: &mut Client, version_num: i32) -> Result<Observed> {
    let mut o = Observed { version_num, ..Observed::default() };
    let row = q(
        c,
        "SELECT system_identifier::text, pg_is_in_recovery(), pg_last_wal_replay_lsn()::text FROM pg_control_system()",
    )?;
    o.system_identifier = row.get(0);
    o.in_recovery = row.get(1);
    o.replay_lsn = row.get::<_, Option<String>>(2).and_then(|s| s.parse().ok());
    if o.in_recovery {
        o.paused = !still_recovering(c, version_num)?.0;
        o.timeline = q(c, "SELECT timeline_id::int8 FROM pg_control_checkpoint()")?.get::<_, i64>(0) as u32;
    } else {
        let name: String = q(c, "SELECT pg_walfile_name(pg_current_wal_lsn())")?.get(0);
        o.timeline = u32::from_str_radix(name.get(..8).unwrap_or(""), 16).map_err(|_| err!("odd WAL name {name}"))?;
        read_history(c, &mut o);
    }
    read_target(c, &mut o);
    Ok(o)
}

fn read_history(c: &mut Client, o: &mut Observed) {
    let file = format!("pg_wal/{:08X}.history", o.timeline);
    let text = match c.query_one("SELECT pg_read_file($1)", &[&file]) {
        Ok(r) => r.get::<_, String>(0),
        Err(e) => {
            o.history_note = Some(format!("cannot read {}: {}", file, pg_error(&e)));
            return;
        }
    };
    let last = text.lines().rfind(|l| !l.trim().is_empty() && !l.trim_start().starts_with('#'));
    let mut parts = last.unwrap_or("").splitn(3, '\t');
    let (_parent, at, reason) = (parts.next(), parts.next(), parts.next());
    o.switchpoint = at.and_then(|a| a.trim().parse().ok());
    o.reason = reason.map(|r| r.trim().to_string());
    if o.switchpoint.is_none() {
        o.history_note = Some(format!("{} has no switch line: {:?}", file, text));
    }
}

/// The configured recovery target, spelled as restore-prep's --target.
fn read_target(c: &mut Client, o: &mut Observed) {
    const KEYS: [&str; 6] = [
        "recovery_target",
        "recovery_target_name",
        "recovery_target_lsn",
        "recovery_target_xid",
        "recovery_target_time",
        "recovery_target_inclusive",
    ];
    let values: Vec<String> = if o.version_num >= 120000 {
        let get = |c: &mut Client, k: &str| c.query_one("SELECT current_setting($1)", &[&k]).map(|r| r.get(0));
        match KEYS.iter().map(|k| get(c, k)).collect::<std::result::Result<Vec<String>, _>>() {
            Ok(v) => v,
            Err(_) => return,
        }
    } else {
        let text = ["recovery.done", "recovery.conf"]
            .iter()
            .find_map(|f| c.query_one("SELECT pg_read_file($1)", &[f]).ok().map(|r| r.get::<_, String>(0)));
        let Some(text) = text else { return };
        KEYS.iter().map(|k| autoconf::get(&text, k).unwrap_or_default()).collect()
    };
    let mut target = "latest".to_string();
    for (k, v) in KEYS.iter().zip(&values).take(5).filter(|(_, v)| !v.is_empty()) {
        target = match *k {
            "recovery_target" if v == "immediate" => "backup-end".into(),
            "recovery_target_name" => format!("name:{}", v),
            "recovery_target_lsn" => format!("lsn:{}", v),
            "recovery_target_xid" => format!("xid:{}", v),
            "recovery_target_time" => format!("time:{}", v),
            _ => format!("{}:{}", k, v),
        };
    }
    o.target_inclusive = !matches!(values[5].as_str(), "off" | "false");
    o.configured_target = Some(target);
}

/// Judge one node: `target` is what the restore was meant to reach.
pub fn judge(node: &NodeEntry, m: &Manifest, target: &Target, o: &Observed) -> Verdict {
    let mut ok = Vec::new();
    let mut bad = Vec::new();
    if o.system_identifier != node.system_identifier {
        bad.push(format!(
            "the server has system identifier {}, node {} of the backup {}: this is another cluster",
            o.system_identifier, node.name, node.system_identifier
        ));
        return Verdict { proven: false, lines: bad };
    }
    if o.in_recovery && !o.paused {
        bad.push("still in recovery".into());
        return Verdict { proven: false, lines: bad };
    }
    if !o.in_recovery && o.timeline <= node.timeline {
        bad.push(format!(
            "the server is on timeline {}, the backup's own ({}): it never promoted from this backup's recovery (is this the production server?)",
            o.timeline, node.timeline
        ));
        return Verdict { proven: false, lines: bad };
    }
    let end = if o.in_recovery { o.replay_lsn } else { o.switchpoint.or(o.replay_lsn) };
    let Some(end) = end else {
        bad.push("the server reports no replayed WAL location: it did not recover from this backup".into());
        return Verdict { proven: false, lines: bad };
    };
    ok.push(if o.in_recovery {
        format!("paused at the target (recovery_target_action = pause) after replaying to {}", end)
    } else {
        format!("recovery ended and the server promoted to timeline {} at {}", o.timeline, end)
    });
    if end >= node.stop_lsn {
        ok.push(format!("replay reached the backup's end (stop location {})", node.stop_lsn));
    } else {
        bad.push(format!(
            "recovery ended at {}, before the backup's end {}: the data is NOT consistent; restore again and run restore-prep",
            end, node.stop_lsn
        ));
    }
    judge_target(node, m, target, o, end, &mut ok, &mut bad);
    if bad.is_empty() {
        Verdict { proven: true, lines: ok }
    } else {
        Verdict { proven: false, lines: bad }
    }
}

/// The target-specific part: the history file's reason and the exact location.
fn judge_target(
    node: &NodeEntry,
    m: &Manifest,
    target: &Target,
    o: &Observed,
    end: Lsn,
    ok: &mut Vec<String>,
    bad: &mut Vec<String>,
) {
    let old = o.version_num < 130000;
    let silent = if old {
        " (PostgreSQL 12 and older promote silently at the end of the WAL when the target is never reached)"
    } else {
        ""
    };
    let reason = o.reason.as_deref();
    if o.in_recovery {
        // Paused: no history file yet; the replay location is all there is.
        if matches!(target, Target::Latest) {
            bad.push("recovery is paused, but no target was configured: someone paused it by hand".into());
        }
    } else if let Some(r) = reason {
        if reason_matches(target, r, o.target_inclusive) {
            ok.push(format!("the timeline history says recovery stopped: {}", r));
        } else {
            bad.push(format!(
                "recovery was meant to stop at {}, but the timeline history says it ended: {:?}{}",
                target.describe(),
                r,
                if missed(r) { format!(": the target was never reached{}", silent) } else { String::new() }
            ));
        }
    } else if !matches!(target, Target::Latest | Target::BackupEnd | Target::Name(_) | Target::Lsn(_)) {
        bad.push(format!(
            "cannot prove the stop at {} without the timeline history file ({}): run restore-check as a superuser or a member of pg_read_server_files",
            target.describe(),
            o.history_note.as_deref().unwrap_or("not read")
        ));
    }
    judge_location(node, m, target, o, end, silent, ok, bad);
}

/// Where replay ended against the manifest: past the stop for latest, exactly at the restore
/// point, at or past an (inclusive) target LSN.
#[allow(clippy::too_many_arguments)]
fn judge_location(
    node: &NodeEntry,
    m: &Manifest,
    target: &Target,
    o: &Observed,
    end: Lsn,
    silent: &str,
    ok: &mut Vec<String>,
    bad: &mut Vec<String>,
) {
    match target {
        Target::Latest if end <= node.stop_lsn && !o.in_recovery => {
            bad.push(format!("target latest, yet replay ended at {}, not past the backup's end", end))
        }
        Target::Name(n) => {
            match m.restore_point.as_ref().filter(|rp| rp.name == *n).and_then(|rp| rp.lsns.get(&node.name)) {
                Some(at) if *at == end => ok.push(format!("stopped exactly at restore point \"{}\" ({})", n, at)),
                Some(at) => bad.push(format!(
                    "restore point \"{}\" is at {} on node {}, but replay ended at {} ({} it){}",
                    n,
                    at,
                    node.name,
                    end,
                    if end > *at { "past" } else { "short of" },
                    silent
                )),
                None => ok
                    .push(format!("restore point \"{}\" is not this backup's: its location is not in the manifest", n)),
            }
        }
        Target::Lsn(l) if o.target_inclusive && end < *l => {
            bad.push(format!("target lsn {}, but replay ended short of it at {}{}", l, end, silent))
        }
        _ => {}
    }
}

/// Does the history file's reason say recovery stopped at this target? The LSN in an LSN
/// stop is the stopping record's start (at or after the target); the time in a time stop is the
/// stopping transaction's.
fn reason_matches(target: &Target, r: &str, inclusive: bool) -> bool {
    let side = if inclusive { "after " } else { "before " };
    match target {
        Target::Latest => r == "no recovery target specified",
        Target::BackupEnd => r == "reached consistency",
        Target::Name(n) => r == format!("at restore point \"{}\"", n),
        Target::Xid(x) => r == format!("{}transaction {}", side, x),
        Target::Lsn(l) => r
            .strip_prefix(side)
            .and_then(|rest| rest.strip_prefix("LSN "))
            .and_then(|at| at.parse::<Lsn>().ok())
            .is_some_and(|at| at >= *l),
        Target::Time(_) => (r.starts_with("before ") || r.starts_with("after ")) && !missed(r),
    }
}

/// The reason of a target that never stopped recovery.
fn missed(reason: &str) -> bool {
    reason.ends_with(" transaction 0")
        || reason.ends_with(" LSN 0/0")
        || reason == "at restore point \"\""
        || reason.contains("2000-01-01 00:00:00")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn node() -> NodeEntry {
        NodeEntry {
            name: "n1".into(),
            conninfo: String::new(),
            server_version_num: 120022,
            server_version: "12.22".into(),
            system_identifier: "7".into(),
            timeline: 1,
            start_lsn: "0/2000028".parse().unwrap(),
            stop_lsn: "0/3000100".parse().unwrap(),
            start_wal_file: String::new(),
            stop_wal_file: String::new(),
            backup_history_file: None,
            from_standby: false,
            data_directory: None,
            wal_segment_size: 16 << 20,
            archived: true,
            archive_note: None,
            inventory_source: None,
            inventory_note: None,
            files: BTreeMap::new(),
        }
    }

    fn manifest(rp: Option<&str>) -> Manifest {
        Manifest {
            format_version: 1,
            tool_version: String::new(),
            backup_id: "b".into(),
            status: crate::sidecar::Status::Complete,
            started_at: String::new(),
            stopped_at: String::new(),
            written_at: String::new(),
            nodes: vec![node()],
            restore_point: Some(crate::sidecar::RestorePoint {
                name: "b".into(),
                scope: crate::protocol::RestorePointScope::PerNode,
                lsns: rp.map(|l| [("n1".to_string(), l.parse().unwrap())].into_iter().collect()).unwrap_or_default(),
            }),
            restore_point_note: None,
        }
    }

    fn promoted(end: &str, reason: &str) -> Observed {
        Observed {
            version_num: 120022,
            system_identifier: "7".into(),
            timeline: 2,
            replay_lsn: Some(end.parse().unwrap()),
            switchpoint: Some(end.parse().unwrap()),
            reason: Some(reason.into()),
            target_inclusive: true,
            ..Observed::default()
        }
    }

    #[test]
    fn restore_point_reached_exactly_is_proven() {
        let v = judge(
            &node(),
            &manifest(Some("0/3000200")),
            &Target::Name("b".into()),
            &promoted("0/3000200", "at restore point \"b\""),
        );
        assert!(v.proven, "{:?}", v.lines);
    }

    #[test]
    fn a_restore_point_missed_on_12_is_caught_and_explained() {
        let v = judge(
            &node(),
            &manifest(Some("0/3000200")),
            &Target::Name("b".into()),
            &promoted("0/5000000", "at restore point \"\""),
        );
        assert!(!v.proven);
        let all = v.lines.join("\n");
        assert!(all.contains("never reached") && all.contains("promote silently"), "{all}");
        assert!(all.contains("past it"), "{all}");
    }

    #[test]
    fn backup_end_before_the_stop_is_not_consistent() {
        let v = judge(&node(), &manifest(None), &Target::BackupEnd, &promoted("0/2800000", "reached consistency"));
        assert!(!v.proven);
        assert!(v.lines.join("\n").contains("NOT consistent"), "{:?}", v.lines);
        let v = judge(&node(), &manifest(None), &Target::BackupEnd, &promoted("0/3000100", "reached consistency"));
        assert!(v.proven, "{:?}", v.lines);
    }

    #[test]
    fn latest_needs_a_new_timeline_and_the_right_reason() {
        let mut o = promoted("0/4000000", "no recovery target specified");
        assert!(judge(&node(), &manifest(None), &Target::Latest, &o).proven);
        o.timeline = 1;
        assert!(!judge(&node(), &manifest(None), &Target::Latest, &o).proven, "still on the backup's timeline");
        let o = promoted("0/4000000", "before 2000-01-01 00:00:00+00");
        let v = judge(&node(), &manifest(None), &Target::Time("2026-11-23 10:00:00+00".into()), &o);
        assert!(!v.proven && v.lines.join(" ").contains("never reached"), "{:?}", v.lines);
        let o = promoted("0/4000000", "before 2026-11-23 10:00:01.5+00");
        assert!(judge(&node(), &manifest(None), &Target::Time("2026-11-23 10:00:00+00".into()), &o).proven);
    }
}
