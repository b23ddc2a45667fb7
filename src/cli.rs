//! Command-line definitions: the one place every flag, its help and its environment variable
//! are defined. Most flags also read an environment variable, and --help shows which
//! (`[env: NAME]`), so hook scripts can keep their settings in an environment file; README's
//! tables, the man pages and the completions are generated from here (`__gen`).

use std::path::PathBuf;

use clap::builder::BoolishValueParser;
use clap::{Args, Parser, Subcommand};

/// The largest number of seconds any duration flag takes (ten years): larger values would
/// overflow the clock arithmetic, so they are a usage error before anything starts.
pub const MAX_SECS: u64 = 10 * 365 * 86400;

/// Parser for a duration flag in seconds, 0..=MAX_SECS.
fn secs() -> clap::builder::RangedU64ValueParser<u64> {
    clap::value_parser!(u64).range(0..=MAX_SECS)
}

#[derive(Parser, Debug)]
#[command(
    name = "pg-backup-hooks",
    version,
    about = "Consistent, restorable file-level backups of running PostgreSQL clusters from any backup program's pre/post job scripts",
    after_help = crate::error::exit::summary()
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Start the backup on every node and leave a helper holding the sessions (pre-job script).
    Pre(PreArgs),
    /// Stop the backup, wait for WAL archiving and store the labels in the sidecar (post-job script).
    Post(PostArgs),
    /// Stop and discard a backup for a failed job; stores nothing.
    Abort(AbortArgs),
    /// Show the running helpers and the health of their nodes.
    Status(StatusArgs),
    /// Check a stored sidecar: checksums, labels, manifest.
    Verify(VerifyArgs),
    /// Print what a file set must leave out of a copy of a running cluster, in the backup program's syntax.
    ExcludeList(ExcludeListArgs),
    /// The backups that can be restored, newest first, from sidecar directories and WAL archives.
    List(ListArgs),
    /// Remove the archived WAL and sidecar directories that no kept backup needs (docs/expire.md).
    Expire(ExpireArgs),
    /// After the backup program restored a data directory: check it against the sidecar and prepare recovery (before the first start).
    RestorePrep(RestorePrepArgs),
    /// restore_command for a plain archive directory: copy one archived WAL file into place.
    WalRestore(WalRestoreArgs),
    /// archive_command: copy one WAL file durably into a plain archive directory (docs/archive.md).
    WalArchive(WalArchiveArgs),
    /// Run as a backup product's job script: parse its calling convention, make or recall the backup id, read the environment file, then run pre, post or abort (docs/hooks/).
    Hook(HookArgs),
    /// After the first start of restored nodes: wait until recovery ended and prove it ended where the backup says.
    RestoreCheck(RestoreCheckArgs),
    /// Monitoring: whether every node can be restored now (backup age, sidecar, archive gaps, archiving, held backups), for Nagios/Icinga, Prometheus and cron (docs/check.md).
    Check(CheckArgs),
    /// Prove a backup restores, unattended: restore-prep on a scratch copy, a private test server, recovery, restore-check and the checks, stop; a report with every step (docs/restore-test.md).
    RestoreTest(RestoreTestArgs),
    /// Internal: the detached helper started by `pre`.
    #[command(hide = true)]
    Helper(HelperArgs),
    /// Internal: generate the man pages, completions, env.example and README's tables from these definitions.
    #[command(hide = true, name = "__gen")]
    Gen(GenArgs),
}

#[derive(Args, Debug, Clone)]
pub struct RunDirArg {
    /// Directory for the helper's socket, lock and log [default: /run/pg-backup-hooks for root, else $XDG_STATE_HOME/pg-backup-hooks/run (~/.local/state/pg-backup-hooks/run)]
    #[arg(long, env = "PGBH_RUN_DIR", value_name = "DIR")]
    pub run_dir: Option<PathBuf>,
}

