//! Amanda's Script API (a `script-tool` with `execute-where client`, `execute-on
//! pre-dle-backup, post-dle-backup`), through a two-line file in Amanda's application
//! directory that execs `pg-backup-hooks hook amanda "$@"`:
//!
//!   amanda support                                    capability lines on stdout (nothing read first)
//!   amanda PRE-DLE-BACKUP --config C --disk D --timestamp T [--level N]... [--name value]...   pre
//!   amanda POST-DLE-BACKUP (the same options) [--success | --failed]                           post, or abort
//!
//! Amanda passes no job id: pre makes `amanda.<config>.<disk>.<timestamp>.<attempt>` (a
//! retry of the DLE in the same run has the same timestamp and the next attempt) and keeps
//! it under config+disk for POST. A kept id at PRE means the earlier run never reached POST
//! (killed): it is aborted first. Amanda 3.5 runs POST after a failed PRE and after a failed
//! dump and says nothing about the failure; later Amanda passes --success or --failed, and
//! --failed discards the backup. Amanda fails the dump on any stderr line, so progress goes
//! to stdout (the client's debug log) and only an error to stderr.

use serde::{Deserialize, Serialize};

use super::{state, Ctx, LevelKind, Product};
use crate::error::{exit, Error, Result};
use crate::ids::MAX_ID_LEN;

pub const PRODUCT: Product = Product {
    name: "amanda",
    summary: "Amanda Script API (script-tool, execute-where client): support, PRE-DLE-BACKUP, POST-DLE-BACKUP with Amanda's options",
    keys: &["PGBH_ALLOW_LEVELS"],
    argv0: &[],
    stderr_to_stdout: false,
    timeouts: None,
    progress_to_stdout: true,
    env_file_arg: Some(env_file_property),
    fixed_answers: &[("support", SUPPORT)],
    run,
};

/// What `support` answers: the options we want passed.
pub const SUPPORT: &str = "CONFIG YES\nHOST YES\nDISK YES\nMESSAGE-LINE YES\nEXECUTE-WHERE YES\nTIMESTAMP YES\n";

/// Amanda's options and properties after the command.
#[derive(Debug, Default, PartialEq)]
struct Call {
    execute_where: Option<String>,
    config: Option<String>,
    disk: Option<String>,
    timestamp: Option<String>,
    levels: Vec<String>,
    env_file: Option<String>,
    /// Some(true) for --success, Some(false) for --failed (Amanda after 3.5).
    success: Option<bool>,
}

/// The attempts of one config+disk in one run (one timestamp), kept between runs.
#[derive(Serialize, Deserialize)]
struct Attempts {
    timestamp: String,
    attempt: u32,
}

/// A property or option name as Amanda matches it: case-insensitive, `-` and `_` alike.
fn normalise(flag: &str) -> Option<String> {
    let name = flag.strip_prefix("--")?;
    Some(name.to_ascii_lowercase().replace('_', "-"))
}

fn parse(args: &[String]) -> Result<Call> {
    let mut c = Call::default();
    let mut i = 0;
    while i < args.len() {
        let Some(name) = normalise(&args[i]) else {
            return Err(Error::usage(format!("unexpected argument {:?}: Amanda passes --name value pairs", args[i])));
        };
        i += 1;
        match name.as_str() {
            "success" => c.success = Some(true),
            "failed" => c.success = Some(false),
            _ => {
                let value =
                    args.get(i).cloned().ok_or_else(|| Error::usage(format!("{} has no value", args[i - 1])))?;
                i += 1;
                match name.as_str() {
                    "execute-where" => c.execute_where = Some(value),
                    "config" => c.config = Some(value),
                    "disk" => c.disk = Some(value),
                    "timestamp" => c.timestamp = Some(value),
                    "level" => c.levels.push(value),
                    "env-file" => c.env_file = Some(value),
                    _ => {}
                }
            }
        }
    }
    Ok(c)
}

/// The `env-file` property, for the environment file to read before anything else.
fn env_file_property(args: &[String]) -> Option<String> {
    parse(args).ok().and_then(|c| c.env_file)
}

/// The script-tool events we act on; Amanda may send others (the `support` query is answered
/// by [`PRODUCT`]'s fixed_answers), which are not ours.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Event {
    /// `PRE-DLE-BACKUP`: pre.
    PreDleBackup,
    /// `POST-DLE-BACKUP`: post, or abort when the dump failed.
    PostDleBackup,
}

impl Event {
    fn parse(event: &str) -> Option<Event> {
        match event {
            "PRE-DLE-BACKUP" => Some(Event::PreDleBackup),
            "POST-DLE-BACKUP" => Some(Event::PostDleBackup),
            _ => None,
        }
    }
}

