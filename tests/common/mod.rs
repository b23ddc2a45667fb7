//! Shared integration-test harness: throw-away PostgreSQL clusters.
//!
//! Every test gets its own [`TestDir`] (a short temp dir under `/tmp`) and
//! creates one or more [`Cluster`]s inside it. Clusters listen on
//! `127.0.0.1` on a port from [`free_port`] and on a Unix socket in their
//! own directory, so tests can run in parallel threads.
//!
//! PostgreSQL refuses to run as root. When the tests run as root, every
//! server-side program (initdb, pg_ctl, ...) is run through
//! `runuser -u USER --`, where USER is `$PGBH_TEST_USER` (default
//! `postgres`), and the directories the server needs are chowned to it.
//!
//! Declare the [`TestDir`] *before* the clusters living in it, so that the
//! clusters are dropped (and stopped) before their directory is removed:
//!
//! ```ignore
//! let dir = TestDir::new();
//! let pg = Cluster::new(dir.path(), "main");
//! assert_eq!(pg.query_scalar("select 1"), "1");
//! ```

use std::collections::BTreeSet;
use std::ffi::OsStr;
use std::fs;
use std::io::ErrorKind;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::Mutex;
use std::thread;
use std::time::{Duration, Instant};

use nix::unistd::{Gid, Uid, User};

pub mod roundtrip;
pub mod standby;
pub mod tool;

/// Environment variables that could make PostgreSQL programs connect to,
/// or operate on, something other than what the harness asked for.
const PG_ENV_VARS: &[&str] = &[
    "PGDATA",
    "PGHOST",
    "PGHOSTADDR",
    "PGPORT",
    "PGUSER",
    "PGDATABASE",
    "PGOPTIONS",
    "PGSERVICE",
    "PGSERVICEFILE",
    "PGPASSWORD",
    "PGPASSFILE",
    "PGSSLMODE",
    "PGTZ",
];

/// Says that the running test is skipped, and why, where a reader of `cargo test` sees it:
/// straight to the process's stderr, past libtest's capture (which hides what a passing test
/// printed, so a skipped test would show as a plain `ok`). Names the test (libtest names each
/// test's thread after it).
pub fn skip(why: &str) {
    use std::io::Write;
    let test = thread::current().name().unwrap_or("a test").to_string();
    let _ = writeln!(std::io::stderr().lock(), "SKIPPED {test}: {why}");
}

/// Directory holding the PostgreSQL server binaries: `$PGBH_PG_BINDIR`,
/// else `/usr/lib/postgresql/15/bin`.
pub fn bindir() -> PathBuf {
    std::env::var_os("PGBH_PG_BINDIR").map(PathBuf::from).unwrap_or_else(|| PathBuf::from("/usr/lib/postgresql/15/bin"))
}

/// Path of the `pg-backup-hooks` binary built by cargo for this test run.
pub fn bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_pg-backup-hooks"))
}

/// The unprivileged user that runs PostgreSQL when the tests run as root
/// (`$PGBH_TEST_USER`, default `postgres`); `None` when not root, in which
/// case the server runs as the current user.
pub fn server_user() -> Option<String> {
    if !Uid::effective().is_root() {
        return None;
    }
    Some(std::env::var("PGBH_TEST_USER").unwrap_or_else(|_| "postgres".to_string()))
}

/// Uid and gid of [`server_user`]; `None` when not root. Panics if the user
/// does not exist.
pub fn server_user_ids() -> Option<(Uid, Gid)> {
    let name = server_user()?;
    let user = User::from_name(&name)
        .unwrap_or_else(|e| panic!("looking up server user {name:?}: {e}"))
        .unwrap_or_else(|| panic!("server user {name:?} does not exist (set PGBH_TEST_USER to an unprivileged user)"));
    Some((user.uid, user.gid))
}

/// Recursively chowns `path` (not following symlinks) to the server user.
/// No-op when not running as root.
pub fn chown_to_server_user(path: &Path) {
    let Some((uid, gid)) = server_user_ids() else {
        return;
    };
    chown_recursive(path, uid.as_raw(), gid.as_raw());
}

