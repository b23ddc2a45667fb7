//! `check` (issue 23) against real servers: each condition is produced for real (archiving
//! broken, a segment deleted, an old backup, a backup held open, a tampered sidecar, a node
//! stopped, a Citus worker stopped) and must get its status; a healthy cluster is OK in every
//! format, the Nagios line follows the plugin guidelines and the Prometheus file parses with
//! prometheus_client.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::common::roundtrip;
use crate::common::tool::{Ran, Tool};
use crate::common::{fake_citus_catalog, wait_until, Cluster, TestDir};

/// A cluster whose archive_command is wal-archive into `<dir>/<name>-archive`.
fn archiving(dir: &TestDir, name: &str) -> (Cluster, PathBuf) {
    let archive = dir.path().join(format!("{}-archive", name));
    (roundtrip::archiving(dir, name, &archive, None), archive)
}

/// `check` with the tool's sidecar and run directories and `args`.
fn check(t: &Tool, args: &[&str]) -> Ran {
    let (side, run) = (t.sidecar.display().to_string(), t.run_dir.display().to_string());
    let mut a = vec!["check", "--sidecar-dir", &side, "--run-dir", &run];
    a.extend_from_slice(args);
    let mut c = t.cmd(&a);
    for v in ["PGBH_ARCHIVE_DIR", "PGBH_CHECK_FORMAT", "PGBH_CHECK_OUTPUT", "PGBH_CHECK_MAX_AGE", "PGBH_DISCOVER"] {
        c.env_remove(v);
    }
    c.output().expect("running check").into()
}

/// `check --format json`: its exit code and document.
fn check_json(t: &Tool, args: &[&str]) -> (i32, serde_json::Value) {
    let mut a = vec!["--format", "json"];
    a.extend_from_slice(args);
    let r = check(t, &a);
    let v =
        serde_json::from_str(&r.stdout).unwrap_or_else(|e| panic!("{e}\nstdout: {}\nstderr: {}", r.stdout, r.stderr));
    (r.code, v)
}

/// A node's finding of one check: (status, message).
fn finding(report: &serde_json::Value, node: &str, check: &str) -> (String, String) {
    let n = report["nodes"]
        .as_array()
        .and_then(|ns| ns.iter().find(|n| n["name"] == node))
        .unwrap_or_else(|| panic!("no node {node}: {report:#}"));
    let f = n["findings"]
        .as_array()
        .and_then(|fs| fs.iter().find(|f| f["check"] == check))
        .unwrap_or_else(|| panic!("node {node} has no {check} finding: {n:#}"));
    (f["status"].as_str().unwrap_or("").to_string(), f["message"].as_str().unwrap_or("").to_string())
}

fn node_status(report: &serde_json::Value, node: &str) -> String {
    let n = report["nodes"].as_array().and_then(|ns| ns.iter().find(|n| n["name"] == node)).expect("the node");
    n["status"].as_str().unwrap_or("").to_string()
}

/// The plugin guidelines' output: one line `TEXT|PERFDATA`, each perfdata item
/// `'label'=value[UOM];[warn];[crit];[min];[max]`, UOM one of s ms us % B KB MB TB c.
fn assert_nagios(r: &Ran, code: i32, status: &str) -> String {
    assert_eq!(r.code, code, "stdout: {}\nstderr: {}", r.stdout, r.stderr);
    let lines: Vec<&str> = r.stdout.lines().collect();
    assert_eq!(lines.len(), 1, "one line: {}", r.stdout);
    let (text, perf) = lines[0].split_once('|').unwrap_or_else(|| panic!("no perfdata: {}", r.stdout));
    assert!(text.starts_with(&format!("PGBH CHECK {} - ", status)), "{}", lines[0]);
    let number = |s: &str| !s.is_empty() && s.parse::<f64>().is_ok();
    for item in perf.split(' ') {
        let (label, rest) = item.rsplit_once('=').unwrap_or_else(|| panic!("{item}: no ="));
        assert!(label.len() > 2 && label.starts_with('\'') && label.ends_with('\''), "{item}: label");
        let fields: Vec<&str> = rest.split(';').collect();
        assert_eq!(fields.len(), 5, "{item}: value;warn;crit;min;max");
        let value = fields[0];
        let digits = value.trim_end_matches(|c: char| c.is_ascii_alphabetic() || c == '%');
        let uom = &value[digits.len()..];
        assert!(number(digits), "{item}: value");
        assert!(["", "s", "ms", "us", "%", "B", "KB", "MB", "TB", "c"].contains(&uom), "{item}: UOM {uom}");
        for f in &fields[1..] {
            assert!(f.is_empty() || number(f), "{item}: threshold {f}");
        }
    }
    lines[0].to_string()
}