fn run(ctx: &Ctx, event: &str, args: &[String]) -> Result<i32> {
    let Some(event) = Event::parse(event) else {
        ctx.say(&format!("{} is not one of ours (PRE-DLE-BACKUP, POST-DLE-BACKUP): nothing to do", event));
        return Ok(exit::OK);
    };
    let c = parse(args)?;
    let (config, disk, timestamp) = required(&c)?;
    let key = state::key_of("amanda", &[config, disk]);
    let _lock = state::lock(ctx.run_dir(), &key)?;
    if event == Event::PreDleBackup {
        if let Some((level, kind)) = dump_level(&c.levels)? {
            ctx.take_level(&level, kind, "Set `strategy noinc` on the dumptype so that Amanda dumps level 0 only")?;
        }
        pre(ctx, &key, config, disk, timestamp)
    } else {
        post(ctx, &key, c.success)
    }
}

/// The dump's level from `--level N` (the highest, if Amanda passes several): 0 is a full
/// dump, 1 to 99 an incremental of the level below (amgtar: GNU tar --listed-incremental).
fn dump_level(levels: &[String]) -> Result<Option<(String, LevelKind)>> {
    let mut highest: Option<u32> = None;
    for l in levels {
        let n: u32 =
            l.trim().parse().ok().filter(|n| *n < 100).ok_or_else(|| {
                Error::usage(format!("--level {:?}: Amanda's dump levels are numbers from 0 to 99", l))
            })?;
        highest = highest.max(Some(n));
    }
    Ok(highest.map(|n| (n.to_string(), if n == 0 { LevelKind::Full } else { LevelKind::Incremental })))
}

fn required(c: &Call) -> Result<(&str, &str, &str)> {
    let (config, disk, timestamp) =
        (need(&c.config, "config")?, need(&c.disk, "disk")?, need(&c.timestamp, "timestamp")?);
    if c.execute_where.as_deref() != Some("client") {
        return Err(Error::usage(format!(
            "--execute-where {}: the hooks must run on the database host: set `execute-where client` in the script-tool",
            c.execute_where.as_deref().unwrap_or("(none)")
        )));
    }
    Ok((config, disk, timestamp))
}

fn need<'a>(v: &'a Option<String>, name: &str) -> Result<&'a str> {
    v.as_deref().filter(|s| !s.is_empty()).ok_or_else(|| {
        Error::usage(format!(
            "Amanda passed no --{}: answer `support` with CONFIG, DISK and TIMESTAMP YES (this program does) and run it as a script-tool of the DLE",
            name
        ))
    })
}

fn pre(ctx: &Ctx, key: &str, config: &str, disk: &str, timestamp: &str) -> Result<i32> {
    let run = ctx.run_dir();
    if let Some(old) = state::kept_id(run, key)? {
        ctx.say(&format!("backup {} never reached POST-DLE-BACKUP (the run was killed): aborting it first", old));
        ctx.abort(&old);
        state::forget_id(run, key);
    }
    let earlier: Option<Attempts> = state::read_json(run, key)?;
    let attempt = match earlier {
        Some(e) if e.timestamp == timestamp => e.attempt + 1,
        _ => 1,
    };
    if attempt > 1 {
        ctx.say(&format!(
            "attempt {} of this DLE in run {}: Amanda retries a failed dump, so attempt {}'s backup is not the one on tape",
            attempt,
            timestamp,
            attempt - 1
        ));
    }
    state::write_json(run, key, &Attempts { timestamp: timestamp.to_string(), attempt })?;
    let id = backup_id(config, disk, timestamp, attempt);
    crate::ids::validate(&id)?;
    state::keep_id(run, key, &id)?;
    let rc = ctx.pre(&id);
    if rc != exit::OK {
        state::forget_id(run, key);
    }
    Ok(rc)
}

/// POST-DLE-BACKUP: post, or abort when Amanda says the dump failed. Amanda runs it after a
/// failed PRE too: then nothing is kept and there is nothing to do.
fn post(ctx: &Ctx, key: &str, success: Option<bool>) -> Result<i32> {
    let Some(id) = state::kept_id(ctx.run_dir(), key)? else {
        ctx.say("no backup kept by PRE-DLE-BACKUP (it failed or did not run): nothing to do");
        return Ok(exit::OK);
    };
    if success == Some(false) {
        ctx.say(&format!("Amanda says the dump failed (--failed): discarding backup {}", id));
    } else if success.is_none() {
        ctx.say("this Amanda does not say whether the dump succeeded: storing the labels (a retry of a failed dump gets the next attempt's id)");
    }
    Ok(ctx.finish_kept(key, &id, success != Some(false)))
}

