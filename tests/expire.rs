//! `expire` end to end (issue 22): six backups over two timelines of a server archiving through
//! wal-archive, ages faked on the helper's clock with libfaketime (a backup's age is the start
//! time its manifest records); then `--keep-backups 3` while the archiver keeps writing, the
//! three newest restored to latest and to backup-end, the three oldest refused as expired. Also:
//! a gap stops expire, and post's expire path never fails the job.

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crate::common::roundtrip::{
    archiving, restore_copy, start_and_wait_promoted, switch_and_wait_archived, tar_create, tar_extract,
};
use crate::common::tool::{Ran, Tool};
use crate::common::{Cluster, TestDir};

const LIBFAKETIME: &str = "/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1";

/// `pre` of backup `id` with the helper's wall clock `days` days in the past (libfaketime;
/// monotonic clocks left alone, so timeouts stay real).
fn pre_days_ago(t: &Tool, id: &str, pg: &Cluster, days: u32) -> Ran {
    let (side, run) = (t.sidecar.display().to_string(), t.run_dir.display().to_string());
    let node = format!("default={}", pg.conninfo());
    let mut cmd =
        t.cmd(&["pre", "--backup-id", id, "--sidecar-dir", &side, "--run-dir", &run, "--fast", "--node", &node]);
    if days > 0 {
        cmd.env("LD_PRELOAD", LIBFAKETIME)
            .env("FAKETIME", format!("-{days}d"))
            .env("FAKETIME_DONT_FAKE_MONOTONIC", "1");
    }
    cmd.output().expect("running pre").into()
}

fn json(r: &Ran) -> serde_json::Value {
    serde_json::from_str(&r.stdout).unwrap_or_else(|e| panic!("{e}: {}\nstderr: {}", r.stdout, r.stderr))
}

fn ids(v: &serde_json::Value) -> Vec<String> {
    let mut v: Vec<String> =
        v.as_array().expect("an array").iter().map(|x| x.as_str().expect("an id").to_string()).collect();
    v.sort();
    v
}

/// The names in `dir`, but hidden ones (expire's lock, wal-archive's writes in progress).
fn names(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| !n.starts_with('.'))
        .collect();
    v.sort();
    v
}

/// restore-prep of `id` over `pg`'s data directory from its archive, archiving off, to
/// `target`, as root over the server user's tree.
fn restore_prep(t: &Tool, id: &str, sidecar: &Path, pg: &Cluster, target: &str) -> Ran {
    crate::common::chown_to_server_user(&pg.datadir);
    let r = t.restore_prep_with(id, sidecar, pg, &["--target", target]);
    crate::common::chown_to_server_user(&pg.datadir);
    r
}

fn marks(pg: &Cluster) -> String {
    pg.query_scalar("select string_agg(b, ',' order by n) from marks")
}

