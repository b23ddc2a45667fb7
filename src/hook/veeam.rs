//! Veeam Agent for Linux (backup job pre-job/post-job scripts, or pre-freeze/post-thaw
//! snapshot scripts) and Veeam Backup & Replication (guest scripts of a Linux VM):
//!
//!   veeam pre | pre-job | pre-freeze      start a backup under a new id and keep the id
//!   veeam post | post-job | post-thaw     stop it and store the labels
//!   veeam abort                           discard the backup pre started
//!
//! Veeam passes no job id and no arguments (B&R runs an uploaded script by path only), so
//! pre invents the id and keeps it under PGBH_VEEAM_KEY (default "veeam"; one per job on
//! this machine). Veeam Agent starts the job even when the pre-job script failed, so post
//! fails loudly when pre started nothing. Pre-freeze/post-thaw run only when the job
//! creates a snapshot: pre-job/post-job are the pair that always runs (docs/hooks/veeam.md).

use super::{setting, state, Ctx, Product};
use crate::error::{exit, Error, Result};

pub const PRODUCT: Product = Product {
    name: "veeam",
    summary:
        "Veeam Agent job scripts, B&R guest scripts: pre|post|abort (also pre-job, post-job, pre-freeze, post-thaw)",
    keys: &["PGBH_VEEAM_KEY"],
    argv0: &[],
    stderr_to_stdout: false,
    // Veeam stops a script after 10 minutes by default: pre and post must end before.
    timeouts: Some((540, 540)),
    progress_to_stdout: false,
    env_file_arg: None,
    fixed_answers: &[],
    run,
};

/// What the job's scripts run us for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Event {
    /// `pre` or `pre-job`: the job's pre-job script.
    Pre,
    /// `pre-freeze`: the pre-freeze script, run only when the job takes a snapshot.
    PreFreeze,
    /// `post`, `post-job` or `post-thaw`.
    Post,
    /// `abort`.
    Abort,
}

impl Event {
    fn parse(event: &str) -> Option<Event> {
        match event {
            "pre" | "pre-job" => Some(Event::Pre),
            "pre-freeze" => Some(Event::PreFreeze),
            "post" | "post-job" | "post-thaw" => Some(Event::Post),
            "abort" => Some(Event::Abort),
            _ => None,
        }
    }
}

fn run(ctx: &Ctx, event: &str, _args: &[String]) -> Result<i32> {
    let key = setting("PGBH_VEEAM_KEY").unwrap_or_else(|| "veeam".into());
    let run = ctx.run_dir();
    let usage = || Error::usage("usage: veeam pre|post|pre-job|post-job|pre-freeze|post-thaw|abort");
    match Event::parse(event).ok_or_else(usage)? {
        event @ (Event::Pre | Event::PreFreeze) => {
            if event == Event::PreFreeze {
                ctx.say("pre-freeze runs only when the job creates a snapshot: a job that can run without one needs pre-job/post-job instead (docs/hooks/veeam.md)");
            }
            ctx.pre_invented(&key, "veeam")
        }
        Event::Post => match state::kept_id(run, &key)? {
            Some(id) => Ok(ctx.finish_kept(&key, &id, true)),
            None => Err(err!(
                "no backup was started by pre (no {}): this copy of the cluster is NOT restorable; check the pre script's output in the job session",
                state::kept_id_path(run, &key).display()
            )),
        },
        Event::Abort => match state::kept_id(run, &key)? {
            Some(id) => Ok(ctx.finish_kept(&key, &id, false)),
            None => {
                ctx.say("nothing to abort");
                Ok(exit::OK)
            }
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_event_the_usage_names_is_read_and_no_other() {
        let names = "pre|post|pre-job|post-job|pre-freeze|post-thaw|abort";
        assert!(names.split('|').all(|e| Event::parse(e).is_some()));
        assert_eq!(Event::parse("pre-freeze"), Some(Event::PreFreeze));
        assert_eq!(Event::parse("post-thaw"), Some(Event::Post));
        for bad in ["", "PRE", "pre-thaw", "status", "pre "] {
            assert_eq!(Event::parse(bad), None, "{bad:?}");
        }
    }
}
