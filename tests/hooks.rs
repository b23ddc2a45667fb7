//! The product adapters (`pg-backup-hooks hook PRODUCT EVENT ...`, reached through the
//! hooks/ shims the products run), each called exactly as its product documents: argument
//! order, environment, what runs on failure, a second stream, a retried attempt; against a
//! real server. The shims are valid POSIX sh and shellcheck-clean.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::common;
use crate::common::tool::{Ran, Tool};
use crate::common::{Cluster, TestDir};

const HOOKS: &[&str] = &[
    "bacula",
    "veeam",
    "netbackup",
    "commvault",
    "generic",
    "amanda",
    "restore-test",
    "restore-test-amanda",
    "restore-test-borgmatic",
];

fn hook(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("hooks").join(name)
}

#[test]
fn every_wrapper_is_posix_sh_and_shellcheck_clean() {
    for h in HOOKS {
        let out = Command::new("sh").arg("-n").arg(hook(h)).output().expect("sh -n");
        assert!(out.status.success(), "sh -n {}: {}", h, String::from_utf8_lossy(&out.stderr));
    }
    match Command::new("shellcheck").arg("-s").arg("sh").args(HOOKS.iter().map(|h| hook(h))).output() {
        Ok(out) => assert!(out.status.success(), "shellcheck:\n{}", String::from_utf8_lossy(&out.stdout)),
        Err(_) if std::env::var_os("PGBH_REQUIRE_BACULA").is_none() => {
            crate::common::skip("shellcheck is not installed (apt-get install shellcheck)")
        }
        Err(e) => panic!("shellcheck: {}", e),
    }
}

/// A product's script `program` (a hooks/ shim or a link to it) with this environment file
/// and nothing of ours leaking in from the test's environment.
fn hook_cmd(program: &Path, env_file: &Path) -> Command {
    let mut c = Command::new(program);
    c.env("PGBH_ENV_FILE", env_file);
    for v in [
        "PGBH_BACKUP_ID",
        "PGBH_RUN_DIR",
        "PGBH_SIDECAR_DIR",
        "PGBH_NODES",
        "PGBH_BIN",
        "PGBH_FAST",
        "PGHOST",
        "PGPORT",
        "PGUSER",
        "STREAM_NUMBER",
        "STREAM_COUNT",
        "BACKUPID",
    ] {
        c.env_remove(v);
    }
    c
}

fn run_hook(name: &str, env_file: &Path, args: &[&str]) -> Ran {
    hook_cmd(&hook(name), env_file).args(args).output().expect("running the hook").into()
}

/// The settings every test's environment file holds, plus `extra` lines; mode 0600.
fn write_env(path: &Path, t: &Tool, pg: &Cluster, extra: &str) {
    std::fs::write(
        path,
        format!(
            "PGBH_BIN='{}'\nPGBH_SIDECAR_DIR='{}'\nPGBH_RUN_DIR='{}'\nPGBH_NODES='default={}'\nPGBH_FAST=true\n{}",
            common::bin().display(),
            t.sidecar.display(),
            t.run_dir.display(),
            pg.conninfo(),
            extra
        ),
    )
    .expect("env file");
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).expect("chmod env file");
}

struct Setup {
    dir: TestDir,
    pg: Cluster,
    t: Tool,
    env_file: PathBuf,
}

fn setup(extra: &str) -> Setup {
    let dir = TestDir::new();
    let pg = Cluster::new(dir.path(), "pg");
    let t = Tool::new(&dir);
    let env_file = dir.path().join("env");
    write_env(&env_file, &t, &pg, extra);
    Setup { dir, pg, t, env_file }
}

