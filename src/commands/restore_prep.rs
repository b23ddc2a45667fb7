//! `restore-prep`: check a restored data directory against its sidecar, then install the
//! label and the recovery configuration. See docs/restore.md.

use std::path::{Path, PathBuf};

use crate::cli::RestorePrepArgs;
use crate::error::{Error, Result};
use crate::ids;
use crate::restore::{self, Options, Plan, WalSource};

fn rel(p: &Path, base: &Path) -> String {
    p.strip_prefix(base).map(|r| r.display().to_string()).unwrap_or_else(|_| p.display().to_string())
}

pub fn run(a: RestorePrepArgs) -> Result<i32> {
    let (dry_run, json) = (a.dry_run, a.json);
    let o = options(a)?;
    let plan = restore::prepare(&o)?;
    let written: Vec<PathBuf> = if dry_run { Vec::new() } else { restore::apply(&plan)? };
    if json {
        print_json(&plan, &written, dry_run)?;
    } else {
        print_report(&plan, &written, dry_run);
    }
    Ok(0)
}

/// The command line as restore's options: the id checked, exactly one WAL source, --pgdata
/// made absolute, empty --tablespace-map entries dropped.
fn options(a: RestorePrepArgs) -> Result<Options> {
    ids::validate(&a.backup_id)?;
    let source = match (a.archive_dir, a.restore_command) {
        (Some(d), None) => WalSource::ArchiveDir(d),
        (None, Some(c)) => WalSource::Command(c),
        _ => return Err(Error::usage("give exactly one of --archive-dir and --restore-command")),
    };
    let exe = std::env::current_exe().map_err(|e| err!("cannot find this program's own path: {}", e))?;
    let pgdata = std::fs::canonicalize(&a.pgdata).unwrap_or_else(|_| a.pgdata.clone());
    Ok(Options {
        backup_id: a.backup_id,
        sidecar_dirs: a.sidecar_dir,
        pgdata,
        node: a.node,
        source,
        target: a.target,
        target_action: a.target_action,
        tablespace_map: a.tablespace_map.into_iter().filter(|s| !s.trim().is_empty()).collect(),
        archive_mode: a.archive_mode,
        force: a.force,
        wal_dir: a.wal_dir,
        reuse_original_dirs: a.reuse_original_dirs,
        exe,
        label_from_archive: a.label_from_archive,
        backup_history_file: a.backup_history_file,
    })
}

/// `--json`: the plan, what was written and what was removed, as one document.
fn print_json(plan: &Plan, written: &[PathBuf], dry_run: bool) -> Result<()> {
    let v = serde_json::json!({
        "dry_run": dry_run,
        "plan": plan,
        "written": written,
        "removed": if dry_run { Vec::new() } else { plan.removes.clone() },
    });
    println!("{}", serde_json::to_string_pretty(&v).map_err(|e| Error::new(e.to_string()))?);
    Ok(())
}

/// The report for the operator: warnings on stderr; checks, changes and next steps on stdout.
fn print_report(plan: &Plan, written: &[PathBuf], dry_run: bool) {
    for w in &plan.warnings {
        eprintln!("pg-backup-hooks: warning: {}", w);
    }
    let d = &plan.pgdata;
    println!("backup {}, node {} -> {} (PostgreSQL {})", plan.backup_id, plan.node, d.display(), plan.server_major);
    for c in &plan.checks {
        println!("  ok: {}", c);
    }
    println!(
        "sidecar manifest sha256: {} (compare with the line post printed into the backup job's log)",
        plan.manifest_sha256
    );
    print_changes(plan, dry_run);
    println!("recovery target: {}, then {}", plan.target, plan.target_action);
    println!("restore_command: {}", plan.restore_command);
    if dry_run {
        println!("dry run: nothing was changed");
        return;
    }
    if plan.removes.is_empty() && written.is_empty() {
        println!("already prepared: nothing to do");
    }
    println!("start the server (as the data directory's owner), then wait until SELECT pg_is_in_recovery() is false:");
    println!("  {}", plan.start_command);
    for n in &plan.start_notes {
        println!("  note: {}", n);
    }
    match &plan.check_command {
        Some(c) => println!("then prove where recovery ended (CONNINFO from the copy's configuration):\n  {}", c),
        None => println!(
            "restore-check needs the sidecar, and this backup has none: check the server's log for \"consistent recovery state reached\" and \"archive recovery complete\""
        ),
    }
}

/// One line per file removed and written (or, in a dry run, that would be).
fn print_changes(plan: &Plan, dry_run: bool) {
    let d = &plan.pgdata;
    let (rm, wr) = if dry_run { ("would remove", "would write") } else { ("removed", "wrote") };
    for p in &plan.removes {
        println!("{} {}", rm, rel(p, d));
    }
    for w in &plan.writes {
        if w.unchanged {
            println!("already in place: {} ({})", rel(&w.path, d), w.what);
        } else {
            println!("{} {} ({})", wr, rel(&w.path, d), w.what);
        }
    }
}
