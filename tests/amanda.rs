//! The real thing: Debian's Amanda (3.5.1, amanda-server + amanda-client) backs up a live
//! cluster with a client-side Script API script around the data DLE, then a second amdump run
//! backs up the sidecar DLE; the cluster is destroyed, amfetchdump brings both dumps back,
//! restore-prep puts the copy together and the server recovers with every committed row.
//! Failures: a failing pre fails the dump and leaves nothing held; a dump that fails after our
//! pre still runs post-dle-backup (Amanda 3.5.1 says nothing about the failure to the client),
//! which ends the backup, and Amanda's retry gets a backup id of its own.
//!
//! How Amanda runs here, with no system state a second run trips over:
//! * `auth "bsdtcp"` with `client-port` set to a private port on 127.0.0.1, where the test
//!   listens and runs `amandad -auth=bsdtcp amdump` as the amanda user for each connection,
//!   as Debian's inetd line for amandad does; the system's inetd is not touched. Debian's
//!   /etc/amandahosts (`localhost backup`) already lets the local amdump in.
//! * the configuration is /etc/amanda/<unique name> (Amanda reads configurations only under
//!   its compiled-in CONFIG_DIR), and the script is /usr/lib/amanda/application/<unique
//!   name> (scripts are looked up only there); both are removed on drop, with the debug logs
//!   Amanda keeps under /var/log/amanda/{server,client}/<name>. Everything else (vtapes,
//!   holding disk, logs, indexes, gnutar lists, amandates) lives in the test's directory.
//! * amdump and amfetchdump run as the amanda user `backup`, as Amanda requires; so do our
//!   hooks, with a run directory and sidecar directory of their own.
//!
//! Skips (and passes) when Amanda is missing, unless PGBH_REQUIRE_AMANDA is set (CI sets it;
//! .ci/install-amanda.sh installs it).

use std::fs;
use std::os::fd::OwnedFd;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use crate::common;
use crate::common::tool::Tool;
use crate::common::{roundtrip, Cluster, ClusterOpts, TestDir};
use crate::products;
use crate::products::{Expected, Inserter};

const AMANDA_USER: &str = "backup";
const CONFIG_DIR: &str = "/etc/amanda";
const SCRIPT_DIR: &str = "/usr/lib/amanda/application";
const PROGRAMS: &[&str] =
    &["/usr/sbin/amdump", "/usr/sbin/amfetchdump", "/usr/lib/amanda/amandad", "/usr/lib/amanda/application/amgtar"];

fn amanda_available() -> bool {
    products::available("Amanda", PROGRAMS, "PGBH_REQUIRE_AMANDA", ".ci/install-amanda.sh")
}

/// What Amanda runs from its application directory: the two-line wrapper docs/hooks/amanda.md
/// gives for a binary off PATH (Amanda runs scripts with a PATH of its own), execing
/// `pg-backup-hooks hook amanda`. The environment file comes in as the script-tool's
/// `env-file` property. (The shim hooks/amanda is tested in tests/hooks.rs.)
fn hook_script() -> String {
    format!("#!/bin/sh\nexec '{}' hook amanda \"$@\"\n", common::bin().display())
}

/// A private inetd for amandad on 127.0.0.1: for each connection, `amandad -auth=bsdtcp
/// amdump` runs as the amanda user with the connection as its stdin and stdout. Stops
/// listening, and ends what it started, on drop.
struct Amandad {
    port: u16,
    stop: Arc<AtomicBool>,
    children: Arc<Mutex<Vec<Child>>>,
    thread: Option<JoinHandle<()>>,
}

impl Amandad {
    fn start() -> Amandad {
        let listener = common::local_listener();
        listener.set_nonblocking(true).expect("nonblocking listener");
        let port = listener.local_addr().expect("local_addr").port();
        let user = nix::unistd::User::from_name(AMANDA_USER).expect("getpwnam").expect("the amanda user exists");
        let (stop, children) = (Arc::new(AtomicBool::new(false)), Arc::new(Mutex::new(Vec::new())));
        let (flag, kids) = (stop.clone(), children.clone());
        let thread = std::thread::spawn(move || {
            while !flag.load(Ordering::Relaxed) {
                let Ok((conn, _)) = listener.accept() else {
                    std::thread::sleep(Duration::from_millis(50));
                    continue;
                };
                conn.set_nonblocking(false).expect("blocking connection");
                let out = OwnedFd::from(conn.try_clone().expect("dup connection"));
                let child = Command::new("/usr/lib/amanda/amandad")
                    .args(["-auth=bsdtcp", "amdump"])
                    .uid(user.uid.as_raw())
                    .gid(user.gid.as_raw())
                    .current_dir("/")
                    .stdin(Stdio::from(OwnedFd::from(conn)))
                    .stdout(Stdio::from(out))
                    .stderr(Stdio::null())
                    .spawn()
                    .expect("starting amandad");
                kids.lock().unwrap_or_else(|e| e.into_inner()).push(child);
            }
        });
        Amandad { port, stop, children, thread: Some(thread) }
    }
}