#[test]
fn veeam_and_generic_invent_an_id_at_pre_and_post_stores_it() {
    let dir = TestDir::new();
    let pg = Cluster::new(dir.path(), "pg");
    let t = Tool::new(&dir);
    let env_file = dir.path().join("env");
    std::fs::write(
        &env_file,
        format!(
            "PGBH_BIN='{}'\nPGBH_SIDECAR_DIR='{}'\nPGBH_RUN_DIR='{}'\nPGBH_NODES='default={}'\nPGBH_FAST=true\n",
            common::bin().display(),
            t.sidecar.display(),
            t.run_dir.display(),
            pg.conninfo()
        ),
    )
    .expect("env file");

    // Veeam: post without pre fails loudly (Veeam runs the job even when pre failed).
    let r = run_hook("veeam", &env_file, &["post"]);
    assert_eq!(r.code, 1, "{}", r.stderr);
    assert!(r.stderr.contains("NOT restorable"), "{}", r.stderr);
    for h in ["veeam", "generic"] {
        run_hook(h, &env_file, &["pre"]).ok();
        let kept =
            t.run_dir_files().into_iter().find(|f| f.ends_with(".current-id")).expect("the id is kept in the run dir");
        let id = std::fs::read_to_string(t.run_dir.join(&kept)).expect("id").trim().to_string();
        run_hook(h, &env_file, &["post"]).ok();
        assert_eq!(t.manifest(&id)["status"], "complete", "{}", h);
        assert!(!t.run_dir.join(&kept).exists(), "post forgets the id it finished");
    }
    // A pre whose post never came is aborted by the next pre.
    run_hook("veeam", &env_file, &["pre"]).ok();
    let r = run_hook("veeam", &env_file, &["pre"]).ok();
    assert!(r.stderr.contains("never got its post: aborting it first"), "{}", r.stderr);
    run_hook("veeam", &env_file, &["post"]).ok();
    // The environment file named by PGBH_ENV_FILE must exist.
    let r = run_hook("generic", &dir.path().join("missing"), &["status"]);
    assert_eq!(r.code, 2, "{}", r.stderr);
}

#[test]
fn boolean_settings_accept_1_yes_on_as_the_environment_file_writes_them() {
    let s = setup("");
    for (i, word) in ["1", "yes", "on", "True"].iter().enumerate() {
        write_env(&s.env_file, &s.t, &s.pg, "");
        let text = std::fs::read_to_string(&s.env_file)
            .expect("env")
            .replace("PGBH_FAST=true", &format!("PGBH_FAST={}", word));
        std::fs::write(&s.env_file, text).expect("env");
        let id = format!("fast-{}", i);
        let r = run_hook("generic", &s.env_file, &["pre", &id]);
        assert_eq!(r.code, 0, "PGBH_FAST={}: {}", word, r.stderr);
        run_hook("generic", &s.env_file, &["post", &id]).ok();
        assert_eq!(s.t.manifest(&id)["status"], "complete");
    }
    // The plain binary reads the same words from its environment.
    let r: Ran =
        s.t.cmd(&["pre", "--backup-id", "direct", "--run-dir", &s.t.run_dir.display().to_string()])
            .env("PGBH_FAST", "1")
            .env("PGBH_SIDECAR_DIR", &s.t.sidecar)
            .env("PGBH_NODES", format!("default={}", s.pg.conninfo()))
            .output()
            .expect("pre")
            .into();
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(s.pg.log().contains("checkpoint starting: immediate"), "PGBH_FAST=1 asks for an immediate checkpoint");
    s.t.abort("direct").ok();
    let r: Ran =
        s.t.cmd(&["pre", "--backup-id", "x", "--sidecar-dir", "/tmp"])
            .env("PGBH_FAST", "maybe")
            .output()
            .expect("pre")
            .into();
    assert_eq!(r.code, 2, "{}", r.stderr);
}

