//! What the Bacula, Amanda and borgmatic end-to-end tests share (tests/bacula.rs,
//! tests/amanda.rs, tests/borgmatic.rs): the skip-or-require rule, commands with a time limit,
//! a client writing rows during the job, the hooks' environment file, the exclude list, and (for
//! Amanda and borgmatic) the last steps of every restore: restore-prep on the copy the product
//! brought back, start, and every committed row is there.

use std::fs;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::common::{self, roundtrip, tool::Tool, Cluster};

/// True when every one of `programs` exists; false (with a note) when some are missing and the
/// test may skip; panics when they are missing but `require_var` is set (CI sets it).
pub fn available(product: &str, programs: &[&str], require_var: &str, installer: &str) -> bool {
    let missing: Vec<&str> = programs.iter().copied().filter(|p| !Path::new(p).exists()).collect();
    if missing.is_empty() {
        return true;
    }
    if std::env::var_os(require_var).is_some() {
        panic!("{require_var} is set but {product} is not installed (missing {missing:?}): run {installer}");
    }
    common::skip(&format!(
        "{product} is not installed (missing {missing:?}); run {installer}, set {require_var}=1 to make this a failure"
    ));
    false
}

/// Runs `cmd` with a time limit, returning (exit code, stdout+stderr).
pub fn run_limited(cmd: &mut Command, limit: Duration) -> (i32, String) {
    let child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("starting {:?}: {}", cmd, e));
    let pid = nix::unistd::Pid::from_raw(child.id() as i32);
    let done = Arc::new(AtomicBool::new(false));
    let watchdog = {
        let done = done.clone();
        std::thread::spawn(move || {
            let deadline = Instant::now() + limit;
            while !done.load(Ordering::Relaxed) {
                if Instant::now() > deadline {
                    let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL);
                    return true;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            false
        })
    };
    let out = child.wait_with_output().expect("waiting for a command");
    done.store(true, Ordering::Relaxed);
    let killed = watchdog.join().unwrap_or(false);
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(!killed, "{:?} did not finish within {:?}:\n{}", cmd, limit, text);
    (out.status.code().unwrap_or(-1), text)
}

/// A client that keeps inserting one row per transaction while a job runs.
pub struct Inserter {
    stop: Arc<AtomicBool>,
    handle: JoinHandle<Vec<i64>>,
}

impl Inserter {
    /// Creates table `t` with some rows, then inserts a row every few milliseconds.
    pub fn start(pg: &Cluster) -> Inserter {
        pg.execute("create table t(id bigserial primary key, at timestamptz not null, pad text); insert into t(at, pad) select clock_timestamp(), repeat('y', 500) from generate_series(1, 20000)");
        let stop = Arc::new(AtomicBool::new(false));
        let mut client = pg.client();
        let flag = stop.clone();
        let handle = std::thread::spawn(move || {
            let mut ids = Vec::new();
            while !flag.load(Ordering::Relaxed) {
                let row = client
                    .query_one("insert into t(at, pad) values (clock_timestamp(), repeat('x', 500)) returning id", &[])
                    .unwrap_or_else(|e| panic!("inserter: {}", common::pg_error_text(&e)));
                ids.push(row.get::<_, i64>(0));
                std::thread::sleep(Duration::from_millis(2));
            }
            ids
        });
        std::thread::sleep(Duration::from_millis(300));
        Inserter { stop, handle }
    }

    /// Stops inserting; returns the ids the client saw committed (at least 50: it was busy).
    pub fn finish(self) -> Vec<i64> {
        self.stop.store(true, Ordering::Relaxed);
        let ids = self.handle.join().expect("inserter thread");
        assert!(ids.len() > 50, "the inserter should have been busy during the backup ({} rows)", ids.len());
        ids
    }
}

/// The environment file the hooks read (PGBH_ENV_FILE).
pub fn write_env(path: &Path, sidecar: &Path, run_dir: &Path, nodes: &str) {
    let text = format!(
        "# written by the test\nPGBH_BIN='{}'\nPGBH_SIDECAR_DIR='{}'\nPGBH_RUN_DIR='{}'\nPGBH_NODES='{}'\nPGBH_FAST=true\nPGBH_START_TIMEOUT=60\nPGBH_ARCHIVE_TIMEOUT=60\n",
        common::bin().display(),
        sidecar.display(),
        run_dir.display(),
        nodes
    );
    fs::write(path, text).expect("writing env file");
}