#[test]
fn six_backups_on_two_timelines_days_faked_by_libfaketime_keep_3_restores_the_newest_and_refuses_the_oldest_as_expired()
{
    if !Path::new(LIBFAKETIME).exists() {
        // CI installs faketime with Bacula (.ci/install-bacula.sh): there it must run.
        assert!(std::env::var_os("PGBH_REQUIRE_BACULA").is_none(), "libfaketime is missing: {LIBFAKETIME}");
        return crate::common::skip("libfaketime is not installed (apt-get install faketime)");
    }
    let dir = TestDir::new();
    let t = Tool::new(&dir);
    let archive = dir.path().join("archive");
    let mut pg = archiving(&dir, "pg", &archive, Some("zstd"));
    pg.archive_dir = archive.clone();
    pg.execute("create table marks (n serial primary key, b text not null); create table during (x int)");
    let ages = [6, 5, 4, 2, 1, 0];
    let mut tars: Vec<PathBuf> = Vec::new();
    let mut at_backup: Vec<String> = Vec::new();
    for (i, days) in ages.iter().enumerate() {
        let id = format!("b{}", i + 1);
        if i == 4 {
            // Timeline 2: b4's copy restored to latest and promoted becomes the primary, and
            // archives into the same directory (its history file, TL1's .partial, TL2).
            pg.execute("insert into marks (b) values ('after-b4')");
            switch_and_wait_archived(&pg);
            restore_copy(&pg, &tars[3]);
            crate::common::chown_to_server_user(&pg.datadir);
            let (s, d, a) =
                (t.sidecar.display().to_string(), pg.datadir.display().to_string(), archive.display().to_string());
            t.run(&["restore-prep", "--backup-id", "b4", "--sidecar-dir", &s, "--pgdata", &d, "--archive-dir", &a])
                .ok();
            crate::common::chown_to_server_user(&pg.datadir);
            start_and_wait_promoted(&pg);
            assert_eq!(pg.query_scalar("select timeline_id from pg_control_checkpoint()"), "2");
            assert_eq!(marks(&pg), "b1,b2,b3,b4,after-b4", "the promoted restore has every row");
        }
        pg.execute(&format!("insert into marks (b) values ('{id}')"));
        at_backup.push(marks(&pg));
        pre_days_ago(&t, &id, &pg, *days).ok();
        let tar = dir.path().join(format!("{id}.tar"));
        tar_create(&pg.datadir, &tar);
        // A backup spans several segments.
        pg.execute("insert into during values (0)");
        pg.query_scalar("select pg_switch_wal()");
        t.post(&id).ok();
        tars.push(tar);
    }
    assert!(names(&archive).iter().any(|n| n.starts_with("00000002.history")), "{:?}", names(&archive));
    let started = t.manifest("b1")["started_at"].as_str().expect("started_at").to_string();
    assert!(started < chrono_days_ago(5), "the faked clock made b1 six days old: {started}");

    // The backup program keeps the oldest three longer than expire is told to: their sidecars.
    let program = dir.path().join("program-copy");
    fs::create_dir(&program).unwrap();
    for id in ["b1", "b2", "b3"] {
        let o = std::process::Command::new("cp").arg("-a").arg(t.backup_dir(id)).arg(&program).output().unwrap();
        assert!(o.status.success());
    }

    let (side, arch) = (t.sidecar.display().to_string(), archive.display().to_string());
    let before = names(&archive);
    let plan = t
        .run(&["expire", "--archive-dir", &arch, "--sidecar-dir", &side, "--keep-days", "3", "--dry-run", "--json"])
        .ok();
    let plan = json(&plan);
    assert_eq!(ids(&plan["kept"]), ["b4", "b5", "b6"], "{plan:#}");
    assert_eq!(ids(&plan["expired"]), ["b1", "b2", "b3"], "{plan:#}");
    assert_eq!(names(&archive), before, "--dry-run removes nothing");

    // The archiver keeps writing while expire runs (and runs again).
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let (stop, conninfo) = (stop.clone(), pg.conninfo());
        std::thread::spawn(move || {
            let mut c = postgres::Client::connect(&conninfo, postgres::NoTls).expect("connect");
            let mut n = 0;
            while !stop.load(Ordering::SeqCst) {
                n += 1;
                c.execute("insert into during values ($1)", &[&n]).expect("insert");
                c.query_one("select pg_switch_wal()", &[]).expect("switch");
                std::thread::sleep(Duration::from_millis(50));
            }
            n
        })
    };
    std::thread::sleep(Duration::from_millis(300));
    let done =
        json(&t.run(&["expire", "--archive-dir", &arch, "--sidecar-dir", &side, "--keep-backups", "3", "--json"]).ok());
    assert_eq!(ids(&done["expired"]), ["b1", "b2", "b3"], "{done:#}");
    for _ in 0..5 {
        let again = json(
            &t.run(&["expire", "--archive-dir", &arch, "--sidecar-dir", &side, "--keep-backups", "3", "--json"]).ok(),
        );
        assert_eq!(
            ids(&again["expired"]),
            Vec::<String>::new(),
            "a second run finds nothing more to expire: {again:#}"
        );
    }
    stop.store(true, Ordering::SeqCst);
    let written: i32 = writer.join().expect("writer");
    assert!(written > 3, "the archiver wrote during expire");
    let last = switch_and_wait_archived(&pg);
    assert_eq!(pg.query_scalar("select failed_count from pg_stat_archiver"), "0");
    let final_marks = marks(&pg);
    let final_during = pg.query_scalar("select count(*) from during");

    for id in ["b1", "b2", "b3"] {
        assert!(!t.backup_dir(id).exists(), "expire removed the sidecar of {id}");
    }
    let after = names(&archive);
    let field = |m: &serde_json::Value, k: &str| m["nodes"][0][k].as_str().expect(k).to_string();
    let b4_start = field(&t.manifest("b4"), "start_wal_file");
    let old: Vec<&String> = after.iter().filter(|n| n.len() >= 24 && n[..24] < *b4_start).collect();
    assert!(old.is_empty(), "segments older than the oldest kept backup's start are gone: {old:?}");
    assert!(
        after.iter().any(|n| n == &b4_start || n.starts_with(&format!("{b4_start}."))),
        "{b4_start} is kept: {after:?}"
    );
    assert!(after.iter().any(|n| n.starts_with("00000002.history")), "history files are kept: {after:?}");
    for id in ["b4", "b5", "b6"] {
        let h = field(&t.manifest(id), "backup_history_file");
        assert!(after.iter().any(|n| n.starts_with(&h)), "{id}'s {h} is kept: {after:?}");
    }
    for id in ["b1", "b2", "b3"] {
        let m: serde_json::Value =
            serde_json::from_str(&fs::read_to_string(program.join(id).join("manifest.json")).unwrap()).unwrap();
        let h = field(&m, "backup_history_file");
        assert!(!after.iter().any(|n| n.starts_with(&h)), "{id}'s {h} is removed: {after:?}");
    }
    // Nothing the archiver wrote during expire is lost: list sees every kept backup restorable,
    // its window reaching the last segment archived.
    let list = json(&t.run(&["list", "--json", "--sidecar-dir", &side, "--archive-dir", &arch]).ok());
    let listed: Vec<&str> = list.as_array().unwrap().iter().map(|e| e["backup_id"].as_str().unwrap()).collect();
    assert_eq!(listed, ["b6", "b5", "b4"], "{list:#}");
    for e in list.as_array().unwrap() {
        assert_eq!(e["restorable"], true, "{e:#}");
        assert_eq!(e["nodes"][0]["archive"]["window"]["newest_segment"].as_str(), Some(last.as_str()), "{e:#}");
    }

    pg.stop("fast");
    let stopped = names(&archive);

    // The three newest restore, to latest (b4 crosses to timeline 2) and to their end.
    for (i, id) in [(3, "b4"), (4, "b5"), (5, "b6")] {
        for target in ["latest", "backup-end"] {
            restore_copy(&pg, &tars[i]);
            restore_prep(&t, id, &t.sidecar, &pg, target).ok();
            start_and_wait_promoted(&pg);
            t.restore_check_proves(id, &t.sidecar, &pg);
            if target == "latest" {
                assert_eq!(marks(&pg), final_marks, "{id} to latest has every row");
                assert_eq!(pg.query_scalar("select count(*) from during"), final_during, "{id} to latest");
            } else {
                assert_eq!(marks(&pg), at_backup[i], "{id} to its end has the rows of its time");
            }
        }
    }
    // The three oldest, their sidecars restored from the backup program: refused as expired.
    pg.stop("fast");
    for (i, id) in [(0, "b1"), (1, "b2"), (2, "b3")] {
        fs::remove_dir_all(&pg.datadir).unwrap();
        tar_extract(&tars[i], &pg.root);
        let r = restore_prep(&t, id, &program, &pg, "latest");
        assert_eq!(r.code, 1, "{id} is refused\nstdout: {}\nstderr: {}", r.stdout, r.stderr);
        assert!(r.stderr.contains(&format!("backup {id} has expired")), "{id}: {}", r.stderr);
        assert!(!pg.datadir.join("backup_label").exists(), "a refusal writes nothing");
    }
    assert_eq!(names(&archive), stopped, "the test restores (archiving off) archived nothing");
}

