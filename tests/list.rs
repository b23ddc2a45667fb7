//! `list` on real backups: one complete, one whose sidecar was deleted (known from the
//! archive only), one archive-pending (archiving broken at post time).

use std::time::Duration;

use crate::common::roundtrip::switch_and_wait;
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
    assert_eq!(full["restorable"], true, "{full:#}");
    let window = &full["nodes"][0]["archive"]["window"];
    assert_eq!(window["from_lsn"], t.manifest("full")["nodes"][0]["stop_lsn"]);
    // Archiving broke for "pending": the newest segment without a gap is the last one archived.
    let newest = pg.archived_files().into_iter().filter(|n| n.len() == 24).max().expect("segments");
    assert_eq!(window["newest_segment"].as_str(), Some(newest.as_str()), "{window:#}");
    assert!(window["to_time"].as_str().is_some_and(|t| t.ends_with('Z')), "{window:#}");

    assert_eq!(lost["status"], "complete");
    assert_eq!(lost["sidecar_present"], false);
    assert_eq!(lost["label_in_archive"], true);
    assert_eq!(lost["nodes"][0]["backup_history_file"].as_str(), Some(lost_history.as_str()));
    assert_eq!(lost["nodes"][0]["system_identifier"].as_str(), Some(sysid.as_str()));
    assert!(lost["stopped_at"].as_str().is_some_and(|s| !s.is_empty()), "{lost:#}");
    assert_eq!(lost["nodes"][0]["name"], "default", "named as its cluster is in another sidecar: {lost:#}");
    assert_eq!(lost["restorable"], true, "{lost:#}");
    // Whether restore-prep can verify a restored copy's files: the sidecar's inventory.
    assert_eq!(full["nodes"][0]["inventory_source"], "local", "{full:#}");
    assert_eq!(lost["nodes"][0]["inventory_source"], serde_json::Value::Null, "{lost:#}");
    assert_eq!(lost["nodes"][0]["inventory_note"], "the archive holds no inventory", "{lost:#}");
    // Sidecar and history file times are printed alike: RFC 3339 in UTC, whole seconds.
    for e in [full, lost] {
        for k in ["started_at", "stopped_at"] {
            let v = e[k].as_str().unwrap_or("");
            assert!(chrono::DateTime::parse_from_rfc3339(v).is_ok() && v.ends_with('Z') && v.len() == 20, "{k}: {v}");
        }
    }

    assert_eq!(pending["status"], "archive-pending");
    assert_eq!(pending["sidecar_present"], true);
    assert_eq!(pending["label_in_archive"], false, "its history file never reached the archive");
    assert_eq!(pending["nodes"][0]["start_lsn"], t.manifest("pending")["nodes"][0]["start_lsn"]);
    assert_eq!(pending["restorable"], false);
    let missing = pending["nodes"][0]["archive"]["first_missing"].as_str().unwrap_or("");
    assert!(missing > newest.as_str(), "the first missing segment follows the newest archived: {pending:#}");

    // Sidecar only: the lost one is unknown; archive only: the pending one is unknown.
    let side_only = list_json(&t, &["--sidecar-dir", &side]);
    assert_eq!(
        side_only.iter().map(|e| e["backup_id"].as_str().unwrap_or("?")).collect::<Vec<_>>(),
        ["pending", "full"]
    );
    assert!(side_only.iter().all(|e| e["label_in_archive"].is_null() && e["restorable"].is_null()), "nobody looked");
    let text = t.run(&["list", "--sidecar-dir", &side]).ok().stdout;
    assert!(text.contains("label in archive: not checked (no --archive-dir)") && !text.contains(": no "), "{text}");
    assert!(text.contains("    files: inventory (local): restore-prep verifies a restored copy"), "{text}");
    let arch_only = list_json(&t, &["--archive-dir", &arch]);
    assert_eq!(arch_only.iter().map(|e| e["backup_id"].as_str().unwrap_or("?")).collect::<Vec<_>>(), ["lost", "full"]);

    let text = t.run(&["list", "--sidecar-dir", &side, "--archive-dir", &arch]).ok().stdout;
    let heads: Vec<&str> = text.lines().filter(|l| !l.starts_with(' ')).collect();
    assert!(heads[0].starts_with("pending  archive-pending") && heads[0].contains("label in archive: no"), "{text}");
    assert!(heads[1].starts_with("lost  complete") && heads[1].contains("sidecar: no"), "{text}");
    assert!(heads[0].ends_with("restorable: no") && heads[1].ends_with("restorable: yes"), "{text}");
    assert!(!text.contains("node ?"), "{text}");
    assert!(
        text.contains(&format!("restorable; recovery window {}", full["stopped_at"].as_str().unwrap_or("?"))),
        "{text}"
    );
    assert!(
        heads[2].starts_with("full  complete") && heads[2].contains("sidecar: yes  label in archive: yes"),
        "{text}"
    );
    t.run(&["list"]).fails(2, "--sidecar-dir");
    t.abort("pending");
}

