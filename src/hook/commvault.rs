//! Commvault subclient pre/post process commands:
//!
//!   commvault pre|post|abort [what the CommServe appends: -bkplevel N -attempt N -status N -job JOBID ...]
//!
//! The backup id is cv-JOBID (from -job). Without -job (the arguments suppressed) pre
//! invents one and keeps it under PGBH_COMMVAULT_KEY for post.
//!
//! post runs for successful, failed and killed jobs alike, so it stores the labels only
//! when -status is one of PGBH_COMMVAULT_SUCCESS_STATUS (the values are not documented
//! where we could read: the admin names them) and discards the backup otherwise.
//!
//! A later attempt (-attempt 2 and up) never mixes files copied under two backup starts:
//! if the backup an earlier attempt started is still held, the attempt continues under it
//! (every file of every attempt is then copied between that start and the stop); if it has
//! ended, a new start is made only when the admin says every attempt copies everything
//! again (PGBH_COMMVAULT_RESTARTS_COPY=yes), otherwise pre fails naming the setting.

use serde::{Deserialize, Serialize};

use super::{setting, setting_bool, state, Ctx, LevelKind, PrePostAbort as Event, Product};
use crate::error::{exit, Error, Result};
use crate::ids;

pub const PRODUCT: Product = Product {
    name: "commvault",
    summary: "Commvault pre/post process commands: pre|post|abort, then the arguments the CommServe appends",
    keys: &["PGBH_COMMVAULT_KEY", "PGBH_COMMVAULT_SUCCESS_STATUS", "PGBH_COMMVAULT_RESTARTS_COPY", "PGBH_ALLOW_LEVELS"],
    argv0: &[],
    stderr_to_stdout: false,
    timeouts: None,
    progress_to_stdout: false,
    env_file_arg: None,
    fixed_answers: &[],
    run,
};

#[derive(Default)]
struct Appended {
    job: Option<String>,
    attempt: u32,
    status: Option<String>,
    /// -bkplevel N.
    level: Option<String>,
}

/// What pre of one job remembers for its later attempts.
#[derive(Serialize, Deserialize)]
struct Started {
    id: String,
    attempt: u32,
}

fn parse(args: &[String]) -> Result<Appended> {
    let mut a = Appended { attempt: 1, ..Default::default() };
    let mut it = args.iter();
    while let Some(flag) = it.next() {
        let key = flag.trim_start_matches('-').to_ascii_lowercase();
        if !matches!(key.as_str(), "job" | "attempt" | "status" | "bkplevel") {
            continue;
        }
        let Some(v) = it.next() else {
            return Err(Error::usage(format!("{} has no value", flag)));
        };
        match key.as_str() {
            "job" => a.job = Some(v.clone()),
            "status" => a.status = Some(v.clone()),
            "bkplevel" => a.level = Some(v.clone()),
            "attempt" => {
                a.attempt = v.parse().map_err(|_| Error::usage(format!("-attempt {:?}: expected a number", v)))?
            }
            _ => {}
        }
    }
    Ok(a)
}

/// One event. The subclient's process commands: `pre` (the pre-backup process), `post` (the post-backup
/// process, run for successful, failed and killed jobs alike), `abort`.
fn run(ctx: &Ctx, event: &str, args: &[String]) -> Result<i32> {
    let a = parse(args)?;
    if let (Some(Event::Pre), Some(level)) = (Event::parse(event), &a.level) {
        ctx.take_level(level, level_kind(level), "Schedule full backups only for this subclient")?;
    }
    let key = setting("PGBH_COMMVAULT_KEY").unwrap_or_else(|| "commvault".into());
    let id = match &a.job {
        Some(job) => Some(ids::from_job_name(&format!("cv-{}", job))?),
        None => state::kept_id(ctx.run_dir(), &key)?,
    };
    match (Event::parse(event), id) {
        (Some(Event::Pre), None) => ctx.pre_invented(&key, "cv"),
        (Some(Event::Pre), Some(id)) if a.job.is_none() => {
            // Only an invented id is kept: a pre whose post never came.
            ctx.say(&format!("backup {} never got its post: aborting it first", id));
            ctx.abort(&id);
            state::forget_id(ctx.run_dir(), &key);
            ctx.pre_invented(&key, "cv")
        }
        (Some(Event::Pre), Some(id)) => pre_attempt(ctx, &id, a.attempt),
        (Some(Event::Post), Some(id)) => post(ctx, &key, &id, &a),
        (Some(Event::Abort), Some(id)) => Ok(finish(ctx, &key, &id, &a, false)),
        (Some(Event::Post | Event::Abort), None) => Err(err!(
            "no -job argument and no backup started by pre ({}): this copy is NOT restorable",
            state::kept_id_path(ctx.run_dir(), &key).display()
        )),
        (None, _) => Err(Error::usage("usage: commvault pre|post|abort [the arguments the CommServe appends]")),
    }
}

