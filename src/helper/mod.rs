//! The detached helper: holds one session per node from pre to post.
//!
//! `pre` starts it (see `spawn`), hands it its configuration on stdin and reads start
//! events from its stdout until it reports ready or failed. From then on the helper
//! answers requests on its Unix socket (see `server`) until a post has stored the
//! sidecar, an abort, a signal, or --max-duration ends it.

pub mod client;
pub mod node;
pub mod server;
pub mod spawn;

use std::io::{Read, Write};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::pg::conninfo::ConnInfo;
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
}

/// Why the helper ends.
pub enum Exit {
    /// post stored the sidecar.
    Stored,
    Aborted(String),
    Failed(String),
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
    pub restore_point: Mutex<(Option<protocol::RestorePointInfo>, Option<String>)>,
}

impl Shared {
    pub fn phase(&self) -> Phase {
        *lock(&self.phase)
    }
    pub fn set_phase(&self, p: Phase) {
        *lock(&self.phase) = p;
    }
    pub fn status(&self) -> BackupStatus {
        let (restore_point, restore_point_note) = lock(&self.restore_point).clone();
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

fn run_inner(backup_id: &str, run_dir: PathBuf, rep: &mut Reporter) -> Result<()> {
    let mut input = String::new();
    std::io::stdin()
        .take(protocol::MAX_LINE as u64)
        .read_to_string(&mut input)
        .map_err(|e| err!("helper: cannot read configuration: {}", e))?;
    let cfg: HelperConfig = serde_json::from_str(&input).map_err(|e| err!("helper: bad configuration: {}", e))?;
    if cfg.backup_id != backup_id {
        return Err(Error::new("helper: configuration is for another backup id"));
    }
    let run = RunDir::open(Some(run_dir), true)?;
    let id = cfg.backup_id.clone();
    let Some(id_lock) = run.lock_with_patience(&id, Duration::from_secs(1))? else {
        return Err(err!(
            "a backup with id {} is already in progress (its helper holds {})",
            id,
            run.path(&id, "lock").display()
        ));
    };
    log::info!("helper {} for backup {} starting: {} node(s)", std::process::id(), id, cfg.nodes.len());

    // Signals are handled by one thread; block them before any other thread exists.
    let sigs = signal_set();
    sigs.thread_block().map_err(|e| err!("cannot block signals: {}", e))?;

    let socket_path = run.socket(&id)?;
    let started = (|| -> Result<(Vec<Node>, std::os::unix::net::UnixListener)> {
        let nodes = connect_all(&cfg, rep)?;
        let _ = std::fs::remove_file(&socket_path);
        let listener = server::bind(&socket_path)?;
        start_all(&cfg, &nodes)?;
        Ok((nodes, listener))
    })();
    let (nodes, listener) = match started {
        Ok(x) => x,
        Err(e) => {
            // Leave the reason for a later post, and nothing else.
            let _ = run.set_marker(&id, &Marker::Failed(format!("pre failed: {}", e.msg)));
            let _ = std::fs::remove_file(&socket_path);
            let _ = std::fs::remove_file(run.path(&id, "lock"));
            return Err(e);
        }
    };
    for n in &nodes {
        let st = n.status();
        if let Some(lsn) = st.start_lsn {
            rep.send(&StartEvent::NodeStarted {
                node: n.name.clone(),
                start_lsn: lsn,
                server_version: st.server_version,
            });
        }
    }

    let (tx, rx) = mpsc::channel();
    let shared = Arc::new(Shared {
        cfg: cfg.clone(),
        started_at: chrono::Utc::now().to_rfc3339(),
        started: Instant::now(),
        phase: Mutex::new(Phase::Running),
        nodes: nodes.into_iter().map(Arc::new).collect(),
        op_lock: Mutex::new(()),
        exit: tx.clone(),
        exiting: AtomicBool::new(false),
        restore_point: Mutex::new((None, None)),
    });
    log::info!("all {} node(s) started; serving {}", shared.nodes.len(), socket_path.display());
    rep.send(&StartEvent::Ready { backup: shared.status() });
    detach_stdout(&run.log(&id));

    {
        let tx = tx.clone();
        std::thread::spawn(move || {
            if let Ok(sig) = sigs.wait() {
                let _ = tx.send(Exit::Aborted(format!(
                    "the helper received {:?}: the backups were stopped and discarded",
                    sig
                )));
            }
        });
    }
    {
        let sh = shared.clone();
        std::thread::spawn(move || heartbeat_loop(sh));
    }
    {
        let sh = shared.clone();
        std::thread::spawn(move || server::serve(listener, sh));
    }

    let deadline = Duration::from_secs(cfg.max_duration_secs);
    let outcome = match rx.recv_timeout(deadline.saturating_sub(shared.started.elapsed())) {
        Ok(e) => e,
        Err(_) => Exit::Aborted(format!(
            "--max-duration of {} s expired before post: the backups were stopped and discarded; this copy cannot be restored",
            cfg.max_duration_secs
        )),
    };
    shared.exiting.store(true, Ordering::SeqCst);
    // Wait for a stop or abort in progress, then end whatever is still running.
    let _guard = lock(&shared.op_lock);
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
        if let Err(e) = run.set_marker(&id, &m) {
            log::error!("{}", e.msg);
        }
    }
    let _ = std::fs::remove_file(&socket_path);
    let _ = std::fs::remove_file(run.path(&id, "lock"));
    drop(id_lock);
    Ok(())
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

/// Connect to every node in parallel and check each; all must pass.
fn connect_all(cfg: &HelperConfig, rep: &mut Reporter) -> Result<Vec<Node>> {
    let results: Vec<(String, std::result::Result<node::Checked, String>)> = std::thread::scope(|s| {
        let handles: Vec<_> = cfg
            .nodes
            .iter()
            .map(|(name, conninfo)| {
                let id = cfg.backup_id.clone();
                s.spawn(move || {
                    let r = ConnInfo::parse(conninfo)
                        .map_err(|e| e.msg)
                        .and_then(|ci| Node::connect(name, &ci.with_env_defaults(), &id));
                    (name.clone(), r)
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap_or_else(|_| ("?".into(), Err("internal error: node thread panicked".into()))))
            .collect()
    });
    let mut nodes = Vec::new();
    let mut errors = Vec::new();
    for (name, r) in results {
        match r {
            Ok(c) => {
                for w in c.warnings {
                    log::warn!("node {}: {}", name, w);
                    rep.send(&StartEvent::Warning { node: name.clone(), message: w });
                }
                nodes.push(c.node);
            }
            Err(e) => errors.push(format!("node {}: {}", name, e)),
        }
    }
    for (name, conninfo) in &cfg.node_primaries {
        let Some(n) = nodes.iter_mut().find(|n| n.name == *name) else { continue };
        let r = ConnInfo::parse(conninfo)
            .map_err(|e| e.msg)
            .and_then(|ci| n.attach_primary(&ci.with_env_defaults(), &cfg.backup_id));
        if let Err(e) = r {
            errors.push(format!("node {}: {}", name, e));
        }
    }
    if !errors.is_empty() {
        return Err(err!("{}; no backup was started", errors.join("; ")));
    }
    Ok(nodes)
}

/// Start every node's backup in parallel; on any failure, stop the ones that started.
fn start_all(cfg: &HelperConfig, nodes: &[Node]) -> Result<()> {
    let errors: Vec<String> = std::thread::scope(|s| {
        let handles: Vec<_> = nodes
            .iter()
            .map(|n| {
                s.spawn(move || match n.start(&cfg.backup_id, cfg.fast) {
                    Ok(lsn) => {
                        log::info!("node {}: backup started at {}", n.name, lsn);
                        None
                    }
                    Err(e) => Some(format!("node {}: the server refused to start the backup: {}", n.name, e)),
                })
            })
            .collect();
        handles
            .into_iter()
            .filter_map(|h| h.join().unwrap_or(Some("internal error: start thread panicked".into())))
            .collect()
    });
    if errors.is_empty() {
        return Ok(());
    }
    let started: Vec<&Node> = nodes.iter().filter(|n| n.status().start_lsn.is_some()).collect();
    let undone = started.len();
    std::thread::scope(|s| {
        for n in started {
            s.spawn(move || n.discard());
        }
    });
    Err(err!("{}; the {} node(s) that had started were stopped and their backups discarded", errors.join("; "), undone))
}

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
