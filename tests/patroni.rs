//! Patroni-managed clusters (issue 25): a real three-member Patroni cluster with etcd on
//! 127.0.0.1 (Debian's patroni and etcd-server), run as the server user. `pre --discover
//! patroni=...` backs up the member Patroni names; the copy restores on the side with every
//! committed row.
//!
//! Skips (and passes) when Patroni or etcd is missing, unless PGBH_REQUIRE_PATRONI is set
//! (CI sets it; .ci/run installs them).

use std::fs;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::Duration;

use crate::common::roundtrip::{install_bin, start_and_wait_promoted, switch_and_wait, tar_create, tar_extract};
use crate::common::standby::{amcheck, pgbench_init, tpcb_sums, Load, CLIENT_BINDIR};
use crate::common::tool::Tool;
use crate::common::{chown_to_server_user, free_port, server_command, wait_until, Cluster, ClusterOpts, TestDir};
use crate::products;
use pg_backup_hooks::pg::patroni::{self as api, Member};

const PROGRAMS: &[&str] = &["/usr/bin/patroni", "/usr/bin/patronictl", "/usr/bin/etcd"];

fn patroni_available() -> bool {
    products::available("Patroni", PROGRAMS, "PGBH_REQUIRE_PATRONI", ".ci/run (apt-get install patroni etcd-server)")
}

/// A process (runuser and what it runs) in its own process group, killed with the group.
struct Proc(Child);

impl Proc {
    fn spawn(mut cmd: std::process::Command, log: &Path) -> Proc {
        let out = fs::File::create(log).unwrap_or_else(|e| panic!("creating {}: {e}", log.display()));
        let err = out.try_clone().expect("dup log");
        cmd.stdin(Stdio::null()).stdout(out).stderr(err).process_group(0);
        Proc(cmd.spawn().unwrap_or_else(|e| panic!("starting {cmd:?}: {e}")))
    }

    /// The process has ended (a zombie not yet waited for counts as ended).
    fn exited(&self) -> bool {
        match fs::read_to_string(format!("/proc/{}/stat", self.0.id())) {
            Ok(stat) => stat.rsplit_once(") ").is_some_and(|(_, rest)| rest.starts_with('Z')),
            Err(_) => true,
        }
    }

    fn kill(&mut self) {
        let pg = nix::unistd::Pid::from_raw(self.0.id() as i32);
        let _ = nix::sys::signal::killpg(pg, nix::sys::signal::Signal::SIGKILL);
        let _ = self.0.wait();
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill();
    }
}

/// One Patroni member: its Patroni process, its REST API URL, and its PostgreSQL as the
/// harness's Cluster (to query it; stopped on drop after Patroni is killed).
struct PMember {
    name: String,
    url: String,
    config: PathBuf,
    log: PathBuf,
    pg: Cluster,
    proc: Option<Proc>,
}

/// etcd and three Patroni members, killed on drop (Patroni first, then PostgreSQL, then etcd).
struct Patroni {
    members: Vec<PMember>,
    /// The WAL archive every member's archive_command writes (only the leader archives).
    archive: PathBuf,
    /// The CA of the REST API's certificate when it serves https.
    cacert: Option<PathBuf>,
    etcd: Option<Proc>,
}

impl Drop for Patroni {
    fn drop(&mut self) {
        for m in &mut self.members {
            if let Some(mut p) = m.proc.take() {
                p.kill();
            }
        }
        if let Some(mut e) = self.etcd.take() {
            e.kill();
        }
    }
}

/// A member's patroni.yml; `bootstrap` is more of the bootstrap section (a custom method),
/// each line indented by four spaces.
#[allow(clippy::too_many_arguments)]
fn member_config(
    scope: &str,
    m: &str,
    api_port: u16,
    pg_port: u16,
    root: &Path,
    etcd: u16,
    archive: &Path,
    bootstrap: &str,
) -> String {
    let a = archive.display();
    let r = root.display();
    format!(
        "scope: {scope}
name: {m}
log:
  level: INFO
restapi:
  listen: 127.0.0.1:{api_port}
  connect_address: 127.0.0.1:{api_port}
etcd3:
  hosts: 127.0.0.1:{etcd}
bootstrap:
{bootstrap}  dcs:
    ttl: 20
    loop_wait: 1
    retry_timeout: 5
    postgresql:
      use_pg_rewind: true
      use_slots: true
      parameters:
        wal_level: replica
        archive_mode: 'on'
        archive_command: 'test -f {a}/%f || cp %p {a}/%f'
        fsync: 'off'
        wal_log_hints: 'on'
  initdb:
    - data-checksums
    - encoding: UTF8
    - locale: C
  pg_hba:
    - local all all trust
    - host all all 127.0.0.1/32 trust
    - host replication all 127.0.0.1/32 trust
postgresql:
  listen: 127.0.0.1:{pg_port}
  connect_address: 127.0.0.1:{pg_port}
  data_dir: {r}/data
  bin_dir: {CLIENT_BINDIR}
  pgpass: {r}/pgpass
  authentication:
    replication:
      username: postgres
    superuser:
      username: postgres
  parameters:
    unix_socket_directories: '{r}/sock'
    logging_collector: 'on'
    log_directory: '{r}'
    log_filename: 'server.log'
    log_line_prefix: '%m [%p] '
"
    )
}