#[test]
fn a_gap_in_the_archive_ends_the_window_and_a_gap_inside_a_backup_makes_it_unrestorable() {
    let dir = TestDir::new();
    let pg = Cluster::new(dir.path(), "pg");
    let t = Tool::new(&dir);
    let node = [("default", pg.conninfo())];
    pg.execute("create table t (id int)");
    t.pre("a", &node, &[]).ok();
    t.post("a").ok();
    for _ in 0..3 {
        pg.execute("insert into t values (1)");
        switch_and_wait(&pg);
    }
    std::thread::sleep(Duration::from_millis(1100));
    t.pre("b", &node, &[]).ok();
    t.post("b").ok();
    pg.execute("insert into t values (2)");
    switch_and_wait(&pg);
    let file = |id: &str, k: &str| t.manifest(id)["nodes"][0][k].as_str().expect("a WAL file").to_string();
    let (a_stop, b_start) = (file("a", "stop_wal_file"), file("b", "start_wal_file"));
    let segments: Vec<String> = pg.archived_files().into_iter().filter(|n| n.len() == 24).collect();
    let between: Vec<&String> = segments.iter().filter(|n| **n > a_stop && **n < b_start).collect();
    let gap = between.first().expect("segments between the backups").to_string();
    let before_gap = segments.iter().filter(|n| **n < gap).max().expect("a segment before the gap").clone();
    std::fs::remove_file(pg.archive_dir.join(&gap)).expect("making a gap");

    let (side, arch) = (t.sidecar.display().to_string(), pg.archive_dir.display().to_string());
    let all = list_json(&t, &["--sidecar-dir", &side, "--archive-dir", &arch]);
    let (b, a) = (&all[0], &all[1]);
    assert_eq!((a["backup_id"].as_str(), b["backup_id"].as_str()), (Some("a"), Some("b")));
    assert_eq!(a["restorable"], true, "{a:#}");
    assert_eq!(a["nodes"][0]["archive"]["window"]["newest_segment"].as_str(), Some(before_gap.as_str()), "{a:#}");
    let newest = segments.iter().max().expect("segments");
    assert_eq!(b["nodes"][0]["archive"]["window"]["newest_segment"].as_str(), Some(newest.as_str()), "{b:#}");

    std::fs::remove_file(pg.archive_dir.join(&b_start)).expect("removing b's start segment");
    let all = list_json(&t, &["--sidecar-dir", &side, "--archive-dir", &arch]);
    assert_eq!(all[0]["restorable"], false, "{:#}", all[0]);
    assert_eq!(all[0]["nodes"][0]["archive"]["first_missing"].as_str(), Some(b_start.as_str()));
    let text = t.run(&["list", "--sidecar-dir", &side, "--archive-dir", &arch]).ok().stdout;
    assert!(text.contains(&format!("segment {b_start} is missing: not restorable from it")), "{text}");
}
