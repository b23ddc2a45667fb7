//! Starting the helper from `pre`: the same binary, detached into its own session, with
//! its configuration on stdin and its start events on stdout.

use std::io::{BufReader, Write};
use std::os::unix::process::CommandExt;
use std::process::{Child, ChildStdout, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use crate::error::{Context, Error, Result};
use crate::protocol::{self, StartEvent};
use crate::rundir::RunDir;

use super::HelperConfig;

pub struct Spawned {
    pub child: Child,
    pub events: mpsc::Receiver<Result<StartEvent>>,
}

/// Start the helper for `cfg`, its stderr appended to the backup's log, and hand it the
/// configuration; its start events arrive through `Spawned::next`.
pub fn spawn(run: &RunDir, cfg: &HelperConfig) -> Result<Spawned> {
    let exe = std::env::current_exe().context(|| "cannot find our own executable to start the helper")?;
    let log_path = run.log(&cfg.backup_id);
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log_path)
        .context(|| format!("cannot open helper log {}", log_path.display()))?;
    // The helper runs in /: a relative --run-dir must name the same directory there.
    let run_dir = std::path::absolute(&run.dir).context(|| format!("cannot resolve {}", run.dir.display()))?;
    let mut cmd = Command::new(exe);
    cmd.arg("helper")
        .arg("--backup-id")
        .arg(&cfg.backup_id)
        .arg("--run-dir")
        .arg(&run_dir)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::from(log))
        .current_dir("/");
    if std::env::var_os("RUST_LOG").is_none() {
        cmd.env("RUST_LOG", "info");
    }
    // SAFETY: setsid is async-signal-safe; the closure allocates nothing.
    unsafe {
        cmd.pre_exec(|| nix::unistd::setsid().map(|_| ()).map_err(std::io::Error::from));
    }
    let mut child = cmd.spawn().context(|| "cannot start the helper process")?;
    let config = serde_json::to_vec(cfg).context(|| "cannot encode helper configuration")?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin.write_all(&config).context(|| "cannot hand the configuration to the helper")?;
    }
    let stdout = child.stdout.take().ok_or_else(|| Error::new("helper has no stdout"))?;
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || relay_events(stdout, tx));
    Ok(Spawned { child, events: rx })
}

/// Decode the helper's start events from its stdout onto the channel, until it closes or pre
/// stops listening.
fn relay_events(stdout: ChildStdout, tx: mpsc::Sender<Result<StartEvent>>) {
    let mut r = BufReader::new(stdout);
    loop {
        match protocol::read_line(&mut r) {
            Ok(Some(line)) => {
                if tx.send(protocol::decode::<StartEvent>(&line)).is_err() {
                    return;
                }
            }
            Ok(None) => return,
            Err(e) => {
                let _ = tx.send(Err(err!("{}", e)));
                return;
            }
        }
    }
}

/// What pre hears next from the helper it started.
pub enum Next {
    Event(StartEvent),
    /// A line that is not a start event.
    Garbled(String),
    /// The helper closed its stdout (it exited).
    Closed,
    TimedOut,
}

impl Spawned {
    pub fn next(&self, timeout: Duration) -> Next {
        match self.events.recv_timeout(timeout) {
            Ok(Ok(ev)) => Next::Event(ev),
            Ok(Err(e)) => Next::Garbled(e.msg),
            Err(mpsc::RecvTimeoutError::Disconnected) => Next::Closed,
            Err(mpsc::RecvTimeoutError::Timeout) => Next::TimedOut,
        }
    }

    /// End the helper hard: its sessions close and the server ends their backups.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