/// The samples of a Prometheus text file as prometheus_client parses them: (name, labels, value).
fn prometheus_samples(file: &Path) -> Vec<(String, serde_json::Value, f64)> {
    let script = r#"
import sys, json
from prometheus_client.parser import text_string_to_metric_families
out = []
for fam in text_string_to_metric_families(open(sys.argv[1]).read()):
    assert fam.type == 'gauge', fam.name
    for s in fam.samples:
        out.append([s.name, s.labels, s.value])
print(json.dumps(out))
"#;
    // Debian's python3-prometheus-client is for the system python.
    let python = if Path::new("/usr/bin/python3").exists() { "/usr/bin/python3" } else { "python3" };
    let out = Command::new(python).args(["-c", script]).arg(file).output().expect("running python3");
    assert!(out.status.success(), "prometheus_client refused the file: {}", String::from_utf8_lossy(&out.stderr));
    let v: Vec<(String, serde_json::Value, f64)> = serde_json::from_slice(&out.stdout).expect("the parser's JSON");
    v
}

fn sample(samples: &[(String, serde_json::Value, f64)], name: &str, labels: &[(&str, &str)]) -> f64 {
    samples
        .iter()
        .find(|(n, l, _)| n == name && labels.iter().all(|(k, v)| l[*k] == *v))
        .map(|s| s.2)
        .unwrap_or_else(|| panic!("no sample {name} {labels:?}: {samples:?}"))
}

/// One complete backup of `nodes` named `id`.
fn backup(t: &Tool, id: &str, nodes: &[(&str, String)]) {
    t.pre(id, nodes, &[]).ok();
    t.post(id).ok();
}

#[test]
fn a_healthy_cluster_is_ok_in_every_format_for_a_pg_monitor_role() {
    let dir = TestDir::new();
    let (pg, archive) = archiving(&dir, "pg");
    let t = Tool::new(&dir);
    backup(&t, "b1", &[("pg", pg.conninfo())]);
    roundtrip::switch_and_wait_archived(&pg);
    // check needs no superuser: pg_monitor is enough (docs/security.md).
    pg.execute("create role mon login; grant pg_monitor to mon");
    let node = format!("pg=host=127.0.0.1 port={} user=mon dbname=postgres", pg.port);
    let arch = archive.display().to_string();
    let args = ["--node", node.as_str(), "--archive-dir", arch.as_str(), "--max-age", "1h"];

    let text = check(&t, &args);
    assert_eq!(text.code, 0, "stdout: {}\nstderr: {}", text.stdout, text.stderr);
    assert!(text.stdout.starts_with("PGBH CHECK OK: 1 node(s) restorable now (pg)\nnode pg: OK\n"), "{}", text.stdout);

    let (code, report) = check_json(&t, &args);
    assert_eq!(code, 0, "{report:#}");
    assert_eq!(report["status"], "OK");
    for c in ["connect", "backup", "backup_age", "sidecar", "archive", "archiver", "archive_lag", "archive_settings"] {
        assert_eq!(finding(&report, "pg", c).0, "OK", "{c}: {report:#}");
    }
    let facts = &report["nodes"][0]["facts"];
    assert_eq!(facts["backup"]["backup_id"], "b1");
    assert!(facts["backup"]["archive"]["segments_checked"].as_u64().unwrap_or(0) >= 2, "{facts:#}");
    assert_eq!(facts["server"]["archive_dir_writable"], true, "{facts:#}");
    assert_eq!(facts["server"]["lag_segments"], 0, "{facts:#}");
    assert!(finding(&report, "pg", "archive_settings").1.contains("writable by the server's user"), "{report:#}");

    let mut nagios_args = vec!["--format", "nagios"];
    nagios_args.extend_from_slice(&args);
    let line = assert_nagios(&check(&t, &nagios_args), 0, "OK");
    assert!(line.contains("'pg_backup_age'=") && line.contains("'pg_archive_lag_segments'=0;16;128;0;"), "{line}");

    let prom = dir.path().join("textfile/pgbh.prom");
    fs::create_dir_all(prom.parent().unwrap()).unwrap();
    let p = prom.display().to_string();
    let mut prom_args = vec!["--format", "prometheus", "--output", p.as_str()];
    prom_args.extend_from_slice(&args);
    let r = check(&t, &prom_args);
    assert_eq!(r.code, 0, "stderr: {}", r.stderr);
    assert!(r.stdout.is_empty(), "the file, not stdout: {}", r.stdout);
    assert_eq!(fs::metadata(&prom).unwrap().permissions().mode() & 0o777, 0o644, "node_exporter reads it");
    let leftovers: Vec<_> = fs::read_dir(prom.parent().unwrap()).unwrap().collect();
    assert_eq!(leftovers.len(), 1, "no temporary file left: {leftovers:?}");
    let s = prometheus_samples(&prom);
    assert_eq!(sample(&s, "pgbh_check_overall_status", &[]), 0.0);
    assert_eq!(sample(&s, "pgbh_node_up", &[("node", "pg")]), 1.0);
    assert_eq!(sample(&s, "pgbh_backup_archive_complete", &[("node", "pg"), ("backup_id", "b1")]), 1.0);
    assert_eq!(sample(&s, "pgbh_backup_sidecar_valid", &[("node", "pg"), ("backup_id", "b1")]), 1.0);
    assert!(sample(&s, "pgbh_backup_age_seconds", &[("node", "pg"), ("backup_id", "b1")]) < 3600.0);
    let statuses: Vec<f64> = s.iter().filter(|x| x.0 == "pgbh_check_status").map(|x| x.2).collect();
    assert!(statuses.len() >= 8 && statuses.iter().all(|v| *v == 0.0), "{s:?}");
}

