//! `abort`: for a failed job. Stops and discards every node's backup; stores nothing.

use crate::cli::AbortArgs;
use crate::error::{exit, Result};
use crate::helper::client;
use crate::ids;
use crate::protocol::{Reply, Request};
use crate::rundir::{Marker, RunDir};

pub fn run(a: AbortArgs) -> Result<i32> {
    ids::validate(&a.backup_id)?;
    let id = &a.backup_id;
    let run = RunDir::open(a.run.run_dir.clone(), false)?;
    match client::request(&run, id, &Request::Abort, &mut |m| eprintln!("pg-backup-hooks: {}", m))? {
        Some(Reply::Ok { message }) => {
            println!("{}", message);
            Ok(exit::OK)
        }
        Some(Reply::Error { message, .. }) => Err(err!("abort of backup {} failed: {}", id, message)),
        Some(other) => Err(err!("unexpected answer from the helper: {:?}", other)),
        None => {
            match run.marker(id) {
                Some(Marker::Done(t)) => println!(
                    "nothing to abort: backup {} was already stored ({}); its sidecar is left as it is",
                    id,
                    t.trim()
                ),
                Some(Marker::Aborted(_)) => println!("nothing to abort: backup {} was already aborted", id),
                Some(Marker::Failed(t)) => {
                    println!("nothing to abort: backup {} had already failed ({})", id, t.trim())
                }
                None => println!("nothing to abort: no backup {} is in progress", id),
            }
            run.clean_stale(id);
            Ok(exit::OK)
        }
    }
}