#[test]
fn the_environment_file_is_read_never_run_and_only_when_trusted() {
    let s = setup("");
    let planted = s.dir.path().join("pwned");
    let base = std::fs::read_to_string(&s.env_file).expect("env");
    // PGBH_BIN from the job's environment: the binary itself must refuse the file.
    let pre_with = |env_file: &Path| -> Ran {
        hook_cmd(&hook("generic"), env_file)
            .args(["pre", "refused"])
            .env("PGBH_BIN", common::bin())
            .output()
            .expect("hook")
            .into()
    };
    let refused = |text: &str, mode: u32, needle: &str| {
        std::fs::write(&s.env_file, text).expect("env");
        std::fs::set_permissions(&s.env_file, std::fs::Permissions::from_mode(mode)).expect("chmod");
        let r = pre_with(&s.env_file);
        assert_ne!(r.code, 0, "{}", r.stderr);
        assert!(r.stderr.contains(needle), "expected {:?}:\n{}", needle, r.stderr);
        assert!(r.stderr.contains(&s.env_file.display().to_string()), "the error names the file:\n{}", r.stderr);
        assert_eq!(s.pg.backup_sessions("refused"), 0, "nothing may start");
    };
    // Shell code is refused, not run.
    refused(&format!("{}PGBH_MAX_DURATION=$(touch {})\n", base, planted.display()), 0o600, "line 6");
    assert!(!planted.exists(), "the environment file was run as shell code");
    // A typo is an error naming the file and line, not a setting silently ignored.
    refused(&format!("{}PGBH_FAAST=1\n", base), 0o600, "line 6: unknown setting PGBH_FAAST");
    // A file others may write is refused.
    refused(&base, 0o666, "writable by group or others");
    // Also through a link planted in its place.
    let target = s.dir.path().join("elsewhere");
    std::fs::write(&target, &base).expect("target");
    std::fs::set_permissions(&target, std::fs::Permissions::from_mode(0o666)).expect("chmod");
    let link = s.dir.path().join("env-link");
    std::os::unix::fs::symlink(&target, &link).expect("symlink");
    let r = pre_with(&link);
    assert_ne!(r.code, 0, "{}", r.stderr);
    assert!(r.stderr.contains("writable by group or others"), "{}", r.stderr);
    // A file owned by another (non-root) user is refused.
    if let Some((uid, _)) = common::server_user_ids() {
        std::fs::write(&s.env_file, &base).expect("env");
        std::os::unix::fs::lchown(&s.env_file, Some(uid.as_raw()), None).expect("chown");
        refused(&base, 0o600, "not by root or us");
    }
}

#[test]
fn invented_ids_are_kept_only_in_a_run_directory_nobody_else_can_write() {
    let s = setup("");
    let open_dir = s.dir.path().join("open-run");
    std::fs::create_dir(&open_dir).expect("mkdir");
    std::fs::set_permissions(&open_dir, std::fs::Permissions::from_mode(0o777)).expect("chmod");
    let text = std::fs::read_to_string(&s.env_file).expect("env").replace(
        &format!("PGBH_RUN_DIR='{}'", s.t.run_dir.display()),
        &format!("PGBH_RUN_DIR='{}'", open_dir.display()),
    );
    std::fs::write(&s.env_file, text).expect("env");
    let r = run_hook("veeam", &s.env_file, &["pre"]);
    assert_eq!(r.code, 1, "{}", r.stderr);
    assert!(r.stderr.contains("writable by group or others"), "{}", r.stderr);
    assert_eq!(std::fs::read_dir(&open_dir).expect("dir").count(), 0, "nothing may be kept there");
}

#[test]
fn bacula_leftover_cleanup_aborts_only_earlier_runs_of_the_same_job() {
    let s = setup("");
    // Bacula's unique job names (%j) of three runs: two jobs whose names share a prefix.
    let replica = "pgdata.replica.2026-11-22_16.40.55_01";
    let leftover = "pgdata.2026-11-22_16.30.00_02";
    let current = "pgdata.2026-11-22_16.41.00_03";
    run_hook("bacula", &s.env_file, &["before", replica, "Full"]).ok();
    run_hook("bacula", &s.env_file, &["before", leftover, "Full"]).ok();
    let r = run_hook("bacula", &s.env_file, &["before", current, "Full"]).ok();
    assert!(r.stdout.contains(&format!("aborting leftover backup {}", leftover)), "{}", r.stdout);
    assert!(!r.stdout.contains(replica), "another job's running backup was touched:\n{}", r.stdout);
    s.pg.wait_no_backup_sessions(leftover);
    assert_eq!(s.pg.backup_sessions(replica), 1, "the backup of job pgdata.replica must keep running");
    for id in [replica, current] {
        let r = run_hook("bacula", &s.env_file, &["after", id]).ok();
        assert!(r.stdout.contains("post succeeded"), "Bacula keeps only stdout: the outcome is there\n{}", r.stdout);
        assert_eq!(s.t.manifest(id)["status"], "complete");
    }
}