#[test]
fn failing_archive_command_is_critical_at_the_first_check_after_the_first_failure() {
    let dir = TestDir::new();
    let (pg, archive) = archiving(&dir, "pg");
    let t = Tool::new(&dir);
    backup(&t, "b1", &[("pg", pg.conninfo())]);
    let node = format!("pg={}", pg.conninfo());
    let arch = archive.display().to_string();
    let args = ["--node", node.as_str(), "--archive-dir", arch.as_str()];
    assert_eq!(check(&t, &args).code, 0);

    pg.set_archiving_works(false);
    pg.execute("create table t (x int); insert into t values (1)");
    let seg = pg.query_scalar("select pg_walfile_name(pg_switch_wal())");
    wait_until(Duration::from_secs(30), "the first failed archiving attempt", || {
        pg.query_scalar("select failed_count from pg_stat_archiver") != "0"
    });
    let (code, report) = check_json(&t, &args);
    assert_eq!(code, 2, "{report:#}");
    let (status, msg) = finding(&report, "pg", "archiver");
    assert_eq!(status, "CRITICAL", "{report:#}");
    assert!(msg.contains("archiving fails") && msg.contains(&seg), "{msg}");
    let mut nagios = vec!["--format", "nagios"];
    nagios.extend_from_slice(&args);
    let line = assert_nagios(&check(&t, &nagios), 2, "CRITICAL");
    assert!(line.contains("pg: archiving fails"), "{line}");

    // Repaired: the next check is OK again.
    pg.set_archiving_works(true);
    wait_until(Duration::from_secs(60), "archiving to recover", || {
        pg.query_scalar("select coalesce(last_archived_wal, '') from pg_stat_archiver") >= seg
    });
    let (code, report) = check_json(&t, &args);
    assert_eq!(code, 0, "{report:#}");
}

