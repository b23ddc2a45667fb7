//! The detached helper: holds one session per node from pre to post.
//!
//! `pre` starts it (see `spawn`), hands it its configuration on stdin and reads start
//! events from its stdout until it reports ready or failed. From then on the helper
//! answers requests on its Unix socket (see `server`) until a post has stored the
//! sidecar, an abort, a signal, or --max-duration ends it.

mod archive_wait;
pub mod client;
pub mod node;
mod restore_point;
pub mod server;
pub mod spawn;
mod start;
mod stop;

use std::io::{Read, Write};
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::protocol::{self, BackupStatus, Phase, StartEvent};
use crate::rundir::{Marker, RunDir};
use node::Node;

/// Lock a mutex even if a thread panicked while holding it: a panic elsewhere must not make
/// the labels we hold unreachable.
pub(crate) fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// What `pre` hands the helper on its stdin (never on the command line: conninfo strings
/// may carry passwords).
#[derive(Serialize, Deserialize, Debug, Clone)]
pub struct HelperConfig {
    pub backup_id: String,
    pub nodes: Vec<(String, String)>,
    /// (standby node name, its primary's conninfo): `pre --node-primary`.
    #[serde(default)]
    pub node_primaries: Vec<(String, String)>,
    pub fast: bool,
    pub max_duration_secs: u64,
    pub heartbeat_secs: u64,
    pub sidecar_dirs: Vec<PathBuf>,
    /// `pre --require-inventory`: no inventory source on a node fails pre.
    #[serde(default)]
    pub require_inventory: bool,
    /// Take no inventory (a hidden switch for benchmarks: PGBH_NO_INVENTORY).
    #[serde(default)]
    pub no_inventory: bool,
}

/// Why the helper ends.
pub enum Exit {
    /// post stored the sidecar.
    Stored,
    Aborted(String),
    Failed(String),
}

/// The backup's restore point, once a stop has tried to create it.
#[derive(Clone, Debug)]
pub enum RestorePoint {
    /// No stop yet.
    NotYet,
    Created(protocol::RestorePointInfo),
    /// Why there is none (`restore_point_note` in the status and the manifest).
    Missing(String),
}

pub struct Shared {
    pub cfg: HelperConfig,
    pub started_at: String,
    pub started: Instant,
    pub phase: Mutex<Phase>,
    pub nodes: Vec<Arc<Node>>,
    /// One stop/abort at a time.
    pub op_lock: Mutex<()>,
    pub exit: mpsc::Sender<Exit>,
    pub exiting: AtomicBool,
    pub restore_point: Mutex<RestorePoint>,
    /// Where the inventories are kept.
    pub run: RunDir,
    /// Held while the stop inventories are taken (beside the archive wait).
    pub inventory_lock: Mutex<()>,
}

impl Shared {
    fn new(cfg: HelperConfig, nodes: Vec<Node>, exit: mpsc::Sender<Exit>, run: RunDir) -> Shared {
        Shared {
            run,
            inventory_lock: Mutex::new(()),
            cfg,
            started_at: chrono::Utc::now().to_rfc3339(),
            started: Instant::now(),
            phase: Mutex::new(Phase::Running),
            nodes: nodes.into_iter().map(Arc::new).collect(),
            op_lock: Mutex::new(()),
            exit,
            exiting: AtomicBool::new(false),
            restore_point: Mutex::new(RestorePoint::NotYet),
        }
    }
    pub fn phase(&self) -> Phase {
        *lock(&self.phase)
    }
    pub fn set_phase(&self, p: Phase) {
        *lock(&self.phase) = p;
    }
    pub fn status(&self) -> BackupStatus {
        let (restore_point, restore_point_note) = match lock(&self.restore_point).clone() {
            RestorePoint::NotYet => (None, None),
            RestorePoint::Created(rp) => (Some(rp), None),
            RestorePoint::Missing(note) => (None, Some(note)),
        };
        BackupStatus {
            restore_point,
            restore_point_note,
            backup_id: self.cfg.backup_id.clone(),
            helper_pid: std::process::id(),
            started_at: self.started_at.clone(),
            phase: self.phase(),
            sidecar_dirs: self.cfg.sidecar_dirs.clone(),
            nodes: self.nodes.iter().map(|n| n.status()).collect(),
        }
    }
    pub fn request_exit(&self, e: Exit) {
        self.exiting.store(true, Ordering::SeqCst);
        let _ = self.exit.send(e);
    }
}