impl Amandad {
    /// How many connections the server made to this amandad.
    fn connections(&self) -> usize {
        self.children.lock().unwrap_or_else(|e| e.into_inner()).len()
    }
}

impl Drop for Amandad {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        for child in self.children.lock().unwrap_or_else(|e| e.into_inner()).iter_mut() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// What the test must put outside its directory: the configuration (Amanda reads them only
/// under /etc/amanda), the scripts (only run from its application directory), and the debug
/// logs Amanda keeps per configuration. Removed on drop, also when the setup fails halfway.
struct SystemFiles {
    name: String,
}

impl SystemFiles {
    fn conf_dir(&self) -> PathBuf {
        Path::new(CONFIG_DIR).join(&self.name)
    }

    /// The script `NAME` (suffix "") or `NAME-suffix` in Amanda's application directory.
    fn script(&self, suffix: &str) -> PathBuf {
        let file = if suffix.is_empty() { self.name.clone() } else { format!("{}-{}", self.name, suffix) };
        Path::new(SCRIPT_DIR).join(file)
    }

    fn install_script(&self, suffix: &str, text: &str) {
        let path = self.script(suffix);
        fs::write(&path, text).unwrap_or_else(|e| panic!("writing {}: {e}", path.display()));
        fs::set_permissions(&path, fs::Permissions::from_mode(0o755)).expect("chmod script");
    }
}

impl Drop for SystemFiles {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(self.conf_dir());
        for suffix in ["", "fail", "slow"] {
            let _ = fs::remove_file(self.script(suffix));
        }
        for side in ["server", "client"] {
            let _ = fs::remove_dir_all(Path::new("/var/log/amanda").join(side).join(&self.name));
        }
    }
}

/// A private Amanda configuration, its amandad, and our hooks' directories.
struct Amanda {
    name: String,
    root: PathBuf,
    hook_run: PathBuf,
    hook_sidecar: PathBuf,
    amandad: Amandad,
    _files: SystemFiles,
}

impl Drop for Amanda {
    fn drop(&mut self) {
        // Whatever a failed test left held: abort it, as the hooks' user.
        if let Ok(entries) = fs::read_dir(&self.hook_run) {
            for e in entries.flatten() {
                let name = e.file_name().to_string_lossy().into_owned();
                if let Some(id) = name.strip_suffix(".sock") {
                    let _ = self.tool(&["abort", "--backup-id", id]);
                }
            }
        }
    }
}

/// A directory owned by the amanda user, mode 0700.
fn backup_owned_dir(path: &Path) {
    fs::create_dir_all(path).unwrap_or_else(|e| panic!("mkdir {}: {e}", path.display()));
    let user = nix::unistd::User::from_name(AMANDA_USER).expect("getpwnam").expect("the amanda user 'backup' exists");
    nix::unistd::chown(path, Some(user.uid), Some(user.gid)).expect("chown to backup");
    fs::set_permissions(path, fs::Permissions::from_mode(0o700)).expect("chmod 0700");
}

fn chown_tree_to_backup(path: &Path) {
    let user = nix::unistd::User::from_name(AMANDA_USER).expect("getpwnam").expect("the amanda user 'backup' exists");
    common::run_checked(Command::new("chown").arg("-R").arg(format!("{}:{}", user.uid, user.gid)).arg(path));
}

/// A script that fails the dump at pre-dle-backup, and one that sleeps there while `flag`
/// exists: both run after ours.
fn failing_script() -> String {
    "#!/bin/sh\n[ \"$1\" = support ] && { echo 'CONFIG YES'; exit 0; }\n[ \"$1\" = PRE-DLE-BACKUP ] && { echo 'a later script failed on purpose' >&2; exit 1; }\nexit 0\n".to_string()
}

fn slow_script(flag: &Path) -> String {
    format!("#!/bin/sh\n[ \"$1\" = support ] && {{ echo 'CONFIG YES'; exit 0; }}\n[ \"$1\" = PRE-DLE-BACKUP ] && [ -e '{}' ] && sleep 20\nexit 0\n", flag.display())
}