#[test]
fn a_segment_deleted_from_the_middle_of_the_archive_is_critical_and_named() {
    let dir = TestDir::new();
    let (pg, archive) = archiving(&dir, "pg");
    let t = Tool::new(&dir);
    backup(&t, "b1", &[("pg", pg.conninfo())]);
    let stop_seg = t.manifest("b1")["nodes"][0]["stop_wal_file"].as_str().expect("stop_wal_file").to_string();
    let segs: Vec<String> = (0..3).map(|_| roundtrip::switch_and_wait_archived(&pg)).collect();
    let victim = segs[1].clone();
    assert!(victim > stop_seg && victim < segs[2]);
    let node = format!("pg={}", pg.conninfo());
    let arch = archive.display().to_string();
    let args = ["--node", node.as_str(), "--archive-dir", arch.as_str()];
    assert_eq!(check(&t, &args).code, 0);
    fs::remove_file(archive.join(&victim)).expect("deleting a segment");

    let (code, report) = check_json(&t, &args);
    assert_eq!(code, 2, "{report:#}");
    let (status, msg) = finding(&report, "pg", "archive");
    assert_eq!(status, "CRITICAL");
    assert!(msg.contains(&format!("segment {} is missing", victim)), "{msg}");
    assert!(msg.contains(&format!("only up to segment {}", segs[0])), "{msg}");
    assert_eq!(report["nodes"][0]["facts"]["backup"]["archive"]["first_missing"].as_str(), Some(victim.as_str()));
}

#[test]
fn the_newest_backup_older_than_max_age_is_critical() {
    let dir = TestDir::new();
    let pg = Cluster::new(dir.path(), "pg");
    let t = Tool::new(&dir);
    backup(&t, "old", &[("pg", pg.conninfo())]);
    std::thread::sleep(Duration::from_millis(2100));
    let node = format!("pg={}", pg.conninfo());
    let arch = pg.archive_dir.display().to_string();
    let (code, report) = check_json(&t, &["--node", &node, "--archive-dir", &arch, "--max-age", "1s"]);
    assert_eq!(code, 2, "{report:#}");
    let (status, msg) = finding(&report, "pg", "backup_age");
    assert_eq!(status, "CRITICAL");
    assert!(msg.contains("newest complete backup old is") && msg.contains("more than --max-age 1s"), "{msg}");
    let (code, report) = check_json(&t, &["--node", &node, "--archive-dir", &arch, "--max-age", "1h"]);
    assert_eq!(code, 0, "{report:#}");
    assert_eq!(finding(&report, "pg", "backup_age").0, "OK");
}

#[test]
fn a_backup_held_open_past_the_threshold_warns_then_is_critical() {
    let dir = TestDir::new();
    let pg = Cluster::new(dir.path(), "pg");
    let t = Tool::new(&dir);
    let nodes = [("pg", pg.conninfo())];
    backup(&t, "done", &nodes);
    // pre without post: what a product that skips its post process leaves.
    t.pre("held", &nodes, &[]).ok();
    let node = format!("pg={}", pg.conninfo());
    let arch = pg.archive_dir.display().to_string();
    let base = ["--node", node.as_str(), "--archive-dir", arch.as_str()];
    let (code, report) = check_json(&t, &base);
    assert_eq!(code, 0, "held briefly is in progress: {report:#}");
    assert!(finding(&report, "pg", "helper").1.contains("backup held in progress"), "{report:#}");
    std::thread::sleep(Duration::from_millis(2100));

    let mut warn = base.to_vec();
    warn.extend(["--held-warn", "2s"]);
    let (code, report) = check_json(&t, &warn);
    assert_eq!(code, 1, "{report:#}");
    let (status, msg) = finding(&report, "pg", "helper");
    assert_eq!(status, "WARNING");
    assert!(msg.contains("backup held held open") && msg.contains("post or abort"), "{msg}");
    let mut crit = warn.clone();
    crit.extend(["--held-crit", "2s"]);
    let mut nagios = vec!["--format", "nagios"];
    nagios.extend_from_slice(&crit);
    let line = assert_nagios(&check(&t, &nagios), 2, "CRITICAL");
    assert!(line.contains("'pg_held'="), "{line}");

    t.abort("held").ok();
    assert_eq!(check_json(&t, &crit).0, 0, "no helper holds a backup any more");
}

#[test]
fn a_tampered_sidecar_is_critical() {
    let dir = TestDir::new();
    let pg = Cluster::new(dir.path(), "pg");
    let t = Tool::new(&dir);
    backup(&t, "b1", &[("pg", pg.conninfo())]);
    let node = format!("pg={}", pg.conninfo());
    let arch = pg.archive_dir.display().to_string();
    let args = ["--node", node.as_str(), "--archive-dir", arch.as_str()];
    assert_eq!(check(&t, &args).code, 0);
    let label = t.backup_dir("b1").join("pg/backup_label");
    let mut text = fs::read_to_string(&label).expect("the label");
    text = text.replace("BACKUP METHOD: streamed", "BACKUP METHOD: streamed ");
    fs::write(&label, text).expect("tampering");
    let (code, report) = check_json(&t, &args);
    assert_eq!(code, 2, "{report:#}");
    let (status, msg) = finding(&report, "pg", "sidecar");
    assert_eq!(status, "CRITICAL");
    assert!(msg.contains("does not match its sha256"), "{msg}");
}