fn chrono_days_ago(days: i64) -> String {
    let secs = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64;
    let o = std::process::Command::new("date")
        .args(["-u", "-d"])
        .arg(format!("@{}", secs - days * 86_400))
        .arg("+%Y-%m-%dT%H:%M:%S")
        .output()
        .unwrap();
    String::from_utf8_lossy(&o.stdout).trim().to_string()
}

#[test]
fn a_gap_that_makes_the_newest_backup_unrestorable_stops_expire_and_nothing_is_removed() {
    let dir = TestDir::new();
    let t = Tool::new(&dir);
    let archive = dir.path().join("archive");
    let mut pg = archiving(&dir, "pg", &archive, None);
    pg.archive_dir = archive.clone();
    for id in ["old", "new"] {
        pre_days_ago(&t, id, &pg, 0).ok();
        for _ in 0..3 {
            switch_and_wait_archived(&pg);
        }
        t.post(id).ok();
        std::thread::sleep(Duration::from_millis(1100));
    }
    let m = t.manifest("new");
    let start = m["nodes"][0]["start_wal_file"].as_str().expect("start_wal_file");
    // The segment after the newest backup's first one: inside the backup.
    let gone = format!("{}{:08X}", &start[..16], u32::from_str_radix(&start[16..], 16).unwrap() + 1);
    fs::remove_file(archive.join(&gone)).expect("removing a segment inside the newest backup");
    let before = names(&archive);
    let (side, arch) = (t.sidecar.display().to_string(), archive.display().to_string());
    let r = t.run(&["expire", "--archive-dir", &arch, "--sidecar-dir", &side, "--keep-backups", "1"]);
    assert_eq!(r.code, 1, "expire refuses\nstdout: {}\nstderr: {}", r.stdout, r.stderr);
    assert!(r.stderr.contains(&gone), "the refusal names the missing segment {gone}: {}", r.stderr);
    assert_eq!(names(&archive), before, "nothing is removed from the archive");
    assert!(t.backup_dir("old").exists() && t.backup_dir("new").exists(), "no sidecar is removed");
}

