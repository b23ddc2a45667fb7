//! Veritas NetBackup client notify scripts (UNIX):
//!
//!   bpstart_notify CLIENT POLICY SCHEDULE SCHEDTYPE          (or: netbackup start ...)  pre
//!   bpend_notify   CLIENT POLICY SCHEDULE SCHEDTYPE STATUS   (or: netbackup end ...)    post, or abort
//!
//! Run as a link named bpstart_notify[.POLICY[.SCHEDULE]] / bpend_notify[...] to the
//! binary, or through hooks/netbackup. One backup serves every stream of a job: NetBackup
//! runs the scripts once per data stream, so the streams of CLIENT/POLICY/SCHEDULE share a
//! record in the run directory (under a lock): the first stream's start runs pre, later
//! streams join the held backup, and the end of the last of the expected streams runs post
//! (or abort when any stream ended with a status other than 0). The expected count is
//! STREAM_COUNT from NetBackup's environment, else PGBH_NETBACKUP_STREAMS, else 1; the
//! stream is STREAM_NUMBER, else 1. A start that cannot join (more streams than expected,
//! or a stream starting twice) is refused; a running backup is never aborted for it.

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};

use super::{setting, state, Ctx, LevelKind, Product};
use crate::error::{exit, Error, Result};
use crate::ids;

pub const PRODUCT: Product = Product {
    name: "netbackup", summary: "NetBackup notify scripts: start|end CLIENT POLICY SCHEDULE SCHEDTYPE [STATUS]; or run as bpstart_notify / bpend_notify",
    keys: &["PGBH_NETBACKUP_STREAMS", "PGBH_ALLOW_LEVELS"],
    argv0: &[("bpstart_notify", "start"), ("bpend_notify", "end")],
    stderr_to_stdout: false,
    // BPSTART_TIMEOUT and BPEND_TIMEOUT default to 300 s: pre and post end before.
    timeouts: Some((270, 270)),
    progress_to_stdout: false,
    env_file_arg: None,
    fixed_answers: &[],
    run,
};

/// The backup of one CLIENT/POLICY/SCHEDULE and its streams.
#[derive(Serialize, Deserialize, Debug)]
struct Streams {
    id: String,
    expected: u32,
    started: BTreeSet<u32>,
    ended: BTreeSet<u32>,
    failed: Vec<String>,
}

fn number(name: &str) -> Result<Option<u32>> {
    match setting(name) {
        None => Ok(None),
        Some(v) => v.trim().parse().map(Some).map_err(|_| Error::usage(format!("{}={:?}: expected a number", name, v))),
    }
}

/// The notify scripts NetBackup runs (bpstart_notify, bpend_notify).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Event {
    /// `start CLIENT POLICY SCHEDULE SCHEDTYPE`: bpstart_notify.
    Start,
    /// `end CLIENT POLICY SCHEDULE SCHEDTYPE STATUS`: bpend_notify.
    End,
}

impl Event {
    fn parse(event: &str) -> Option<Event> {
        match event {
            "start" => Some(Event::Start),
            "end" => Some(Event::End),
            _ => None,
        }
    }

    /// How many arguments NetBackup passes with it.
    fn args(self) -> usize {
        match self {
            Event::Start => 4,
            Event::End => 5,
        }
    }
}

fn run(ctx: &Ctx, event: &str, args: &[String]) -> Result<i32> {
    let event = Event::parse(event).filter(|e| args.len() >= e.args());
    let Some(event) = event else {
        return Err(Error::usage("usage: bpstart_notify CLIENT POLICY SCHEDULE SCHEDTYPE, bpend_notify CLIENT POLICY SCHEDULE SCHEDTYPE STATUS (or hook netbackup start|end ...)"));
    };
    let job = format!("{}/{}/{}", args[0], args[1], args[2]);
    let key = format!("nbu-{}-{}-{}", args[0], args[1], args[2]);
    let stream = number("STREAM_NUMBER")?.unwrap_or(1);
    let _lock = state::lock(ctx.run_dir(), &key)?;
    match event {
        Event::Start => {
            let kind = schedule_kind(&args[3])?;
            ctx.take_level(&args[3], kind, "Use a FULL schedule for this policy")?;
            start(ctx, &job, &key, &args[1], stream)
        }
        Event::End => end(ctx, &job, &key, stream, &args[4]),
    }
}

/// FULL and UBAK (user backup) copy everything; INCR (differential incremental) and CINC
/// (cumulative incremental) copy what changed; UARC (user archive) deletes the files after
/// the copy and is never allowed on a data directory.
fn schedule_kind(t: &str) -> Result<LevelKind> {
    let is = |names: &[&str]| names.iter().any(|n| t.eq_ignore_ascii_case(n));
    if is(&["UARC"]) {
        return Err(Error::usage(
            "schedule type UARC (user archive) removes the files it copied: never use it on a data directory",
        ));
    }
    Ok(if is(&["FULL", "UBAK"]) {
        LevelKind::Full
    } else if is(&["INCR", "CINC"]) {
        LevelKind::Incremental
    } else {
        LevelKind::Other
    })
}

