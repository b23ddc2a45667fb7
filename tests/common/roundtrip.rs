//! What a restore test does with a copy: put our binary where the server user can run it
//! (restore_command calls `pg-backup-hooks wal-restore`), tar a live data directory, put
//! the copy back, switch WAL, and start the restored server until it leaves recovery; and
//! clients that keep writing to the clusters of a multi-node backup meanwhile.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::{bin, wait_until, Cluster, ClusterOpts, TestDir};

/// Our binary, copied into the test directory so that the server user (which runs
/// restore_command) can execute it.
pub fn install_bin(dir: &TestDir) -> PathBuf {
    let bindir = dir.path().join("bin");
    fs::create_dir_all(&bindir).expect("mkdir bin");
    let exe = bindir.join("pg-backup-hooks");
    // With restore_command's own program beside it, as the package installs them: restore-prep
    // then writes pg-backup-hooks-wal-restore into restore_command.
    // Once per test directory: a server may be running the copy already (Text file busy).
    for (from, to) in [(bin(), exe.clone()), (wal_restore_bin(), bindir.join("pg-backup-hooks-wal-restore"))] {
        if to.exists() {
            continue;
        }
        fs::copy(&from, &to).unwrap_or_else(|e| panic!("copying {}: {}", from.display(), e));
        fs::set_permissions(&to, fs::Permissions::from_mode(0o755)).expect("chmod exe");
    }
    fs::set_permissions(&bindir, fs::Permissions::from_mode(0o755)).expect("chmod bin");
    exe
}

/// Path of the `pg-backup-hooks-wal-restore` binary built by cargo for this test run.
pub fn wal_restore_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_pg-backup-hooks-wal-restore"))
}

/// `tar` of `dir` (relative to its parent) into `tarfile`. A live copy may see files
/// change: GNU tar's exit 1 ("some files differ") is expected.
pub fn tar_create(dir: &Path, tarfile: &Path) {
    let o = Command::new("tar")
        .arg("-C")
        .arg(dir.parent().expect("parent"))
        .args(["--warning=no-file-changed", "--warning=no-file-removed", "--warning=no-file-shrank", "-cf"])
        .arg(tarfile)
        .arg(dir.file_name().expect("name"))
        .output()
        .expect("running tar");
    assert!(matches!(o.status.code(), Some(0) | Some(1)), "tar failed: {}", String::from_utf8_lossy(&o.stderr));
}

/// [`tar_create`] of each cluster's data directory into `<dir>/<cluster name>.tar`, in order.
pub fn tar_each(dir: &Path, clusters: &[&Cluster]) -> Vec<PathBuf> {
    clusters
        .iter()
        .map(|pg| {
            let tar = dir.join(format!("{}.tar", pg.name));
            tar_create(&pg.datadir, &tar);
            tar
        })
        .collect()
}

/// One client per cluster inserting into its table `t` every 5 ms (`insert into t default
/// values`), each counting the rows it saw committed.
pub struct Writers {
    stop: Arc<AtomicBool>,
    counts: Vec<Arc<AtomicU64>>,
    threads: Vec<JoinHandle<()>>,
}

impl Writers {
    pub fn start(clusters: &[&Cluster]) -> Writers {
        let stop = Arc::new(AtomicBool::new(false));
        let counts: Vec<Arc<AtomicU64>> = clusters.iter().map(|_| Arc::new(AtomicU64::new(0))).collect();
        let threads = clusters
            .iter()
            .zip(&counts)
            .map(|(pg, n)| {
                let (stop, n, ci) = (stop.clone(), n.clone(), pg.conninfo());
                std::thread::spawn(move || {
                    let mut c = postgres::Client::connect(&ci, postgres::NoTls).expect("writer connects");
                    while !stop.load(Ordering::SeqCst) {
                        c.execute("insert into t default values", &[]).expect("insert");
                        n.fetch_add(1, Ordering::SeqCst);
                        std::thread::sleep(Duration::from_millis(5));
                    }
                })
            })
            .collect();
        Writers { stop, counts, threads }
    }

    /// The rows each writer has seen committed so far, in the order of the clusters.
    pub fn counts(&self) -> Vec<u64> {
        self.counts.iter().map(|c| c.load(Ordering::SeqCst)).collect()
    }

    /// Stops the writers and waits for them to end.
    pub fn stop(self) {
        self.stop.store(true, Ordering::SeqCst);
        for w in self.threads {
            w.join().expect("writer");
        }
    }
}