impl Amanda {
    /// Writes the configuration: DLE `datadir` (the cluster's data directory, our script, the
    /// exclude list), DLE `latefail` (the same, then a script that fails the dump), DLE
    /// `killed` (the same, then a script that sleeps while `ROOT/slow` exists) and DLE
    /// `sidecar` (the hooks' sidecar directory, no script).
    fn new(dir: &TestDir, nodes: &str, datadir: &Path) -> Amanda {
        // The amanda user must reach its directories inside the test's directory.
        fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o711)).expect("chmod test dir");
        let unique =
            dir.path().file_name().expect("name").to_string_lossy().replace(|c: char| !c.is_ascii_alphanumeric(), "");
        let files = SystemFiles { name: format!("pgbh-{}", unique) };
        let root = dir.path().join("amanda");
        for d in ["", "vtapes", "holding", "curinfo", "log", "index", "gnutar-lists", "run", "sidecar"] {
            backup_owned_dir(&root.join(d));
        }
        for slot in 1..=8 {
            backup_owned_dir(&root.join(format!("vtapes/slot{slot}")));
        }
        let env_file = root.join("pgbh.env");
        products::write_env(&env_file, &root.join("sidecar"), &root.join("run"), nodes);
        let amandad = Amandad::start();
        write_config(&files, &root, datadir, amandad.port);
        chown_tree_to_backup(&root);
        files.install_script("", &hook_script());
        files.install_script("fail", &failing_script());
        files.install_script("slow", &slow_script(&root.join("slow")));
        Amanda {
            name: files.name.clone(),
            hook_run: root.join("run"),
            hook_sidecar: root.join("sidecar"),
            root,
            amandad,
            _files: files,
        }
    }

    /// `amdump CONFIG localhost DISK` as the amanda user: (exit code, output).
    fn amdump(&self, disk: &str) -> (i32, String) {
        products::run_limited(
            Command::new("runuser")
                .args(["-u", AMANDA_USER, "--", "/usr/sbin/amdump", &self.name, "localhost", disk])
                .current_dir("/"),
            Duration::from_secs(300),
        )
    }

    /// The trace logs of every run so far (what amreport reads): Amanda moves a run's log to
    /// log/oldlog when the next run starts, and leaves a stub of the same name behind.
    fn trace_log(&self) -> String {
        let mut logs: Vec<PathBuf> = ["log/oldlog", "log"]
            .iter()
            .filter_map(|d| fs::read_dir(self.root.join(d)).ok())
            .flat_map(|rd| rd.flatten().map(|e| e.path()))
            .filter(|p| p.file_name().is_some_and(|n| n.to_string_lossy().starts_with("log.")))
            .collect();
        logs.sort_by_key(|p| p.file_name().map(|n| n.to_os_string()));
        logs.iter().map(|p| fs::read_to_string(p).unwrap_or_default()).collect::<Vec<_>>().join("")
    }

    /// The newest dump of DISK, extracted as root (owners kept) into `dest`: amfetchdump
    /// writes the image to a pipe, GNU tar unpacks it.
    fn fetch(&self, disk: &str, dest: &Path) {
        self.fetch_dump(&format!("'{}'", disk), dest)
    }

    /// The dump of DISK made by the run with datestamp `date` at `level`, extracted over what
    /// `dest` holds (plain `tar -x`: nothing is deleted).
    fn fetch_level(&self, disk: &str, date: &str, level: u32, dest: &Path) {
        self.fetch_dump(&format!("'{}' '{}' '{}'", disk, date, level), dest)
    }

    fn fetch_dump(&self, spec: &str, dest: &Path) {
        fs::create_dir_all(dest).expect("mkdir restore dir");
        let script = format!(
            "set -o pipefail; runuser -u {AMANDA_USER} -- /usr/sbin/amfetchdump -a -p '{}' localhost {} | tar --same-owner -xpf - -C '{}'",
            self.name,
            spec,
            dest.display()
        );
        let (code, out) = products::run_limited(
            Command::new("bash").arg("-c").arg(script).current_dir("/"),
            Duration::from_secs(300),
        );
        assert_eq!(code, 0, "amfetchdump of {} failed:\n{}", spec, out);
    }

    /// What the client-side program `prog` (amgtar, sendbackup, ...) wrote to its debug logs
    /// for this configuration.
    fn client_debug(&self, prog: &str) -> String {
        let dir = Path::new("/var/log/amanda/client").join(&self.name);
        let mut text = String::new();
        for e in fs::read_dir(dir).map(|rd| rd.flatten().collect::<Vec<_>>()).unwrap_or_default() {
            if e.file_name().to_string_lossy().starts_with(&format!("{prog}.")) {
                text += &fs::read_to_string(e.path()).unwrap_or_default();
            }
        }
        text
    }

    /// Our binary run as the amanda user on the hooks' run directory.
    fn tool(&self, args: &[&str]) -> (i32, String) {
        let mut cmd = Command::new("runuser");
        cmd.args(["-u", AMANDA_USER, "--"]).arg(common::bin()).args(args).arg("--run-dir").arg(&self.hook_run);
        products::run_limited(cmd.current_dir("/"), Duration::from_secs(60))
    }

    /// The backup ids our script used, oldest first (Amanda's timestamp, then the attempt).
    fn ids_in(&self, sidecar: &Path) -> Vec<String> {
        let mut ids: Vec<String> = fs::read_dir(sidecar)
            .map(|rd| rd.flatten().map(|e| e.file_name().to_string_lossy().into_owned()).collect())
            .unwrap_or_default();
        ids.retain(|n| n.starts_with("amanda."));
        ids.sort();
        ids
    }
}

