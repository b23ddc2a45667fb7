//! Running our own binary the way a hook script would: a private run directory and
//! sidecar directory per test, and no PG* variables leaking in from the environment.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use super::{bin, TestDir};

pub struct Tool {
    pub run_dir: PathBuf,
    pub sidecar: PathBuf,
}

/// What a command printed and how it ended.
pub struct Ran {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Ran {
    pub fn ok(self) -> Ran {
        assert_eq!(self.code, 0, "expected success\nstdout: {}\nstderr: {}", self.stdout, self.stderr);
        self
    }
    pub fn fails(self, code: i32, needle: &str) -> Ran {
        assert_eq!(self.code, code, "expected exit {}\nstdout: {}\nstderr: {}", code, self.stdout, self.stderr);
        assert!(self.stderr.contains(needle), "stderr should mention {:?}\nstderr: {}", needle, self.stderr);
        self
    }
    /// The start LSN `pre` printed for a node.
    pub fn start_lsn(&self, node: &str) -> String {
        let prefix = format!("node {}: backup started at ", node);
        self.stdout
            .lines()
            .find_map(|l| l.strip_prefix(&prefix))
            .and_then(|rest| rest.split_whitespace().next())
            .unwrap_or_else(|| panic!("pre printed no start LSN for {}: {}", node, self.stdout))
            .to_string()
    }
}

impl From<Output> for Ran {
    fn from(o: Output) -> Ran {
        Ran {
            code: o.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
        }
    }
}

impl Tool {
    /// restore-prep of the restored single-node copy `pg` from the plain archive, with archiving
    /// off (a test restore), run as root over the server user's tree; it must succeed.
    pub fn restore_prep_ok(&self, id: &str, sidecar: &Path, pg: &super::Cluster) {
        self.restore_prep_ok_with(id, sidecar, pg, &[])
    }

    /// [`Tool::restore_prep_ok`] with `extra` flags.
    pub fn restore_prep_ok_with(&self, id: &str, sidecar: &Path, pg: &super::Cluster, extra: &[&str]) {
        super::chown_to_server_user(&pg.datadir);
        let prep = self.restore_prep_with(id, sidecar, pg, extra);
        assert_eq!(prep.code, 0, "restore-prep failed\nstdout: {}\nstderr: {}", prep.stdout, prep.stderr);
        super::chown_to_server_user(&pg.datadir);
    }

    /// restore-prep of backup `id` over the copy `pg` in place, from its plain archive, with
    /// archiving off; whatever it does (for refusals).
    pub fn restore_prep(&self, id: &str, sidecar: &Path, pg: &super::Cluster) -> Ran {
        self.restore_prep_with(id, sidecar, pg, &[])
    }

    /// [`Tool::restore_prep`] with `extra` flags (`--target T`, `--node NAME`).
    pub fn restore_prep_with(&self, id: &str, sidecar: &Path, pg: &super::Cluster, extra: &[&str]) -> Ran {
        let (sidecar, pgdata, archive) =
            (sidecar.display().to_string(), pg.datadir.display().to_string(), pg.archive_dir.display().to_string());
        let args = [
            "restore-prep",
            "--backup-id",
            id,
            "--sidecar-dir",
            &sidecar,
            "--pgdata",
            &pgdata,
            "--archive-dir",
            &archive,
            "--archive-mode",
            "off",
        ];
        self.run(&[&args[..], extra].concat())
    }

    /// The last step of every restore: `restore-check` proves that the restored single-node
    /// cluster `pg` (started) ended recovery where backup `id` says; the node's name is read
    /// from the sidecar's manifest. Returns restore-check's report.
    pub fn restore_check_proves(&self, id: &str, sidecar: &Path, pg: &super::Cluster) -> String {
        let manifest = std::fs::read(sidecar.join(id).join("manifest.json")).expect("reading the manifest");
        let manifest: serde_json::Value = serde_json::from_slice(&manifest).expect("parsing the manifest");
        let node = manifest["nodes"][0]["name"].as_str().expect("the manifest names its node").to_string();
        let sidecar = sidecar.display().to_string();
        let node_arg = format!("{}={}", node, pg.conninfo());
        let check = self.run(&["restore-check", "--backup-id", id, "--sidecar-dir", &sidecar, "--node", &node_arg]);
        assert!(
            check.code == 0 && check.stdout.contains(&format!("node {}: PROVEN", node)),
            "restore-check did not prove the restore\nstdout: {}\nstderr: {}",
            check.stdout,
            check.stderr
        );
        check.stdout
    }

