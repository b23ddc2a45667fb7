//! restore-test: prove, unattended, that a backup restores. On a copy the backup program
//! has restored into a scratch directory: restore-prep (archive_mode off, promote at the
//! target), a server started as the directory's owner with settings that cannot touch
//! production (see settings), a bounded wait for the end of recovery (see wait), the checks
//! (see checks), the stop, and a report with every step's result and time (see report).
//!
//! It never deletes the user's data: without --keep the server is stopped and the directory
//! is left as restored plus restore-prep's changes (and what the test server itself wrote:
//! the replayed WAL, a new timeline, its log); with --keep the server is left running on its
//! private socket and the report says how to connect and how to stop it.

pub mod checks;
pub mod nodes;
pub mod report;
pub mod server;
pub mod settings;
pub mod wait;

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::error::Result;
use crate::pg::conninfo::ConnInfo;
use crate::restore::{self, next_steps, recovery};
use crate::sidecar::{self, Manifest, NodeEntry};
use report::{Kept, Report};

pub struct Request {
    /// restore-prep's options (archive_mode off and target action promote are forced).
    pub prep: restore::Options,
    pub amcheck: bool,
    pub keep: bool,
    /// For the end of recovery.
    pub timeout: Duration,
    /// For the fast shutdown before an immediate one.
    pub stop_timeout: Duration,
}

fn load_manifest(dirs: &[PathBuf], id: &str) -> Result<Manifest> {
    for d in dirs {
        if let Some(m) = sidecar::read_manifest(d, id)? {
            return Ok(m);
        }
    }
    Err(sidecar::not_found(dirs, id))
}

/// The server's log problems (FATAL, PANIC, ERROR lines), at most 20, the last ones.
fn log_problems(log: &Path) -> Vec<String> {
    let text = std::fs::read(log).map(|b| String::from_utf8_lossy(&b).into_owned()).unwrap_or_default();
    let v: Vec<String> = text
        .lines()
        .filter(|l| l.contains("FATAL:") || l.contains("PANIC:") || l.contains("ERROR:"))
        // Our own connection attempts while the server was starting.
        .filter(|l| !l.contains("the database system is starting up") && !l.contains("not yet accepting connections"))
        .map(|l| l.trim().to_string())
        .collect();
    v[v.len().saturating_sub(20)..].to_vec()
}

/// Who may be connected as: the owner's name (initdb names the superuser after it), then
/// postgres, then the user the backup connected as.
fn candidates(p: &settings::Private, owner: u32, node: &NodeEntry) -> Vec<ConnInfo> {
    let mut users: Vec<String> = Vec::new();
    if let Ok(Some(u)) = nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(owner)) {
        users.push(u.name);
    }
    users.push("postgres".into());
    if let Some(u) = ConnInfo::parse(&node.conninfo).ok().and_then(|c| c.get("user").map(str::to_string)) {
        users.push(u);
    }
    users.dedup();
    let mut out = Vec::new();
    for u in users {
        let mut c = ConnInfo::default();
        c.set("host", p.dir.to_string_lossy().into_owned());
        c.set("port", p.port.to_string());
        c.set("user", u);
        c.set("dbname", "postgres");
        c.set("sslmode", "disable");
        if !out.iter().any(|o: &ConnInfo| o.get("user") == c.get("user")) {
            out.push(c);
        }
    }
    out
}

/// Run the whole test. Errors before anything is changed (usage, no such backup) are
/// returned; everything after is a step in the report.
pub fn run(mut r: Request) -> Result<Report> {
    server::catch_signals()?;
    force_test_settings(&mut r);
    let t0 = Instant::now();
    let m = load_manifest(&r.prep.sidecar_dirs, &r.prep.backup_id)?;
    let target = recovery::parse_target(r.prep.target.as_deref(), &m)?;
    let mut rep = new_report(&r);
    body(&r, &m, &target, &mut rep);
    conclude(&mut rep, t0);
    Ok(rep)
}

/// What a test restore always has: archive_mode off, promotion at the target.
fn force_test_settings(r: &mut Request) {
    r.prep.archive_mode = recovery::ArchiveMode::Off;
    r.prep.target_action = recovery::TargetAction::Promote;
}

fn new_report(r: &Request) -> Report {
    Report {
        backup_id: r.prep.backup_id.clone(),
        node: r.prep.node.clone(),
        pgdata: r.prep.pgdata.clone(),
        ..Report::default()
    }
}

/// The total time, an interruption, the verdict and the log's problems.
fn conclude(rep: &mut Report, t0: Instant) {
    rep.total_seconds = t0.elapsed().as_secs_f64();
    if let Some(sig) = server::interrupted() {
        rep.skip("interrupted", format!("restore-test was interrupted by {}: the test server was stopped", sig));
        if let Some(s) = rep.steps.last_mut() {
            s.outcome = report::Outcome::Failed;
        }
    }
    rep.passed = rep.failed().is_empty() && rep.checks_seconds.is_some();
    if !rep.passed {
        if let Some(l) = &rep.log_file {
            rep.log_problems = log_problems(l);
        }
    }
}