#[test]
fn bacula_takes_incremental_levels_with_an_inventory_and_pgbh_allow_levels_restricts_them() {
    let s = setup("");
    let id = "pgdata.2026-11-22_16.40.55_04";
    // An Incremental: pre runs with --require-inventory (the node is local: it has a source).
    let r = run_hook("bacula", &s.env_file, &["before", id, "Incremental"]).ok();
    assert!(r.stdout.contains("--require-inventory") && r.stdout.contains("pre succeeded"), "{}", r.stdout);
    run_hook("bacula", &s.env_file, &["after", id]).ok();
    assert_eq!(s.t.manifest(id)["status"], "complete");
    // PGBH_ALLOW_LEVELS names the levels taken besides Full; a level it leaves out is refused
    // before pre, and Full is taken as always.
    write_env(&s.env_file, &s.t, &s.pg, "PGBH_ALLOW_LEVELS=Differential\n");
    let refused = "pgdata.2026-11-22_16.40.56_05";
    let r = run_hook("bacula", &s.env_file, &["before", refused, "Incremental"]);
    assert_eq!(r.code, 2, "{}", r.stdout);
    assert!(
        r.stdout.contains("PGBH_ALLOW_LEVELS=Differential does not name it") && r.stdout.contains("Level = Full"),
        "{}",
        r.stdout
    );
    assert_eq!(s.pg.backup_sessions(refused), 0);
    // A level the adapter does not know is refused unless named.
    let r = run_hook("bacula", &s.env_file, &["before", refused, "VirtualFull"]);
    assert_eq!(r.code, 2, "{}", r.stdout);
    let full = "pgdata.2026-11-22_16.40.57_06";
    let r = run_hook("bacula", &s.env_file, &["before", full, "Full"]).ok();
    assert!(!r.stdout.contains("--require-inventory"), "a Full runs pre as always:\n{}", r.stdout);
    run_hook("bacula", &s.env_file, &["after", full]).ok();
}

/// Commvault appends its arguments to the command: -bkplevel, -attempt, -status, -job.
fn commvault(s: &Setup, event: &str, job: &str, attempt: &str, status: &str) -> Ran {
    run_hook("commvault", &s.env_file, &[event, "-bkplevel", "1", "-attempt", attempt, "-status", status, "-job", job])
}

#[test]
fn commvault_post_of_a_failed_or_killed_job_discards_the_backup() {
    let s = setup("");
    // Which -status values mean success is not documented: until the admin says, nothing is stored.
    commvault(&s, "pre", "100", "1", "1").ok();
    let r = commvault(&s, "post", "100", "1", "1");
    assert_eq!(r.code, 1, "{}", r.stderr);
    assert!(r.stderr.contains("PGBH_COMMVAULT_SUCCESS_STATUS"), "{}", r.stderr);
    assert!(!s.t.backup_dir("cv-100").exists());
    s.pg.wait_no_backup_sessions("cv-100");

    write_env(&s.env_file, &s.t, &s.pg, "PGBH_COMMVAULT_SUCCESS_STATUS=1\n");
    commvault(&s, "pre", "101", "1", "1").ok();
    let r = commvault(&s, "post", "101", "1", "3");
    assert_eq!(r.code, 1, "{}", r.stderr);
    assert!(r.stderr.contains("failed or was killed"), "{}", r.stderr);
    assert!(!s.t.backup_dir("cv-101").exists(), "a failed job must never get a sidecar");
    s.pg.wait_no_backup_sessions("cv-101");

    commvault(&s, "pre", "102", "1", "1").ok();
    commvault(&s, "post", "102", "1", "1").ok();
    assert_eq!(s.t.manifest("cv-102")["status"], "complete");
}