/// /etc/amanda/NAME: amanda.conf, amanda-client.conf (amandates in the test's directory), the
/// disklist, all owned by the amanda user.
fn write_config(files: &SystemFiles, root: &Path, datadir: &Path, client_port: u16) {
    let conf_dir = files.conf_dir();
    fs::create_dir_all(&conf_dir).expect("mkdir config dir");
    let excludes = root.join("exclude.list");
    fs::write(&excludes, products::exclude_list("plain", None).join("\n") + "\n").expect("exclude list");
    fs::write(conf_dir.join("amanda.conf"), amanda_conf(&files.name, root, &excludes, client_port))
        .expect("amanda.conf");
    fs::write(conf_dir.join("amanda-client.conf"), format!("amandates \"{}/amandates\"\n", root.display()))
        .expect("amanda-client.conf");
    let disklist = format!(
        "localhost datadir {data} pgdata\nlocalhost latefail {data} pgdata-late\nlocalhost killed {data} pgdata-slow\nlocalhost incr {data} pgdata-inc\nlocalhost sidecar {side} sidecar\n",
        data = datadir.display(),
        side = root.join("sidecar").display()
    );
    fs::write(conf_dir.join("disklist"), disklist).expect("disklist");
    chown_tree_to_backup(&conf_dir);
}

fn amanda_conf(name: &str, root: &Path, excludes: &Path, client_port: u16) -> String {
    format!(
        r#"org "{name}"
dumpuser "{AMANDA_USER}"
mailto ""
dumpcycle 0
runspercycle 1
tapecycle 8
runtapes 1
tpchanger "chg-disk:{root}/vtapes"
labelstr "^PGBH-[0-9]*$"
autolabel "PGBH-%%%" empty
tapetype "VTAPE"
define tapetype VTAPE {{
    length 2 gbytes
}}
infofile "{root}/curinfo"
logdir "{root}/log"
indexdir "{root}/index"
define holdingdisk hd {{
    directory "{root}/holding"
    use 2 gbytes
    chunksize 0
}}
define application-tool gtar {{
    plugin "amgtar"
    property "GNUTAR-LISTDIR" "{root}/gnutar-lists"
    # A running cluster changes, grows, shrinks and deletes files while tar reads them; WAL
    # replay from the backup's start repairs that. Without these, amdump calls such a dump
    # STRANGE and exits 2.
    property append "NORMAL" ": file changed as we read it$"
    property append "NORMAL" ": File removed before we read it$"
    property append "NORMAL" ": File shrank by [0-9]+ bytes?; padding with zeros$"
    property append "NORMAL" ": Cannot stat: No such file or directory$"
}}
define script-tool pgbh {{
    plugin "{name}"
    execute-where client
    execute-on pre-dle-backup, post-dle-backup
    order 100
    property "env-file" "{root}/pgbh.env"
}}
define script-tool later-fails {{
    plugin "{name}-fail"
    execute-where client
    execute-on pre-dle-backup
    order 200
}}
define script-tool slow {{
    plugin "{name}-slow"
    execute-where client
    execute-on pre-dle-backup
    order 200
}}
define dumptype base {{
    program "APPLICATION"
    application "gtar"
    auth "bsdtcp"
    client-port {client_port}
    compress none
    index yes
    strategy noinc
    estimate server
    record no
}}
define dumptype pgdata {{
    base
    script "pgbh"
    exclude list "{excludes}"
}}
define dumptype pgdata-late {{
    pgdata
    script "later-fails"
}}
define dumptype pgdata-slow {{
    pgdata
    script "slow"
}}
# Levels above 0: amgtar's incrementals need the state files `record yes` keeps.
define dumptype pgdata-inc {{
    pgdata
    strategy standard
    dumpcycle 7
    record yes
}}
define dumptype sidecar {{
    base
}}
"#,
        root = root.display(),
        excludes = excludes.display()
    )
}