/// Extract `tarfile` into `parent` (owners and modes preserved: we are root).
pub fn tar_extract(tarfile: &Path, parent: &Path) {
    let o = Command::new("tar")
        .arg("-C")
        .arg(parent)
        .args(["--same-owner", "-xpf"])
        .arg(tarfile)
        .output()
        .expect("running tar");
    assert!(o.status.success(), "untar failed: {}", String::from_utf8_lossy(&o.stderr));
}

/// Stop the cluster, delete its data directory and put the tar copy in its place.
pub fn restore_copy(pg: &Cluster, tarfile: &Path) {
    pg.stop("fast");
    fs::remove_dir_all(&pg.datadir).expect("removing the data directory");
    tar_extract(tarfile, pg.datadir.parent().expect("parent"));
}

/// pg_switch_wal() and wait until that segment is completely in the archive; returns its name.
pub fn switch_and_wait(pg: &Cluster) -> String {
    let seg = pg.query_scalar("select pg_walfile_name(pg_switch_wal())");
    // pg_size_bytes: on 10 the setting is in 8kB units.
    let size: u64 = pg.query_scalar("select pg_size_bytes(current_setting('wal_segment_size'))").parse().expect("size");
    let p = pg.archive_dir.join(&seg);
    wait_until(Duration::from_secs(60), &format!("{seg} archived"), || fs::metadata(&p).is_ok_and(|m| m.len() == size));
    seg
}

/// Start a restored copy and wait until pg_is_in_recovery() is false, judged by the query
/// and the log, not by pg_ctl's exit code.
pub fn start_and_wait_promoted(pg: &Cluster) {
    let _ = pg.start();
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        if let Ok(mut c) = postgres::Client::connect(&pg.conninfo(), postgres::NoTls) {
            if let Ok(row) = c.query_one("select pg_is_in_recovery()", &[]) {
                if !row.get::<_, bool>(0) {
                    return;
                }
            }
        }
        let log = pg.log();
        if Instant::now() > deadline || ((log.contains("FATAL") || log.contains("PANIC")) && !pg.is_running()) {
            panic!("restored server did not leave recovery:\n{log}");
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Runs `exe` (our binary, possibly a copy the server user can reach) without any PGBH_*
/// variable of the test's environment, echoing the command and what it printed.
pub fn run_exe(exe: &Path, args: &[&str]) -> Output {
    let mut cmd = Command::new(exe);
    cmd.args(args);
    for (k, _) in std::env::vars() {
        if k.starts_with("PGBH_") {
            cmd.env_remove(k);
        }
    }
    let out = cmd.output().unwrap_or_else(|e| panic!("running {} {:?}: {e}", exe.display(), args));
    eprintln!(
        "$ pg-backup-hooks {}\n{}{}[{}]",
        args.join(" "),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
        out.status
    );
    out
}

/// The lean archive_command program, copied where the server user can run it.
pub fn install_archiver(dir: &TestDir) -> PathBuf {
    install_bin(dir);
    let to = dir.path().join("bin/pg-backup-hooks-wal-archive");
    // Once per test directory: a server of an earlier cluster may be running it right now.
    if !to.exists() {
        fs::copy(env!("CARGO_BIN_EXE_pg-backup-hooks-wal-archive"), &to).expect("copying wal-archive");
        fs::set_permissions(&to, fs::Permissions::from_mode(0o755)).expect("chmod");
    }
    to
}

/// A cluster named `name` whose archive_command is wal-archive into `archive` (made here, the
/// server's) with `compress`.
pub fn archiving(dir: &TestDir, name: &str, archive: &Path, compress: Option<&str>) -> Cluster {
    let exe = install_archiver(dir);
    if !archive.exists() {
        fs::create_dir(archive).expect("mkdir archive");
        crate::common::chown_to_server_user(archive);
    }
    let c = compress.map(|c| format!(" --compress {}", c)).unwrap_or_default();
    let cmd = format!("{} --archive-dir {}{} %p %f", exe.display(), archive.display(), c);
    Cluster::with_opts(dir.path(), name, ClusterOpts { archive_command: Some(cmd), ..ClusterOpts::default() })
}

/// pg_switch_wal() and wait until the archiver reports that segment archived; its name.
pub fn switch_and_wait_archived(pg: &Cluster) -> String {
    pg.execute("create table if not exists tick (x int); insert into tick values (1)");
    let seg = pg.query_scalar("select pg_walfile_name(pg_switch_wal())");
    wait_until(Duration::from_secs(60), &format!("{} archived", seg), || {
        pg.query_scalar("select coalesce(last_archived_wal, '') from pg_stat_archiver") >= seg
    });
    seg
}