#[test]
fn commvault_a_retried_attempt_never_mixes_two_backup_starts() {
    let s = setup("PGBH_COMMVAULT_SUCCESS_STATUS=1\n");
    // Attempt 1 started the backup; the copy failed and Commvault runs the pre process
    // again as attempt 2 while the backup is still held: it continues under that start.
    let first = commvault(&s, "pre", "200", "1", "1").ok();
    let start = first.start_lsn("default");
    s.pg.execute("create table moved(i int); insert into moved select generate_series(1, 1000); checkpoint");
    let r = commvault(&s, "pre", "200", "2", "1").ok();
    assert!(r.stderr.contains("continues under it"), "{}", r.stderr);
    assert_eq!(s.pg.backup_sessions("cv-200"), 1);
    commvault(&s, "post", "200", "2", "1").ok();
    let label = s.t.label("cv-200", "default");
    assert!(common::tool::label_field(&label, "START WAL LOCATION").starts_with(&start), "{}", label);

    // Attempt 1's backup was ended by a post process that ran after the failed attempt:
    // attempt 2 might resume the copy, so a new start is refused, naming the setting...
    commvault(&s, "pre", "201", "1", "1").ok();
    commvault(&s, "post", "201", "1", "3");
    s.pg.wait_no_backup_sessions("cv-201");
    let r = commvault(&s, "pre", "201", "2", "1");
    assert_eq!(r.code, 1, "{}", r.stderr);
    assert!(r.stderr.contains("Run Post Backup Process for all attempts"), "{}", r.stderr);
    assert_eq!(s.pg.backup_sessions("cv-201"), 0);
    // ...unless the admin says every attempt copies everything again.
    write_env(&s.env_file, &s.t, &s.pg, "PGBH_COMMVAULT_SUCCESS_STATUS=1\nPGBH_COMMVAULT_RESTARTS_COPY=yes\n");
    commvault(&s, "pre", "201", "2", "1").ok();
    commvault(&s, "post", "201", "2", "1").ok();
    assert_eq!(s.t.manifest("cv-201")["status"], "complete");
}

/// NetBackup runs /usr/openv/netbackup/bin/bpstart_notify.POLICY: here a link of that
/// name to hooks/netbackup (or to the binary itself).
fn netbackup_links(s: &Setup) -> (PathBuf, PathBuf) {
    let bin = s.dir.mkdir("openv-bin");
    let start = bin.join("bpstart_notify.pgdata");
    let end = bin.join("bpend_notify.pgdata");
    std::os::unix::fs::symlink(hook("netbackup"), &start).expect("link");
    std::os::unix::fs::symlink(common::bin(), &end).expect("link");
    (start, end)
}

fn notify(s: &Setup, script: &Path, args: &[&str], env: &[(&str, &str)]) -> Command {
    let mut c = hook_cmd(script, &s.env_file);
    c.args(["client1", "pgdata", "daily"]).args(args).envs(env.iter().copied());
    c
}

fn nbu_id(s: &Setup) -> String {
    let state = s.t.run_dir.join("nbu-client1-pgdata-daily.json");
    let v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(state).expect("stream record")).expect("json");
    v["id"].as_str().expect("id").to_string()
}

#[test]
fn netbackup_streams_of_one_job_share_one_backup_and_the_last_end_stores_it() {
    let s = setup("");
    let (start, end) = netbackup_links(&s);
    // Two streams start at the same moment.
    let streams: Vec<_> = ["1", "2"]
        .iter()
        .map(|n| {
            notify(&s, &start, &["FULL"], &[("STREAM_NUMBER", n), ("STREAM_COUNT", "2")])
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .expect("bpstart_notify")
        })
        .collect();
    for child in streams {
        let r: Ran = child.wait_with_output().expect("bpstart_notify").into();
        assert_eq!(r.code, 0, "{}", r.stderr);
    }
    let id = nbu_id(&s);
    assert_eq!(s.pg.backup_sessions(&id), 1, "one backup for both streams");
    assert_eq!(s.t.run_dir_files().iter().filter(|f| f.ends_with(".sock")).count(), 1);
    let r: Ran = notify(&s, &end, &["FULL", "0"], &[("STREAM_NUMBER", "2")]).output().expect("end").into();
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(r.stderr.contains("stays held"), "{}", r.stderr);
    assert_eq!(s.pg.backup_sessions(&id), 1, "stream 1 is still copying: the backup must stay held");
    assert!(!s.t.backup_dir(&id).exists());
    let r: Ran = notify(&s, &end, &["FULL", "0"], &[("STREAM_NUMBER", "1")]).output().expect("end").into();
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(s.t.manifest(&id)["status"], "complete");

    // One stream failing (status 1: files skipped) discards the backup at the last end.
    for n in ["1", "2"] {
        let r: Ran = notify(&s, &start, &["FULL"], &[("STREAM_NUMBER", n), ("STREAM_COUNT", "2")])
            .output()
            .expect("start")
            .into();
        assert_eq!(r.code, 0, "{}", r.stderr);
    }
    let id = nbu_id(&s);
    notify(&s, &end, &["FULL", "1"], &[("STREAM_NUMBER", "1")]).output().expect("end");
    let r: Ran = notify(&s, &end, &["FULL", "0"], &[("STREAM_NUMBER", "2")]).output().expect("end").into();
    assert_eq!(r.code, 1, "{}", r.stderr);
    assert!(r.stderr.contains("discarding backup"), "{}", r.stderr);
    s.pg.wait_no_backup_sessions(&id);
    assert!(!s.t.backup_dir(&id).exists());
}

