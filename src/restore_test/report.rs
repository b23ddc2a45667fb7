//! The report of one test restore: every step with its result and time, the WAL replayed,
//! the server's log, and the verdict; as text or as one JSON document.

use std::path::PathBuf;
use std::time::Instant;

use serde::Serialize;

use crate::restore_test::checks::Db;

#[derive(Serialize, Debug, Clone, Copy, PartialEq)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    Passed,
    Failed,
    Skipped,
}

#[derive(Serialize, Debug)]
pub struct Step {
    pub name: &'static str,
    pub outcome: Outcome,
    pub seconds: f64,
    pub lines: Vec<String>,
}

/// Where a kept server is and how to reach and stop it (--keep).
#[derive(Serialize, Debug)]
pub struct Kept {
    pub pid: u32,
    pub connect: String,
    pub stop: String,
}

#[derive(Serialize, Debug, Default)]
pub struct Report {
    pub backup_id: String,
    pub node: Option<String>,
    pub pgdata: PathBuf,
    pub server_major: Option<u32>,
    pub steps: Vec<Step>,
    /// From the backup's start to where replay ended.
    pub wal_replayed_bytes: Option<u64>,
    pub replay_from: Option<String>,
    pub replay_to: Option<String>,
    /// The timeline recovery ended on, and the reason its history file gives (where it stopped).
    pub timeline: Option<u32>,
    pub stop_reason: Option<String>,
    /// restore-prep, start and replay: the time to a usable server.
    pub rto_seconds: Option<f64>,
    /// restore-check, relations, amcheck, stop and checksums together.
    pub checks_seconds: Option<f64>,
    pub total_seconds: f64,
    pub databases: Vec<Db>,
    pub socket_dir: Option<PathBuf>,
    pub port: Option<u16>,
    pub log_file: Option<PathBuf>,
    /// The server log's FATAL/PANIC/ERROR lines (at most 20) when a step failed.
    pub log_problems: Vec<String>,
    pub kept: Option<Kept>,
    pub passed: bool,
}

impl Report {
    pub fn step(&mut self, name: &'static str, since: Instant, ok: bool, lines: Vec<String>) {
        let outcome = if ok { Outcome::Passed } else { Outcome::Failed };
        self.steps.push(Step { name, outcome, seconds: since.elapsed().as_secs_f64(), lines });
    }

    pub fn skip(&mut self, name: &'static str, why: String) {
        self.steps.push(Step { name, outcome: Outcome::Skipped, seconds: 0.0, lines: vec![why] });
    }

    pub fn failed(&self) -> Vec<&'static str> {
        self.steps.iter().filter(|s| s.outcome == Outcome::Failed).map(|s| s.name).collect()
    }

    pub fn print_text(&self) {
        println!(
            "restore-test of backup {}{} in {}{}",
            self.backup_id,
            self.node.as_ref().map(|n| format!(", node {}", n)).unwrap_or_default(),
            self.pgdata.display(),
            self.server_major.map(|m| format!(" (PostgreSQL {})", m)).unwrap_or_default()
        );
        for s in &self.steps {
            let word = match s.outcome {
                Outcome::Passed => "PASSED",
                Outcome::Failed => "FAILED",
                Outcome::Skipped => "skipped",
            };
            println!("{:<14} {:<7} {:>8.1} s", s.name, word, s.seconds);
            for l in &s.lines {
                println!("    {}", l);
            }
        }
        if let (Some(b), Some(f), Some(t)) = (self.wal_replayed_bytes, &self.replay_from, &self.replay_to) {
            println!("WAL replayed: {:.1} MiB ({} to {})", b as f64 / 1048576.0, f, t);
        }
        if let Some(r) = self.rto_seconds {
            println!("time to a recovered server (restore-prep, start, replay): {:.1} s", r);
        }
        if let Some(c) = self.checks_seconds {
            println!("time for the checks: {:.1} s", c);
        }
        if let Some(l) = &self.log_file {
            println!("server log: {}", l.display());
        }
        for l in &self.log_problems {
            println!("    log: {}", l);
        }
        if let Some(k) = &self.kept {
            println!("kept running (--keep), pid {}: connect with  {}", k.pid, k.connect);
            println!("stop it with  {}", k.stop);
        }
        println!(
            "verdict: {} ({:.1} s)",
            if self.passed { "PASSED: the backup restores" } else { "FAILED" },
            self.total_seconds
        );
    }
}
