//! `restore-test`: restore-prep, a private test server, recovery, the checks and the stop on
//! a scratch copy, with one report. The work is in restore_test; see docs/restore-test.md.

use std::time::Duration;

use crate::cli::RestoreTestArgs;
use crate::error::{exit, Error, Result};
use crate::ids;
use crate::restore::recovery::{ArchiveMode, TargetAction};
use crate::restore::{Options, WalSource};
use crate::restore_test::{self, Request};

pub fn run(a: RestoreTestArgs) -> Result<i32> {
    ids::validate(&a.backup_id)?;
    let source = match (a.archive_dir, a.restore_command) {
        (Some(d), None) => WalSource::ArchiveDir(d),
        (None, Some(c)) => WalSource::Command(c),
        _ => return Err(Error::usage("give exactly one of --archive-dir and --restore-command")),
    };
    let exe = std::env::current_exe().map_err(|e| err!("cannot find this program's own path: {}", e))?;
    let pgdata = std::fs::canonicalize(&a.pgdata).map_err(|e| err!("--pgdata {}: {}", a.pgdata.display(), e))?;
    let prep = Options {
        backup_id: a.backup_id,
        sidecar_dirs: a.sidecar_dir,
        pgdata,
        node: a.node,
        source,
        target: a.target,
        target_action: TargetAction::Promote,
        tablespace_map: a.tablespace_map.into_iter().filter(|s| !s.trim().is_empty()).collect(),
        archive_mode: ArchiveMode::Off,
        force: false,
        wal_dir: a.wal_dir,
        reuse_original_dirs: false,
        exe,
        label_from_archive: false,
        backup_history_file: None,
        accept_unverified_files: false,
    };
    let req = Request {
        prep,
        amcheck: a.amcheck,
        keep: a.keep,
        timeout: Duration::from_secs(a.timeout),
        stop_timeout: Duration::from_secs(a.stop_timeout),
    };
    let rep = restore_test::run(req)?;
    if a.json {
        println!("{}", serde_json::to_string_pretty(&rep).map_err(|e| err!("{}", e))?);
    } else {
        rep.print_text();
    }
    if rep.passed {
        return Ok(exit::OK);
    }
    let failed = rep.failed();
    Err(Error::with_code(
        exit::NOT_PROVEN,
        format!(
            "restore-test of backup {}: FAILED at {}: see the report above{}",
            rep.backup_id,
            if failed.is_empty() { "an unfinished step".to_string() } else { failed.join(", ") },
            rep.log_file.as_ref().map(|l| format!(" and the server log {}", l.display())).unwrap_or_default()
        ),
    ))
}