fn chown_recursive(path: &Path, uid: u32, gid: u32) {
    std::os::unix::fs::lchown(path, Some(uid), Some(gid))
        .unwrap_or_else(|e| panic!("chown {} to {uid}:{gid}: {e}", path.display()));
    let meta = fs::symlink_metadata(path).unwrap_or_else(|e| panic!("stat {}: {e}", path.display()));
    if meta.is_dir() {
        let entries = fs::read_dir(path).unwrap_or_else(|e| panic!("read_dir {}: {e}", path.display()));
        for entry in entries {
            let entry = entry.unwrap_or_else(|e| panic!("read_dir {}: {e}", path.display()));
            chown_recursive(&entry.path(), uid, gid);
        }
    }
}

/// A `Command` for `program`, run as the server user when we are root
/// (wrapped in `runuser -u USER --`, with working directory `/` so the user
/// can access it), directly otherwise. PG* connection variables are removed
/// from its environment.
pub fn server_command(program: impl AsRef<OsStr>) -> Command {
    let mut cmd = match server_user() {
        Some(user) => {
            let mut cmd = Command::new("runuser");
            cmd.arg("-u").arg(user).arg("--").arg(program);
            cmd.current_dir("/");
            cmd
        }
        None => Command::new(program),
    };
    for var in PG_ENV_VARS {
        cmd.env_remove(var);
    }
    cmd
}

/// [`server_command`] for the PostgreSQL program `name` in [`bindir`],
/// e.g. `pg_command("pg_controldata")`.
pub fn pg_command(name: &str) -> Command {
    server_command(bindir().join(name))
}