impl Patroni {
    /// etcd, then member m1 (which bootstraps the cluster), then m2 and m3; waits until one
    /// leader and two streaming replicas are listed.
    fn start(dir: &TestDir, scope: &str) -> Patroni {
        Patroni::start_with(dir, scope, "", None)
    }

    /// [`Patroni::start`] with more of the bootstrap section (`  method: ...` lines).
    /// `tls`: a directory with cert.pem and key.pem (a self-signed certificate for 127.0.0.1):
    /// the REST API serves https with it.
    fn start_with(dir: &TestDir, scope: &str, bootstrap: &str, tls: Option<&Path>) -> Patroni {
        let base = dir.mkdir(scope);
        let archive = dir.mkdir(&format!("{scope}/archive"));
        let (client, peer) = (free_port(), free_port());
        let etcd_dir = base.join("etcd");
        let mut etcd = server_command("/usr/bin/etcd");
        etcd.arg("--name")
            .arg("e1")
            .arg("--data-dir")
            .arg(&etcd_dir)
            .arg("--listen-client-urls")
            .arg(format!("http://127.0.0.1:{client}"))
            .arg("--advertise-client-urls")
            .arg(format!("http://127.0.0.1:{client}"))
            .arg("--listen-peer-urls")
            .arg(format!("http://127.0.0.1:{peer}"))
            .arg("--initial-advertise-peer-urls")
            .arg(format!("http://127.0.0.1:{peer}"))
            .arg("--initial-cluster")
            .arg(format!("e1=http://127.0.0.1:{peer}"));
        let etcd = Proc::spawn(etcd, &base.join("etcd.log"));
        let cacert = tls.map(|d| d.join("cert.pem"));
        let mut p = Patroni { members: Vec::new(), archive, cacert, etcd: Some(etcd) };
        for i in 1..=3 {
            let name = format!("m{i}");
            let root = dir.mkdir(&format!("{scope}/{name}"));
            fs::create_dir_all(root.join("sock")).expect("mkdir sock");
            let (api_port, pg_port) = (free_port(), free_port());
            let config = root.join("patroni.yml");
            let mut yml = member_config(scope, &name, api_port, pg_port, &root, client, &p.archive, bootstrap);
            if let Some(d) = tls {
                let restapi = format!(
                    "restapi:\n  certfile: {}\n  keyfile: {}\n  cafile: {}\n",
                    d.join("cert.pem").display(),
                    d.join("key.pem").display(),
                    d.join("cert.pem").display()
                );
                yml = yml.replacen("restapi:\n", &restapi, 1);
                yml.push_str(&format!("ctl:\n  cacert: {}\n", d.join("cert.pem").display()));
            }
            fs::write(&config, yml).expect("writing patroni.yml");
            chown_to_server_user(&root);
            let pg = Cluster {
                name: name.clone(),
                root: root.clone(),
                datadir: root.join("data"),
                archive_dir: p.archive.clone(),
                port: pg_port,
                socket_dir: root.join("sock"),
                log_file: root.join("server.log"),
                opts: ClusterOpts::default(),
            };
            let log = root.join("patroni.log");
            let scheme = if tls.is_some() { "https" } else { "http" };
            let url = format!("{scheme}://127.0.0.1:{api_port}");
            let mut m = PMember { name, url, config, log, pg, proc: None };
            m.start();
            p.members.push(m);
            if i == 1 {
                p.wait_healthy(1);
            }
        }
        p.wait_healthy(3);
        p
    }

    fn urls(&self) -> Vec<String> {
        self.members.iter().map(|m| m.url.clone()).collect()
    }

