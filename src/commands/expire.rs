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

/// After a successful store: expire when PGBH_EXPIRE_KEEP_DAYS or PGBH_EXPIRE_KEEP_BACKUPS is
/// set (archive from PGBH_ARCHIVE_DIR); a failure is reported and never fails the backup.
pub fn after_post(sidecar_dirs: &[std::path::PathBuf]) {
    let num = |k: &str| std::env::var(k).ok().filter(|v| !v.trim().is_empty()).map(|v| v.trim().parse::<u64>());
    let (days, backups) = (num("PGBH_EXPIRE_KEEP_DAYS"), num("PGBH_EXPIRE_KEEP_BACKUPS"));
    if days.is_none() && backups.is_none() {
        return;
    }
    let (Ok(days), Ok(backups)) = (days.transpose(), backups.transpose()) else {
        eprintln!("pg-backup-hooks: warning: expire not run: PGBH_EXPIRE_KEEP_DAYS/PGBH_EXPIRE_KEEP_BACKUPS must be whole numbers; the backup itself is stored");
        return;
    };
    let archives: Vec<std::path::PathBuf> =
        std::env::var_os("PGBH_ARCHIVE_DIR").map(|v| std::env::split_paths(&v).collect()).unwrap_or_default();
    match expire_now(sidecar_dirs, &archives, days, backups.map(|b| b as usize), false) {
        Ok(p) => match p.refused {
            Some(why) => {
                eprintln!("pg-backup-hooks: warning: expire removed nothing: {}; the backup itself is stored", why)
            }
            None => print_text(&p, false),
        },
        Err(e) => eprintln!("pg-backup-hooks: warning: expire failed: {}; the backup itself is stored", e.msg),
    }
}
