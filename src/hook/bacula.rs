//! Bacula and Bareos client RunScripts:
//!
//!   bacula before JOBNAME [LEVEL]   ClientRunBeforeJob / RunScript { RunsWhen = Before }: pre
//!   bacula after JOBNAME            ClientRunAfterJob / RunScript { RunsWhen = After }: post
//!   bacula failed JOBNAME           RunScript { RunsWhen = After, RunsOnSuccess = no, RunsOnFailure = yes }: abort
//!   bacula queue-job JOB            director side, after the data job: start JOB (the sidecar
//!                                   job) with bconsole in the background and return at once
//!
//! JOBNAME is the unique job name (%j, e.g. pgdata.2026-11-22_16.40.55_03): it becomes the
//! backup id. LEVEL is %l: Full as always; Incremental and Differential with an inventory
//! required of pre (restore-prep proves the restored chain against it); PGBH_ALLOW_LEVELS
//! restricts (see [`super::decide_level`]).
//! Bacula keeps a RunScript's stdout in the job log, so stderr goes there too.

use std::io::Write;
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};

use super::{setting, setting_bool, Ctx, LevelKind, Product};
use crate::error::{Error, Result};
use crate::ids;

pub const PRODUCT: Product = Product {
    name: "bacula",
    summary: "Bacula/Bareos RunScripts: before %j %l, after %j, failed %j; queue-job JOB on the director",
    keys: &[
        "PGBH_ALLOW_LEVELS",
        "PGBH_BACULA_CLEAN_LEFTOVERS",
        "PGBH_BCONSOLE",
        "PGBH_BCONSOLE_CONF",
        "PGBH_QUEUE_LOG",
    ],
    argv0: &[],
    stderr_to_stdout: true,
    timeouts: None,
    progress_to_stdout: false,
    env_file_arg: None,
    fixed_answers: &[],
    run,
};

/// The RunScripts that run us, and the director's queue-job.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Event {
    /// `before JOBNAME [LEVEL]`: pre.
    Before,
    /// `after JOBNAME`: post.
    After,
    /// `failed JOBNAME`: abort.
    Failed,
    /// `queue-job JOB`: start the sidecar job.
    QueueJob,
}

impl Event {
    fn parse(event: &str) -> Option<Event> {
        match event {
            "before" => Some(Event::Before),
            "after" => Some(Event::After),
            "failed" => Some(Event::Failed),
            "queue-job" => Some(Event::QueueJob),
            _ => None,
        }
    }
}

fn run(ctx: &Ctx, event: &str, args: &[String]) -> Result<i32> {
    let usage = || {
        Error::usage(
            "usage: bacula before JOBNAME [LEVEL] (use %j %l), bacula after|failed JOBNAME, or bacula queue-job JOB",
        )
    };
    let job = args.first().ok_or_else(usage)?;
    match (Event::parse(event), args.len()) {
        (Some(Event::Before), 1 | 2) => before(ctx, &ids::from_job_name(job)?, args.get(1)),
        (Some(Event::After), 1) => Ok(ctx.post(&ids::from_job_name(job)?)),
        (Some(Event::Failed), 1) => Ok(ctx.abort(&ids::from_job_name(job)?)),
        (Some(Event::QueueJob), 1) => queue_job(ctx, job),
        _ => Err(usage()),
    }
}

fn before(ctx: &Ctx, id: &str, level: Option<&String>) -> Result<i32> {
    match level {
        Some(l) => ctx.take_level(l, level_kind(l), "Set Level = Full on the job (Bareos defaults to Incremental)")?,
        None => ctx.say("no job level passed: add %l after %j so that an Incremental or Differential run requires an inventory of every node"),
    }
    if setting_bool("PGBH_BACULA_CLEAN_LEFTOVERS", true)? {
        abort_leftovers(ctx, id);
    }
    Ok(ctx.pre(id))
}

/// %l's words (and the one-letter codes): Full; Incremental and Differential; the rest
/// (VirtualFull, Base, Since, ...) are not known to this adapter.
fn level_kind(level: &str) -> LevelKind {
    let is = |names: &[&str]| names.iter().any(|n| level.eq_ignore_ascii_case(n));
    if is(&["Full", "F"]) {
        LevelKind::Full
    } else if is(&["Incremental", "I", "Differential", "D"]) {
        LevelKind::Incremental
    } else {
        LevelKind::Other
    }
}

