//! `pg-backup-hooks-wal-archive`: `pg-backup-hooks wal-archive` in a binary of its own that links
//! no OpenSSL. PostgreSQL runs archive_command once per WAL file, and most of the main binary's
//! start-up is the dynamic loader binding libssl and libcrypto (docs/benchmarks-wal-restore.md).

use clap::Parser;

use pg_backup_hooks::cli::WalArchiveArgs;
use pg_backup_hooks::commands::wal_archive;
use pg_backup_hooks::error;

/// archive_command: copy one WAL file durably into a plain archive directory (the same as `pg-backup-hooks wal-archive`).
#[derive(Parser)]
#[command(name = "pg-backup-hooks-wal-archive", version)]
struct Cli {
    #[command(flatten)]
    args: WalArchiveArgs,
}

fn main() {
    std::process::exit(error::report(wal_archive::run(Cli::parse().args)));
}
