//! `check`: whether every node can be restored now, for Nagios/Icinga, Prometheus and cron;
//! the work is in src/check/.

use crate::check::{self, Config, Format, Thresholds};
use crate::cli::CheckArgs;
use crate::error::{Error, Result};

pub fn run(a: CheckArgs) -> Result<i32> {
    let format = a.format;
    match check(a) {
        Ok(code) => Ok(code),
        // A Nagios plugin that cannot run says UNKNOWN on its one line, exit 3.
        Err(e) if format == Format::Nagios => {
            println!("PGBH CHECK UNKNOWN - {}", e.msg.replace('|', "/"));
            Ok(check::Status::Unknown.code())
        }
        Err(e) => Err(e),
    }
}

fn check(a: CheckArgs) -> Result<i32> {
    let cfg = config(&a)?;
    let report = check::run(&cfg, &thresholds(&a));
    let out = check::render::render(&report, a.format)?;
    match &a.output {
        Some(path) => crate::fsutil::write_atomic(path, out.as_bytes(), 0o644, None)?,
        None => print!("{}", out),
    }
    Ok(report.status.code())
}

/// The flags as check's configuration: nodes parsed as pre parses them, `--archive-dir`
/// split into DIR and NODE=DIR.
fn config(a: &CheckArgs) -> Result<Config> {
    let nodes = crate::nodes::parse_all(&a.nodes)?;
    if a.discover.is_some() && nodes.len() > 1 {
        return Err(Error::usage("--discover citus takes at most one --node: the coordinator"));
    }
    let (archive_dirs, archive_of) = crate::nodes::split_archive_dirs(&a.archive_dir);
    Ok(Config {
        nodes,
        discover_citus: a.discover.is_some(),
        sidecar_dirs: a.sidecar_dir.clone(),
        archive_dirs,
        archive_of,
        run_dir: a.run.run_dir.clone(),
    })
}

fn thresholds(a: &CheckArgs) -> Thresholds {
    Thresholds {
        max_age: a.max_age,
        lag_segments_warn: a.lag_segments_warn,
        lag_segments_crit: a.lag_segments_crit,
        lag_warn: a.lag_warn,
        lag_crit: a.lag_crit,
        held_warn: a.held_warn,
        held_crit: a.held_crit,
    }
}
