//! borgmatic command hooks around its `create` action:
//!
//!   borgmatic pre CONFIGURATION_FILENAME REPOSITORY     2.x `before: action`, 1.7 before_backup
//!   borgmatic post CONFIGURATION_FILENAME REPOSITORY    2.x `after: action` + `states: [finish]`, 1.7 after_backup
//!   borgmatic abort CONFIGURATION_FILENAME REPOSITORY   2.x `after: action` + `states: [fail]`, 1.7 on_error
//!
//! The arguments are borgmatic's {configuration_filename} and {repository}. borgmatic passes
//! no run id: pre invents `borgmatic.<configuration basename>.<UTC time>` and keeps it under
//! configuration + repository; post and abort recall it. A kept id at pre means the previous
//! run never reached post or abort (stopped, killed): it is aborted first. post forgets the
//! id before it runs, because borgmatic 1.7 runs on_error after a failing after_backup, and
//! that abort must not undo what post stored. Exit 75 means "skip the rest, no error" to
//! borgmatic: never returned (1 instead).

use std::path::Path;

use super::{state, Ctx, PrePostAbort as Event, Product};
use crate::error::{exit, Error, Result};
use crate::ids::MAX_ID_LEN;

pub const PRODUCT: Product = Product {
    name: "borgmatic",
    summary: "borgmatic command hooks around create: pre|post|abort {configuration_filename} {repository}",
    keys: &[],
    argv0: &[],
    stderr_to_stdout: false,
    timeouts: None,
    progress_to_stdout: false,
    env_file_arg: None,
    fixed_answers: &[],
    run,
};

/// borgmatic's soft-failure exit code.
const SOFT_FAILURE: i32 = 75;

/// One event. The hooks a borgmatic configuration runs us from: `pre` (2.x `before: action`, 1.7
/// before_backup), `post` (2.x `after: action` + `states: [finish]`, 1.7 after_backup), `abort`
/// (2.x `after: action` + `states: [fail]`, 1.7 on_error).
fn run(ctx: &Ctx, event: &str, args: &[String]) -> Result<i32> {
    let [config, repository] = args else {
        return Err(usage());
    };
    let key = state::key_of("borgmatic", &[config, repository]);
    let _lock = state::lock(ctx.run_dir(), &key)?;
    let rc = match Event::parse(event).ok_or_else(usage)? {
        Event::Pre => pre(ctx, &key, config)?,
        Event::Post => post(ctx, &key)?,
        Event::Abort => abort(ctx, &key)?,
    };
    Ok(if rc == SOFT_FAILURE { exit::FAILURE } else { rc })
}

fn usage() -> Error {
    Error::usage(
        "usage: borgmatic pre|post|abort {configuration_filename} {repository} (quote them in a 1.7 configuration)",
    )
}

fn pre(ctx: &Ctx, key: &str, config: &str) -> Result<i32> {
    let run = ctx.run_dir();
    if let Some(old) = state::kept_id(run, key)? {
        ctx.say(&format!("backup {} never got its post or abort (borgmatic was stopped): aborting it first", old));
        ctx.abort(&old);
        state::forget_id(run, key);
    }
    let id = backup_id(config, &chrono::Utc::now().format("%Y%m%dT%H%M%SZ").to_string());
    crate::ids::validate(&id)?;
    state::keep_id(run, key, &id)?;
    let rc = ctx.pre(&id);
    if rc != exit::OK {
        state::forget_id(run, key);
    }
    Ok(rc)
}

/// post of the kept id, forgotten first: a failing post is followed by on_error (1.7),
/// whose abort must find nothing.
fn post(ctx: &Ctx, key: &str) -> Result<i32> {
    let run = ctx.run_dir();
    let Some(id) = state::kept_id(run, key)? else {
        return Err(Error::with_code(
            exit::NO_BACKUP,
            format!(
                "no backup kept by pre ({}): pre did not run or failed, so this archive is NOT restorable",
                state::kept_id_path(run, key).display()
            ),
        ));
    };
    state::forget_id(run, key);
    Ok(ctx.post(&id))
}

fn abort(ctx: &Ctx, key: &str) -> Result<i32> {
    match state::kept_id(ctx.run_dir(), key)? {
        Some(id) => Ok(ctx.finish_kept(key, &id, false)),
        None => {
            ctx.say("no backup kept by pre (it failed, or post already ran): nothing to abort");
            Ok(exit::OK)
        }
    }
}

/// `borgmatic.<configuration file name without directory and .yaml/.yml>.<time>`, characters
/// outside `A-Za-z0-9._-` as `_`, the name cut from the front to fit a backup id.
fn backup_id(config: &str, time: &str) -> String {
    let file = Path::new(config).file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let stem = file.strip_suffix(".yaml").or_else(|| file.strip_suffix(".yml")).unwrap_or(&file);
    let mut name: String =
        stem.chars().map(|c| if c.is_ascii_alphanumeric() || "._-".contains(c) { c } else { '_' }).collect();
    let room = MAX_ID_LEN.saturating_sub("borgmatic..".len() + time.len());
    name.drain(..name.len().saturating_sub(room));
    format!("borgmatic.{}.{}", name, time)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_come_from_the_configuration_file_name_and_fit() {
        let t = "20261123T162010Z";
        assert_eq!(backup_id("/etc/borgmatic.d/10-pgdata.yaml", t), "borgmatic.10-pgdata.20261123T162010Z");
        assert_eq!(backup_id("10-pgdata.yml", t), "borgmatic.10-pgdata.20261123T162010Z");
        assert_eq!(backup_id("/etc/borgmatic/config yaml", t), "borgmatic.config_yaml.20261123T162010Z");
        let long = backup_id(&format!("/etc/{}.yaml", "pgdata-cluster".repeat(6)), t);
        assert_eq!(long.len(), MAX_ID_LEN);
        assert!(long.starts_with("borgmatic.") && long.ends_with("cluster.20261123T162010Z"), "{}", long);
        assert!(crate::ids::validate(&long).is_ok());
        assert!(crate::ids::validate(&backup_id("", t)).is_ok());
    }
}