/// A job that failed after its pre (a later run-before script failed, the job was
/// cancelled) may never run its client failure script (Bacula 9.6 does not): discard
/// what earlier runs of the same job left. Only ids of exactly this job name match: the
/// job `pgdata` never touches a running backup of `pgdata.replica`.
fn abort_leftovers(ctx: &Ctx, id: &str) {
    let Some(job) = job_of(id) else { return };
    for old in ctx.run_dir().ids() {
        if old != id && job_of(&old) == Some(job) && ctx.run_dir().helper_alive(&old) {
            ctx.say(&format!("aborting leftover backup {} of an earlier run of this job", old));
            ctx.abort(&old);
        }
    }
}

/// The job name of a unique job name `NAME.YYYY-MM-DD_HH.MM.SS_NN`.
pub fn job_of(unique: &str) -> Option<&str> {
    let (name, stamp) = unique.rsplit_once('.').and_then(|(head, ss)| {
        // head = NAME.YYYY-MM-DD_HH.MM, ss = SS_NN
        let (head, mm) = head.rsplit_once('.')?;
        let (name, date_hh) = head.rsplit_once('.')?;
        Some((name, format!("{}.{}.{}", date_hh, mm, ss)))
    })?;
    let b = stamp.as_bytes();
    let shape = b"DDDD-DD-DD_DD.DD.DD_";
    let ok = b.len() > shape.len()
        && shape.iter().zip(b).all(|(s, c)| if *s == b'D' { c.is_ascii_digit() } else { s == c })
        && b[shape.len()..].iter().all(u8::is_ascii_digit);
    (ok && !name.is_empty()).then_some(name)
}

/// Start JOB through bconsole, detached, every descriptor away from the director's pipe,
/// so the director sees this RunScript end now and the job it starts can run.
fn queue_job(ctx: &Ctx, job: &str) -> Result<i32> {
    if job.is_empty() || !job.chars().all(|c| c.is_ascii_alphanumeric() || "._: -".contains(c)) {
        return Err(Error::usage(format!("job name {:?} has characters bconsole's run command would misread", job)));
    }
    let log_path = setting("PGBH_QUEUE_LOG").unwrap_or_else(|| "/dev/null".into());
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log_path)
        .map_err(|e| err!("cannot open PGBH_QUEUE_LOG {}: {}", log_path, e))?;
    let log2 = log.try_clone().map_err(|e| err!("{}: {}", log_path, e))?;
    let mut cmd = Command::new(setting("PGBH_BCONSOLE").unwrap_or_else(|| "bconsole".into()));
    if let Some(conf) = setting("PGBH_BCONSOLE_CONF") {
        cmd.arg("-c").arg(conf);
    }
    cmd.stdin(Stdio::piped()).stdout(log).stderr(log2).current_dir("/");
    // SAFETY: setsid is async-signal-safe; the closure allocates nothing.
    unsafe {
        cmd.pre_exec(|| nix::unistd::setsid().map(|_| ()).map_err(std::io::Error::from));
    }
    let mut child = cmd.spawn().map_err(|e| err!("cannot start bconsole (PGBH_BCONSOLE): {}", e))?;
    if let Some(mut stdin) = child.stdin.take() {
        writeln!(stdin, "run job=\"{}\" yes\nquit", job).map_err(|e| err!("cannot talk to bconsole: {}", e))?;
    }
    ctx.say(&format!("queued job {}", job));
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::{job_of, level_kind};
    use crate::hook::LevelKind;

    #[test]
    fn full_incremental_and_differential_are_known_levels_and_nothing_else_is() {
        for l in ["Full", "full", "F"] {
            assert_eq!(level_kind(l), LevelKind::Full, "{}", l);
        }
        for l in ["Incremental", "INCREMENTAL", "I", "Differential", "D"] {
            assert_eq!(level_kind(l), LevelKind::Incremental, "{}", l);
        }
        for l in ["VirtualFull", "Base", "Since", "", "Fulls"] {
            assert_eq!(level_kind(l), LevelKind::Other, "{}", l);
        }
    }

    #[test]
    fn a_unique_job_name_gives_its_job_and_nothing_else_does() {
        assert_eq!(job_of("pgdata.2026-11-22_16.40.55_03"), Some("pgdata"));
        assert_eq!(job_of("pgdata.replica.2026-11-22_16.40.55_03"), Some("pgdata.replica"));
        assert_eq!(job_of("pgdata.replica"), None);
        assert_eq!(job_of("pgdata.2026-11-22_16.40.55_"), None);
        assert_eq!(job_of(".2026-11-22_16.40.55_03"), None);
        assert_eq!(job_of("veeam-20261123T110000Z-12"), None);
    }
}
