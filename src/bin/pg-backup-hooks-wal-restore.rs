//! `pg-backup-hooks-wal-restore`: `pg-backup-hooks wal-restore` in a binary of its own that links
//! no OpenSSL. PostgreSQL runs restore_command once per WAL file, and most of the main binary's
//! start-up is the dynamic loader binding libssl and libcrypto (docs/benchmarks-wal-restore.md);
//! restore-prep writes this program into restore_command when it stands next to the main one.

use clap::Parser;

use pg_backup_hooks::cli::WalRestoreArgs;
use pg_backup_hooks::commands::wal_restore;
use pg_backup_hooks::error;

/// restore_command for a plain archive directory: copy one archived WAL file into place (the same as `pg-backup-hooks wal-restore`).
#[derive(Parser)]
#[command(name = "pg-backup-hooks-wal-restore", version)]
struct Cli {
    #[command(flatten)]
    args: WalRestoreArgs,
}

fn main() {
    std::process::exit(error::report(wal_restore::run(Cli::parse().args)));
}
