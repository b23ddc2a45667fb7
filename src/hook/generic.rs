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

/// The commands a backup program's job runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Event {
    /// `pre [ID]`: pre under ID, or under an invented id kept for post.
    Pre,
    /// `post [ID]`: post of ID, or of the kept id.
    Post,
    /// `abort [ID]`: abort of ID, or of the kept id.
    Abort,
    /// `status`: the status command.
    Status,
}

impl Event {
    fn parse(event: &str) -> Option<Event> {
        match event {
            "pre" => Some(Event::Pre),
            "post" => Some(Event::Post),
            "abort" => Some(Event::Abort),
            "status" => Some(Event::Status),
            _ => None,
        }
    }
}

fn run(ctx: &Ctx, event: &str, args: &[String]) -> Result<i32> {
    if args.len() > 1 {
        return Err(usage());
    }
    let given = match args.first().cloned().or_else(|| setting("PGBH_BACKUP_ID")) {
        Some(g) => Some(ids::from_job_name(&g)?),
        None => None,
    };
    let key = setting("PGBH_HOOK_KEY").unwrap_or_else(|| "generic".into());
    match (Event::parse(event).ok_or_else(usage)?, given) {
        (Event::Pre, Some(id)) => Ok(ctx.pre(&id)),
        (Event::Pre, None) => ctx.pre_invented(&key, "backup"),
        (Event::Post, Some(id)) => Ok(ctx.post(&id)),
        (Event::Abort, Some(id)) => Ok(ctx.abort(&id)),
        (ev @ (Event::Post | Event::Abort), None) => {
            let run = ctx.run_dir();
            match state::kept_id(run, &key)? {
                Some(id) => Ok(ctx.finish_kept(&key, &id, ev == Event::Post)),
                None => {
                    ctx.say(&format!(
                        "no backup id given and none kept by pre ({}): nothing to {}",
                        state::kept_id_path(run, &key).display(),
                        event
                    ));
                    Ok(if ev == Event::Abort { exit::OK } else { exit::NO_BACKUP })
                }
            }
        }
        (Event::Status, _) => Ok(ctx.status()),
    }
}

fn usage() -> Error {
    Error::usage("usage: generic pre|post|abort [ID], generic status")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_event_the_usage_names_is_read_and_no_other() {
        assert!(usage().msg.starts_with("usage: generic pre|post|abort [ID], generic status"));
        let all = [("pre", Event::Pre), ("post", Event::Post), ("abort", Event::Abort), ("status", Event::Status)];
        for (name, ev) in all {
            assert_eq!(Event::parse(name), Some(ev));
        }
        for bad in ["", "Pre", "start", "pre-job"] {
            assert_eq!(Event::parse(bad), None, "{bad:?}");
        }
    }
}
