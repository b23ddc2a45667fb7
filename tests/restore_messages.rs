//! What a DBA reads along the restore path (issue 26), asserted as printed: restore-prep's
//! closing hint is a pair of command lines that start the server and prove the restore when
//! run as printed; a sidecar copy passed over is named with why; refusals name the server's
//! user and the path; a copy that already recovered is said to have; verify reads a list of
//! sidecar directories; restore-check says what --target was asked and what the sidecar
//! offers; an unknown --backup-id lists the ids that exist.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use crate::common::roundtrip::{install_bin, restore_copy, run_exe, switch_and_wait, tar_create};
use crate::common::tool::{Ran, Tool};
use crate::common::{bindir, chown_to_server_user, server_user, server_user_ids, Cluster, TestDir};

/// One backup `b1` of a one-node cluster, its copy restored in place (stopped, owned by the
/// server user), and two sidecar directories: `damaged` (a copy whose label was edited) and
/// the tool's own (sound).
struct Restored {
    dir: TestDir,
    t: Tool,
    exe: PathBuf,
    pg: Cluster,
    damaged: PathBuf,
    damaged_label: PathBuf,
}

fn restored() -> Restored {
    let dir = TestDir::new();
    let exe = install_bin(&dir);
    let pg = Cluster::new(dir.path(), "pg");
    let t = Tool::new(&dir);
    pg.execute("create table t (id int primary key); insert into t select generate_series(1, 10)");
    t.pre("b1", &[("default", pg.conninfo())], &[]).ok();
    let tar = dir.path().join("b1.tar");
    tar_create(&pg.datadir, &tar);
    t.post("b1").ok();
    switch_and_wait(&pg);
    restore_copy(&pg, &tar);
    chown_to_server_user(&pg.datadir);
    let damaged = dir.path().join("damaged");
    let cp = Command::new("cp").arg("-a").arg(&t.sidecar).arg(&damaged).status().expect("cp");
    assert!(cp.success());
    let damaged_label = damaged.join("b1/default/backup_label");
    let text = fs::read_to_string(&damaged_label).expect("label");
    fs::write(&damaged_label, text.replace("LABEL: b1", "LABEL: b0")).expect("edit");
    Restored { dir, t, exe, pg, damaged, damaged_label }
}

fn s(p: &Path) -> String {
    p.display().to_string()
}

impl Restored {
    /// `DAMAGED:SOUND`, the way a hook's environment file gives two copies.
    fn both(&self) -> String {
        format!("{}:{}", s(&self.damaged), s(&self.t.sidecar))
    }

    fn prep(&self, exe: &Path, archive: &Path) -> Ran {
        let (pgdata, archive, both) = (s(&self.pg.datadir), s(archive), self.both());
        let args = [
            "restore-prep",
            "--backup-id",
            "b1",
            "--sidecar-dir",
            &both,
            "--pgdata",
            &pgdata,
            "--archive-dir",
            &archive,
        ];
        run_exe(exe, &[&args[..], &["--archive-mode", "off"]].concat()).into()
    }

    fn stop_lsn(&self) -> String {
        self.t.manifest("b1")["nodes"][0]["stop_lsn"].as_str().expect("stop_lsn").to_string()
    }
}

/// Runs a printed command line with /bin/sh, as the operator pastes it.
fn sh(line: &str) -> Ran {
    let out = Command::new("sh").arg("-c").arg(line).current_dir("/").output().expect("sh");
    let r: Ran = out.into();
    eprintln!("$ {}\n{}{}[{}]", line, r.stdout, r.stderr, r.code);
    r
}

/// The line after `heading` in `out`, unindented.
fn line_after<'a>(out: &'a str, heading: &str) -> &'a str {
    let mut lines = out.lines();
    lines.find(|l| l.starts_with(heading)).unwrap_or_else(|| panic!("no {heading:?} in:\n{out}"));
    lines.next().unwrap_or_else(|| panic!("nothing after {heading:?} in:\n{out}")).trim()
}

