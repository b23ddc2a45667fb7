//! The hooks/ wrappers: valid POSIX sh, shellcheck-clean, and the ones that invent an id
//! (Veeam, generic) carry it from pre to post against a real server.

mod common;

use std::path::PathBuf;
use std::process::Command;

use common::tool::{Ran, Tool};
use common::{Cluster, TestDir};

const HOOKS: &[&str] = &["bacula", "veeam", "netbackup", "commvault", "generic"];

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
            eprintln!("SKIPPED shellcheck: not installed (apt-get install shellcheck)")
        }
        Err(e) => panic!("shellcheck: {}", e),
    }
}

fn run_hook(name: &str, env_file: &std::path::Path, args: &[&str]) -> Ran {
    let mut c = Command::new(hook(name));
    c.args(args).env("PGBH_ENV_FILE", env_file);
    for v in ["PGBH_BACKUP_ID", "PGBH_RUN_DIR", "PGBH_SIDECAR_DIR", "PGBH_NODES", "PGBH_BIN"] {
        c.env_remove(v);
    }
    c.output().expect("running the hook").into()
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