#[test]
fn amanda_backs_up_a_live_cluster_and_the_restore_recovers_every_committed_row() {
    if !amanda_available() {
        return;
    }
    let dir = TestDir::new();
    let pg = Cluster::new(dir.path(), "pg");
    let t = Tool::new(&dir);
    let amanda = Amanda::new(&dir, &format!("default={}", pg.conninfo()), &pg.datadir);

    let inserter = Inserter::start(&pg);
    let (code, out) = amanda.amdump("datadir");
    let log = amanda.trace_log();
    assert_eq!(code, 0, "amdump of the data DLE failed:\n{}\n--- trace log ---\n{}", out, log);
    let committed = inserter.finish();
    assert!(log.contains("SUCCESS dumper localhost datadir"), "no successful dump in the trace log:\n{}", log);
    assert!(amanda.amandad.connections() > 0, "the dump should have gone through the test's amandad");
    let amgtar = amanda.client_debug("amgtar");
    assert!(
        amgtar.contains("NORMAL : file changed as we read it$"),
        "amgtar did not get our NORMAL patterns:\n{}",
        amgtar
    );
    let ids = amanda.ids_in(&amanda.hook_sidecar);
    assert_eq!(ids.len(), 1, "one backup should be stored: {:?}", ids);
    let id = ids[0].clone();
    assert!(id.starts_with(&format!("amanda.{}.datadir.", amanda.name)) && id.ends_with(".1"), "{}", id);
    pg.wait_no_backup_sessions(&id);
    let manifest = fs::read_to_string(amanda.hook_sidecar.join(&id).join("manifest.json")).expect("manifest");
    assert!(manifest.contains("\"complete\""), "{}", manifest);

    // The sidecar DLE, in a second run after the data DLE.
    let (code, out) = amanda.amdump("sidecar");
    assert_eq!(code, 0, "amdump of the sidecar DLE failed:\n{}\n{}", out, amanda.trace_log());

    let expected: Expected = products::archive_all_and_destroy(&pg, &committed);
    fs::remove_dir_all(amanda.hook_sidecar.join(&id)).expect("removing the stored sidecar");

    let restored_side = dir.path().join("restored-sidecar");
    amanda.fetch("datadir", &pg.datadir);
    amanda.fetch("sidecar", &restored_side);
    assert_eq!(amanda.ids_in(&restored_side), vec![id.clone()], "the sidecar dump should hold backup {}", id);
    products::prepare_start_and_check(&t, &pg, &id, &restored_side, &expected);
}