/// `amanda.<config>.<disk>.<timestamp>.<attempt>`, characters outside `A-Za-z0-9._-` as `_`,
/// the disk (then the config) cut from the front to fit a backup id.
fn backup_id(config: &str, disk: &str, timestamp: &str, attempt: u32) -> String {
    let clean = |s: &str| -> String {
        s.chars().map(|c| if c.is_ascii_alphanumeric() || "._-".contains(c) { c } else { '_' }).collect()
    };
    let (mut config, mut disk) = (clean(config), clean(disk));
    let fixed = format!("amanda...{}.{}", clean(timestamp), attempt).len();
    let mut over = (fixed + config.len() + disk.len()).saturating_sub(MAX_ID_LEN);
    let cut = over.min(disk.len());
    disk.drain(..cut);
    over -= cut;
    config.drain(..over.min(config.len()));
    format!("amanda.{}.{}.{}.{}", config, disk, clean(timestamp), attempt)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(s: &str) -> Vec<String> {
        s.split_whitespace().map(str::to_string).collect()
    }

    #[test]
    fn parses_what_amanda_3_5_passes_and_ignores_unknown_options() {
        let c = parse(&args("--execute-where client --config daily --host localhost --disk pgdata --device /var/lib/pg --timestamp 20261123162654 --level 0 --Env_File /etc/x --other y")).unwrap();
        assert_eq!(c.execute_where.as_deref(), Some("client"));
        assert_eq!(c.config.as_deref(), Some("daily"));
        assert_eq!(c.disk.as_deref(), Some("pgdata"));
        assert_eq!(c.timestamp.as_deref(), Some("20261123162654"));
        assert_eq!(c.levels, vec!["0"]);
        assert_eq!(c.env_file.as_deref(), Some("/etc/x"));
        assert_eq!(c.success, None);
        assert!(required(&c).is_ok());
    }

    #[test]
    fn success_and_failed_flags_take_no_value() {
        let c = parse(&args("--failed --config daily --level 0 --level 1")).unwrap();
        assert_eq!(c.success, Some(false));
        assert_eq!(c.levels, vec!["0", "1"]);
        assert_eq!(parse(&args("--config c --success")).unwrap().success, Some(true));
    }

    #[test]
    fn refuses_what_it_cannot_map() {
        assert!(parse(&args("--config")).is_err());
        assert!(parse(&args("daily")).is_err());
        let no_disk = parse(&args("--execute-where client --config c --timestamp 1")).unwrap();
        assert!(required(&no_disk).unwrap_err().msg.contains("--disk"));
        let server = parse(&args("--execute-where server --config c --disk d --timestamp 1")).unwrap();
        assert!(required(&server).unwrap_err().msg.contains("execute-where client"));
    }

    #[test]
    fn level_0_is_full_higher_levels_are_incrementals_and_others_are_refused() {
        let l = |v: &[&str]| dump_level(&v.iter().map(|s| s.to_string()).collect::<Vec<_>>());
        assert_eq!(l(&[]).unwrap(), None);
        assert_eq!(l(&["0"]).unwrap(), Some(("0".into(), LevelKind::Full)));
        assert_eq!(l(&["1"]).unwrap(), Some(("1".into(), LevelKind::Incremental)));
        assert_eq!(l(&["0", "2"]).unwrap(), Some(("2".into(), LevelKind::Incremental)));
        assert_eq!(l(&["99"]).unwrap(), Some(("99".into(), LevelKind::Incremental)));
        for bad in ["-1", "100", "full", ""] {
            assert!(l(&[bad]).unwrap_err().msg.contains("0 to 99"), "{}", bad);
        }
    }

    #[test]
    fn env_file_property_is_found_after_the_command() {
        assert_eq!(env_file_property(&args("--config c --env-file /etc/pgbh/env")).as_deref(), Some("/etc/pgbh/env"));
        assert_eq!(env_file_property(&[]), None);
    }

    #[test]
    fn support_answers_the_options_we_need() {
        for line in ["CONFIG YES", "DISK YES", "TIMESTAMP YES", "EXECUTE-WHERE YES", "HOST YES", "MESSAGE-LINE YES"] {
            assert!(SUPPORT.lines().any(|l| l == line), "{}", line);
        }
        assert!(!SUPPORT.contains("PROPERTY "), "a PROPERTY line would be taken as a property for the application");
    }

    #[test]
    fn backup_ids_name_config_disk_timestamp_attempt_and_fit() {
        assert_eq!(backup_id("daily", "pgdata", "20261123162654", 2), "amanda.daily.pgdata.20261123162654.2");
        assert_eq!(
            backup_id("daily", "/var/lib/pg 15", "20261123162654", 1),
            "amanda.daily._var_lib_pg_15.20261123162654.1"
        );
        let long = backup_id("daily", &"/srv/postgresql/cluster".repeat(4), "20261123162654", 12);
        assert_eq!(long.len(), MAX_ID_LEN);
        assert!(long.starts_with("amanda.daily.") && long.ends_with("cluster.20261123162654.12"), "{}", long);
        let huge = backup_id(&"c".repeat(80), "d", "20261123162654", 1);
        assert_eq!(huge.len(), MAX_ID_LEN);
        assert!(crate::ids::validate(&huge).is_ok() && huge.ends_with("..20261123162654.1"), "{}", huge);
    }
}