/// Emits start events to pre over the child pipe; silently gives up if pre went away.
struct Reporter(Option<std::io::Stdout>);

impl Reporter {
    fn send(&mut self, ev: &StartEvent) {
        if let Some(out) = self.0.as_mut() {
            if protocol::write_msg(out, ev).is_err() {
                self.0 = None;
            }
        }
    }
}

/// Entry point of the hidden `helper` subcommand.
pub fn run(backup_id: &str, run_dir: PathBuf) -> Result<()> {
    let mut rep = Reporter(Some(std::io::stdout()));
    match run_inner(backup_id, run_dir, &mut rep) {
        Ok(()) => Ok(()),
        Err(e) => {
            log::error!("{}", e.msg);
            rep.send(&StartEvent::Failed { message: e.msg.clone() });
            Err(e)
        }
    }
}

/// The helper's life: configure, lock the id, start every node, serve until told to end,
/// then end what still runs and leave the reason.
fn run_inner(backup_id: &str, run_dir: PathBuf, rep: &mut Reporter) -> Result<()> {
    let cfg = read_config(backup_id)?;
    let run = RunDir::open(Some(run_dir), true)?;
    let id = cfg.backup_id.clone();
    let id_lock = lock_id(&run, &id)?;
    log::info!("helper {} for backup {} starting: {} node(s)", std::process::id(), id, cfg.nodes.len());

    // Signals are handled by one thread; block them before any other thread exists.
    let sigs = signal_set();
    sigs.thread_block().map_err(|e| err!("cannot block signals: {}", e))?;

    let socket_path = run.socket(&id)?;
    let (nodes, listener) = start_or_leave_reason(&cfg, &run, &socket_path, rep)?;
    report_started(&nodes, rep);

    let (tx, rx) = mpsc::channel();
    let shared = Arc::new(Shared::new(cfg, nodes, tx.clone(), run.clone()));
    log::info!("all {} node(s) started; serving {}", shared.nodes.len(), socket_path.display());
    rep.send(&StartEvent::Ready { backup: shared.status() });
    detach_stdout(&run.log(&id));

    spawn_workers(sigs, tx, &shared, listener);
    let outcome = wait_for_exit(&rx, &shared);
    finish(&shared, outcome, &run, &socket_path);
    drop(id_lock);
    Ok(())
}

/// Read the configuration pre writes to our stdin; it must be for the id we were started with.
fn read_config(backup_id: &str) -> Result<HelperConfig> {
    let mut input = String::new();
    std::io::stdin()
        .take(protocol::MAX_LINE as u64)
        .read_to_string(&mut input)
        .map_err(|e| err!("helper: cannot read configuration: {}", e))?;
    let cfg: HelperConfig = serde_json::from_str(&input).map_err(|e| err!("helper: bad configuration: {}", e))?;
    if cfg.backup_id != backup_id {
        return Err(Error::new("helper: configuration is for another backup id"));
    }
    Ok(cfg)
}

/// Take the backup id's lock, held for the helper's whole life: one helper per id.
fn lock_id(run: &RunDir, id: &str) -> Result<std::fs::File> {
    run.lock_with_patience(id, Duration::from_secs(1))?.ok_or_else(|| {
        err!("a backup with id {} is already in progress (its helper holds {})", id, run.path(id, "lock").display())
    })
}

/// Connect to and start every node, and listen on the socket; on failure, leave the reason
/// for a later post, and nothing else.
fn start_or_leave_reason(
    cfg: &HelperConfig,
    run: &RunDir,
    socket_path: &Path,
    rep: &mut Reporter,
) -> Result<(Vec<Node>, UnixListener)> {
    let started = (|| -> Result<(Vec<Node>, UnixListener)> {
        let nodes = start::connect_all(cfg, rep)?;
        let _ = std::fs::remove_file(socket_path);
        let listener = server::bind(socket_path)?;
        start::start_all(cfg, &nodes)?;
        start::inventory_all(cfg, run, &nodes, rep)?;
        Ok((nodes, listener))
    })();
    if let Err(e) = &started {
        let _ = run.set_marker(&cfg.backup_id, &Marker::Failed(format!("pre failed: {}", e.msg)));
        let _ = std::fs::remove_file(socket_path);
        let _ = std::fs::remove_file(run.path(&cfg.backup_id, "lock"));
        run.remove_inventory_dir(&cfg.backup_id);
    }
    started
}