#[test]
fn amanda_failing_pre_fails_the_dump_and_a_failed_dump_leaves_nothing_held() {
    if !amanda_available() {
        return;
    }
    let dir = TestDir::new();
    let a = Cluster::new(dir.path(), "a");
    let b = Cluster::new(dir.path(), "b");
    let amanda = Amanda::new(&dir, &format!("a={};b={}", a.conninfo(), b.conninfo()), &a.datadir);

    // Node b is down: pre fails, with its one line in Amanda's report; Amanda tries the DLE
    // twice and both attempts fail; nothing is held and nothing stored.
    b.stop("fast");
    let (code, out) = amanda.amdump("datadir");
    let log = amanda.trace_log();
    assert_ne!(code, 0, "amdump must fail when pre fails:\n{}\n{}", out, log);
    let fails: Vec<&str> = log.lines().filter(|l| l.starts_with("FAIL dumper localhost datadir")).collect();
    assert!(!fails.is_empty(), "no failed dump in the trace log:\n{}", log);
    assert!(fails.iter().all(|l| l.contains("node b")), "the failure should name node b:\n{}", log);
    eprintln!(
        "failing pre, trace log:\n{}",
        log.lines().filter(|l| l.contains("datadir")).collect::<Vec<_>>().join("\n")
    );
    assert!(amanda.ids_in(&amanda.hook_sidecar).is_empty(), "a failed pre must store nothing");
    assert_eq!(
        a.query_scalar("select count(*) from pg_stat_activity where application_name like 'pg-backup-hooks %'"),
        "0"
    );

    // pre succeeds, a later script fails the dump: Amanda 3.5.1 still runs post-dle-backup
    // (and tells the script nothing about the failure), so post ends the backup; the retry in
    // the same run gets the next attempt's id, not a clash with the first.
    b.start().expect("starting b again");
    let (code, out) = amanda.amdump("latefail");
    let log = amanda.trace_log();
    assert_ne!(code, 0, "the dump should have failed:\n{}\n{}", out, log);
    assert!(log.contains("a later script failed on purpose"), "{}", log);
    let ids = amanda.ids_in(&amanda.hook_sidecar);
    eprintln!("failed dump after pre: stored ids {:?}", ids);
    assert!(ids.len() >= 2, "each attempt should have run pre and post with its own id: {:?}", ids);
    let ts = ids[0].rsplit_once('.').map(|(head, _)| head.to_string()).expect("id with attempt");
    for (n, id) in ids.iter().enumerate() {
        assert_eq!(id, &format!("{}.{}", ts, n + 1), "attempts of one run share Amanda's timestamp");
    }
    for pg in [&a, &b] {
        for id in &ids {
            pg.wait_no_backup_sessions(id);
        }
    }
    let (code, status) = amanda.tool(&["status", "--backup-id", &ids[0]]);
    assert_eq!(code, 4, "no backup may be held after the failed dump: {}", status);

    // The run is killed (amcleanup -k on the server) while the dump runs, after our pre. The
    // client's sendbackup goes on until its script returns, then dies on the broken
    // connection without running post-dle-backup, so the backup stays held...
    fs::write(amanda.root.join("slow"), "").expect("flag");
    let name = amanda.name.clone();
    let killer = std::thread::spawn(move || {
        // Once our pre has run and the script after it holds the dump up.
        let slow = format!("{name}-slow PRE-DLE-BACKUP");
        common::wait_until(Duration::from_secs(120), "the dump to reach the slow script", || {
            products::process_running(&slow)
        });
        products::run_limited(
            Command::new("runuser")
                .args(["-u", AMANDA_USER, "--", "/usr/sbin/amcleanup", "-k", &name])
                .current_dir("/"),
            Duration::from_secs(120),
        )
    });
    let (code, out) = amanda.amdump("killed");
    let (_, cleanup) = killer.join().expect("amcleanup thread");
    assert_ne!(code, 0, "the killed run should fail:\n{}\n--- amcleanup ---\n{}", out, cleanup);
    let slow = format!("{}-slow", amanda.name);
    common::wait_until(Duration::from_secs(60), "the killed run's client side to end", || {
        !products::process_running(&slow)
    });
    std::thread::sleep(Duration::from_secs(3));
    let post_killed =
        format!("POST-DLE-BACKUP --execute-where client --config {} --host localhost --disk killed", amanda.name);
    assert!(!amanda.client_debug("sendbackup").contains(&post_killed), "post-dle-backup ran after the kill");
    let held: Vec<String> = fs::read_dir(&amanda.hook_run)
        .expect("run dir")
        .flatten()
        .filter_map(|e| e.file_name().to_string_lossy().strip_suffix(".sock").map(str::to_string))
        .collect();
    assert_eq!(
        held.len(),
        1,
        "the killed run's backup should still be held (nothing ran after pre): {:?}\n{}",
        held,
        cleanup
    );
    assert_eq!(a.backup_sessions(&held[0]), 1);
    // ...until the next run of the same DLE discards it before its own pre.
    fs::remove_file(amanda.root.join("slow")).expect("flag");
    let (code, out) = amanda.amdump("killed");
    assert_eq!(code, 0, "the next run should succeed:\n{}\n{}", out, amanda.trace_log());
    for pg in [&a, &b] {
        pg.wait_no_backup_sessions(&held[0]);
    }
    let (_, status) = amanda.tool(&["status", "--backup-id", &held[0]]);
    assert!(status.contains("aborted on request"), "the leftover should have been aborted: {}", status);
    assert!(
        amanda.ids_in(&amanda.hook_sidecar).iter().any(|i| i.starts_with(&format!("amanda.{}.killed.", amanda.name))),
        "the next run stores its own backup"
    );
}

