//! Waiting, bounded, for the test server's recovery to end (pg_is_in_recovery() false after
//! the promotion at the target). On a terminal, stderr shows the replayed location against
//! the backup's end and the replay rate. A server that exits during recovery is a failure
//! named from its log: its FATAL/PANIC lines, and the WAL segment it could not get.

use std::io::{IsTerminal, Write};
use std::time::{Duration, Instant};

use crate::error::Result;
use crate::pg::conninfo::ConnInfo;
use crate::pg::wal::Lsn;
use crate::pg::{api, tls};
use crate::restore::outcome;
use crate::restore_test::server::{self, Server};

/// What the wait is judged against.
pub struct Wait<'a> {
    /// Whom to connect as, tried in order (the superuser's name is not known beforehand).
    pub infos: &'a [ConnInfo],
    pub timeout: Duration,
    /// Where the replay starts (the backup's start) and where the copy is consistent (its stop).
    pub start: Lsn,
    pub consistent: Lsn,
    /// The target's location when it is one (lsn:X, or a restore point whose LSN is known).
    pub target: Option<Lsn>,
    pub seg_size: u64,
    /// Its postmaster.pid says when connections are accepted (as pg_ctl -w reads it).
    pub pgdata: &'a std::path::Path,
}

/// postmaster.pid's status line (the 8th): "starting", "standby", "ready" or "stopping".
fn pm_status(pgdata: &std::path::Path) -> Option<String> {
    let text = std::fs::read_to_string(pgdata.join("postmaster.pid")).ok()?;
    text.lines().nth(7).map(|l| l.trim().to_string())
}