fn body(r: &Request, m: &Manifest, target: &recovery::Target, rep: &mut Report) {
    let t0 = Instant::now();
    let t = Instant::now();
    let prepared = restore::prepare(&r.prep);
    let Some(plan) = apply_step(prepared, t, rep) else { return };
    let Some(run) = start_step(r, m, &plan, rep) else { return };
    finish(r, m, target, run, t0, rep);
}

/// restore-prep's writes for a plan (or its refusal), as the report's first step.
fn apply_step(prepared: Result<restore::Plan>, t: Instant, rep: &mut Report) -> Option<restore::Plan> {
    match prepared.and_then(|plan| restore::apply(&plan).map(|w| (plan, w))) {
        Ok((plan, written)) => {
            let mut lines = plan.checks.clone();
            lines.extend(plan.warnings.iter().map(|w| format!("warning: {}", w)));
            lines.push(format!(
                "{} file(s) written, {} removed; target {}",
                written.len(),
                plan.removes.len(),
                plan.target
            ));
            rep.step("restore-prep", t, true, lines);
            rep.node = Some(plan.node.clone());
            rep.server_major = Some(plan.server_major);
            Some(plan)
        }
        Err(e) => {
            rep.step("restore-prep", t, false, vec![e.msg]);
            None
        }
    }
}

/// A started test server and what its checks need. Dropping it stops the server.
pub(crate) struct Running {
    srv: server::Server,
    private: settings::Private,
    owner: (u32, u32),
    bindir: PathBuf,
    node: NodeEntry,
    server_major: u32,
}

/// Start the node's test server (the "start" step).
fn start_step(r: &Request, m: &Manifest, plan: &restore::Plan, rep: &mut Report) -> Option<Running> {
    let Some(node) = m.nodes.iter().find(|n| n.name == plan.node) else {
        rep.step("start", Instant::now(), false, vec![format!("the manifest has no node {}", plan.node)]);
        return None;
    };
    let t = Instant::now();
    let (srv, private, owner, bindir) = match start(r, plan, rep) {
        Ok(s) => s,
        Err(e) => {
            rep.step("start", t, false, vec![e.msg]);
            return None;
        }
    };
    rep.step(
        "start",
        t,
        true,
        vec![format!(
            "postgres (pid {}) as uid {}, socket in {}, port {}",
            srv.pid,
            owner.0,
            private.dir.display(),
            private.port
        )],
    );
    Some(Running { srv, private, owner, bindir, node: node.clone(), server_major: plan.server_major })
}

