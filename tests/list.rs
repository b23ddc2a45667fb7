//! `list` on real backups: one complete, one whose sidecar was deleted (known from the
//! archive only), one archive-pending (archiving broken at post time).

use std::time::Duration;

use crate::common::tool::Tool;
use crate::common::{Cluster, TestDir};

fn list_json(t: &Tool, args: &[&str]) -> Vec<serde_json::Value> {
    let mut a = vec!["list", "--json"];
    a.extend_from_slice(args);
    let r = t.run(&a).ok();
    let v: serde_json::Value = serde_json::from_str(&r.stdout).unwrap_or_else(|e| panic!("{e}: {}", r.stdout));
    v.as_array().expect("a JSON array").clone()
}

#[test]
fn lists_complete_lost_sidecar_and_archive_pending_backups_newest_first() {
    let dir = TestDir::new();
    let pg = Cluster::new(dir.path(), "pg");
    let t = Tool::new(&dir);
    let node = [("default", pg.conninfo())];
    // Start times have whole seconds in history files: keep the backups apart.
    let gap = || std::thread::sleep(Duration::from_millis(1100));
    t.pre("full", &node, &[]).ok();
    t.post("full").ok();
    gap();
    t.pre("lost", &node, &[]).ok();
    t.post("lost").ok();
    let lost_history = t.manifest("lost")["nodes"][0]["backup_history_file"].as_str().expect("history").to_string();
    std::fs::remove_dir_all(t.backup_dir("lost")).expect("deleting a sidecar");
    gap();
    t.pre("pending", &node, &[]).ok();
    pg.set_archiving_works(false);
    t.with_run("post", "pending", &["--archive-timeout", "2"]).fails(3, "NOT restorable yet");

    let side = t.sidecar.display().to_string();
    let arch = pg.archive_dir.display().to_string();
    let all = list_json(&t, &["--sidecar-dir", &side, "--archive-dir", &arch]);
    let ids: Vec<&str> = all.iter().map(|e| e["backup_id"].as_str().unwrap_or("?")).collect();
    assert_eq!(ids, ["pending", "lost", "full"], "newest first: {all:#?}");
    let sysid = pg.query_scalar("select system_identifier from pg_control_system()");

    let (pending, lost, full) = (&all[0], &all[1], &all[2]);
    assert_eq!(full["status"], "complete");
    assert_eq!(full["sidecar_present"], true);
    assert_eq!(full["label_in_archive"], true);
    assert_eq!(full["nodes"].as_array().map(Vec::len), Some(1), "sidecar and archive merged into one node: {full:#}");
    assert_eq!(full["nodes"][0]["name"], "default");
    assert_eq!(full["nodes"][0]["system_identifier"].as_str(), Some(sysid.as_str()));

    assert_eq!(lost["status"], "complete");
    assert_eq!(lost["sidecar_present"], false);
    assert_eq!(lost["label_in_archive"], true);
    assert_eq!(lost["nodes"][0]["backup_history_file"].as_str(), Some(lost_history.as_str()));
    assert_eq!(lost["nodes"][0]["system_identifier"].as_str(), Some(sysid.as_str()));
    assert!(lost["stopped_at"].as_str().is_some_and(|s| !s.is_empty()), "{lost:#}");

    assert_eq!(pending["status"], "archive-pending");
    assert_eq!(pending["sidecar_present"], true);
    assert_eq!(pending["label_in_archive"], false, "its history file never reached the archive");
    assert_eq!(pending["nodes"][0]["start_lsn"], t.manifest("pending")["nodes"][0]["start_lsn"]);

    // Sidecar only: the lost one is unknown; archive only: the pending one is unknown.
    let side_only = list_json(&t, &["--sidecar-dir", &side]);
    assert_eq!(
        side_only.iter().map(|e| e["backup_id"].as_str().unwrap_or("?")).collect::<Vec<_>>(),
        ["pending", "full"]
    );
    assert!(side_only.iter().all(|e| e["label_in_archive"] == false));
    let arch_only = list_json(&t, &["--archive-dir", &arch]);
    assert_eq!(arch_only.iter().map(|e| e["backup_id"].as_str().unwrap_or("?")).collect::<Vec<_>>(), ["lost", "full"]);

    let text = t.run(&["list", "--sidecar-dir", &side, "--archive-dir", &arch]).ok().stdout;
    let heads: Vec<&str> = text.lines().filter(|l| !l.starts_with(' ')).collect();
    assert!(heads[0].starts_with("pending  archive-pending") && heads[0].contains("label in archive: no"), "{text}");
    assert!(heads[1].starts_with("lost  complete") && heads[1].contains("sidecar: no"), "{text}");
    assert!(
        heads[2].starts_with("full  complete") && heads[2].contains("sidecar: yes  label in archive: yes"),
        "{text}"
    );
    t.run(&["list"]).fails(2, "--sidecar-dir");
    t.abort("pending");
}