    /// `patroni=URL,URL,URL`, the --discover value.
    fn discover(&self) -> String {
        format!("patroni={}", self.urls().join(","))
    }

    fn members_now(&self) -> Vec<Member> {
        let client = api::Client { auth: None, cacert: self.cacert.clone() };
        api::cluster_with(&client, &self.urls()).map(|(_, m)| m).unwrap_or_default()
    }

    fn member(&self, name: &str) -> &PMember {
        self.members.iter().find(|m| m.name == name).unwrap_or_else(|| panic!("no member {name}"))
    }

    fn leader(&self) -> &PMember {
        let m = self.members_now();
        let l = m.iter().find(|m| m.role == "leader").unwrap_or_else(|| panic!("no leader: {m:?}"));
        self.member(&l.name)
    }

    /// Wait until `n` members run: one leader, the others streaming replicas at lag 0.
    fn wait_healthy(&self, n: usize) {
        let logs = || {
            self.members
                .iter()
                .map(|m| {
                    format!(
                        "--- {} ---\n{}\n--- {} server.log ---\n{}",
                        m.name,
                        tail(&m.log),
                        m.name,
                        tail(&m.pg.log_file)
                    )
                })
                .collect::<Vec<_>>()
                .join("\n")
        };
        let deadline = std::time::Instant::now() + Duration::from_secs(90);
        loop {
            let m = self.members_now();
            let leaders = m.iter().filter(|m| m.role == "leader" && m.state == "running").count();
            let replicas = m.iter().filter(|m| m.is_replica() && m.is_streaming() && m.lag == Some(0)).count();
            if m.len() == n && leaders == 1 && replicas == n - 1 {
                return;
            }
            let died = self.members.iter().find(|m| m.proc.as_ref().is_some_and(Proc::exited));
            if let Some(d) = died {
                panic!("Patroni of member {} exited: {m:?}\n{}", d.name, logs());
            }
            if std::time::Instant::now() > deadline {
                panic!("the Patroni cluster did not become healthy: {m:?}\n{}", logs());
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// Wait until every replica has replayed what the leader wrote so far.
    fn wait_caught_up(&self) {
        let leader = &self.leader().pg;
        let target = leader.query_scalar("select pg_current_wal_lsn()");
        for m in &self.members {
            if m.pg.port != leader.port {
                wait_until(Duration::from_secs(60), "a replica to catch up", || {
                    m.pg.query_scalar(&format!("select pg_last_wal_replay_lsn() >= '{target}'::pg_lsn")) == "t"
                });
            }
        }
    }
}

impl PMember {
    fn start(&mut self) {
        let mut cmd = server_command("/usr/bin/patroni");
        cmd.arg(&self.config);
        self.proc = Some(Proc::spawn(cmd, &self.log));
    }
}

fn tail(p: &Path) -> String {
    let s = fs::read_to_string(p).unwrap_or_default();
    let lines: Vec<&str> = s.lines().collect();
    lines[lines.len().saturating_sub(40)..].join("\n")
}

/// The template --node: who to connect as; the host and port come from Patroni.
const TEMPLATE: (&str, &str) = ("members", "user=postgres dbname=postgres");

fn template() -> [(&'static str, String); 1] {
    [(TEMPLATE.0, TEMPLATE.1.to_string())]
}

/// A member's copy put beside the cluster: its own directory, port, socket, hba and ident
/// files, no primary, no archiving (the harness's Cluster over it, not started).
fn side_copy(dir: &TestDir, tar: &Path, name: &str) -> Cluster {
    let root = dir.mkdir(name);
    fs::create_dir_all(root.join("sock")).expect("mkdir sock");
    tar_extract(tar, &root);
    let datadir = root.join("data");
    let port = free_port();
    let conf = datadir.join("postgresql.conf");
    let mut text = fs::read_to_string(&conf).expect("the copy's postgresql.conf");
    text.push_str(&format!(
        "\n# restored beside the Patroni cluster\nport = {port}\nunix_socket_directories = '{}'\nhba_file = '{}'\nident_file = '{}'\nprimary_conninfo = ''\nprimary_slot_name = ''\narchive_mode = off\nlogging_collector = off\n",
        root.join("sock").display(),
        datadir.join("pg_hba.conf").display(),
        datadir.join("pg_ident.conf").display()
    ));
    fs::write(&conf, text).expect("writing postgresql.conf");
    chown_to_server_user(&root);
    Cluster {
        name: name.to_string(),
        root: root.clone(),
        datadir,
        archive_dir: root.join("archive"),
        port,
        socket_dir: root.join("sock"),
        log_file: root.join("server.log"),
        opts: ClusterOpts::default(),
    }
}

fn restore_prep(exe: &Path, t: &Tool, id: &str, pg: &Cluster, archive: &Path, target: Option<&str>) -> String {
    let side = t.sidecar.display().to_string();
    let mut cmd = std::process::Command::new(exe);
    cmd.args(["restore-prep", "--backup-id", id, "--sidecar-dir", &side, "--pgdata"])
        .arg(&pg.datadir)
        .arg("--archive-dir")
        .arg(archive)
        .args(["--archive-mode", "off"]);
    if let Some(t) = target {
        cmd.args(["--target", t]);
    }
    let out = cmd.output().expect("running restore-prep");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "restore-prep: {text}{}", String::from_utf8_lossy(&out.stderr));
    chown_to_server_user(&pg.datadir);
    text
}

/// Issue 25: a backup from the least-lagged replica under pgbench load, with the restore
/// point and WAL switch on the leader; the replica's copy restores beside the cluster, to the
/// backup's restore point and to the latest archived WAL, with pgbench's sums intact.
#[test]
fn a_backup_from_a_replica_restores_with_every_committed_row() {
    if !patroni_available() {
        return;
    }
    let dir = TestDir::new();
    let exe = install_bin(&dir);
    let p = Patroni::start(&dir, "pa");
    let leader = p.leader();
    pgbench_init(&leader.pg, 2);
    p.wait_caught_up();
    let t = Tool::new(&dir);
    let load = Load::start(&leader.pg, 2);
    std::thread::sleep(Duration::from_secs(1));
    let id = "pat-replica";
    let discover = p.discover();
    let history_at_pre = tpcb_sums(&leader.pg).4;
    let pre = t.pre(id, &template(), &["--discover", &discover, "--discover-role", "replica"]).ok();
    // The least-lagged streaming replica, ties by name: not the leader.
    let chosen = pre
        .stdout
        .lines()
        .find_map(|l| l.strip_prefix("discovered Patroni member "))
        .and_then(|l| l.split(' ').next())
        .unwrap_or_else(|| panic!("pre names no member: {}", pre.stdout))
        .to_string();
    assert_ne!(chosen, leader.name, "{}", pre.stdout);
    assert!(pre.stdout.contains("(replica, running"), "{}", pre.stdout);
    assert!(
        pre.stdout.contains(&format!("node {chosen}: restore point and WAL switch on the leader")),
        "{}",
        pre.stdout
    );
    let replica = p.member(&chosen);
    assert_eq!(replica.pg.query_scalar("select pg_is_in_recovery()"), "t");
    let tar = dir.path().join("replica.tar");
    tar_create(&replica.pg.datadir, &tar);
    let post = t.post(id).ok();
    let history_at_post = tpcb_sums(&leader.pg).4;
    std::thread::sleep(Duration::from_secs(1));
    drop(load);
    let leader_sums = tpcb_sums(&leader.pg);
    switch_and_wait(&leader.pg);
    let m = t.manifest(id);
    assert_eq!(m["nodes"][0]["name"], chosen.as_str(), "{m:#}");
    assert_eq!(m["nodes"][0]["from_standby"], true, "{m:#}");
    assert!(
        m["restore_point"]["lsns"][chosen.as_str()].is_string(),
        "the restore point was made on the leader: {m:#}\n{}",
        post.stdout
    );

    // To the restore point: the transactions committed by then, no more than at post.
    let at_point = side_copy(&dir, &tar, "restored-point");
    let out = restore_prep(&exe, &t, id, &at_point, &p.archive, Some("restore-point"));
    assert!(out.contains(&format!("restore point \"{id}\"")), "{out}");
    start_and_wait_promoted(&at_point);
    let (a, b, tl, h, rows) = tpcb_sums(&at_point);
    assert!(a == b && b == tl && tl == h, "TPC-B sums differ at the restore point: {a} {b} {tl} {h}");
    assert!(
        rows >= history_at_pre && rows <= history_at_post,
        "{rows} transactions, committed {history_at_pre}..{history_at_post}"
    );
    eprintln!(
        "restore point: {rows} pgbench transactions (pre {history_at_pre}, post {history_at_post}); {}",
        amcheck(&at_point)
    );
    t.restore_check_proves(id, &t.sidecar, &at_point);
    at_point.stop("fast");

    // To the latest archived WAL: exactly the leader's sums.
    let latest = side_copy(&dir, &tar, "restored-latest");
    restore_prep(&exe, &t, id, &latest, &p.archive, Some("latest"));
    start_and_wait_promoted(&latest);
    assert_eq!(tpcb_sums(&latest), leader_sums, "the latest restore has the leader's sums");
    eprintln!("latest: {} pgbench transactions, as on the leader; {}", leader_sums.4, amcheck(&latest));
}

/// One "host" of the cluster for `hook generic`: its own run directory and environment file
/// naming its member's REST API as the local one; the sidecar is shared.
fn host_env(dir: &TestDir, p: &Patroni, m: &PMember, sidecar: &Path, only_on: &str) -> PathBuf {
    let host = dir.path().join(format!("host-{}", m.name));
    let run = host.join("run");
    fs::create_dir_all(&run).expect("mkdir run");
    fs::set_permissions(&run, std::os::unix::fs::PermissionsExt::from_mode(0o700)).expect("chmod run");
    let env = host.join(format!("env-{only_on}"));
    let text = format!(
        "PGBH_RUN_DIR={}\nPGBH_SIDECAR_DIR={}\nPGBH_NODES='{}={}'\nPGBH_DISCOVER={}\nPGBH_PATRONI_ONLY_ON={}\nPGBH_PATRONI_URL={}\nPGBH_FAST=1\n",
        run.display(),
        sidecar.display(),
        TEMPLATE.0,
        TEMPLATE.1,
        p.discover(),
        only_on,
        m.url
    );
    fs::write(&env, text).expect("writing the environment file");
    fs::set_permissions(&env, std::os::unix::fs::PermissionsExt::from_mode(0o600)).expect("chmod env");
    env
}

fn hook(env: &Path, args: &[&str]) -> (i32, String) {
    let t = Tool::new(&TestDir::new());
    let out = t
        .cmd(&[&["hook", "generic"], args].concat())
        .env("PGBH_ENV_FILE", env)
        .env_remove("PGBH_DISCOVER")
        .env_remove("PGBH_DISCOVER_ROLE")
        .output()
        .expect("running the hook");
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    (out.status.code().unwrap_or(-1), text)
}

/// Issue 25 item 2: the same job on every member's host with PGBH_PATRONI_ONLY_ON=replica:
/// exactly one host (the least-lagged replica's) takes the backup; pre, post and abort on
/// the others end successfully with one line and do nothing.
#[test]
fn the_hook_on_every_members_host_makes_exactly_one_backup() {
    if !patroni_available() {
        return;
    }
    let dir = TestDir::new();
    let p = Patroni::start(&dir, "pb");
    let leader = p.leader().name.clone();
    let sidecar = dir.path().join("shared-sidecar");
    fs::create_dir(&sidecar).expect("mkdir sidecar");
    fs::set_permissions(&sidecar, std::os::unix::fs::PermissionsExt::from_mode(0o700)).expect("chmod sidecar");
    let envs: Vec<(String, PathBuf)> =
        p.members.iter().map(|m| (m.name.clone(), host_env(&dir, &p, m, &sidecar, "replica"))).collect();
    let id = "pat-hook";
    let mut took = Vec::new();
    for (name, env) in &envs {
        let (code, out) = hook(env, &["pre", id]);
        assert_eq!(code, 0, "pre on {name}'s host: {out}");
        if out.contains("is the one: taking the backup") {
            assert!(out.contains(&format!("backup {id} started on 1 node(s)")), "{out}");
            assert!(out.contains(&format!("discovered Patroni member {name} (replica")), "{out}");
            took.push(name.clone());
        } else {
            assert!(out.contains("PGBH_PATRONI_ONLY_ON=replica: skipped on this host"), "pre on {name}'s host: {out}");
            assert!(!out.contains("running: pre"), "a skipped host runs no pre: {out}");
        }
    }
    assert_eq!(took.len(), 1, "exactly one host takes the backup: {took:?}");
    assert_ne!(took[0], leader);
    for (name, env) in &envs {
        let (code, out) = hook(env, &["post", id]);
        assert_eq!(code, 0, "post on {name}'s host: {out}");
        if *name == took[0] {
            assert!(out.contains("post succeeded") && out.contains("is complete and restorable"), "{out}");
        } else {
            assert!(out.contains("post: nothing to do (PGBH_PATRONI_ONLY_ON=replica: skipped"), "{out}");
        }
    }
    let backups: Vec<String> = fs::read_dir(&sidecar)
        .expect("sidecar")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(backups, [id], "one backup in the sidecar");
    let m: serde_json::Value =
        serde_json::from_slice(&fs::read(sidecar.join(id).join("manifest.json")).expect("manifest")).expect("json");
    assert_eq!(m["nodes"].as_array().map(Vec::len), Some(1), "{m:#}");
    assert_eq!(m["nodes"][0]["name"], took[0].as_str(), "{m:#}");
    // PGBH_PATRONI_ONLY_ON=leader: the leader's host alone, backing up the leader.
    let leader_envs: Vec<(String, PathBuf)> =
        p.members.iter().map(|m| (m.name.clone(), host_env(&dir, &p, m, &sidecar, "leader"))).collect();
    let mut took_leader = Vec::new();
    for (name, env) in &leader_envs {
        let (code, out) = hook(env, &["pre", "pat-hook-leader"]);
        assert_eq!(code, 0, "pre on {name}'s host: {out}");
        if out.contains("is the one: taking the backup") {
            assert!(out.contains(&format!("discovered Patroni member {name} (leader")), "{out}");
            took_leader.push(name.clone());
        }
    }
    assert_eq!(took_leader, std::slice::from_ref(&leader), "only the leader's host takes the backup");
    for (name, env) in &leader_envs {
        let (code, out) = hook(env, &["post", "pat-hook-leader"]);
        assert_eq!(code, 0, "post on {name}'s host: {out}");
    }
    assert!(sidecar.join("pat-hook-leader").join("manifest.json").exists());
    // abort on a host that skipped: nothing to abort, success.
    let other = envs.iter().find(|(n, _)| *n != took[0]).expect("another host");
    let (code, out) = hook(&other.1, &["pre", "pat-hook-2"]);
    assert_eq!(code, 0, "{out}");
    let (code, out) = hook(&other.1, &["abort", "pat-hook-2"]);
    assert!(code == 0 && out.contains("abort: nothing to do"), "{out}");
}

/// Issue 25 item 3: `patronictl switchover` while a backup from a replica is held: post fails
/// naming the switchover and ends the backup; the next backup follows the new topology.
#[test]
fn a_switchover_during_a_backup_fails_post_and_the_next_backup_works() {
    if !patroni_available() {
        return;
    }
    let dir = TestDir::new();
    let p = Patroni::start(&dir, "pc");
    let old_leader = p.leader().name.clone();
    pgbench_init(&p.leader().pg, 1);
    p.wait_caught_up();
    let t = Tool::new(&dir);
    let discover = p.discover();
    let args = ["--discover", discover.as_str(), "--discover-role", "replica"];
    let pre = t.pre("pat-sw", &template(), &args).ok();
    assert!(pre.stdout.contains("(replica, running"), "{}", pre.stdout);
    let mut ctl = server_command("/usr/bin/patronictl");
    ctl.arg("-c").arg(&p.member(&old_leader).config).args(["switchover", "--force"]);
    let started = std::time::Instant::now();
    let out = ctl.output().expect("running patronictl");
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "patronictl switchover: {text}");
    wait_until(Duration::from_secs(60), "a new leader", || {
        p.members_now().iter().any(|m| m.role == "leader" && m.state == "running" && m.name != old_leader)
    });
    eprintln!("switchover away from {old_leader}: {:.1} s", started.elapsed().as_secs_f64());
    let r = t.post("pat-sw").fails(1, "Patroni: a switchover or failover");
    eprintln!("post: {}", r.stderr.trim());
    assert!(r.stderr.contains(&format!("leader {old_leader}")) && r.stderr.contains("NOT restorable"), "{}", r.stderr);
    assert!(!t.sidecar.join("pat-sw").join("manifest.json").exists(), "no manifest for a failed backup");
    for m in &p.members {
        if m.pg.query_scalar("select pg_is_in_recovery()") == "f" {
            assert_eq!(m.pg.backup_sessions("pat-sw"), 0, "the backup's sessions are closed");
        }
    }
    // The next run follows the new topology.
    p.wait_healthy(3);
    let new_leader = p.leader();
    assert_ne!(new_leader.name, old_leader);
    let pre = t.pre("pat-sw2", &template(), &args).ok();
    assert!(
        pre.stdout.contains(&format!(
            "restore point and WAL switch on the leader dbname=postgres host=127.0.0.1 port={}",
            new_leader.pg.port
        )),
        "{}",
        pre.stdout
    );
    let post = t.post("pat-sw2").ok();
    assert!(post.stdout.contains("is complete and restorable"), "{}", post.stdout);
}

/// Issue 25 item 4: a new Patroni cluster bootstrapped from a replica's backup with Patroni's
/// custom bootstrap method: the method's command extracts the copy the backup program
/// restored into Patroni's data directory and runs restore-prep over it; Patroni starts it,
/// waits for the end of recovery, and then clones the other members from it.
#[test]
fn a_new_patroni_cluster_bootstraps_from_the_backup_and_a_replica_joins() {
    if !patroni_available() {
        return;
    }
    let dir = TestDir::new();
    let exe = install_bin(&dir);
    let old = Patroni::start(&dir, "pd");
    let leader = old.leader();
    pgbench_init(&leader.pg, 1);
    old.wait_caught_up();
    let t = Tool::new(&dir);
    let load = Load::start(&leader.pg, 2);
    std::thread::sleep(Duration::from_secs(1));
    let id = "pat-boot";
    let discover = old.discover();
    let history_at_pre = tpcb_sums(&leader.pg).4;
    let pre = t.pre(id, &template(), &["--discover", &discover, "--discover-role", "replica"]).ok();
    let chosen = pre
        .stdout
        .lines()
        .find_map(|l| l.strip_prefix("discovered Patroni member "))
        .and_then(|l| l.split(' ').next())
        .expect("pre names the member")
        .to_string();
    let tar = dir.path().join("copy.tar");
    tar_create(&old.member(&chosen).pg.datadir, &tar);
    t.post(id).ok();
    let history_at_post = tpcb_sums(&leader.pg).4;
    drop(load);
    switch_and_wait(&leader.pg);

    // What the restore host has: the copy (tar), the sidecar, the archive, all the server user's.
    let side = dir.path().join("sidecar-restore");
    common_cp(&t.sidecar, &side);
    let script = dir.path().join("bootstrap-from-backup.sh");
    fs::write(
        &script,
        format!(
            "#!/bin/sh\nset -eu\nfor a; do case \"$a\" in --datadir=*) D=\"${{a#--datadir=}}\";; --data_dir=*) D=\"${{a#--data_dir=}}\";; esac; done\nmkdir -p \"$D\"\nchmod 700 \"$D\"\ntar -C \"$D\" --strip-components=1 -xf {tar}\n{exe} restore-prep --backup-id {id} --sidecar-dir {side} --pgdata \"$D\" --archive-dir {archive} --target restore-point\n",
            tar = tar.display(),
            exe = exe.display(),
            side = side.display(),
            archive = old.archive.display()
        ),
    )
    .expect("writing the bootstrap script");
    fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o755)).expect("chmod script");
    chown_to_server_user(&side);
    chown_to_server_user(&tar);
    let method =
        format!("  method: pgbh\n  pgbh:\n    command: {}\n    keep_existing_recovery_conf: true\n", script.display());
    let new = Patroni::start_with(&dir, "pe", &method, None);
    let new_leader = new.leader();
    let (a, b, tl, h, rows) = tpcb_sums(&new_leader.pg);
    assert!(a == b && b == tl && tl == h, "TPC-B sums differ in the new cluster: {a} {b} {tl} {h}");
    assert!(
        rows >= history_at_pre && rows <= history_at_post,
        "{rows} transactions restored, committed {history_at_pre}..{history_at_post}"
    );
    eprintln!(
        "new Patroni cluster: leader {} with {rows} pgbench transactions; {}",
        new_leader.name,
        amcheck(&new_leader.pg)
    );
    // Every member of the new cluster, the cloned ones too, has the same data.
    new.wait_caught_up();
    for m in &new.members {
        assert_eq!(tpcb_sums(&m.pg).4, rows, "member {} of the new cluster", m.name);
    }
    let boot_log = fs::read_to_string(&new.member("m1").log).unwrap_or_default();
    assert!(boot_log.contains("Running custom bootstrap script"), "{boot_log}");
    // Recovery ended at the backup's restore point: the new timeline's history file says so.
    let wal = new_leader.pg.datadir.join("pg_wal");
    let mut histories: Vec<PathBuf> = fs::read_dir(&wal)
        .expect("pg_wal")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|x| x == "history"))
        .collect();
    histories.sort();
    let history = fs::read_to_string(histories.last().expect("a timeline history file")).expect("history");
    assert!(history.contains(&format!("at restore point \"{id}\"")), "{history}");
    // Patroni discards the recovery settings after the bootstrap: restore-check takes the target
    // from restore-prep's record, with --target or without, and proves it.
    let side = t.sidecar.display().to_string();
    let node = format!("{chosen}={}", new_leader.pg.conninfo());
    let base = ["restore-check", "--backup-id", id, "--sidecar-dir", &side, "--node", &node];
    for extra in [&[][..], &["--target", "restore-point"][..]] {
        let check = t.run(&[&base[..], extra].concat());
        eprintln!("restore-check {extra:?} on the Patroni leader: exit {}: {}", check.code, check.stdout.trim());
        assert!(
            check.code == 0 && check.stdout.contains(&format!("node {chosen}: PROVEN (restore point \"{id}\")")),
            "{}\n{}",
            check.stdout,
            check.stderr
        );
    }
}

