//! `expire`: lock the archive directories, find the backups as `list` does, plan what no
//! kept backup needs (archive::expire) and remove it, or print the plan.

use crate::archive::{catalog, expire};
use crate::cli::ExpireArgs;
use crate::error::{exit, Error, Result};

pub fn run(a: ExpireArgs) -> Result<i32> {
    let p = expire_now(&a.sidecar_dir, &a.archive_dir, a.keep_days, a.keep_backups, a.dry_run)?;
    if a.json {
        println!("{}", serde_json::to_string_pretty(&p).map_err(|e| err!("{}", e))?);
    } else {
        print_text(&p, a.dry_run);
    }
    Ok(if p.refused.is_some() { exit::FAILURE } else { exit::OK })
}

/// Lock, discover, plan and (unless `dry_run`) apply; also what `post` calls.
pub fn expire_now(
    sidecar_dirs: &[std::path::PathBuf],
    archive_dirs: &[std::path::PathBuf],
    keep_days: Option<u64>,
    keep_backups: Option<usize>,
    dry_run: bool,
) -> Result<expire::Plan> {
    if keep_days.is_none() && keep_backups.is_none() {
        return Err(Error::usage("expire needs --keep-days N or --keep-backups N (or both)"));
    }
    let _locks = archive_dirs.iter().map(|d| expire::lock(d)).collect::<Result<Vec<_>>>()?;
    let mut c = catalog::discover(sidecar_dirs, archive_dirs)?;
    let policy = expire::Policy { keep_days, keep_backups, now: chrono::Utc::now().timestamp() };
    let p = expire::plan(&c.entries, &mut c.archives, policy)?;
    if !dry_run && p.refused.is_none() {
        expire::apply(&p)?;
    }
    Ok(p)
}

fn print_text(p: &expire::Plan, dry_run: bool) {
    let verb = if dry_run { "would remove" } else { "removed" };
    println!("kept: {}", p.kept.join(" "));
    println!("expired: {}", p.expired.join(" "));
    if let Some(why) = &p.refused {
        eprintln!("pg-backup-hooks: expire: {}", why);
        return;
    }
    for a in &p.archives {
        println!("{} {}: {} files ({} kept)", a.dir.display(), verb, a.remove.len(), a.kept_files);
    }
    for d in &p.sidecars {
        println!("{} sidecar {}", verb, d.display());
    }
}