#[derive(Args, Debug)]
pub struct PreArgs {
    /// Unique id of this backup (the backup program's job id); becomes the backup label
    #[arg(long, env = "PGBH_BACKUP_ID", value_name = "ID")]
    pub backup_id: String,
    /// Where post stores the labels (give it several times for several copies)
    #[arg(long, env = "PGBH_SIDECAR_DIR", value_name = "DIR", required = true, value_delimiter = ':')]
    pub sidecar_dir: Vec<PathBuf>,
    /// A node to back up, as NAME=CONNINFO (libpq key=value string or postgresql:// URI); repeatable. Without it, one node "default" connects like psql (PGHOST, PGPORT, PGUSER, ~/.pgpass...)
    #[arg(
        long = "node",
        env = "PGBH_NODES",
        value_name = "NAME=CONNINFO",
        value_delimiter = ';',
        hide_env_values = true
    )]
    pub nodes: Vec<String>,
    /// The primary of a standby node, as NAME=CONNINFO (NAME a --node): post creates the backup's restore point there and waits for its archiving, so the standby can be restored to it; repeatable
    #[arg(
        long = "node-primary",
        env = "PGBH_NODE_PRIMARIES",
        value_name = "NAME=CONNINFO",
        value_delimiter = ';',
        hide_env_values = true
    )]
    pub node_primaries: Vec<String>,
    /// Find the nodes from the cluster's catalog: `citus` reads pg_dist_node on the coordinator (its --node, or the libpq environment) and backs up `coordinator` plus one node per worker group (`group-<groupid>`); `patroni=URL[,URL...]` reads GET /cluster from the first Patroni REST API that answers (basic auth from PGBH_PATRONI_USER/PGBH_PATRONI_PASSWORD) and backs up one member, named as Patroni names it, connected with the --node settings (if any) and the member's host and port
    #[arg(long, env = "PGBH_DISCOVER", value_name = "KIND", value_parser = discover_kind)]
    pub discover: Option<String>,
    /// With --discover: back up each worker group's primary, or its standby (backup from standby); Patroni: `leader` (= primary), `replica` (= secondary: the least-lagged streaming replica, with the restore point on the leader), `sync` (a synchronous standby) or `any` (a replica if one streams, else the leader)
    #[arg(long, env = "PGBH_DISCOVER_ROLE", value_name = "ROLE", value_enum, default_value = "primary")]
    pub discover_role: crate::pg::discovery::Role,
    /// Ask for an immediate checkpoint instead of a spread one
    #[arg(long, env = "PGBH_FAST", value_parser = BoolishValueParser::new())]
    pub fast: bool,
    /// Fail unless every node's files can be listed at start and stop (the inventory restore-prep proves a copy against): needed for non-full levels
    #[arg(long, env = "PGBH_REQUIRE_INVENTORY", value_parser = BoolishValueParser::new())]
    pub require_inventory: bool,
    /// Take no inventory (for benchmarks only: a copy of such a backup cannot be verified)
    #[arg(long, env = "PGBH_NO_INVENTORY", value_parser = BoolishValueParser::new(), hide = true)]
    pub no_inventory: bool,
    /// Give up if the backup has not started on every node within this many seconds
    #[arg(long, env = "PGBH_START_TIMEOUT", value_name = "SECS", value_parser = secs(), default_value_t = 900)]
    pub start_timeout: u64,
    /// The helper stops and discards the backup if post has not come within this many seconds
    #[arg(long, env = "PGBH_MAX_DURATION", value_name = "SECS", value_parser = secs(), default_value_t = 86400)]
    pub max_duration: u64,
    /// Seconds between the helper's liveness checks of each session
    #[arg(long, env = "PGBH_HEARTBEAT", value_name = "SECS", value_parser = secs(), default_value_t = 30, hide = true)]
    pub heartbeat: u64,
    #[command(flatten)]
    pub run: RunDirArg,
}