#[test]
fn netbackup_a_stream_that_cannot_join_is_refused_and_the_running_backup_left_alone() {
    let s = setup("");
    let (start, end) = netbackup_links(&s);
    let r: Ran = notify(&s, &start, &["FULL"], &[]).output().expect("start").into();
    assert_eq!(r.code, 0, "{}", r.stderr);
    let id = nbu_id(&s);
    // Multistreaming without a stream count: the second stream is refused (status 73).
    let r: Ran = notify(&s, &start, &["FULL"], &[("STREAM_NUMBER", "2")]).output().expect("start").into();
    assert_eq!(r.code, 1, "{}", r.stderr);
    assert!(r.stderr.contains("PGBH_NETBACKUP_STREAMS") && r.stderr.contains("left alone"), "{}", r.stderr);
    assert_eq!(s.pg.backup_sessions(&id), 1, "the first stream's backup must keep running");
    let r: Ran = notify(&s, &end, &["FULL", "0"], &[]).output().expect("end").into();
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(s.t.manifest(&id)["status"], "complete");
    // A user archive (it deletes what it copied) is refused; bpend without a start fails loudly.
    let r: Ran = notify(&s, &start, &["UARC"], &[]).output().expect("start").into();
    assert_eq!(r.code, 2, "{}", r.stderr);
    let r: Ran = notify(&s, &end, &["FULL", "0"], &[]).output().expect("end").into();
    assert_eq!(r.code, 1, "{}", r.stderr);
    assert!(r.stderr.contains("NOT restorable"), "{}", r.stderr);
}

#[test]
fn the_default_run_directory_survives_logout_and_root_ignores_xdg_runtime_dir() {
    let status = |uid_root: bool| -> String {
        let mut c = if uid_root { Command::new(common::bin()) } else { common::server_command(common::bin()) };
        c.arg("status").env_remove("PGBH_RUN_DIR").env("XDG_RUNTIME_DIR", "/run/user/4242");
        c.env_remove("XDG_STATE_HOME");
        let r: Ran = c.output().expect("status").into();
        r.stdout + &r.stderr
    };
    if nix::unistd::geteuid().is_root() {
        let out = status(true);
        assert!(out.contains("/run/pg-backup-hooks"), "root: {}", out);
        assert!(!out.contains("/run/user/"), "root must ignore XDG_RUNTIME_DIR: {}", out);
        // A backup user (runuser gives it its own HOME): a directory in its home.
        let user = common::server_user().expect("server user");
        let home = nix::unistd::User::from_name(&user).expect("passwd").expect("user").dir;
        let out = status(false);
        assert!(out.contains(&format!("{}/.local/state/pg-backup-hooks/run", home.display())), "user: {}", out);
    } else {
        let out = status(true);
        assert!(!out.contains("/run/user/"), "XDG_RUNTIME_DIR is emptied at logout: {}", out);
    }
}