/// Runs `cmd` to completion, capturing its output. Panics, showing the
/// command line, exit status, stdout and stderr, if it cannot be started or
/// exits unsuccessfully.
pub fn run_checked(cmd: &mut Command) -> Output {
    let out = cmd.output().unwrap_or_else(|e| panic!("could not run {cmd:?}: {e}"));
    if !out.status.success() {
        panic!(
            "{cmd:?} failed with {}\n--- stdout ---\n{}\n--- stderr ---\n{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    out
}

/// A temporary directory with a short path under `/tmp` (Unix socket paths
/// must stay below ~100 bytes), owned by the server user when root.
/// Removed with everything in it on drop.
pub struct TestDir {
    dir: tempfile::TempDir,
}

impl TestDir {
    /// Creates a fresh directory `/tmp/pgbhXXXXXX`.
    pub fn new() -> TestDir {
        let dir = tempfile::Builder::new().prefix("pgbh").tempdir_in("/tmp").expect("creating temp dir under /tmp");
        chown_to_server_user(dir.path());
        TestDir { dir }
    }

    /// The directory's path.
    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Creates (with parents) the subdirectory `rel`, owned by the server
    /// user when root, and returns its path.
    pub fn mkdir(&self, rel: &str) -> PathBuf {
        let path = self.dir.path().join(rel);
        fs::create_dir_all(&path).unwrap_or_else(|e| panic!("mkdir {}: {e}", path.display()));
        if let Some(first) = Path::new(rel).components().next() {
            chown_to_server_user(&self.dir.path().join(first));
        }
        path
    }
}

impl Default for TestDir {
    fn default() -> Self {
        TestDir::new()
    }
}

/// Ports handed out by [`free_port`] and [`local_listener`] in this process, never handed out
/// twice. All the tests run in one process: a port one test was given is never bound by a
/// server another test plays, nor given to another test as one where nothing listens.
static HANDED_OUT_PORTS: Mutex<BTreeSet<u16>> = Mutex::new(BTreeSet::new());

/// A listener on 127.0.0.1 on a port not handed out before, now recorded as handed out.
fn bind_unhanded_port() -> TcpListener {
    let mut handed = HANDED_OUT_PORTS.lock().unwrap_or_else(|e| e.into_inner());
    for _ in 0..1000 {
        let listener = TcpListener::bind("127.0.0.1:0").expect("binding 127.0.0.1:0");
        let port = listener.local_addr().expect("local_addr of listener on 127.0.0.1:0").port();
        if handed.insert(port) {
            return listener;
        }
    }
    panic!("no unused port found after 1000 attempts");
}

/// A TCP port on 127.0.0.1 that was free a moment ago and has not been
/// returned before by this process. (Another process can still grab it
/// before the server binds it; [`Cluster::with_opts`] retries on that.)
pub fn free_port() -> u16 {
    bind_unhanded_port().local_addr().expect("local_addr of listener on 127.0.0.1").port()
}

/// A listener on 127.0.0.1, for a server the test plays itself (a proxy, a mute server, an
/// inetd), on a port no other test in this process was or will be given by [`free_port`].
pub fn local_listener() -> TcpListener {
    bind_unhanded_port()
}

/// Polls `f` every 50 ms until it returns true; panics mentioning `what` if
/// that does not happen within `timeout`.
pub fn wait_until(timeout: Duration, what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    loop {
        if f() {
            return;
        }
        if Instant::now() >= deadline {
            panic!("timed out after {timeout:?} waiting for {what}");
        }
        thread::sleep(Duration::from_millis(50));
    }
}

/// Formats a postgres client error with the server's message and detail.
pub fn pg_error_text(e: &postgres::Error) -> String {
    if let Some(db) = e.as_db_error() {
        let mut s = format!("{}: {}", db.severity(), db.message());
        if let Some(detail) = db.detail() {
            s.push_str(&format!(" (DETAIL: {detail})"));
        }
        return s;
    }
    let mut s = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(err) = source {
        s.push_str(": ");
        s.push_str(&err.to_string());
        source = err.source();
    }
    s
}

/// Options for [`Cluster::with_opts`].
#[derive(Clone, Debug)]
pub struct ClusterOpts {
    /// Turn on WAL archiving into [`Cluster::archive_dir`]. Default true.
    pub archive: bool,
    /// Replaces the default `archive_command` (only used when `archive`).
    /// Written verbatim inside single quotes (quotes are escaped).
    pub archive_command: Option<String>,
    /// Extra `postgresql.conf` lines, appended after the harness's own
    /// settings (so they override them).
    pub extra_conf: Vec<String>,
    /// Extra arguments for initdb (e.g. `--data-checksums`).
    pub initdb_args: Vec<String>,
}

impl Default for ClusterOpts {
    fn default() -> Self {
        ClusterOpts { archive: true, archive_command: None, extra_conf: Vec::new(), initdb_args: Vec::new() }
    }
}

/// A PostgreSQL cluster created with initdb under `<base>/<name>`, started,
/// and stopped (`-m immediate`) on drop. The directory itself is removed
/// with its [`TestDir`], not by the cluster.
pub struct Cluster {
    /// Name of the cluster root under the base dir (the requested name,
    /// with `-1`, `-2`, ... appended if that already existed).
    pub name: String,
    /// `<base>/<name>`, owned by the server user.
    pub root: PathBuf,
    /// `<root>/data`, the data directory.
    pub datadir: PathBuf,
    /// `<root>/archive`, where the default archive_command copies WAL.
    pub archive_dir: PathBuf,
    /// TCP port on 127.0.0.1.
    pub port: u16,
    /// `<root>/sock`, the Unix socket directory.
    pub socket_dir: PathBuf,
    /// `<root>/server.log`, the server's stderr log.
    pub log_file: PathBuf,
    /// Options the cluster was created with.
    pub opts: ClusterOpts,
}

/// Escapes a value for use inside single quotes in postgresql.conf.
fn conf_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

/// Returns at most the last `n` lines of `s`.
fn tail(s: &str, n: usize) -> String {
    let lines: Vec<&str> = s.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

impl Cluster {
    /// Creates and starts a cluster with default [`ClusterOpts`].
    pub fn new(base: &Path, name: &str) -> Cluster {
        Cluster::with_opts(base, name, ClusterOpts::default())
    }

    /// Creates a cluster under `base` (a [`TestDir`] path), configures it
    /// per `opts`, starts it and waits until a client can connect. Panics
    /// with command output / server log on any failure.
    pub fn with_opts(base: &Path, name: &str, opts: ClusterOpts) -> Cluster {
        let mut cluster = Cluster::layout(base, name, opts);
        let datadir = cluster.datadir.clone();
        run_checked(
            pg_command("initdb")
                .arg("-D")
                .arg(&datadir)
                .args(["-U", "postgres", "--auth=trust", "-E", "UTF8", "--locale=C", "-N"])
                .args(&cluster.opts.initdb_args),
        );

        let conf_path = datadir.join("postgresql.conf");
        let initdb_conf =
            fs::read_to_string(&conf_path).unwrap_or_else(|e| panic!("reading {}: {e}", conf_path.display()));
        cluster.start_on_free_port(&initdb_conf);
        // Make sure TCP connections work before handing the cluster out.
        drop(cluster.client());
        cluster
    }

    /// The directories of a new cluster under `base`, owned by the server user; not yet
    /// initialized (port 0).
    fn layout(base: &Path, name: &str, opts: ClusterOpts) -> Cluster {
        let (name, root) = create_unique_dir(base, name);
        let cluster = Cluster {
            name,
            datadir: root.join("data"),
            archive_dir: root.join("archive"),
            port: 0,
            socket_dir: root.join("sock"),
            log_file: root.join("server.log"),
            opts,
            root,
        };
        for dir in [&cluster.archive_dir, &cluster.socket_dir] {
            fs::create_dir(dir).unwrap_or_else(|e| panic!("mkdir {}: {e}", dir.display()));
        }
        chown_to_server_user(&cluster.root);
        cluster
    }

    /// Writes `base_conf` plus the harness's settings and starts the server. The port can
    /// be taken by another process between free_port() and the server binding it; retry
    /// with a new port in that case.
    fn start_on_free_port(&mut self, base_conf: &str) {
        let conf_path = self.datadir.join("postgresql.conf");
        const ATTEMPTS: usize = 5;
        for attempt in 1..=ATTEMPTS {
            self.port = free_port();
            let conf = format!("{base_conf}\n{}", self.harness_conf());
            fs::write(&conf_path, conf).unwrap_or_else(|e| panic!("writing {}: {e}", conf_path.display()));
            match self.start() {
                Ok(()) => return,
                Err(log) if attempt < ATTEMPTS && log.contains("could not bind") => continue,
                Err(log) => panic!("starting cluster {} (port {}) failed:\n{log}", self.root.display(), self.port),
            }
        }
    }

    /// The settings the harness appends to postgresql.conf.
    fn harness_conf(&self) -> String {
        let mut lines = vec![
            "# added by the pg-backup-hooks test harness".to_string(),
            format!("port = {}", self.port),
            "listen_addresses = '127.0.0.1'".to_string(),
            format!("unix_socket_directories = {}", conf_quote(&self.socket_dir.to_string_lossy())),
            "wal_level = replica".to_string(),
            "max_wal_senders = 4".to_string(),
            "fsync = off".to_string(),
            "synchronous_commit = off".to_string(),
            "full_page_writes = on".to_string(),
        ];
        if self.opts.archive {
            let archive = self.archive_dir.to_string_lossy();
            let command = self
                .opts
                .archive_command
                .clone()
                .unwrap_or_else(|| format!("test ! -f {archive}/%f && cp %p {archive}/%f"));
            lines.push("archive_mode = on".to_string());
            lines.push(format!("archive_command = {}", conf_quote(&command)));
        } else {
            lines.push("archive_mode = off".to_string());
        }
        lines.push("logging_collector = off".to_string());
        lines.push("log_line_prefix = '%m [%p] '".to_string());
        lines.extend(self.opts.extra_conf.iter().cloned());
        lines.join("\n") + "\n"
    }

    /// libpq key=value connection string over TCP:
    /// `host=127.0.0.1 port=N user=postgres dbname=postgres`.
    pub fn conninfo(&self) -> String {
        format!("host=127.0.0.1 port={} user=postgres dbname=postgres", self.port)
    }

    /// libpq key=value connection string over the Unix socket in
    /// [`Cluster::socket_dir`].
    pub fn socket_conninfo(&self) -> String {
        format!("host={} port={} user=postgres dbname=postgres", self.socket_dir.display(), self.port)
    }

    /// A new client connection (no TLS). Retries for up to 10 s while the
    /// server is not yet accepting connections, then panics with the last
    /// error and the server log tail.
    pub fn client(&self) -> postgres::Client {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            match postgres::Client::connect(&self.conninfo(), postgres::NoTls) {
                Ok(client) => return client,
                Err(_) if Instant::now() < deadline => {
                    thread::sleep(Duration::from_millis(100));
                }
                Err(e) => panic!(
                    "connecting to {} ({}): {}\n--- server log tail ---\n{}",
                    self.name,
                    self.conninfo(),
                    pg_error_text(&e),
                    tail(&self.log(), 30)
                ),
            }
        }
    }

    /// Runs `sql` on a fresh connection and returns the first column of the
    /// first row in PostgreSQL's text output format (the simple query
    /// protocol is used, so any type works without a `::text` cast; a cast
    /// is harmless). Panics on error, if there is no row, or if the value
    /// is NULL — use [`Cluster::query_opt`] for those.
    pub fn query_scalar(&self, sql: &str) -> String {
        self.query_opt(sql).unwrap_or_else(|| panic!("query on {} returned no row or NULL: {sql}", self.name))
    }

    /// Like [`Cluster::query_scalar`] but returns `None` when the query
    /// returns no rows or the value is NULL.
    pub fn query_opt(&self, sql: &str) -> Option<String> {
        let messages = self
            .client()
            .simple_query(sql)
            .unwrap_or_else(|e| panic!("query on {} failed: {sql}\n{}", self.name, pg_error_text(&e)));
        messages.iter().find_map(|m| match m {
            postgres::SimpleQueryMessage::Row(row) => Some(row.get(0).map(str::to_string)),
            _ => None,
        })?
    }

    /// How many sessions a pg-backup-hooks helper holds for backup `id` on this server
    /// (the helper names its sessions `pg-backup-hooks <id>`).
    pub fn backup_sessions(&self, id: &str) -> i64 {
        self.query_scalar(&format!(
            "select count(*) from pg_stat_activity where application_name = 'pg-backup-hooks {id}'"
        ))
        .parse()
        .expect("count(*) is a number")
    }

    /// Waits until no helper session for backup `id` is left on this server (its backup
    /// has ended: stopped, discarded, or its session closed).
    pub fn wait_no_backup_sessions(&self, id: &str) {
        wait_until(Duration::from_secs(15), &format!("the sessions of backup {id} to end"), || {
            self.backup_sessions(id) == 0
        });
    }

    /// Makes WAL archiving fail (`archive_command = 'false'`), or work again with the
    /// harness's own command, through ALTER SYSTEM and a reload.
    pub fn set_archiving_works(&self, works: bool) {
        if works {
            self.execute("alter system reset archive_command");
        } else {
            self.execute("alter system set archive_command = 'false'");
        }
        self.execute("select pg_reload_conf()");
        thread::sleep(Duration::from_millis(300));
    }

    /// panics on error.
    pub fn execute(&self, sql: &str) {
        self.client()
            .batch_execute(sql)
            .unwrap_or_else(|e| panic!("executing on {} failed: {sql}\n{}", self.name, pg_error_text(&e)));
    }

    /// `pg_ctl -w -t 60 start -l <root>/server.log`. On failure returns the
    /// pg_ctl output and what the server logged during this attempt.
    pub fn start(&self) -> Result<(), String> {
        let log_offset = fs::metadata(&self.log_file).map_or(0, |m| m.len() as usize);
        let out = pg_command("pg_ctl")
            .args(["-w", "-t", "60", "-D"])
            .arg(&self.datadir)
            .arg("-l")
            .arg(&self.log_file)
            .arg("start")
            .output()
            .unwrap_or_else(|e| panic!("could not run pg_ctl start: {e}"));
        if out.status.success() {
            return Ok(());
        }
        let log = self.log();
        let new_log = log.get(log_offset..).unwrap_or(&log);
        Err(format!(
            "pg_ctl start failed with {}\n--- pg_ctl stdout ---\n{}\n--- pg_ctl stderr ---\n{}\n--- server log ---\n{}",
            out.status,
            String::from_utf8_lossy(&out.stdout).trim_end(),
            String::from_utf8_lossy(&out.stderr).trim_end(),
            tail(new_log, 40)
        ))
    }

    /// `pg_ctl -w stop -m <mode>` (`smart`, `fast` or `immediate`).
    /// Succeeds if the server was not running; panics on other failures.
    pub fn stop(&self, mode: &str) {
        if let Err(e) = self.try_stop(mode) {
            panic!("{e}");
        }
    }

    fn try_stop(&self, mode: &str) -> Result<(), String> {
        let out = pg_command("pg_ctl")
            .args(["-w", "-t", "60", "-D"])
            .arg(&self.datadir)
            .args(["stop", "-m", mode])
            .output()
            .map_err(|e| format!("could not run pg_ctl stop: {e}"))?;
        let stderr = String::from_utf8_lossy(&out.stderr);
        if out.status.success() || stderr.contains("Is server running?") {
            return Ok(());
        }
        Err(format!(
            "pg_ctl stop -m {mode} on {} failed with {}\n--- stderr ---\n{}\n--- server log tail ---\n{}",
            self.name,
            out.status,
            stderr.trim_end(),
            tail(&self.log(), 30)
        ))
    }

    /// Stops the server with `mode` and starts it again; panics if the
    /// start fails.
    pub fn restart(&self, mode: &str) {
        self.stop(mode);
        if let Err(e) = self.start() {
            panic!("restarting cluster {}: {e}", self.name);
        }
    }

    /// Contents of the server log (empty if it does not exist yet).
    pub fn log(&self) -> String {
        match fs::read(&self.log_file) {
            Ok(bytes) => String::from_utf8_lossy(&bytes).into_owned(),
            Err(e) if e.kind() == ErrorKind::NotFound => String::new(),
            Err(e) => panic!("reading {}: {e}", self.log_file.display()),
        }
    }

    /// Whether `pg_ctl status` reports the server as running.
    pub fn is_running(&self) -> bool {
        pg_command("pg_ctl")
            .arg("-D")
            .arg(&self.datadir)
            .arg("status")
            .output()
            .unwrap_or_else(|e| panic!("could not run pg_ctl status: {e}"))
            .status
            .success()
    }

    /// File names in [`Cluster::archive_dir`], sorted.
    pub fn archived_files(&self) -> Vec<String> {
        let entries =
            fs::read_dir(&self.archive_dir).unwrap_or_else(|e| panic!("read_dir {}: {e}", self.archive_dir.display()));
        let mut names: Vec<String> = entries
            .map(|entry| {
                let entry = entry.unwrap_or_else(|e| panic!("read_dir {}: {e}", self.archive_dir.display()));
                entry.file_name().to_string_lossy().into_owned()
            })
            .collect();
        names.sort();
        names
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let _ = self.try_stop("immediate");
    }
}

/// Creates `base/name`, or `base/name-1`, `base/name-2`, ... if taken.
/// Returns the chosen name and path.
fn create_unique_dir(base: &Path, name: &str) -> (String, PathBuf) {
    for i in 0..1000 {
        let candidate = if i == 0 { name.to_string() } else { format!("{name}-{i}") };
        let path = base.join(&candidate);
        match fs::create_dir(&path) {
            Ok(()) => return (candidate, path),
            Err(e) if e.kind() == ErrorKind::AlreadyExists => continue,
            Err(e) => panic!("mkdir {}: {e}", path.display()),
        }
    }
    panic!("no free cluster directory name {name}-N under {}", base.display());
}

/// A streaming standby of `primary` under `<base>/<name>`, made with pg_basebackup -R and
/// started. It keeps the primary's settings but its own port, socket directory and
/// archive directory (archive_mode = on: a standby then archives nothing itself).
pub fn standby_of(primary: &Cluster, base: &Path, name: &str) -> Cluster {
    let mut standby = Cluster::layout(base, name, primary.opts.clone());
    let own = bindir().join("pg_basebackup");
    let basebackup = if own.exists() { own } else { PathBuf::from("/usr/lib/postgresql/15/bin/pg_basebackup") };
    run_checked(
        server_command(&basebackup)
            .arg("-D")
            .arg(&standby.datadir)
            .args(["-h", "127.0.0.1", "-U", "postgres", "-R", "-c", "fast", "-X", "stream", "-p"])
            .arg(primary.port.to_string()),
    );
    let conf_path = standby.datadir.join("postgresql.conf");
    let base_conf = fs::read_to_string(&conf_path).unwrap_or_else(|e| panic!("reading {}: {e}", conf_path.display()));
    standby.start_on_free_port(&base_conf);
    drop(standby.client());
    standby
}

/// Stands in for Citus' catalog (Citus is not in the distribution's packages): the noderole
/// type and a table with pg_dist_node's name and the columns discovery reads, both in
/// pg_catalog where Citus keeps them (a superuser may create there with
/// allow_system_table_mods, a per-session setting from PostgreSQL 12).
/// Rows: (nodeid, groupid, port, role, isactive).
pub fn fake_citus_catalog(coord: &Cluster, rows: &[(i32, i32, u16, &str, bool)]) {
    coord.execute(
        "set allow_system_table_mods = on;
         create type pg_catalog.noderole as enum ('primary', 'secondary', 'unavailable');
         create table pg_catalog.pg_dist_node (nodeid serial, groupid int, nodename text, nodeport int,
                                    noderole pg_catalog.noderole default 'primary', isactive bool default true,
                                    nodecluster name default 'default', shouldhaveshards bool default true)",
    );
    for (nodeid, group, port, role, active) in rows {
        coord.execute(&format!(
            "insert into pg_catalog.pg_dist_node(nodeid, groupid, nodename, nodeport, noderole, isactive) values ({}, {}, '127.0.0.1', {}, '{}', {})",
            nodeid, group, port, role, active
        ));
    }
}