#[derive(Args, Debug)]
pub struct PostArgs {
    /// The id given to pre
    #[arg(long, env = "PGBH_BACKUP_ID", value_name = "ID")]
    pub backup_id: String,
    /// How long to wait for the WAL the backup needs to reach the archive
    #[arg(long, env = "PGBH_ARCHIVE_TIMEOUT", value_name = "SECS", value_parser = secs(), default_value_t = 3600)]
    pub archive_timeout: u64,
    #[command(flatten)]
    pub run: RunDirArg,
}

#[derive(Args, Debug)]
pub struct AbortArgs {
    /// The id given to pre
    #[arg(long, env = "PGBH_BACKUP_ID", value_name = "ID")]
    pub backup_id: String,
    #[command(flatten)]
    pub run: RunDirArg,
}

#[derive(Args, Debug)]
pub struct StatusArgs {
    /// Only this backup
    #[arg(long, env = "PGBH_BACKUP_ID", value_name = "ID")]
    pub backup_id: Option<String>,
    /// Machine-readable output
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub run: RunDirArg,
}

#[derive(Args, Debug)]
pub struct VerifyArgs {
    /// The backup to check
    #[arg(long, env = "PGBH_BACKUP_ID", value_name = "ID")]
    pub backup_id: String,
    /// Where post stored the sidecar (several, separated by ':': each copy is checked)
    #[arg(long, env = "PGBH_SIDECAR_DIR", value_name = "DIR", required = true, value_delimiter = ':')]
    pub sidecar_dir: Vec<PathBuf>,
    /// Machine-readable output
    #[arg(long)]
    pub json: bool,
}

#[derive(Args, Debug)]
pub struct ExcludeListArgs {
    /// Output syntax
    #[arg(long, value_enum, default_value = "plain")]
    pub format: crate::exclude::Format,
    /// The data directory: print absolute paths under it (else paths relative to it)
    #[arg(long, env = "PGBH_PGDATA", value_name = "DIR")]
    pub pgdata: Option<PathBuf>,
}

#[derive(Args, Debug)]
pub struct HelperArgs {
    #[arg(long)]
    pub backup_id: String,
    #[arg(long)]
    pub run_dir: PathBuf,
}

#[derive(Args, Debug)]
pub struct GenArgs {
    #[command(subcommand)]
    pub what: GenWhat,
}

#[derive(Subcommand, Debug)]
pub enum GenWhat {
    /// Write the man pages (pg-backup-hooks.1 and one per subcommand) into DIR
    Man {
        #[arg(value_name = "DIR")]
        dir: PathBuf,
    },
    /// Print the completion script for SHELL
    Completion {
        #[arg(value_name = "SHELL")]
        shell: clap_complete::Shell,
    },
    /// Rewrite the generated part of README (between its markers); --check only compares
    Readme {
        #[arg(value_name = "README", default_value = "README.md")]
        path: PathBuf,
        #[arg(long)]
        check: bool,
    },
    /// Print the example environment file
    EnvExample,
}