#[test]
fn post_expires_after_storing_when_keep_backups_is_set_and_a_refusing_or_misconfigured_expire_never_fails_the_job() {
    let dir = TestDir::new();
    let t = Tool::new(&dir);
    let archive = dir.path().join("archive");
    let mut pg = archiving(&dir, "pg", &archive, None);
    pg.archive_dir = archive.clone();
    let arch = archive.display().to_string();
    let post = |id: &str, env: &[(&str, &str)]| -> Ran {
        let run = t.run_dir.display().to_string();
        let mut c = t.cmd(&["post", "--backup-id", id, "--run-dir", &run]);
        c.env("PGBH_ARCHIVE_DIR", &arch);
        for (k, v) in env {
            c.env(k, v);
        }
        c.output().expect("post").into()
    };
    for id in ["b1", "b2"] {
        pre_days_ago(&t, id, &pg, 0).ok();
        switch_and_wait_archived(&pg);
        post(id, &[]).ok();
        std::thread::sleep(Duration::from_millis(1100));
    }
    let b1_start = t.manifest("b1")["nodes"][0]["start_wal_file"].as_str().unwrap().to_string();
    assert!(names(&archive).contains(&b1_start));

    pre_days_ago(&t, "b3", &pg, 0).ok();
    let r = post("b3", &[("PGBH_EXPIRE_KEEP_BACKUPS", "1")]).ok();
    assert!(t.backup_dir("b3").join("manifest.json").exists(), "b3 is stored");
    assert!(!t.backup_dir("b1").exists() && !t.backup_dir("b2").exists(), "post expired b1 and b2\n{}", r.stdout);
    assert!(!names(&archive).contains(&b1_start), "and b1's WAL");
    assert!(
        r.stdout.contains("expired: b2 b1") || r.stdout.contains("expired: b1 b2"),
        "post says what it expired: {}",
        r.stdout
    );

    // A directory that is not a plain archive: expire refuses; post still succeeds.
    fs::write(archive.join("notes.txt"), "mine").unwrap();
    std::thread::sleep(Duration::from_millis(1100));
    pre_days_ago(&t, "b4", &pg, 0).ok();
    let r = post("b4", &[("PGBH_EXPIRE_KEEP_BACKUPS", "1")]).ok();
    assert!(r.stderr.contains("warning: expire removed nothing") && r.stderr.contains("notes.txt"), "{}", r.stderr);
    assert!(t.backup_dir("b3").exists() && t.backup_dir("b4").exists(), "nothing expired");
    fs::remove_file(archive.join("notes.txt")).unwrap();

    // A value that is not a number: a warning, the backup stored.
    std::thread::sleep(Duration::from_millis(1100));
    pre_days_ago(&t, "b5", &pg, 0).ok();
    let r = post("b5", &[("PGBH_EXPIRE_KEEP_DAYS", "thirty")]).ok();
    assert!(r.stderr.contains("warning: expire not run") && r.stderr.contains("whole numbers"), "{}", r.stderr);
    assert!(t.backup_dir("b5").join("manifest.json").exists() && t.backup_dir("b3").exists());
}

