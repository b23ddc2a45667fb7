//! Any backup program with pre/post job commands:
//!
//!   generic pre [ID] | post [ID] | abort [ID] | status
//!
//! The id is ID, else PGBH_BACKUP_ID, else one invented at pre and kept under
//! PGBH_HOOK_KEY (default "generic") for post.

use super::{setting, state, Ctx, Product};
use crate::error::{exit, Error, Result};
use crate::ids;

pub const PRODUCT: Product = Product {
    name: "generic",
    summary: "any program with pre/post job commands: pre|post|abort [ID], status",
    keys: &["PGBH_HOOK_KEY"],
    argv0: &[],
    stderr_to_stdout: false,
    timeouts: None,
    progress_to_stdout: false,
    env_file_arg: None,
    fixed_answers: &[],
    run,
};

fn run(ctx: &Ctx, event: &str, args: &[String]) -> Result<i32> {
    if args.len() > 1 {
        return Err(usage());
    }
    let given = match args.first().cloned().or_else(|| setting("PGBH_BACKUP_ID")) {
        Some(g) => Some(ids::from_job_name(&g)?),
        None => None,
    };
    let key = setting("PGBH_HOOK_KEY").unwrap_or_else(|| "generic".into());
    match (event, given) {
        ("pre", Some(id)) => Ok(ctx.pre(&id)),
        ("pre", None) => ctx.pre_invented(&key, "backup"),
        ("post", Some(id)) => Ok(ctx.post(&id)),
        ("abort", Some(id)) => Ok(ctx.abort(&id)),
        ("post" | "abort", None) => {
            let run = ctx.run_dir();
            match state::kept_id(run, &key)? {
                Some(id) => Ok(ctx.finish_kept(&key, &id, event == "post")),
                None => {
                    ctx.say(&format!(
                        "no backup id given and none kept by pre ({}): nothing to {}",
                        state::kept_id_path(run, &key).display(),
                        event
                    ));
                    Ok(if event == "abort" { exit::OK } else { exit::NO_BACKUP })
                }
            }
        }
        ("status", _) => Ok(ctx.status()),
        _ => Err(usage()),
    }
}

fn usage() -> Error {
    Error::usage("usage: generic pre|post|abort [ID], generic status")
}