#[derive(Args, Debug)]
#[command(group(clap::ArgGroup::new("wal_source").required(true).args(["archive_dir", "restore_command"])))]
pub struct RestorePrepArgs {
    /// The backup whose copy was restored into --pgdata
    #[arg(long, env = "PGBH_BACKUP_ID", value_name = "ID")]
    pub backup_id: String,
    /// Where post stored the sidecar (several, separated by ':', are tried in order)
    #[arg(
        long,
        env = "PGBH_SIDECAR_DIR",
        value_name = "DIR",
        required_unless_present = "label_from_archive",
        value_delimiter = ':'
    )]
    pub sidecar_dir: Vec<PathBuf>,
    /// The sidecar is lost: rebuild the label from the backup history file PostgreSQL archived at stop (primaries only); a sidecar still found must agree with it
    #[arg(long, env = "PGBH_LABEL_FROM_ARCHIVE")]
    pub label_from_archive: bool,
    /// With --label-from-archive: the history file's name (<start segment>.<offset>.backup), when --restore-command cannot find it from the copy's pg_control
    #[arg(long, env = "PGBH_BACKUP_HISTORY_FILE", value_name = "NAME", requires = "label_from_archive")]
    pub backup_history_file: Option<String>,
    /// The restored data directory (the server must not be running)
    #[arg(long, env = "PGBH_PGDATA", value_name = "DIR")]
    pub pgdata: PathBuf,
    /// Which node of the backup this data directory is (may be omitted for a one-node backup)
    #[arg(long, env = "PGBH_NODE", value_name = "NAME")]
    pub node: Option<String>,
    /// A plain directory of archived WAL; restore_command becomes `pg-backup-hooks wal-restore`
    #[arg(long, env = "PGBH_ARCHIVE_DIR", value_name = "DIR")]
    pub archive_dir: Option<PathBuf>,
    /// Any restore_command, with %f and %p (e.g. for pgBackRest, WAL-G or a cloud bucket)
    #[arg(long, env = "PGBH_RESTORE_COMMAND", value_name = "CMD", hide_env_values = true)]
    pub restore_command: Option<String>,
    /// Where recovery stops: latest, backup-end, restore-point, time:TS, lsn:LSN, xid:XID, name:NAME [default: latest for one node, restore-point for several]
    #[arg(long, env = "PGBH_TARGET", value_name = "T")]
    pub target: Option<String>,
    /// What the server does at the target
    #[arg(long, env = "PGBH_TARGET_ACTION", value_name = "ACTION", default_value = "promote")]
    pub target_action: crate::restore::recovery::TargetAction,
    /// Restore a tablespace somewhere else: OLD=NEW (OLD the path in the backup, or its OID); repeatable
    #[arg(long, env = "PGBH_TABLESPACE_MAP", value_name = "OLD=NEW", value_delimiter = ';')]
    pub tablespace_map: Vec<String>,
    /// Re-point a pg_wal link (e.g. from `initdb -X`) to this new or empty directory instead of the original server's WAL directory
    #[arg(long, env = "PGBH_WAL_DIR", value_name = "DIR")]
    pub wal_dir: Option<PathBuf>,
    /// The original server is gone: its WAL directory and tablespaces, where the copy's links point, may be reused (never while a server runs on them)
    #[arg(long, env = "PGBH_REUSE_ORIGINAL_DIRS")]
    pub reuse_original_dirs: bool,
    /// `off` sets archive_mode = 'off' in postgresql.auto.conf (test restores that must not archive into production); `keep` leaves it
    #[arg(long, env = "PGBH_ARCHIVE_MODE", value_name = "MODE", default_value = "keep")]
    pub archive_mode: crate::restore::recovery::ArchiveMode,
    /// Print the checks and the plan; change nothing
    #[arg(long, env = "PGBH_DRY_RUN", value_parser = BoolishValueParser::new())]
    pub dry_run: bool,
    /// Replace a backup_label already in the data directory that is not this backup's
    #[arg(long, env = "PGBH_FORCE", value_parser = BoolishValueParser::new())]
    pub force: bool,
    /// Let a copy through whose files are missing or older than the backup's inventory says (for an operator who has decided, e.g. a clock stepped back during the backup); the report says so. --force does not do this
    #[arg(long, env = "PGBH_ACCEPT_UNVERIFIED_FILES", value_parser = BoolishValueParser::new())]
    pub accept_unverified_files: bool,
    /// Machine-readable output
    #[arg(long, env = "PGBH_JSON", value_parser = BoolishValueParser::new())]
    pub json: bool,
}

#[derive(Args, Debug)]
pub struct WalRestoreArgs {
    /// The plain directory archive_command copies WAL into
    #[arg(long, env = "PGBH_ARCHIVE_DIR", value_name = "DIR")]
    pub archive_dir: PathBuf,
    /// Refuse WAL segments whose header names another system identifier
    #[arg(long, env = "PGBH_SYSTEM_IDENTIFIER", value_name = "SYSID")]
    pub system_identifier: Option<u64>,
    /// The file PostgreSQL asks for (%f)
    #[arg(value_name = "FILE")]
    pub file: String,
    /// Where to put it (%p, relative to the data directory)
    #[arg(value_name = "DEST")]
    pub dest: PathBuf,
}