/// `amadmin CONFIG force|force-level-1 localhost DISK`: the next run dumps DISK at level 0 or 1.
fn amadmin_force(amanda: &Amanda, what: &str, disk: &str) {
    let (code, out) = products::run_limited(
        Command::new("runuser")
            .args(["-u", AMANDA_USER, "--", "/usr/sbin/amadmin", &amanda.name, what, "localhost", disk])
            .current_dir("/"),
        Duration::from_secs(60),
    );
    assert_eq!(code, 0, "amadmin {} failed:\n{}", what, out);
}

/// One amdump run of DLE `incr` at `level` (forced), with its backup id and datestamp.
fn dump_incr_at(amanda: &Amanda, level: u32) -> (String, String) {
    amadmin_force(amanda, if level == 0 { "force" } else { "force-level-1" }, "incr");
    let before = amanda.ids_in(&amanda.hook_sidecar);
    let t0 = std::time::Instant::now();
    let (code, out) = amanda.amdump("incr");
    assert_eq!(code, 0, "amdump of level {} failed:\n{}\n{}", level, out, amanda.trace_log());
    let ids = amanda.ids_in(&amanda.hook_sidecar);
    let id = ids.into_iter().find(|i| !before.contains(i)).expect("the run stored a backup");
    let date = id.rsplit('.').nth(1).expect("the datestamp in the id").to_string();
    let log = amanda.trace_log();
    assert!(
        log.lines().any(|l| l.starts_with(&format!("SUCCESS dumper localhost incr {} {} ", date, level))),
        "run {} did not dump at level {}:\n{}",
        date,
        level,
        log
    );
    eprintln!("amanda level {} ({}) in {:?}", level, id, t0.elapsed());
    (id, date)
}

#[test]
fn amanda_level_0_plus_level_1_restores_and_level_1_over_an_older_level_0_is_refused() {
    if !amanda_available() {
        return;
    }
    let started = std::time::Instant::now();
    let dir = TestDir::new();
    let pg = Cluster::new(dir.path(), "pg");
    let t = Tool::new(&dir);
    let amanda = Amanda::new(&dir, &format!("default={}", pg.conninfo()), &pg.datadir);

    // Run A: level 0. Then a table nothing touches again; run B: level 0; run C: level 1 on B.
    let inserter = Inserter::start(&pg);
    let (_, date_a) = dump_incr_at(&amanda, 0);
    pg.execute("create table between_runs(id int); insert into between_runs select generate_series(1, 1000)");
    let (_, date_b) = dump_incr_at(&amanda, 0);
    std::thread::sleep(Duration::from_secs(1));
    let (id_c, date_c) = dump_incr_at(&amanda, 1);
    let committed = inserter.finish();
    let expected: Expected = products::archive_all_and_destroy(&pg, &committed);

    // Level 1 of run C over the level 0 of run A: the copy lacks the table made between A and
    // B (and holds older files): refused, nothing changed.
    amanda.fetch_level("incr", &date_a, 0, &pg.datadir);
    amanda.fetch_level("incr", &date_c, 1, &pg.datadir);
    common::chown_to_server_user(&pg.datadir);
    let before = crate::label_archive::tree(&pg.datadir);
    let r = t.restore_prep(&id_c, &amanda.hook_sidecar, &pg);
    assert_eq!(r.code, 1, "level 1 over an older level 0 must be refused:\n{}\n{}", r.stdout, r.stderr);
    assert_eq!(r.stderr.trim().lines().count(), 1, "one line:\n{}", r.stderr);
    assert!(r.stderr.contains("missing") || r.stderr.contains("older"), "{}", r.stderr);
    assert_eq!(crate::label_archive::tree(&pg.datadir), before, "a refusal changes nothing");

    // Level 0 of run B, then level 1 of run C, in order: restores every committed row.
    fs::remove_dir_all(&pg.datadir).expect("removing the refused copy");
    amanda.fetch_level("incr", &date_b, 0, &pg.datadir);
    amanda.fetch_level("incr", &date_c, 1, &pg.datadir);
    products::prepare_start_and_check(&t, &pg, &id_c, &amanda.hook_sidecar, &expected);
    assert_eq!(pg.query_scalar("select count(*) from between_runs"), "1000");
    eprintln!("amanda levels test: {:?}", started.elapsed());
}