/// -bkplevel: 1 is a full backup and 2 an incremental (Commvault's *Commands and Arguments*);
/// other values (differential, synthetic full) are not known to this adapter. Without
/// -bkplevel (`/suppress`) the level is unknown and pre runs as for a full one.
fn level_kind(level: &str) -> LevelKind {
    match level.trim() {
        "1" => LevelKind::Full,
        "2" => LevelKind::Incremental,
        _ => LevelKind::Other,
    }
}

fn pre_attempt(ctx: &Ctx, id: &str, attempt: u32) -> Result<i32> {
    let run = ctx.run_dir();
    let earlier: Option<Started> = state::read_json(run, id)?;
    if attempt > 1 {
        if run.helper_alive(id) {
            ctx.say(&format!(
                "attempt {}: backup {} started by attempt {} is still held: this attempt continues under it (files copied by every attempt lie between its start and the stop at post)",
                attempt,
                id,
                earlier.as_ref().map(|e| e.attempt.to_string()).unwrap_or_else(|| "?".into())
            ));
            return Ok(exit::OK);
        }
        if let Some(e) = &earlier {
            if !setting_bool("PGBH_COMMVAULT_RESTARTS_COPY", false)? {
                return Err(err!(
                    "attempt {}: the backup {} that attempt {} started has ended (a post process ran after the failed attempt), and if this attempt resumes the copy where it stopped, its files would mix two backup starts: NOT restorable. Clear \"Run Post Backup Process for all attempts\" on the subclient's Pre/Post Process tab so that a failed attempt keeps the backup, or, if every attempt of this subclient copies everything again, set PGBH_COMMVAULT_RESTARTS_COPY=yes",
                    attempt, id, e.attempt
                ));
            }
            ctx.say(&format!(
                "attempt {}: the backup of attempt {} has ended; starting a new one (PGBH_COMMVAULT_RESTARTS_COPY=yes: this attempt copies everything again)",
                attempt, e.attempt
            ));
        }
    }
    let rc = ctx.pre(id);
    if rc == exit::OK {
        state::write_json(run, id, &Started { id: id.to_string(), attempt })?;
    }
    Ok(rc)
}

/// The job's -status: is it a success the admin listed?
fn succeeded(ctx: &Ctx, a: &Appended) -> Result<bool> {
    let Some(status) = &a.status else {
        ctx.say("Commvault passed no -status (are the arguments suppressed?): a failed or killed job cannot be told from a successful one, so nothing is stored; remove /suppress from the post process command");
        return Ok(false);
    };
    let Some(ok) = setting("PGBH_COMMVAULT_SUCCESS_STATUS") else {
        ctx.say(&format!(
            "Commvault passed -status {}, and which values mean success is not documented where we could read: set PGBH_COMMVAULT_SUCCESS_STATUS in the environment file to the value a successful job passes (see this line in a successful job's log); until then nothing is stored",
            status
        ));
        return Ok(false);
    };
    if ok.split(',').any(|v| v.trim() == status.trim()) {
        return Ok(true);
    }
    ctx.say(&format!(
        "Commvault reports -status {} (PGBH_COMMVAULT_SUCCESS_STATUS={}): the job failed or was killed; its copy is not restorable",
        status, ok
    ));
    Ok(false)
}

fn post(ctx: &Ctx, key: &str, id: &str, a: &Appended) -> Result<i32> {
    if succeeded(ctx, a)? {
        return Ok(finish(ctx, key, id, a, true));
    }
    ctx.say(&format!("discarding backup {}", id));
    finish(ctx, key, id, a, false);
    Ok(exit::FAILURE)
}

fn finish(ctx: &Ctx, key: &str, id: &str, a: &Appended, store: bool) -> i32 {
    let rc = if a.job.is_none() {
        ctx.finish_kept(key, id, store)
    } else if store {
        ctx.post(id)
    } else {
        ctx.abort(id)
    };
    if store && rc == exit::OK {
        state::remove_json(ctx.run_dir(), id);
    }
    rc
}

#[cfg(test)]
mod tests {
    use super::{level_kind, parse};
    use crate::hook::LevelKind;

    #[test]
    fn bkplevel_1_is_full_2_incremental_and_other_values_unknown() {
        let args = |s: &str| s.split_whitespace().map(str::to_string).collect::<Vec<_>>();
        let a = parse(&args("-bkplevel 2 -attempt 1 -status 1 -job 42")).unwrap();
        assert_eq!(a.level.as_deref(), Some("2"));
        assert_eq!(parse(&args("-job 42")).unwrap().level, None);
        assert_eq!(level_kind("1"), LevelKind::Full);
        assert_eq!(level_kind("2"), LevelKind::Incremental);
        for other in ["4", "64", "0", "full", ""] {
            assert_eq!(level_kind(other), LevelKind::Other, "{}", other);
        }
    }
}