#[derive(Args, Debug)]
pub struct WalArchiveArgs {
    /// The plain directory to archive WAL into (it must exist; its marker file names the cluster)
    #[arg(long, env = "PGBH_ARCHIVE_DIR", value_name = "DIR")]
    pub archive_dir: PathBuf,
    /// Compress what is stored (NAME.zst or NAME.lz4, with the format's content checksum)
    #[arg(long, env = "PGBH_COMPRESS", value_name = "zstd|lz4", value_enum)]
    pub compress: Option<crate::archive::file::Compression>,
    /// The file to archive (%p, relative to the data directory)
    #[arg(value_name = "PATH")]
    pub path: PathBuf,
    /// Its name (%f)
    #[arg(value_name = "FILE")]
    pub file: String,
}

#[derive(Args, Debug)]
pub struct RestoreCheckArgs {
    /// The backup the nodes were restored from
    #[arg(long, env = "PGBH_BACKUP_ID", value_name = "ID")]
    pub backup_id: String,
    /// Where post stored the sidecar (several, separated by ':', are tried in order)
    #[arg(long, env = "PGBH_SIDECAR_DIR", value_name = "DIR", required = true, value_delimiter = ':')]
    pub sidecar_dir: Vec<PathBuf>,
    /// A restored node to check, as NAME=CONNINFO (NAME as in the backup); repeatable. Without it, the only node of a one-node backup connects like psql (PGHOST, PGPORT, PGUSER, ~/.pgpass...)
    #[arg(
        long = "node",
        env = "PGBH_RESTORE_NODES",
        value_name = "NAME=CONNINFO",
        value_delimiter = ';',
        hide_env_values = true
    )]
    pub nodes: Vec<String>,
    /// The target the restore was prepared for (as restore-prep's --target) [default: what each server was configured with]
    #[arg(long, env = "PGBH_TARGET", value_name = "T")]
    pub target: Option<String>,
    /// How long to wait, for all nodes together, until recovery has ended
    #[arg(long, env = "PGBH_RESTORE_TIMEOUT", value_name = "SECS", value_parser = secs(), default_value_t = 3600)]
    pub timeout: u64,
    /// Machine-readable output
    #[arg(long, env = "PGBH_JSON")]
    pub json: bool,
}

#[derive(Args, Debug)]
#[command(group(clap::ArgGroup::new("where").required(true).multiple(true).args(["sidecar_dir", "archive_dir"])))]
pub struct ListArgs {
    /// A sidecar directory post writes into (repeatable, or several separated by ':')
    #[arg(long, env = "PGBH_SIDECAR_DIR", value_name = "DIR", value_delimiter = ':')]
    pub sidecar_dir: Vec<PathBuf>,
    /// A plain WAL archive directory: its backup history files, and whether each backup's WAL is there and how far it reaches (repeatable)
    #[arg(long, value_name = "DIR")]
    pub archive_dir: Vec<PathBuf>,
    /// Machine-readable output
    #[arg(long)]
    pub json: bool,
}

#[derive(Args, Debug)]
pub struct ExpireArgs {
    /// A sidecar directory post writes into (repeatable, or several separated by ':')
    #[arg(long, env = "PGBH_SIDECAR_DIR", value_name = "DIR", value_delimiter = ':')]
    pub sidecar_dir: Vec<PathBuf>,
    /// A plain WAL archive directory, one per node (repeatable, or several separated by ':')
    #[arg(long, env = "PGBH_ARCHIVE_DIR", value_name = "DIR", value_delimiter = ':')]
    pub archive_dir: Vec<PathBuf>,
    /// Keep every complete backup started less than N days ago: the backup program's retention period
    #[arg(long, env = "PGBH_EXPIRE_KEEP_DAYS", value_name = "N")]
    pub keep_days: Option<u64>,
    /// Keep the newest N complete backups
    #[arg(long, env = "PGBH_EXPIRE_KEEP_BACKUPS", value_name = "N")]
    pub keep_backups: Option<usize>,
    /// Print what would be removed, remove nothing
    #[arg(long)]
    pub dry_run: bool,
    /// Machine-readable output
    #[arg(long)]
    pub json: bool,
}