/// Tell pre where each node's backup started.
fn report_started(nodes: &[Node], rep: &mut Reporter) {
    for n in nodes {
        let st = n.status();
        if let Some(lsn) = st.start_lsn {
            rep.send(&StartEvent::NodeStarted {
                node: n.name.clone(),
                start_lsn: lsn,
                server_version: st.server_version,
            });
        }
    }
}

/// The threads that run beside the main one: signals, heartbeats, the socket server.
fn spawn_workers(sigs: nix::sys::signal::SigSet, tx: mpsc::Sender<Exit>, shared: &Arc<Shared>, listener: UnixListener) {
    std::thread::spawn(move || {
        if let Ok(sig) = sigs.wait() {
            let _ = tx
                .send(Exit::Aborted(format!("the helper received {:?}: the backups were stopped and discarded", sig)));
        }
    });
    let sh = shared.clone();
    std::thread::spawn(move || heartbeat_loop(sh));
    let sh = shared.clone();
    std::thread::spawn(move || server::serve(listener, sh));
}

/// Wait for a reason to end: stored, aborted, failed, or --max-duration expired.
fn wait_for_exit(rx: &mpsc::Receiver<Exit>, shared: &Shared) -> Exit {
    let deadline = Duration::from_secs(shared.cfg.max_duration_secs);
    match rx.recv_timeout(deadline.saturating_sub(shared.started.elapsed())) {
        Ok(e) => e,
        Err(_) => Exit::Aborted(format!(
            "--max-duration of {} s expired before post: the backups were stopped and discarded; this copy cannot be restored",
            shared.cfg.max_duration_secs
        )),
    }
}

/// Wait for a stop or abort in progress, end whatever still runs, leave the reason in the
/// run dir and remove the socket and the lock file.
fn finish(shared: &Shared, outcome: Exit, run: &RunDir, socket_path: &Path) {
    shared.exiting.store(true, Ordering::SeqCst);
    let _guard = lock(&shared.op_lock);
    let id = &shared.cfg.backup_id;
    let marker = match outcome {
        Exit::Stored => {
            log::info!("sidecar stored; helper exits");
            None
        }
        Exit::Aborted(why) => {
            log::warn!("{}", why);
            discard_all(&shared.nodes);
            shared.set_phase(Phase::Aborted);
            Some(Marker::Aborted(why))
        }
        Exit::Failed(why) => {
            log::error!("{}", why);
            discard_all(&shared.nodes);
            shared.set_phase(Phase::Failed);
            Some(Marker::Failed(why))
        }
    };
    if let Some(m) = marker {
        if let Err(e) = run.set_marker(id, &m) {
            log::error!("{}", e.msg);
        }
    }
    let _ = std::fs::remove_file(socket_path);
    run.remove_inventory_dir(id);
    let _ = std::fs::remove_file(run.path(id, "lock"));
}

fn signal_set() -> nix::sys::signal::SigSet {
    use nix::sys::signal::{SigSet, Signal};
    let mut s = SigSet::empty();
    s.add(Signal::SIGTERM);
    s.add(Signal::SIGINT);
    s.add(Signal::SIGHUP);
    s
}

/// After pre has its answer, stdout goes to the log so late writes cannot fail.
fn detach_stdout(log: &std::path::Path) {
    let _ = std::io::stdout().flush();
    if let Ok(f) = std::fs::OpenOptions::new().append(true).open(log) {
        use std::os::fd::AsRawFd;
        let _ = nix::unistd::dup2(f.as_raw_fd(), 1);
    }
}

/// Stop and discard every node's backup, in parallel.
pub fn discard_all(nodes: &[Arc<Node>]) {
    std::thread::scope(|s| {
        for n in nodes {
            s.spawn(move || n.discard());
        }
    });
}

fn heartbeat_loop(sh: Arc<Shared>) {
    let every = Duration::from_secs(sh.cfg.heartbeat_secs.max(1));
    loop {
        std::thread::sleep(every);
        if sh.exiting.load(Ordering::SeqCst) {
            return;
        }
        if sh.phase() != Phase::Running {
            continue;
        }
        std::thread::scope(|s| {
            for n in &sh.nodes {
                s.spawn(move || n.heartbeat());
            }
        });
    }
}