/// What `pg-backup-hooks exclude-list --format FORMAT` prints, one entry a line.
pub fn exclude_list(format: &str, pgdata: Option<&Path>) -> Vec<String> {
    let mut cmd = Command::new(common::bin());
    cmd.args(["exclude-list", "--format", format]);
    if let Some(p) = pgdata {
        cmd.arg("--pgdata").arg(p);
    }
    let out = cmd.output().expect("exclude-list");
    assert!(out.status.success(), "exclude-list: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).lines().map(str::to_string).collect()
}

/// The rows the restore must bring back: everything committed, all of it archived. Then the
/// cluster is stopped and its data directory deleted.
pub struct Expected {
    count: i64,
    max_id: i64,
    last_seen: i64,
}

pub fn archive_all_and_destroy(pg: &Cluster, committed: &[i64]) -> Expected {
    let count: i64 = pg.query_scalar("select count(*) from t").parse().expect("count");
    let max_id: i64 = pg.query_scalar("select max(id) from t").parse().expect("max");
    roundtrip::switch_and_wait(pg);
    pg.stop("fast");
    fs::remove_dir_all(&pg.datadir).expect("removing the data directory");
    Expected { count, max_id, last_seen: committed.last().copied().unwrap_or(0) }
}

/// The copy a product restored is in place at `pg.datadir`: what the exclude list leaves out
/// is not in it, restore-prep with the restored sidecar succeeds, the server recovers and
/// every committed row is back.
pub fn prepare_start_and_check(t: &Tool, pg: &Cluster, id: &str, restored_sidecar: &Path, expected: &Expected) {
    assert!(pg.datadir.join("pg_wal").is_dir(), "pg_wal must be restored (empty)");
    let in_wal: Vec<_> = fs::read_dir(pg.datadir.join("pg_wal")).expect("pg_wal").flatten().collect();
    assert!(
        in_wal.iter().all(|e| e.file_name() == "archive_status"),
        "pg_wal's contents must have been left out: {:?}",
        in_wal.iter().map(|e| e.file_name()).collect::<Vec<_>>()
    );
    for gone in ["postmaster.pid", "postmaster.opts", "backup_label", "global/pg_internal.init"] {
        assert!(!pg.datadir.join(gone).exists(), "{} should not be in the copy", gone);
    }
    t.restore_prep_ok(id, restored_sidecar, pg);
    roundtrip::start_and_wait_promoted(pg);
    t.restore_check_proves(id, restored_sidecar, pg);
    let got: i64 = pg.query_scalar("select count(*) from t").parse().expect("count");
    let got_max: i64 = pg.query_scalar("select max(id) from t").parse().expect("max");
    assert_eq!((got, got_max), (expected.count, expected.max_id), "rows lost in the restore");
    assert_eq!(pg.query_scalar(&format!("select count(*) from t where id = {}", expected.last_seen)), "1");
}

/// Whether a process whose command line contains `needle` is running.
pub fn process_running(needle: &str) -> bool {
    fs::read_dir("/proc")
        .map(|rd| {
            rd.flatten().any(|e| {
                fs::read(e.path().join("cmdline"))
                    .is_ok_and(|c| String::from_utf8_lossy(&c).replace('\0', " ").contains(needle))
            })
        })
        .unwrap_or(false)
}

/// The scheduled restore-test scripts (hooks/restore-test*, shown in docs/restore-test.md),
/// installed under `dir` as the package installs them (the product's script runs restore-test
/// from beside itself). With `damage` (a file relative to the restored data directory), restore-test
/// is a wrapper that first changes a byte in that file's first page (in a table's tuple data,
/// past the page header), then runs the real one: a copy damaged after the restore.
pub fn install_restore_test_scripts(dir: &Path, damage: Option<&str>) -> std::path::PathBuf {
    use std::os::unix::fs::PermissionsExt;
    fs::create_dir_all(dir).expect("mkdir scripts dir");
    fs::set_permissions(dir, fs::Permissions::from_mode(0o755)).expect("chmod scripts dir");
    let hooks = Path::new(env!("CARGO_MANIFEST_DIR")).join("hooks");
    let docs = fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/restore-test.md")).expect("docs");
    let mut scripts = vec!["restore-test", "restore-test-amanda", "restore-test-borgmatic"];
    if let Some(rel) = damage {
        let real = dir.join("restore-test.real");
        fs::copy(hooks.join("restore-test"), &real).expect("copying restore-test");
        fs::set_permissions(&real, fs::Permissions::from_mode(0o755)).expect("chmod");
        let wrapper = format!(
            "#!/bin/sh\nset -e\nprintf '\\377' | dd of=\"$2/{rel}\" bs=1 seek=8100 conv=notrunc status=none\nexec '{}' \"$@\"\n",
            real.display()
        );
        fs::write(dir.join("restore-test"), wrapper).expect("writing the damaging wrapper");
        fs::set_permissions(dir.join("restore-test"), fs::Permissions::from_mode(0o755)).expect("chmod");
        scripts.remove(0);
    }
    for file in scripts {
        let name = file;
        let text = fs::read_to_string(hooks.join(file)).expect("reading a hooks/ script");
        assert!(docs.contains(&text), "docs/restore-test.md must show hooks/{} as it is", file);
        fs::write(dir.join(name), text).expect("installing a script");
        fs::set_permissions(dir.join(name), fs::Permissions::from_mode(0o755)).expect("chmod");
    }
    dir.to_path_buf()
}

/// `command` run the way cron runs a job: `/bin/sh -c` with cron's environment (PATH
/// /usr/bin:/bin, SHELL, HOME, LOGNAME) plus `settings` (a cron.d file's VAR=value lines) and
/// PGBH_PG_BINDIR when the test run has it; stdin from /dev/null. (exit code, output).
pub fn run_like_cron(command: &str, settings: &[(&str, String)]) -> (i32, String) {
    let mut cmd = Command::new("/bin/sh");
    cmd.arg("-c").arg(command).env_clear();
    cmd.env("PATH", "/usr/bin:/bin").env("SHELL", "/bin/sh").env("HOME", "/root").env("LOGNAME", "root");
    if let Some(v) = std::env::var_os("PGBH_PG_BINDIR") {
        cmd.env("PGBH_PG_BINDIR", v);
    }
    for (k, v) in settings {
        cmd.env(k, v);
    }
    run_limited(cmd.current_dir("/"), Duration::from_secs(600))
}