#[derive(Args, Debug)]
#[command(
    after_help = "Settings come from the environment file PGBH_ENV_FILE [default: /etc/pg-backup-hooks/env]: KEY=value lines, never run as shell code. See docs/hooks/<product>.md."
)]
pub struct HookArgs {
    /// The backup product whose calling convention to follow
    // Its values are added by hook::command: the products are defined above this module.
    #[arg(value_name = "PRODUCT")]
    pub product: String,
    /// What the product is doing (its own word for it: before/after, pre/post, start/end...)
    #[arg(value_name = "EVENT")]
    pub event: String,
    /// The arguments the product passes, in its own order (job name, level, -attempt N...)
    #[arg(value_name = "ARGS", trailing_var_arg = true, allow_hyphen_values = true)]
    pub args: Vec<String>,
}

/// Parser for a duration: seconds, or a number with s, m, h, d or w (`90m`, `26h`, `7d`).
/// `--discover`: `citus`, or `patroni=URL[,URL...]`.
fn discover_kind(s: &str) -> Result<String, String> {
    if s == "citus" {
        return Ok(s.to_string());
    }
    match s.strip_prefix("patroni=") {
        Some(urls) => {
            for u in urls.split(',') {
                crate::pg::patroni::Url::parse(u.trim()).map_err(|e| e.msg)?;
            }
            Ok(s.to_string())
        }
        None => Err("use citus or patroni=URL[,URL...] (Patroni's REST API, e.g. patroni=http://10.0.0.1:8008,http://10.0.0.2:8008)".into()),
    }
}

fn duration(s: &str) -> Result<u64, String> {
    let s = s.trim();
    let (num, mult) = match s.char_indices().last() {
        Some((i, 's')) => (&s[..i], 1),
        Some((i, 'm')) => (&s[..i], 60),
        Some((i, 'h')) => (&s[..i], 3600),
        Some((i, 'd')) => (&s[..i], 86400),
        Some((i, 'w')) => (&s[..i], 7 * 86400),
        _ => (s, 1),
    };
    let n: u64 = num
        .trim()
        .parse()
        .map_err(|_| format!("{:?} is not a duration: give seconds or a number with s, m, h, d or w (26h, 7d)", s))?;
    n.checked_mul(mult).filter(|v| *v <= MAX_SECS).ok_or_else(|| format!("{:?} is longer than {} seconds", s, MAX_SECS))
}