#[test]
fn a_node_that_is_down_is_critical_and_named_and_the_others_are_still_checked() {
    let dir = TestDir::new();
    let n1 = Cluster::new(dir.path(), "n1");
    let n2 = Cluster::new(dir.path(), "n2");
    let t = Tool::new(&dir);
    backup(&t, "b1", &[("n1", n1.conninfo()), ("n2", n2.conninfo())]);
    n2.stop("fast");
    let (a1, a2) = (format!("n1={}", n1.archive_dir.display()), format!("n2={}", n2.archive_dir.display()));
    let (c1, c2) = (format!("n1={}", n1.conninfo()), format!("n2={}", n2.conninfo()));
    let args =
        ["--node", c1.as_str(), "--node", c2.as_str(), "--archive-dir", a1.as_str(), "--archive-dir", a2.as_str()];
    let (code, report) = check_json(&t, &args);
    assert_eq!(code, 2, "{report:#}");
    let (status, msg) = finding(&report, "n2", "connect");
    assert_eq!(status, "CRITICAL");
    assert!(msg.contains("cannot be reached") && msg.contains(&n2.port.to_string()), "{msg}");
    assert_eq!(node_status(&report, "n1"), "OK", "{report:#}");
    // What the files say is still judged for the node that is down.
    assert_eq!(finding(&report, "n2", "archive").0, "OK", "{report:#}");
    let mut nagios = vec!["--format", "nagios"];
    nagios.extend_from_slice(&args);
    let line = assert_nagios(&check(&t, &nagios), 2, "CRITICAL");
    assert!(line.contains("n2: cannot be reached"), "{line}");
    let prom = dir.path().join("check.prom");
    let p = prom.display().to_string();
    let mut prom_args = vec!["--format", "prometheus", "--output", p.as_str()];
    prom_args.extend_from_slice(&args);
    assert_eq!(check(&t, &prom_args).code, 2);
    let s = prometheus_samples(&prom);
    assert_eq!(sample(&s, "pgbh_node_up", &[("node", "n2")]), 0.0);
    assert_eq!(sample(&s, "pgbh_node_up", &[("node", "n1")]), 1.0);
    assert_eq!(sample(&s, "pgbh_check_status", &[("node", "n2"), ("check", "connect")]), 2.0);
}

#[test]
fn citus_discovery_with_a_worker_down_names_the_worker_group() {
    let dir = TestDir::new();
    let coord = Cluster::new(dir.path(), "coord");
    let w1 = Cluster::new(dir.path(), "w1");
    let w2 = Cluster::new(dir.path(), "w2");
    let t = Tool::new(&dir);
    fake_citus_catalog(&coord, &[(1, 1, w1.port, "primary", true), (2, 2, w2.port, "primary", true)]);
    t.pre("disc", &[("coordinator", coord.conninfo())], &["--discover", "citus"]).ok();
    t.post("disc").ok();
    let c = format!("coordinator={}", coord.conninfo());
    let archives: Vec<String> = [("coordinator", &coord), ("group-1", &w1), ("group-2", &w2)]
        .iter()
        .map(|(n, pg)| format!("{}={}", n, pg.archive_dir.display()))
        .collect();
    let mut args = vec!["--node", c.as_str(), "--discover", "citus"];
    for a in &archives {
        args.extend(["--archive-dir", a.as_str()]);
    }
    let (code, report) = check_json(&t, &args);
    assert_eq!(code, 0, "{report:#}");
    w2.stop("fast");
    let (code, report) = check_json(&t, &args);
    assert_eq!(code, 2, "{report:#}");
    let names: Vec<&str> = report["nodes"].as_array().unwrap().iter().filter_map(|n| n["name"].as_str()).collect();
    assert_eq!(names, ["coordinator", "group-1", "group-2"]);
    let (status, msg) = finding(&report, "group-2", "connect");
    assert_eq!(status, "CRITICAL");
    assert!(msg.contains(&w2.port.to_string()), "{msg}");
    assert_eq!(node_status(&report, "coordinator"), "OK", "{report:#}");
    assert_eq!(node_status(&report, "group-1"), "OK", "{report:#}");
    // The coordinator down: discovery cannot run, and the coordinator is named.
    coord.stop("fast");
    let (code, report) = check_json(&t, &args);
    assert_eq!(code, 2, "{report:#}");
    assert_eq!(finding(&report, "coordinator", "connect").0, "CRITICAL", "{report:#}");
}