/// Issue 24: the scheduled restore test of docs/restore-test.md for Amanda, run as cron runs it
/// (`/bin/sh -c`, cron's environment plus the cron.d file's settings): after a level 0 and a
/// level 1 of a live, checksummed cluster, hooks/restore-test-amanda fetches both with
/// amfetchdump into an emptied scratch directory and runs restore-test on the newest backup;
/// its output (what cron mails or logger puts in syslog) says PASSED. With a byte of a
/// table's page changed in the fetched copy, FAILED naming the relation, exit 5. Production
/// keeps running and its archive gets nothing from the tests.
#[test]
fn amanda_scheduled_restore_test_from_cron_passes_and_a_damaged_copy_fails_naming_the_relation() {
    if !amanda_available() {
        return;
    }
    let dir = TestDir::new();
    let exe = roundtrip::install_bin(&dir);
    let opts = ClusterOpts { initdb_args: vec!["--data-checksums".into()], ..ClusterOpts::default() };
    let pg = Cluster::with_opts(dir.path(), "pg", opts);
    let amanda = Amanda::new(&dir, &format!("default={}", pg.conninfo()), &pg.datadir);
    // Table t: frozen and checkpointed before the backups, so no WAL replayed repairs its page.
    pg.execute("create table t (id int primary key) with (autovacuum_enabled = off); insert into t select generate_series(1, 1000)");
    pg.execute("vacuum freeze t");
    pg.execute("checkpoint");
    let rel = pg.query_scalar("select pg_relation_filepath('t')");
    let (id0, date0) = dump_incr_at(&amanda, 0);
    pg.execute("create table later (id int); insert into later select generate_series(1, 100)");
    std::thread::sleep(Duration::from_secs(1));
    let (id1, date1) = dump_incr_at(&amanda, 1);
    assert!(id1 > id0, "{} {}", id0, id1);
    roundtrip::switch_and_wait(&pg);
    let before = pg.archived_files();

    let scratch = dir.path().join("scratch");
    let settings = [
        ("AMANDA_CONFIG", amanda.name.clone()),
        ("AMANDA_HOST", "localhost".to_string()),
        ("AMANDA_DISK", "incr".to_string()),
        ("PGBH_SCRATCH", scratch.display().to_string()),
        ("PGBH_PGDATA_OWNER", common::server_user().unwrap_or_else(|| "postgres".into())),
        ("PGBH_BIN", exe.display().to_string()),
        ("PGBH_SIDECAR_DIR", amanda.hook_sidecar.display().to_string()),
        ("PGBH_ARCHIVE_DIR", pg.archive_dir.display().to_string()),
    ];
    let sbin = products::install_restore_test_scripts(&dir.path().join("sbin"), None);
    let started = std::time::Instant::now();
    let (code, out) = products::run_like_cron(&format!("{}/restore-test-amanda 2>&1", sbin.display()), &settings);
    let (_, find) = products::run_limited(
        Command::new("runuser")
            .args(["-u", AMANDA_USER, "--", "/usr/sbin/amadmin", &amanda.name, "find", "localhost", "incr"])
            .current_dir("/"),
        Duration::from_secs(60),
    );
    eprintln!("amanda restore test ({:?}, exit {}):\n{}\n--- amadmin find ---\n{}", started.elapsed(), code, out, find);
    assert!(out.contains(&format!("amfetchdump {} localhost incr {} level 0", amanda.name, date0)), "{}", out);
    assert!(out.contains(&format!("amfetchdump {} localhost incr {} level 1", amanda.name, date1)), "{}", out);
    assert!(out.contains(&format!("restore-test of backup {}", id1)), "the newest backup is tested:\n{}", out);
    assert!(out.contains("verdict: PASSED: the backup restores"), "{}", out);
    assert!(out.contains("amcheck") && out.contains("checksums"), "{}", out);
    assert_eq!(code, 0, "{}", out);
    assert!(pg.is_running(), "production keeps running");
    assert_eq!(pg.archived_files(), before, "the production archive got files from the test");

    let damaged = products::install_restore_test_scripts(&dir.path().join("sbin-damaged"), Some(&rel));
    let (code, out) = products::run_like_cron(&format!("{}/restore-test-amanda 2>&1", damaged.display()), &settings);
    eprintln!("amanda restore test of a damaged copy (exit {}):\n{}", code, out);
    assert!(out.contains(&format!("restore-test of backup {}", id1)), "{}", out);
    assert!(out.contains("verdict: FAILED"), "{}", out);
    assert!(out.contains("relation postgres.public.t"), "the output names the damaged relation:\n{}", out);
    assert_eq!(code, 5, "{}", out);
    assert!(pg.is_running(), "production keeps running");
    assert_eq!(pg.archived_files(), before, "the production archive got files from the test");
}