#[derive(Args, Debug)]
#[command(
    after_help = "Exit status, in every format (the Nagios plugin convention): 0 OK, 1 WARNING, 2 CRITICAL, 3 UNKNOWN. Durations are seconds or a number with s, m, h, d or w. See docs/check.md."
)]
pub struct CheckArgs {
    /// A node to check, as NAME=CONNINFO (the names pre was given); repeatable. Without it, one node "default" connects like psql
    #[arg(
        long = "node",
        env = "PGBH_NODES",
        value_name = "NAME=CONNINFO",
        value_delimiter = ';',
        hide_env_values = true
    )]
    pub nodes: Vec<String>,
    /// Find the nodes as pre does: `citus` reads pg_dist_node on the coordinator (its --node) and checks `coordinator` plus `group-<groupid>` for each worker group's primary
    #[arg(long, env = "PGBH_DISCOVER", value_name = "KIND", value_parser = ["citus"])]
    pub discover: Option<String>,
    /// A sidecar directory post writes into (repeatable, or several separated by ':')
    #[arg(long, env = "PGBH_SIDECAR_DIR", value_name = "DIR", required = true, value_delimiter = ':')]
    pub sidecar_dir: Vec<PathBuf>,
    /// The WAL archive directory wal-archive writes: DIR for every node, or NODE=DIR for one node (repeatable, or several separated by ':')
    #[arg(long, env = "PGBH_ARCHIVE_DIR", value_name = "[NODE=]DIR", value_delimiter = ':')]
    pub archive_dir: Vec<String>,
    /// CRITICAL when the newest complete backup of a node stopped longer ago than this (the backup schedule plus some slack, e.g. 26h); without it the age is reported, not judged
    #[arg(long, env = "PGBH_CHECK_MAX_AGE", value_name = "DURATION", value_parser = duration)]
    pub max_age: Option<u64>,
    /// WARNING when this many finished WAL segments wait to be archived
    #[arg(long, env = "PGBH_CHECK_LAG_SEGMENTS_WARN", value_name = "N", default_value_t = 16)]
    pub lag_segments_warn: u64,
    /// CRITICAL when this many finished WAL segments wait to be archived
    #[arg(long, env = "PGBH_CHECK_LAG_SEGMENTS_CRIT", value_name = "N", default_value_t = 128)]
    pub lag_segments_crit: u64,
    /// WARNING when segments wait and the last successful archiving is older than this
    #[arg(long, env = "PGBH_CHECK_LAG_WARN", value_name = "DURATION", value_parser = duration, default_value = "15m")]
    pub lag_warn: u64,
    /// CRITICAL when segments wait and the last successful archiving is older than this
    #[arg(long, env = "PGBH_CHECK_LAG_CRIT", value_name = "DURATION", value_parser = duration, default_value = "1h")]
    pub lag_crit: u64,
    /// WARNING when a helper has held a backup open this long (a post that never came)
    #[arg(long, env = "PGBH_CHECK_HELD_WARN", value_name = "DURATION", value_parser = duration, default_value = "6h")]
    pub held_warn: u64,
    /// CRITICAL when a helper has held a backup open this long
    #[arg(long, env = "PGBH_CHECK_HELD_CRIT", value_name = "DURATION", value_parser = duration, default_value = "20h")]
    pub held_crit: u64,
    /// Output format: text for people, json, nagios (one status line with perfdata), prometheus (text exposition format, for node_exporter's textfile collector)
    #[arg(long, env = "PGBH_CHECK_FORMAT", value_enum, default_value = "text")]
    pub format: crate::check::Format,
    /// Write the output to FILE atomically (for the textfile collector) instead of stdout
    #[arg(long, env = "PGBH_CHECK_OUTPUT", value_name = "FILE")]
    pub output: Option<PathBuf>,
    #[command(flatten)]
    pub run: RunDirArg,
}