#[test]
fn a_segment_of_another_cluster_in_the_run_is_critical() {
    let dir = TestDir::new();
    let (pg, archive) = archiving(&dir, "pg");
    let other = Cluster::new(dir.path(), "other");
    let t = Tool::new(&dir);
    backup(&t, "b1", &[("pg", pg.conninfo())]);
    let segs: Vec<String> = (0..2).map(|_| roundtrip::switch_and_wait_archived(&pg)).collect();
    // The other cluster's segment put in under this one's name (a copy from the wrong host).
    let theirs = crate::common::roundtrip::switch_and_wait(&other);
    fs::remove_file(archive.join(&segs[0])).expect("removing");
    fs::copy(other.archive_dir.join(&theirs), archive.join(&segs[0])).expect("copying");
    let node = format!("pg={}", pg.conninfo());
    let arch = archive.display().to_string();
    let (code, report) = check_json(&t, &["--node", &node, "--archive-dir", &arch]);
    assert_eq!(code, 2, "{report:#}");
    let (status, msg) = finding(&report, "pg", "archive");
    assert_eq!(status, "CRITICAL");
    let their_sysid = other.query_scalar("select system_identifier from pg_control_system()");
    assert!(msg.contains(&format!("segment {} has system identifier {}", segs[0], their_sysid)), "{msg}");
}

#[test]
fn an_archive_directory_the_server_cannot_write_and_a_newer_archive_pending_backup_are_reported() {
    let dir = TestDir::new();
    let (pg, archive) = archiving(&dir, "pg");
    let t = Tool::new(&dir);
    let nodes = [("pg", pg.conninfo())];
    backup(&t, "b1", &nodes);
    std::thread::sleep(Duration::from_millis(1100));
    // wal-archive can no longer write: post cannot finish, the sidecar is archive-pending.
    fs::set_permissions(&archive, fs::Permissions::from_mode(0o555)).expect("chmod");
    t.pre("b2", &nodes, &[]).ok();
    t.with_run("post", "b2", &["--archive-timeout", "2"]).fails(3, "NOT restorable yet");
    let node = format!("pg={}", pg.conninfo());
    let arch = archive.display().to_string();
    let (code, report) = check_json(&t, &["--node", &node, "--archive-dir", &arch]);
    assert_eq!(code, 2, "{report:#}");
    let (status, msg) = finding(&report, "pg", "archive_settings");
    assert_eq!(status, "CRITICAL", "{report:#}");
    assert!(msg.contains("wal-archive cannot write") && msg.contains("not writable by the server's user"), "{msg}");
    let (status, msg) = finding(&report, "pg", "backup");
    assert_eq!(status, "WARNING", "{report:#}");
    assert!(msg.contains("b2 are archive-pending") && msg.contains("newest complete backup b1"), "{msg}");
    assert_eq!(finding(&report, "pg", "archiver").0, "CRITICAL", "{report:#}");
    fs::set_permissions(&archive, fs::Permissions::from_mode(0o755)).expect("chmod");
}

#[test]
fn nagios_says_unknown_when_it_cannot_check_at_all() {
    let dir = TestDir::new();
    let t = Tool::new(&dir);
    let r = check(&t, &["--format", "nagios", "--node", "no-equals-sign"]);
    assert_eq!(r.code, 3, "stdout: {}\nstderr: {}", r.stdout, r.stderr);
    assert!(r.stdout.starts_with("PGBH CHECK UNKNOWN - a --node value has no \"=\""), "{}", r.stdout);
    assert_eq!(r.stdout.lines().count(), 1);
    // The other formats: a usage error as every command gives one.
    check(&t, &["--node", "no-equals-sign"]).fails(2, "a --node value has no \"=\"");
}