/// `cp -a from to` (as root).
fn common_cp(from: &Path, to: &Path) {
    let out = std::process::Command::new("cp").arg("-a").arg(from).arg(to).output().expect("cp");
    assert!(out.status.success(), "cp: {}", String::from_utf8_lossy(&out.stderr));
}

/// The REST API over https: pre verifies Patroni's certificate against PGBH_PATRONI_CACERT
/// (and the host, an IP address here), and refuses the connection without it.
#[test]
fn discovery_over_https_verifies_patronis_certificate() {
    if !patroni_available() {
        return;
    }
    let dir = TestDir::new();
    let tls = dir.mkdir("tls");
    let out = std::process::Command::new("openssl")
        .args(["req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=127.0.0.1"])
        .args(["-addext", "subjectAltName=IP:127.0.0.1", "-keyout"])
        .arg(tls.join("key.pem"))
        .arg("-out")
        .arg(tls.join("cert.pem"))
        .output()
        .expect("running openssl");
    assert!(out.status.success(), "openssl: {}", String::from_utf8_lossy(&out.stderr));
    chown_to_server_user(&tls);
    let p = Patroni::start_with(&dir, "pf", "", Some(&tls));
    assert!(p.members[0].url.starts_with("https://"));
    let t = Tool::new(&dir);
    let discover = p.discover();
    let args = ["--discover", discover.as_str(), "--discover-role", "leader"];
    let r = t.pre("pat-tls-no-ca", &template(), &args);
    assert_eq!(r.code, 1, "{}{}", r.stdout, r.stderr);
    assert!(r.stderr.contains("TLS with 127.0.0.1") && r.stderr.contains("certificate verify failed"), "{}", r.stderr);
    let ca = tls.join("cert.pem").display().to_string();
    let (side, run) = (t.sidecar.display().to_string(), t.run_dir.display().to_string());
    let node = format!("{}={}", TEMPLATE.0, TEMPLATE.1);
    let pre = |id: &str, env: &[(&str, &str)]| {
        let mut c = t.cmd(&[
            "pre",
            "--backup-id",
            id,
            "--sidecar-dir",
            &side,
            "--run-dir",
            &run,
            "--fast",
            "--node",
            &node,
            "--discover",
            &discover,
        ]);
        for (k, v) in env {
            c.env(k, v);
        }
        let out = c.output().expect("pre");
        let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        (out.status.code().unwrap_or(-1), text)
    };
    // Credentials come in pairs, from the environment only.
    let (code, text) = pre("pat-tls-user", &[("PGBH_PATRONI_CACERT", &ca), ("PGBH_PATRONI_USER", "backup")]);
    assert!(code == 2 && text.contains("PGBH_PATRONI_USER is set but PGBH_PATRONI_PASSWORD is not"), "{text}");
    let secret = "s3cret-Patroni-pw";
    let env =
        [("PGBH_PATRONI_CACERT", ca.as_str()), ("PGBH_PATRONI_USER", "backup"), ("PGBH_PATRONI_PASSWORD", secret)];
    let (code, text) = pre("pat-tls", &env);
    assert_eq!(code, 0, "{text}");
    let leader = p.leader().name.clone();
    assert!(text.contains(&format!("discovered Patroni member {leader} (leader, running")), "{text}");
    let post = t.post("pat-tls").ok();
    assert!(!text.contains(secret) && !post.stdout.contains(secret) && !post.stderr.contains(secret));
    for f in fs::read_dir(&t.run_dir).expect("run dir") {
        let f = f.expect("entry").path();
        let data = fs::read(&f).unwrap_or_default();
        assert!(!String::from_utf8_lossy(&data).contains(secret), "{} holds the password", f.display());
    }
}