#[derive(Args, Debug)]
#[command(group(clap::ArgGroup::new("wal_source").required(true).args(["archive_dir", "restore_command"])))]
pub struct RestoreTestArgs {
    /// The backup whose copy was restored into --pgdata
    #[arg(long, env = "PGBH_BACKUP_ID", value_name = "ID")]
    pub backup_id: String,
    /// Where post stored the sidecar (several, separated by ':', are tried in order)
    #[arg(long, env = "PGBH_SIDECAR_DIR", value_name = "DIR", required = true, value_delimiter = ':')]
    pub sidecar_dir: Vec<PathBuf>,
    /// The scratch directory the backup program restored the copy into (never a production data directory); not with --node NAME=DIR
    #[arg(long, env = "PGBH_PGDATA", value_name = "DIR")]
    pub pgdata: Option<PathBuf>,
    /// Which node of the backup --pgdata is (may be omitted for a one-node backup); or NAME=DIR, once per node of a multi-node backup, each node restored into its own DIR: every node is tested and checked across nodes (several separated by ';')
    #[arg(long = "node", env = "PGBH_NODE", value_name = "NAME[=DIR]", value_delimiter = ';')]
    pub nodes: Vec<String>,
    /// A plain directory of archived WAL, for every node, or NAME=DIR for one node (repeatable); restore_command becomes `pg-backup-hooks wal-restore`
    #[arg(long, env = "PGBH_ARCHIVE_DIR", value_name = "[NAME=]DIR")]
    pub archive_dir: Vec<String>,
    /// Any restore_command, with %f and %p (e.g. for pgBackRest, WAL-G or a cloud bucket); with several nodes the same command serves every node, so it must find each node's own WAL
    #[arg(long, env = "PGBH_RESTORE_COMMAND", value_name = "CMD", hide_env_values = true)]
    pub restore_command: Option<String>,
    /// Where recovery stops, as restore-prep's --target [default: latest for a one-node backup, restore-point for several nodes]
    #[arg(long, env = "PGBH_TARGET", value_name = "T")]
    pub target: Option<String>,
    /// Restore a tablespace somewhere else: OLD=NEW (OLD the path in the backup, or its OID); repeatable. A test restore on the production host needs it for every tablespace
    #[arg(long, env = "PGBH_TABLESPACE_MAP", value_name = "OLD=NEW", value_delimiter = ';')]
    pub tablespace_map: Vec<String>,
    /// Re-point a pg_wal link (e.g. from `initdb -X`) to this new or empty directory
    #[arg(long, env = "PGBH_WAL_DIR", value_name = "DIR")]
    pub wal_dir: Option<PathBuf>,
    /// Also run amcheck on every database (pg_amcheck --heapallindexed from 14, else the amcheck functions); the extension is created in the scratch copy only
    #[arg(long, env = "PGBH_AMCHECK", value_parser = BoolishValueParser::new())]
    pub amcheck: bool,
    /// Leave the test server running on its private socket after the checks (the report says how to connect and stop it); pg_checksums is then not run
    #[arg(long, env = "PGBH_KEEP", value_parser = BoolishValueParser::new())]
    pub keep: bool,
    /// How long recovery may take before the test fails
    #[arg(long, env = "PGBH_RESTORE_TIMEOUT", value_name = "SECS", value_parser = secs(), default_value_t = 3600)]
    pub timeout: u64,
    /// How long a fast shutdown may take before an immediate one
    #[arg(long, env = "PGBH_STOP_TIMEOUT", value_name = "SECS", value_parser = secs(), default_value_t = 120)]
    pub stop_timeout: u64,
    /// Machine-readable output
    #[arg(long, env = "PGBH_JSON", value_parser = BoolishValueParser::new())]
    pub json: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_take_units() {
        assert_eq!(duration("90"), Ok(90));
        assert_eq!(duration("90s"), Ok(90));
        assert_eq!(duration("15m"), Ok(900));
        assert_eq!(duration("26h"), Ok(26 * 3600));
        assert_eq!(duration("7d"), Ok(7 * 86400));
        assert_eq!(duration("2w"), Ok(14 * 86400));
        assert!(duration("").is_err() && duration("h").is_err() && duration("1y").is_err() && duration("-1h").is_err());
        assert!(duration("99999999999w").is_err());
    }

    /// PGBH_FAST=1 from an environment file (also yes/on/true, and 0/no/off/false); the
    /// flag itself still works. The only test that sets PGBH_FAST.
    #[test]
    fn boolean_settings_accept_the_usual_words() {
        let fast = |v: Option<&str>, flag: bool| {
            match v {
                Some(v) => std::env::set_var("PGBH_FAST", v),
                None => std::env::remove_var("PGBH_FAST"),
            }
            let mut argv = vec!["pg-backup-hooks", "pre", "--backup-id", "x", "--sidecar-dir", "/s"];
            if flag {
                argv.push("--fast");
            }
            let r = Cli::try_parse_from(argv).map(|c| match c.command {
                Command::Pre(a) => a.fast,
                _ => unreachable!(),
            });
            std::env::remove_var("PGBH_FAST");
            r
        };
        for v in ["1", "yes", "on", "true", "TRUE"] {
            assert!(fast(Some(v), false).unwrap(), "{}", v);
        }
        for v in ["0", "no", "off", "false"] {
            assert!(!fast(Some(v), false).unwrap(), "{}", v);
        }
        assert!(fast(Some("maybe"), false).is_err());
        assert!(fast(None, true).unwrap());
        assert!(!fast(None, false).unwrap());
    }
}