/// Replay, the checks and the stop of a started server; `t0` is when its restore began.
fn finish(r: &Request, m: &Manifest, target: &recovery::Target, run: Running, t0: Instant, rep: &mut Report) {
    let Running { mut srv, private, owner, bindir, node, server_major } = run;
    let node = &node;
    let infos = candidates(&private, owner.0, node);
    // 3. Replay.
    let t = Instant::now();
    let w = wait::Wait {
        infos: &infos,
        timeout: r.timeout,
        start: node.start_lsn,
        consistent: node.stop_lsn,
        target: match target {
            recovery::Target::Lsn(l) => Some(*l),
            recovery::Target::Name(n) => {
                m.restore_point.as_ref().filter(|rp| &rp.name == n).and_then(|rp| rp.lsns.get(&node.name).copied())
            }
            _ => None,
        },
        seg_size: node.wal_segment_size,
        pgdata: &r.prep.pgdata,
    };
    let (mut c, v, info) = match wait::until_ended(&mut srv, &w) {
        Ok(x) => x,
        Err(e) => {
            rep.step("replay", t, false, vec![e.msg]);
            stop(r, &mut srv, &private, rep, false);
            return;
        }
    };
    rep.rto_seconds = Some(t0.elapsed().as_secs_f64());
    rep.step("replay", t, true, vec![format!("recovery ended after {:.1} s", t.elapsed().as_secs_f64())]);
    // 4. Checks.
    let tc = Instant::now();
    let (proven, lines, observed) = checks::restore_check(&mut c, v, m, node, target);
    if let Some(o) = &observed {
        rep.timeline = Some(o.timeline);
        rep.stop_reason = o.reason.clone();
    }
    let end = observed.as_ref().and_then(|o| o.switchpoint.or(o.replay_lsn));
    if let Some(end) = end {
        rep.wal_replayed_bytes = Some(end.0.saturating_sub(node.start_lsn.0));
        rep.replay_from = Some(node.start_lsn.to_string());
        rep.replay_to = Some(end.to_string());
    }
    rep.step("restore-check", tc, proven, lines);
    let t = Instant::now();
    let inv = match checks::inventory(&mut c, &info) {
        Ok(inv) => {
            let rels: i64 = inv.databases.iter().map(|d| d.relations).sum();
            let bytes: i64 = inv.databases.iter().map(|d| d.bytes).sum();
            let mut lines = vec![format!(
                "{} database(s), {} relations, {:.1} MiB",
                inv.databases.len(),
                rels,
                bytes as f64 / 1048576.0
            )];
            lines.extend(
                inv.databases
                    .iter()
                    .map(|d| format!("{}: {} relations, {:.1} MiB", d.name, d.relations, d.bytes as f64 / 1048576.0)),
            );
            rep.step("relations", t, true, lines);
            Some(inv)
        }
        Err(e) => {
            rep.step("relations", t, false, vec![e.msg]);
            None
        }
    };
    drop(c);
    if r.amcheck && server::interrupted().is_some() {
        rep.skip("amcheck", "not run: restore-test was interrupted".into());
    } else if r.amcheck {
        let t = Instant::now();
        match &inv {
            Some(inv) => {
                let (ok, lines) = checks::amcheck(&bindir, &info, v, inv);
                rep.step("amcheck", t, ok, lines);
            }
            None => rep.step("amcheck", t, false, vec!["not run: the relations could not be listed".into()]),
        }
    }
    if let Some(inv) = &inv {
        rep.databases = inv.databases.clone();
    }
    // 5. Stop (unless --keep), then the offline checksums.
    if r.keep && server::interrupted().is_none() {
        let connect = format!(
            "psql 'host={} port={} user={} dbname=postgres'",
            private.dir.display(),
            private.port,
            info.get("user").unwrap_or("postgres")
        );
        let stop = format!("kill -INT {}   (then remove {})", srv.pid, private.dir.display());
        rep.kept = Some(Kept { pid: srv.pid, connect, stop });
        rep.skip("checksums", "the server is kept running (--keep): pg_checksums needs it stopped".into());
        srv.detach();
    } else {
        let stopped = stop(r, &mut srv, &private, rep, true);
        let t = Instant::now();
        match (&inv, stopped) {
            (Some(inv), true) => match checks::checksums(&bindir, &r.prep.pgdata, owner, server_major, inv) {
                Ok((ok, lines)) => rep.step("checksums", t, ok, lines),
                Err(why) => rep.skip("checksums", why),
            },
            (None, _) => rep.skip("checksums", "not run: the relations could not be listed".into()),
            (_, false) => rep.skip("checksums", "not run: the server did not stop cleanly".into()),
        }
    }
    rep.checks_seconds = Some(tc.elapsed().as_secs_f64());
}

type Started = (server::Server, settings::Private, (u32, u32), PathBuf);

fn start(r: &Request, plan: &restore::Plan, rep: &mut Report) -> Result<Started> {
    let pgdata = &r.prep.pgdata;
    let meta = std::fs::metadata(pgdata).map_err(|e| err!("cannot stat {}: {}", pgdata.display(), e))?;
    let owner = (meta.uid(), meta.gid());
    let pg_ctl = next_steps::find_pg_ctl(plan.server_major).ok_or_else(|| {
        err!(
            "PostgreSQL {}'s server programs were not found (PGBH_PG_BINDIR, /usr/lib/postgresql/{}/bin, pg_config --bindir)",
            plan.server_major,
            plan.server_major
        )
    })?;
    let bindir = pg_ctl.parent().map(Path::to_path_buf).unwrap_or_default();
    let postgres = bindir.join("postgres");
    let private = settings::make_private(pgdata, owner)?;
    let log = pgdata.join(next_steps::START_LOG);
    rep.log_file = Some(log.clone());
    rep.socket_dir = Some(private.dir.clone());
    rep.port = Some(private.port);
    let mut args = vec!["-D".to_string(), pgdata.to_string_lossy().into_owned()];
    args.extend(settings::args(&private, pgdata, plan.server_major));
    let srv = server::start(server::Start { postgres: &postgres, args, owner, log: &log, keep: r.keep }).inspect_err(
        |_| {
            let _ = std::fs::remove_dir_all(&private.dir);
        },
    )?;
    Ok((srv, private, owner, bindir))
}

/// Stop the server and remove the private directory (ours); true when it stopped cleanly.
fn stop(
    r: &Request,
    srv: &mut server::Server,
    private: &settings::Private,
    rep: &mut Report,
    clean_needed: bool,
) -> bool {
    let t = Instant::now();
    let res = srv.stop(r.stop_timeout);
    let _ = std::fs::remove_dir_all(&private.dir);
    rep.socket_dir = None;
    match res {
        Ok(how) => {
            let clean = how.starts_with("stopped (fast");
            rep.step("stop", t, clean || !clean_needed, vec![how]);
            clean
        }
        Err(e) => {
            rep.step("stop", t, false, vec![e.msg]);
            false
        }
    }
}
