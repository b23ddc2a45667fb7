//! `exclude-list`: the tar format's excludes, given to a real GNU tar copying a live
//! cluster's data directory, leave out exactly what they should and keep the directories.

use std::path::Path;
use std::process::Command;

use crate::common;
use crate::common::tool::Tool;
use crate::common::{Cluster, TestDir};

fn exclude_args(t: &Tool, pgdata: Option<&Path>) -> Vec<String> {
    let mut args = vec!["exclude-list".to_string(), "--format".into(), "tar".into()];
    if let Some(p) = pgdata {
        args.push("--pgdata".into());
        args.push(p.display().to_string());
    }
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = t.run(&refs).ok();
    out.stdout.lines().map(str::to_string).collect()
}

/// Files a live data directory may hold that a copy must leave out.
fn plant_junk(datadir: &Path) {
    let put = |rel: &str| {
        let p = datadir.join(rel);
        std::fs::create_dir_all(p.parent().expect("parent")).expect("mkdir");
        std::fs::write(&p, b"junk").expect("write");
    };
    put("base/pgsql_tmp/pgsql_tmp4242.0");
    put("base/pgsql_tmp/pgsql_tmp4242.1.fileset/0.0");
    put("pg_stat_tmp/global.stat");
    put("pg_replslot/slot1/state");
    put("pg_logical/replorigin_checkpoint.tmp");
    put("backup_label");
    put("backup_manifest");
    put("postmaster.opts.junk-kept");
    common::chown_to_server_user(datadir);
}

/// Member names of a tar archive with the leading `prefix` removed.
fn members(archive: &Path, prefix: &str) -> Vec<String> {
    let out = common::run_checked(Command::new("tar").arg("-tf").arg(archive));
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| l.strip_prefix(prefix).unwrap_or(l).trim_end_matches('/').to_string())
        .collect()
}

fn check(names: &[String]) {
    let has = |n: &str| names.iter().any(|m| m == n);
    for kept in [
        "PG_VERSION",
        "global/pg_control",
        "pg_wal",
        "pg_stat_tmp",
        "pg_replslot",
        "pg_subtrans",
        "pg_notify",
        "pg_serial",
        "pg_snapshots",
        "pg_dynshmem",
        "base",
        "postmaster.opts.junk-kept",
        "postgresql.conf",
    ] {
        assert!(has(kept), "{} missing from the copy: {:?}", kept, names);
    }
    for m in names {
        for dir in [
            "pg_wal/",
            "pg_stat_tmp/",
            "pg_replslot/",
            "pg_subtrans/",
            "pg_notify/",
            "pg_serial/",
            "pg_snapshots/",
            "pg_dynshmem/",
        ] {
            assert!(!m.starts_with(dir), "{} is inside {} and should have been left out", m, dir);
        }
        let base = m.rsplit('/').next().unwrap_or(m);
        assert!(!base.starts_with("pgsql_tmp"), "{} should have been left out", m);
        assert!(!base.starts_with("pg_internal.init"), "{} should have been left out", m);
        assert!(!base.ends_with(".tmp"), "{} should have been left out", m);
        assert!(
            !["postmaster.pid", "postmaster.opts", "backup_label", "tablespace_map", "backup_manifest"]
                .contains(&m.as_str()),
            "{} should have been left out",
            m
        );
    }
}

#[test]
fn tar_with_the_tar_excludes_copies_a_live_cluster_without_the_excluded_paths() {
    let dir = TestDir::new();
    let pg = Cluster::new(dir.path(), "pg");
    let t = Tool::new(&dir);
    pg.execute("create table t(i int); insert into t select generate_series(1, 10000); select pg_switch_wal()");
    plant_junk(&pg.datadir);
    assert!(pg.datadir.join("postmaster.pid").exists());
    assert!(pg.datadir.join("global/pg_internal.init").exists(), "a connection leaves a relcache init file");
    assert!(std::fs::read_dir(pg.datadir.join("pg_wal")).expect("pg_wal").count() > 1);

    // Relative patterns, tar run from the parent directory.
    let rel_tar = dir.path().join("rel.tar");
    let status = Command::new("tar")
        .arg("-C")
        .arg(&pg.root)
        .arg("-cf")
        .arg(&rel_tar)
        .args(exclude_args(&t, None))
        .arg("data")
        .output()
        .expect("running tar");
    // 1 is "some files changed while being read": expected from a live cluster.
    assert!(
        matches!(status.status.code(), Some(0) | Some(1)),
        "tar failed: {}",
        String::from_utf8_lossy(&status.stderr)
    );
    check(&members(&rel_tar, "data/"));

    // Absolute patterns from --pgdata, tar given the absolute path.
    let abs_tar = dir.path().join("abs.tar");
    let status = Command::new("tar")
        .arg("-cf")
        .arg(&abs_tar)
        .args(exclude_args(&t, Some(&pg.datadir)))
        .arg(&pg.datadir)
        .output()
        .expect("running tar");
    // tar says "Removing leading '/'" on stderr: kept out of the test's output.
    assert!(
        matches!(status.status.code(), Some(0) | Some(1)),
        "tar failed: {}",
        String::from_utf8_lossy(&status.stderr)
    );
    let prefix = format!("{}/", pg.datadir.display().to_string().trim_start_matches('/'));
    check(&members(&abs_tar, &prefix));
}

#[test]
fn exclude_list_refuses_a_relative_or_wildcard_pgdata() {
    let dir = TestDir::new();
    let t = Tool::new(&dir);
    t.run(&["exclude-list", "--pgdata", "data"]).fails(2, "absolute path");
    t.run(&["exclude-list", "--pgdata", "/srv/pg*/data"]).fails(2, "wildcard");
    t.run(&["exclude-list", "--format", "zip"]).fails(2, "zip");
}