#[test]
fn two_nodes_each_with_its_archive_are_expired_together_and_their_kept_backup_restores_on_both() {
    let dir = TestDir::new();
    let t = Tool::new(&dir);
    let (arch_a, arch_b) = (dir.path().join("archive-a"), dir.path().join("archive-b"));
    let mut a = archiving(&dir, "a", &arch_a, None);
    let mut b = archiving(&dir, "b", &arch_b, Some("lz4"));
    a.archive_dir = arch_a.clone();
    b.archive_dir = arch_b.clone();
    let nodes = [("a", a.conninfo()), ("b", b.conninfo())];
    let mut tars = Vec::new();
    for id in ["n1", "n2", "n3"] {
        t.pre(id, &nodes, &[]).ok();
        let (ta, tb) = (dir.path().join(format!("{id}-a.tar")), dir.path().join(format!("{id}-b.tar")));
        tar_create(&a.datadir, &ta);
        tar_create(&b.datadir, &tb);
        t.post(id).ok();
        switch_and_wait_archived(&a);
        switch_and_wait_archived(&b);
        tars.push((ta, tb));
        std::thread::sleep(Duration::from_millis(1100));
    }
    let (side, aa, ab) = (t.sidecar.display().to_string(), arch_a.display().to_string(), arch_b.display().to_string());
    let r = t.run(&[
        "expire",
        "--sidecar-dir",
        &side,
        "--archive-dir",
        &aa,
        "--archive-dir",
        &ab,
        "--keep-backups",
        "1",
        "--json",
    ]);
    let plan = json(&r.ok());
    assert_eq!(ids(&plan["expired"]), ["n1", "n2"], "{plan:#}");
    assert_eq!(plan["archives"].as_array().map(Vec::len), Some(2), "both archives are in the plan: {plan:#}");
    let m = t.manifest("n3");
    for (i, arch) in [(0, &arch_a), (1, &arch_b)] {
        let start = m["nodes"][i]["start_wal_file"].as_str().expect("start_wal_file").to_string();
        let left = names(arch);
        assert!(
            left.iter().all(|n| n.len() < 24 || n[..24] >= *start || n.ends_with(".history")),
            "{arch:?}: {left:?}"
        );
        assert!(left.iter().any(|n| n.starts_with(&start)), "{start} kept in {arch:?}: {left:?}");
    }
    assert!(!t.backup_dir("n1").exists() && !t.backup_dir("n2").exists() && t.backup_dir("n3").exists());
    // The kept backup restores on both nodes from their trimmed archives, to its restore point
    // (the default for several nodes): the two ticks written before it, not the one after.
    for (pg, tar, node) in [(&a, &tars[2].0, "a"), (&b, &tars[2].1, "b")] {
        restore_copy(pg, tar);
        t.restore_prep_ok_with("n3", &t.sidecar, pg, &["--node", node]);
        start_and_wait_promoted(pg);
        assert_eq!(pg.query_scalar("select count(*) from tick"), "2", "node {node} at n3's restore point");
    }
}