/// Wait until recovery has ended; the connected client and the server's version number.
pub fn until_ended(srv: &mut Server, w: &Wait) -> Result<(postgres::Client, i32, ConnInfo)> {
    let started = Instant::now();
    let tty = std::io::stderr().is_terminal();
    let mut last_shown = Instant::now();
    let mut last_err;
    let mut shown = false;
    let result = loop {
        if let Some(sig) = server::interrupted() {
            break Err(err!("interrupted by {} while waiting for recovery to end", sig));
        }
        if let Some(st) = srv.exited() {
            break Err(exit_failure(&srv.log, st, w.seg_size));
        }
        let status = pm_status(w.pgdata);
        if !matches!(status.as_deref(), Some("standby") | Some("ready")) {
            last_err = format!(
                "the server does not accept connections yet ({})",
                status.as_deref().unwrap_or("no postmaster.pid")
            );
            if started.elapsed() >= w.timeout {
                break Err(err!("recovery had not ended after {} s (--timeout): {}", w.timeout.as_secs(), last_err));
            }
            std::thread::sleep(Duration::from_millis(100));
            continue;
        }
        match probe_any(w.infos) {
            Ok((c, v, false, _, info)) => break Ok((c, v, info)),
            Ok((_, _, true, replay, _)) => {
                last_err =
                    format!("still in recovery, replayed to {}", replay.map(|l| l.to_string()).unwrap_or("-".into()));
                if tty && last_shown.elapsed() >= Duration::from_secs(1) {
                    if let Some(r) = replay {
                        show_progress(r, w, started.elapsed());
                        shown = true;
                    }
                    last_shown = Instant::now();
                }
            }
            Err(e) => last_err = e.msg,
        }
        if started.elapsed() >= w.timeout {
            break Err(err!(
                "recovery had not ended after {} s (--timeout): {}; the server's log says how far it got",
                w.timeout.as_secs(),
                last_err
            ));
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    if shown {
        eprintln!();
    }
    result
}

fn show_progress(replay: Lsn, w: &Wait, elapsed: Duration) {
    let done = replay.0.saturating_sub(w.start.0);
    let rate = done as f64 / elapsed.as_secs_f64().max(0.001) / 1048576.0;
    let versus = if replay < w.consistent {
        format!(
            "backup end {} ({:.0}%)",
            w.consistent,
            100.0 * done as f64 / (w.consistent.0.saturating_sub(w.start.0).max(1)) as f64
        )
    } else {
        match w.target {
            Some(t) => format!("target {} (backup end {} passed)", t, w.consistent),
            None => format!("past the backup end {}, replaying to the target", w.consistent),
        }
    };
    eprint!("\rrestore-test: replayed {} / {}, {:.1} MiB/s   ", replay, versus, rate);
    let _ = std::io::stderr().flush();
}

/// The first of `infos` that connects (a role that does not exist is the next one's turn).
fn probe_any(infos: &[ConnInfo]) -> Result<(postgres::Client, i32, bool, Option<Lsn>, ConnInfo)> {
    let mut last = err!("nobody to connect as");
    for i in infos {
        match probe(i) {
            Ok((c, v, r, l)) => return Ok((c, v, r, l, i.clone())),
            Err(e) => last = e,
        }
    }
    Err(last)
}

/// One connection attempt: client, version, still recovering, replayed location.
fn probe(info: &ConnInfo) -> Result<(postgres::Client, i32, bool, Option<Lsn>)> {
    let mut c = tls::connect(info, "pg-backup-hooks restore-test").map_err(|e| err!("{}", e))?;
    let v = api::server_version_num(&mut c).map_err(|e| err!("{}", e))?;
    let (recovering, replay) = outcome::still_recovering(&mut c, v)?;
    Ok((c, v, recovering, replay))
}

/// The server exited during recovery: why, from its log.
fn exit_failure(log: &std::path::Path, st: std::process::ExitStatus, seg_size: u64) -> crate::error::Error {
    let text = std::fs::read(log).map(|b| String::from_utf8_lossy(&b).into_owned()).unwrap_or_default();
    let fatal: Vec<&str> = text.lines().filter(|l| l.contains("FATAL:") || l.contains("PANIC:")).collect();
    let why = if fatal.is_empty() {
        "no FATAL or PANIC line in its log".to_string()
    } else {
        fatal.iter().rev().take(2).rev().map(|l| l.trim()).collect::<Vec<_>>().join(" / ")
    };
    let wal = match last_restored(&text) {
        Some(last) => match next_segment(&last, seg_size) {
            Some(next) => format!("; the last WAL file restored was {}: the archive did not deliver {}", last, next),
            None => format!("; the last WAL file restored was {}", last),
        },
        None => "; no WAL file was restored from the archive".to_string(),
    };
    err!("the server exited before recovery ended ({}): {}{}", st, why, wal)
}

/// The last segment the log says was restored from the archive.
pub fn last_restored(log: &str) -> Option<String> {
    log.lines()
        .filter_map(|l| l.split("restored log file \"").nth(1)?.split('"').next())
        .rfind(|n| crate::pg::wal::is_segment_name(n))
        .map(str::to_string)
}

/// The segment after `name` (same timeline).
pub fn next_segment(name: &str, seg_size: u64) -> Option<String> {
    if !crate::pg::wal::is_segment_name(name) || seg_size == 0 {
        return None;
    }
    let tli = u32::from_str_radix(&name[0..8], 16).ok()?;
    let hi = u64::from_str_radix(&name[8..16], 16).ok()?;
    let lo = u64::from_str_radix(&name[16..24], 16).ok()?;
    let per_id = 0x1_0000_0000u64 / seg_size;
    let n = hi * per_id + lo + 1;
    Some(format!("{:08X}{:08X}{:08X}", tli, n / per_id, n % per_id))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_missing_segment_is_the_one_after_the_last_restored() {
        let log = "LOG:  restored log file \"00000002.history\" from archive\n\
                   LOG:  restored log file \"000000010000000000000003\" from archive\n\
                   LOG:  restored log file \"0000000100000000000000FF\" from archive\n";
        let last = last_restored(log).unwrap();
        assert_eq!(last, "0000000100000000000000FF");
        assert_eq!(next_segment(&last, 16 << 20).unwrap(), "000000010000000100000000");
        assert_eq!(next_segment("000000010000000000000003", 16 << 20).unwrap(), "000000010000000000000004");
        assert_eq!(next_segment("000000010000000200000003", 1 << 30).unwrap(), "000000010000000300000000");
        assert_eq!(last_restored("nothing"), None);
    }
}