fn amanda(s: &Setup, args: &[&str]) -> Ran {
    let mut cmd = hook_cmd(&hook("amanda"), &s.env_file);
    // Amanda passes the environment file as the script-tool's `env-file` property only.
    cmd.env_remove("PGBH_ENV_FILE");
    let env_file = s.env_file.display().to_string();
    let mut all = args.to_vec();
    all.extend(["--execute-where", "client", "--config", "daily", "--host", "localhost", "--disk", "pgdata"]);
    all.extend(["--device", "/var/lib/pg", "--timestamp", "20261123162654", "--level", "0", "--env-file", &env_file]);
    cmd.args(all).output().expect("running hooks/amanda").into()
}

#[test]
fn amanda_post_of_a_failed_dump_discards_and_a_retry_gets_the_next_attempt() {
    let s = setup("");
    // `support` comes without the env-file property: answered before anything is read.
    let mut cmd = hook_cmd(&hook("amanda"), &s.env_file);
    cmd.env_remove("PGBH_ENV_FILE").env("PGBH_BIN", common::bin()).env("HOME", s.dir.path().join("none"));
    let support: Ran = cmd.arg("support").output().expect("hooks/amanda support").into();
    let support = support.ok();
    assert!(support.stdout.lines().any(|l| l == "TIMESTAMP YES"), "{}", support.stdout);

    // Amanda fails a dump on any stderr line: progress goes to stdout.
    let r = amanda(&s, &["PRE-DLE-BACKUP"]).ok();
    assert_eq!(r.stderr, "", "stderr must stay empty when pre succeeds");
    assert!(r.stdout.contains("pre succeeded"), "{}", r.stdout);
    let first = "amanda.daily.pgdata.20261123162654.1";
    assert_eq!(s.pg.backup_sessions(first), 1);
    amanda(&s, &["POST-DLE-BACKUP", "--failed"]).ok();
    s.pg.wait_no_backup_sessions(first);
    assert!(!s.t.backup_dir(first).exists(), "a dump Amanda says failed must never get a sidecar");

    // The retry in the same run (same timestamp) is attempt 2, and is stored.
    amanda(&s, &["PRE-DLE-BACKUP"]).ok();
    amanda(&s, &["POST-DLE-BACKUP"]).ok();
    assert_eq!(s.t.manifest("amanda.daily.pgdata.20261123162654.2")["status"], "complete");

    // POST after a failed PRE finds nothing kept: nothing to do.
    let r = amanda(&s, &["POST-DLE-BACKUP"]).ok();
    assert!(r.stdout.contains("nothing to do"), "{}", r.stdout);

    // An incremental PGBH_ALLOW_LEVELS leaves out is refused with one line on stderr.
    write_env(&s.env_file, &s.t, &s.pg, "PGBH_ALLOW_LEVELS=2\n");
    let r = amanda(&s, &["PRE-DLE-BACKUP", "--level", "1"]);
    assert_eq!(r.code, 2, "{}", r.stderr);
    assert_eq!(r.stderr.lines().count(), 1, "{}", r.stderr);
    assert!(r.stderr.contains("strategy noinc"), "{}", r.stderr);
}

#[test]
fn borgmatic_post_forgets_its_id_first_so_a_following_on_error_leaves_the_sidecar() {
    let s = setup("");
    let bm = |event: &str| -> Ran {
        let args = ["hook", "borgmatic", event, "/etc/borgmatic.d/10-pgdata.yaml", "/srv/borg/db1"];
        hook_cmd(&common::bin(), &s.env_file).args(args).output().expect("hook borgmatic").into()
    };
    let stored = || -> Vec<String> {
        let entries = std::fs::read_dir(&s.t.sidecar).map(|rd| rd.flatten().collect::<Vec<_>>()).unwrap_or_default();
        entries
            .iter()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n.starts_with("borgmatic."))
            .collect()
    };
    bm("post").fails(4, "NOT restorable");
    bm("pre").ok();
    assert!(stored().is_empty(), "nothing is stored before post");
    bm("post").ok();
    // 1.7 runs on_error when anything failed, also after post: it must find nothing.
    let r = bm("abort").ok();
    assert!(r.stderr.contains("nothing to abort"), "{}", r.stderr);
    let ids = stored();
    assert_eq!(ids.len(), 1, "{:?}", ids);
    assert!(ids[0].starts_with("borgmatic.10-pgdata."), "{}", ids[0]);
    assert_eq!(s.t.manifest(&ids[0])["status"], "complete");
}