/// Waits until the restored server has left recovery.
fn wait_promoted(pg: &Cluster) {
    let deadline = Instant::now() + Duration::from_secs(120);
    while Instant::now() < deadline {
        if let Ok(mut c) = postgres::Client::connect(&pg.conninfo(), postgres::NoTls) {
            if c.query_one("select pg_is_in_recovery()", &[]).is_ok_and(|r| !r.get::<_, bool>(0)) {
                return;
            }
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    panic!(
        "the restored server did not leave recovery:\n{}",
        fs::read_to_string(pg.datadir.join("pg-backup-hooks-restore.log")).unwrap_or_default()
    );
}

#[test]
fn the_restore_path_says_what_happened_and_what_to_run_next() {
    let r = restored();
    let pgdata = s(&r.pg.datadir);
    let archive = r.pg.archive_dir.clone();

    // restore-prep: the damaged copy is named with why, the sound one used.
    let prep = r.prep(&r.exe, &archive).ok();
    let warning = format!(
        "pg-backup-hooks: warning: sidecar copy {}/b1 failed verification (node default: {} does not match its sha256 in the manifest (edited or damaged)): using the copy in {}/b1",
        s(&r.damaged),
        s(&r.damaged_label),
        s(&r.t.sidecar)
    );
    assert!(r.damaged_label.exists());
    assert!(prep.stderr.lines().any(|l| l == warning), "expected {warning:?} in:\n{}", prep.stderr);

    // The closing hint: the major's pg_ctl by full path, as the owner, with a log file...
    let start = line_after(&prep.stdout, "start the server");
    let as_owner = server_user().map(|u| format!("runuser -u {} -- ", u)).unwrap_or_default();
    let log = format!("{}/pg-backup-hooks-restore.log", pgdata);
    assert_eq!(start, format!("{}{}/pg_ctl -D {} -l {} start", as_owner, s(&bindir()), pgdata, log));
    // ...and restore-check with the sidecar directories, the node and the copy's socket and port.
    let check = line_after(&prep.stdout, "then prove where recovery ended");
    let user =
        server_user().unwrap_or_else(|| nix::unistd::User::from_uid(nix::unistd::geteuid()).unwrap().unwrap().name);
    assert_eq!(
        check,
        format!(
            "{} restore-check --backup-id b1 --sidecar-dir {} --node 'default=host={} port={} user={} dbname=postgres'",
            s(&r.exe),
            r.both(),
            s(&r.pg.socket_dir),
            r.pg.port,
            user
        )
    );
    // Both lines do what they say, pasted as printed.
    sh(start).ok();
    assert!(Path::new(&log).is_file(), "pg_ctl -l wrote no {log}");
    wait_promoted(&r.pg);
    let proof = sh(check).ok();
    assert!(proof.stdout.contains("node default: PROVEN (latest (replay all archived WAL))"), "{}", proof.stdout);

    // restore-check with a --target that does not parse for this backup: what was asked and
    // what the sidecar offers; refused before connecting.
    let side = s(&r.t.sidecar);
    let node = format!("default={}", r.pg.conninfo());
    let base = ["restore-check", "--backup-id", "b1", "--sidecar-dir", &side, "--node", &node];
    let bad = r.t.run(&[&base[..], &["--target", "yesterday"]].concat());
    assert_eq!(bad.code, 2, "{}", bad.stderr);
    assert_eq!(
        bad.stderr.trim(),
        "pg-backup-hooks: error: --target \"yesterday\" was asked, which backup b1 cannot have been restored to; the sidecar offers: latest, backup-end, restore-point (its restore point \"b1\"); or time:TS, lsn:LSN, xid:XID, name:NAME of a restore point made later"
    );
    let bad = r.t.run(&[&base[..], &["--target", "xid:abc"]].concat());
    assert!(
        bad.stderr.starts_with("pg-backup-hooks: error: --target \"xid:abc\" was asked, which backup b1 cannot have been restored to (a transaction id is a number); the sidecar offers: latest, backup-end, "),
        "{}",
        bad.stderr
    );
    // A --target other than the one restore-prep configured: said on the verdict line and why.
    let other = r.t.run(&[&base[..], &["--target", "restore-point"]].concat());
    assert_eq!(other.code, 5, "{}", other.stdout);
    assert_eq!(
        other.stdout.lines().take(2).collect::<Vec<_>>(),
        [
            "node default: NOT PROVEN (--target restore-point asked: see the problem below)",
            "  problem: --target restore-point asks for restore point \"b1\", but restore-prep configured the server for latest (replay all archived WAL): give the --target restore-prep was given, or leave --target out to judge by what the server was configured for",
        ]
    );

    // An unknown --backup-id: the ids that are there.
    let unknown = r.t.run(&["restore-check", "--backup-id", "b2", "--sidecar-dir", &r.both(), "--node", &node]);
    assert_eq!(unknown.code, 1);
    assert_eq!(
        unknown.stderr.trim(),
        format!(
            "pg-backup-hooks: error: no sidecar for backup b2 in {}, {}; the backups there, newest first: b1: check --backup-id",
            s(&r.damaged),
            side
        )
    );

    // verify reads the same list: the damaged copy is named, the sound one is OK.
    let verify = r.t.run(&["verify", "--backup-id", "b1", "--sidecar-dir", &r.both()]);
    assert_eq!(verify.code, 1);
    assert_eq!(verify.stdout.trim(), format!("backup b1: sidecar OK in {}/b1 (1 node(s), Complete)", side));
    assert_eq!(
        verify.stderr.trim(),
        format!(
            "pg-backup-hooks: error: sidecar {}/b1 is not usable: node default: {} does not match its sha256 in the manifest (edited or damaged) (restore-prep passes over it and uses a sound copy)",
            s(&r.damaged),
            s(&r.damaged_label)
        )
    );
    let from_env: Ran =
        r.t.cmd(&["verify", "--backup-id", "b1"]).env("PGBH_SIDECAR_DIR", r.both()).output().expect("verify").into();
    assert_eq!(from_env.code, 1, "PGBH_SIDECAR_DIR is a list too: {}", from_env.stderr);
    assert!(from_env.stdout.contains(&format!("sidecar OK in {}/b1", side)), "{}", from_env.stdout);

    // restore-prep again once the copy has recovered and been stopped: it says so.
    r.pg.stop("fast");
    let again = r.prep(&r.exe, &archive);
    assert_eq!(again.code, 1, "{}", again.stdout);
    let said = again.stderr.trim();
    let head = format!(
        "pg-backup-hooks: error: the copy in {} has already recovered from backup b1: the server consumed the label ({}/backup_label.old is this backup's label) and its last checkpoint ",
        pgdata, pgdata
    );
    let tail = format!(
        " is past the backup's end {} (cluster state: shut down); nothing needs doing: start it as it is; to recover it again (e.g. to another --target), restore the data directory again and run restore-prep on the fresh copy",
        r.stop_lsn()
    );
    assert!(said.starts_with(&head) && said.ends_with(&tail), "{said}");
    drop(r.dir);
}

#[test]
fn what_the_server_user_cannot_reach_is_an_error_naming_the_user_and_the_path() {
    let Some(user) = server_user() else {
        crate::common::skip("only root runs restore-prep over another user's data directory");
        return;
    };
    let (uid, _) = server_user_ids().expect("server user");
    let r = restored();
    // An archive directory only root can read.
    let closed = r.dir.path().join("closed-archive");
    fs::create_dir(&closed).expect("mkdir");
    fs::set_permissions(&closed, fs::Permissions::from_mode(0o700)).expect("chmod");
    let refused = r.prep(&r.exe, &closed);
    assert_eq!(refused.code, 1, "{}", refused.stdout);
    assert_eq!(
        refused.stderr.trim(),
        format!(
            "pg-backup-hooks: error: the server runs restore_command as user {} (uid {}), who cannot read the --archive-dir {} (it is mode 700): give that user read access to it (e.g. chgrp -R that user's group and chmod g+rx), or copy the archive where it can read it",
            user,
            uid,
            s(&closed)
        )
    );
    // restore_command's program in a directory only root can enter.
    let private = r.dir.path().join("private");
    fs::create_dir(&private).expect("mkdir");
    let exe = private.join("pg-backup-hooks");
    for name in ["pg-backup-hooks", "pg-backup-hooks-wal-restore"] {
        fs::copy(r.exe.with_file_name(name), private.join(name)).expect("copy");
    }
    fs::set_permissions(&private, fs::Permissions::from_mode(0o700)).expect("chmod");
    let refused = r.prep(&exe, &r.pg.archive_dir);
    assert_eq!(refused.code, 1, "{}", refused.stdout);
    assert_eq!(
        refused.stderr.trim(),
        format!(
            "pg-backup-hooks: error: the server runs restore_command as user {} (uid {}), who cannot run restore_command's program {}/pg-backup-hooks-wal-restore ({} is mode 700): install pg-backup-hooks where that user can run it (e.g. /usr/bin or /usr/local/bin)",
            user,
            uid,
            s(&private),
            s(&private)
        )
    );
    // Neither refusal touched the copy: it has no label yet.
    assert!(!r.pg.datadir.join("backup_label").exists());
}
