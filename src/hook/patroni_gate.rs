//! `PGBH_PATRONI_ONLY_ON`: the same job runs on every Patroni member's host, and only the
//! host whose member is the one takes the backup. The others end pre, post and abort
//! successfully with one line and do nothing. Which hosts skipped is remembered per backup id
//! in the run directory, so post and abort do what pre did even if the roles changed since.

use crate::error::{Error, Result};
use crate::fsutil;
use crate::pg::discovery::Role;
use crate::pg::patroni::{self, Want};
use crate::rundir::RunDir;

use super::setting;

/// The hook settings read here.
pub const KEYS: &[&str] = &["PGBH_PATRONI_ONLY_ON", "PGBH_PATRONI_URL", "PGBH_PATRONI_MEMBER"];

/// Whether this host takes the backup, with the reason (one line for the job log).
pub enum Gate {
    Run(String),
    Skip(String),
}

/// Run-dir marker: this host skipped backup `id`.
fn marker(run: &RunDir, id: &str) -> std::path::PathBuf {
    run.path(id, "patroni-skipped")
}

/// At pre: None when PGBH_PATRONI_ONLY_ON is unset; else whether this host is the one. A
/// skip is remembered for post and abort.
pub fn at_pre(run: &RunDir, id: &str) -> Result<Option<Gate>> {
    let Some(only_on) = setting("PGBH_PATRONI_ONLY_ON") else { return Ok(None) };
    let _ = std::fs::remove_file(marker(run, id));
    let gate = decide(&only_on)?;
    if let Gate::Skip(why) = &gate {
        fsutil::write_atomic(&marker(run, id), format!("{}\n", why).as_bytes(), 0o600, None)?;
    }
    Ok(Some(gate))
}

/// At post or abort: Some(line) when this host skipped pre of `id` (the marker is removed
/// at post; abort keeps it for a post that may follow).
pub fn at_finish(run: &RunDir, id: &str, post: bool) -> Option<String> {
    let m = marker(run, id);
    let why = std::fs::read_to_string(&m).ok()?;
    if post {
        let _ = std::fs::remove_file(&m);
    }
    Some(why.trim().to_string())
}

fn decide(only_on: &str) -> Result<Gate> {
    let want = match only_on {
        "leader" | "replica" => {
            let want = if only_on == "leader" { Want::Leader } else { Want::Replica };
            // pre's --discover patroni backs up the same member: the role follows, unless set
            // to another one.
            match setting("PGBH_DISCOVER_ROLE") {
                None => std::env::set_var("PGBH_DISCOVER_ROLE", only_on),
                Some(r) if discover_want()? != want => {
                    return Err(Error::usage(format!(
                        "PGBH_PATRONI_ONLY_ON={} but PGBH_DISCOVER_ROLE={}: the host that takes the backup would back up another member; leave PGBH_DISCOVER_ROLE unset or use PGBH_PATRONI_ONLY_ON=this-member",
                        only_on, r
                    )))
                }
                Some(_) => {}
            }
            want
        }
        "this-member" => discover_want()?,
        other => {
            return Err(Error::usage(format!(
                "PGBH_PATRONI_ONLY_ON={:?}: use leader, replica or this-member (the member --discover-role chooses)",
                other
            )))
        }
    };
    let local = setting("PGBH_PATRONI_URL").unwrap_or_else(|| patroni::DEFAULT_LOCAL_URL.to_string());
    let mut urls = vec![local.clone()];
    if let Some(rest) = setting("PGBH_DISCOVER").as_deref().and_then(|d| d.strip_prefix("patroni=")) {
        urls.extend(rest.split(',').map(|u| u.trim().to_string()).filter(|u| !u.is_empty() && *u != local));
    }
    let (_, members) = patroni::cluster(&urls).map_err(|e| e.within("PGBH_PATRONI_ONLY_ON"))?;
    let me = patroni::local_member(&local, &members, setting("PGBH_PATRONI_MEMBER").as_deref())
        .map_err(|e| e.within("PGBH_PATRONI_ONLY_ON"))?;
    let chosen = patroni::choose(&members, want).map_err(|e| e.within("PGBH_PATRONI_ONLY_ON"))?;
    if chosen.member.name == me {
        Ok(Gate::Run(format!(
            "PGBH_PATRONI_ONLY_ON={}: this host's member {} is the one: taking the backup",
            only_on,
            chosen.member.describe()
        )))
    } else {
        Ok(Gate::Skip(format!(
            "PGBH_PATRONI_ONLY_ON={}: skipped on this host: its member is {}, the backup is taken on {}'s host",
            only_on, me, chosen.member.name
        )))
    }
}

/// PGBH_DISCOVER_ROLE as pre reads it (default primary = leader).
fn discover_want() -> Result<Want> {
    use clap::ValueEnum;
    let role = match setting("PGBH_DISCOVER_ROLE") {
        None => Role::Primary,
        Some(r) => Role::from_str(&r, true)
            .map_err(|_| Error::usage(format!("PGBH_DISCOVER_ROLE={:?}: use leader, replica, sync or any", r)))?,
    };
    Ok(match role {
        Role::Primary | Role::Leader => Want::Leader,
        Role::Secondary | Role::Replica => Want::Replica,
        Role::Sync => Want::Sync,
        Role::Any => Want::Any,
    })
}