fn start(ctx: &Ctx, job: &str, key: &str, policy: &str, stream: u32) -> Result<i32> {
    let run = ctx.run_dir();
    let expected = number("STREAM_COUNT")?.or(number("PGBH_NETBACKUP_STREAMS")?).unwrap_or(1).max(1);
    if let Some(mut s) = state::read_json::<Streams>(run, key)? {
        if run.helper_alive(&s.id) {
            if !s.started.contains(&stream) && (s.started.len() as u32) < s.expected {
                s.started.insert(stream);
                state::write_json(run, key, &s)?;
                ctx.say(&format!(
                    "stream {} joins backup {} of {} ({} of {} streams started)",
                    stream,
                    s.id,
                    job,
                    s.started.len(),
                    s.expected
                ));
                return Ok(exit::OK);
            }
            return Err(cannot_join(job, stream, &s));
        }
        ctx.say(&format!(
            "backup {} of an earlier job of {} is no longer held (streams ended: {:?} of {:?}); starting a new one",
            s.id, job, s.ended, s.started
        ));
        state::remove_json(run, key);
    }
    let id = match setting("BACKUPID") {
        Some(b) => ids::from_job_name(&b)?,
        None => state::new_id(&format!("nbu-{}", policy))?,
    };
    let rc = ctx.pre(&id);
    if rc == exit::OK {
        let s = Streams { id, expected, started: [stream].into(), ended: BTreeSet::new(), failed: Vec::new() };
        state::write_json(run, key, &s)?;
        if expected > 1 {
            ctx.say(&format!(
                "stream {} started backup {}; it is stopped when {} streams have ended",
                stream, s.id, expected
            ));
        }
    }
    Ok(rc)
}

fn cannot_join(job: &str, stream: u32, s: &Streams) -> Error {
    err!(
        "backup {} of {} is still held for streams {:?} (ended: {:?}), and stream {} cannot join it ({} streams expected): the running backup is left alone. For a policy with multiple data streams, set PGBH_NETBACKUP_STREAMS to its number of streams (when NetBackup does not pass STREAM_COUNT) or clear \"Allow multiple data streams\"; for a leftover of a job whose bpend_notify never ran: pg-backup-hooks abort --backup-id {}",
        s.id, job, s.started, s.ended, stream, s.expected, s.id
    )
}

fn end(ctx: &Ctx, job: &str, key: &str, stream: u32, status: &str) -> Result<i32> {
    let run = ctx.run_dir();
    let Some(mut s) = state::read_json::<Streams>(run, key)? else {
        return Err(err!(
            "no backup was started for {} (did bpstart_notify run and succeed?): this copy is NOT restorable",
            job
        ));
    };
    if !s.started.contains(&stream) {
        return Err(err!(
            "stream {} of {} ends but never joined backup {} (streams {:?}): its copy is NOT covered by the backup",
            stream,
            job,
            s.id,
            s.started
        ));
    }
    s.ended.insert(stream);
    if status.trim() != "0" {
        s.failed.push(format!("stream {} status {}", stream, status));
        ctx.say(&format!(
            "stream {} ended with NetBackup status {} (1 = files were skipped): backup {} is discarded when the last stream ends, a copy with files missing is not restorable",
            stream, status, s.id
        ));
    }
    if (s.ended.len() as u32) < s.expected {
        state::write_json(run, key, &s)?;
        ctx.say(&format!(
            "stream {} ended; backup {} stays held until {} more stream(s) end (if this policy makes fewer than {} streams, fix PGBH_NETBACKUP_STREAMS: otherwise nothing stores the labels)",
            stream,
            s.id,
            s.expected - s.ended.len() as u32,
            s.expected
        ));
        return Ok(exit::OK);
    }
    state::remove_json(run, key);
    if s.failed.is_empty() {
        return Ok(ctx.post(&s.id));
    }
    ctx.say(&format!("discarding backup {} ({})", s.id, s.failed.join(", ")));
    ctx.abort(&s.id);
    Ok(exit::FAILURE)
}

#[cfg(test)]
mod tests {
    use super::schedule_kind;
    use crate::hook::LevelKind;

    #[test]
    fn schedule_types_full_incremental_archive_and_unknown() {
        for t in ["FULL", "full", "UBAK"] {
            assert_eq!(schedule_kind(t).unwrap(), LevelKind::Full, "{}", t);
        }
        for t in ["INCR", "CINC", "cinc"] {
            assert_eq!(schedule_kind(t).unwrap(), LevelKind::Incremental, "{}", t);
        }
        assert_eq!(schedule_kind("SYNTH").unwrap(), LevelKind::Other);
        assert!(schedule_kind("UARC").unwrap_err().msg.contains("never use it on a data directory"));
    }
}
