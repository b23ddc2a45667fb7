//! pg-backup-hooks: consistent, restorable file-level backups of running PostgreSQL
//! clusters, driven from any backup program's pre/post job scripts.

use pg_backup_hooks::{cli, commands, error, helper};

use clap::Parser;

fn main() {
    let cli = cli::Cli::parse();
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
        cli::Command::RestorePrep(a) => commands::restore_prep::run(a),
        cli::Command::WalRestore(a) => commands::wal_restore::run(a),
        cli::Command::RestoreCheck(a) => commands::restore_check::run(a),
        cli::Command::Helper(a) => helper::run(&a.backup_id, a.run_dir).map(|_| 0),
    };
    match result {
        Ok(code) => std::process::exit(code),
        Err(e) => {
            if e.code == error::exit::OK {
                println!("{}", e.msg);
            } else {
                eprintln!("pg-backup-hooks: error: {}", e.msg);
            }
            std::process::exit(e.code);
        }
    }
}