    /// A run dir (0700, ours) and a sidecar dir inside `dir`.
    pub fn new(dir: &TestDir) -> Tool {
        let run_dir = dir.path().join("run");
        let sidecar = dir.path().join("sidecar");
        for d in [&run_dir, &sidecar] {
            std::fs::create_dir_all(d).expect("mkdir");
            std::fs::set_permissions(d, std::fs::Permissions::from_mode(0o700)).expect("chmod");
            let me = nix::unistd::geteuid();
            nix::unistd::chown(d.as_path(), Some(me), None).expect("chown");
        }
        Tool { run_dir, sidecar }
    }

    pub fn cmd(&self, args: &[&str]) -> Command {
        let mut c = Command::new(bin());
        c.args(args);
        for v in [
            "PGHOST",
            "PGPORT",
            "PGUSER",
            "PGDATABASE",
            "PGPASSWORD",
            "PGSERVICE",
            "PGBH_NODES",
            "PGBH_SIDECAR_DIR",
            "PGBH_RUN_DIR",
            "PGBH_BACKUP_ID",
        ] {
            c.env_remove(v);
        }
        c
    }

    pub fn run(&self, args: &[&str]) -> Ran {
        self.cmd(args).output().expect("running pg-backup-hooks").into()
    }

    pub fn pre(&self, id: &str, nodes: &[(&str, String)], extra: &[&str]) -> Ran {
        let mut args: Vec<String> = vec!["pre".into(), "--backup-id".into(), id.into(), "--sidecar-dir".into()];
        args.push(self.sidecar.display().to_string());
        args.push("--run-dir".into());
        args.push(self.run_dir.display().to_string());
        args.push("--fast".into());
        for (name, conninfo) in nodes {
            args.push("--node".into());
            args.push(format!("{}={}", name, conninfo));
        }
        args.extend(extra.iter().map(|s| s.to_string()));
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        self.run(&refs)
    }

    pub fn with_run(&self, cmd: &str, id: &str, extra: &[&str]) -> Ran {
        let run = self.run_dir.display().to_string();
        let mut args = vec![cmd, "--backup-id", id, "--run-dir", &run];
        args.extend_from_slice(extra);
        self.run(&args)
    }

    pub fn post(&self, id: &str) -> Ran {
        self.with_run("post", id, &[])
    }

    pub fn abort(&self, id: &str) -> Ran {
        self.with_run("abort", id, &[])
    }

    pub fn status_json(&self, id: &str) -> serde_json::Value {
        let r = self.with_run("status", id, &["--json"]);
        serde_json::from_str(&r.stdout).unwrap_or_else(|e| panic!("status --json: {}: {}", e, r.stdout))
    }

    pub fn helper_pid(&self, id: &str) -> i32 {
        self.status_json(id)[0]["helper_pid"].as_i64().unwrap_or_else(|| panic!("no helper for {}", id)) as i32
    }

    pub fn backup_dir(&self, id: &str) -> PathBuf {
        self.sidecar.join(id)
    }

    pub fn label(&self, id: &str, node: &str) -> String {
        std::fs::read_to_string(self.backup_dir(id).join(node).join("backup_label"))
            .expect("reading stored backup_label")
    }

    pub fn manifest(&self, id: &str) -> serde_json::Value {
        let p = self.backup_dir(id).join("manifest.json");
        serde_json::from_str(&std::fs::read_to_string(&p).expect("reading manifest")).expect("manifest JSON")
    }

    pub fn run_dir_files(&self) -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(&self.run_dir)
            .expect("read run dir")
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    }
}

/// A failed test must not leave a helper holding a backup for a day: abort whatever is
/// still running in this test's run directory.
impl Drop for Tool {
    fn drop(&mut self) {
        let Ok(entries) = std::fs::read_dir(&self.run_dir) else { return };
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if let Some(id) = name.strip_suffix(".sock") {
                let _ = self.abort(id);
            }
        }
    }
}

/// A label line's value: `label_field(text, "LABEL")`.
pub fn label_field(label: &str, key: &str) -> String {
    let prefix = format!("{}: ", key);
    label
        .lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .unwrap_or_else(|| panic!("label has no {} line:\n{}", key, label))
        .to_string()
}
