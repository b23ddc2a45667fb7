//! pg-backup-hooks: consistent, restorable file-level backups of running PostgreSQL
//! clusters, driven from any backup program's pre/post job scripts.

use pg_backup_hooks::{cli, commands, error, helper, hook};

use clap::FromArgMatches;

fn main() {
    let matches = hook::command().get_matches_from(hook::rewrite_argv0(std::env::args_os().collect()));
    let cli = cli::Cli::from_arg_matches(&matches).unwrap_or_else(|e| e.exit());
    let is_helper = matches!(cli.command, cli::Command::Helper(_));
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or(if is_helper {
        "info"
    } else {
        "warn"
    }))
    .format_target(false)
    .format_timestamp_millis()
    .init();
    let result = match cli.command {
        cli::Command::Pre(a) => commands::pre::run(a),
        cli::Command::Post(a) => commands::post::run(a),
        cli::Command::Abort(a) => commands::abort::run(a),
        cli::Command::Status(a) => commands::status::run(a),
        cli::Command::Verify(a) => commands::verify::run(a),
        cli::Command::ExcludeList(a) => commands::exclude_list::run(a),
        cli::Command::List(a) => commands::list::run(a),
        cli::Command::Expire(a) => commands::expire::run(a),
        cli::Command::RestorePrep(a) => commands::restore_prep::run(a),
        cli::Command::WalRestore(a) => commands::wal_restore::run(a),
        cli::Command::WalArchive(a) => commands::wal_archive::run(a),
        cli::Command::Hook(a) => commands::hook::run(a),
        cli::Command::Gen(a) => commands::gen::run(a),
        cli::Command::RestoreCheck(a) => commands::restore_check::run(a),
        cli::Command::Check(a) => commands::check::run(a),
        cli::Command::RestoreTest(a) => commands::restore_test::run(a),
        cli::Command::Helper(a) => helper::run(&a.backup_id, a.run_dir).map(|_| 0),
    };
    std::process::exit(error::report(result));
}
