//! The fault matrix: a backup is never silently broken, a label is never lost, and no
//! stranger talks to the helper.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crate::common;
use crate::common::tool::{label_field, Tool};
use crate::common::{Cluster, TestDir};

#[test]
fn two_pres_racing_for_one_id_exactly_one_wins() {
    let dir = TestDir::new();
    let pg = Cluster::new(dir.path(), "pg");
    let t = Arc::new(Tool::new(&dir));
    let ci = pg.conninfo();
    let hs: Vec<_> = (0..6)
        .map(|_| {
            let t = t.clone();
            let ci = ci.clone();
            std::thread::spawn(move || {
                let r = t.pre("race", &[("default", ci)], &[]);
                (r.code, r.stderr)
            })
        })
        .collect();
    let results: Vec<(i32, String)> = hs.into_iter().map(|h| h.join().expect("thread")).collect();
    assert_eq!(results.iter().filter(|(c, _)| *c == 0).count(), 1, "exactly one pre wins: {:?}", results);
    for (code, stderr) in results.iter().filter(|(c, _)| *c != 0) {
        assert_eq!(*code, 1);
        assert!(stderr.contains("already in progress"), "a loser says why: {}", stderr);
    }
    assert_eq!(pg.backup_sessions("race"), 1);
    t.post("race").ok();
}

#[test]
fn many_backups_at_once_against_one_server_all_succeed_with_different_labels() {
    let dir = TestDir::new();
    let pg = Cluster::new(dir.path(), "pg");
    let t = Tool::new(&dir);
    let ids = ["many-1", "many-2", "many-3", "many-4"];
    for id in ids {
        t.pre(id, &[("default", pg.conninfo())], &[]).ok();
    }
    for id in ids {
        t.post(id).ok();
    }
    let labels: Vec<String> = ids.iter().map(|id| t.label(id, "default")).collect();
    for (i, id) in ids.iter().enumerate() {
        assert_eq!(label_field(&labels[i], "LABEL"), *id);
    }
    let mut starts: Vec<String> = labels.iter().map(|l| label_field(l, "START WAL LOCATION")).collect();
    starts.sort();
    starts.dedup();
    assert_eq!(starts.len(), ids.len(), "each backup has its own start");
}

#[test]
fn stale_lock_and_socket_from_a_crashed_helper_are_not_trusted() {
    let dir = TestDir::new();
    let pg = Cluster::new(dir.path(), "pg");
    let t = Tool::new(&dir);
    // What a helper leaves behind when the machine loses power: a lock file nobody holds
    // and a socket file nobody listens on.
    std::fs::write(t.run_dir.join("stale.lock"), b"").expect("lock");
    let l = std::os::unix::net::UnixListener::bind(t.run_dir.join("stale.sock")).expect("bind");
    drop(l);
    let st = t.status_json("stale");
    assert_eq!(st[0]["phase"], "not-running", "{}", st);
    t.post("stale").fails(1, "cannot be restored");
    t.pre("stale", &[("default", pg.conninfo())], &[]).ok();
    t.post("stale").ok();
}

fn raw_request(t: &Tool, id: &str, bytes: &[u8]) -> String {
    let mut s = UnixStream::connect(t.run_dir.join(format!("{}.sock", id))).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(10))).expect("timeout");
    let _ = s.write_all(bytes);
    let _ = s.shutdown(std::net::Shutdown::Write);
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    out
}

#[test]
fn malformed_oversized_and_unknown_version_messages_are_rejected_and_the_backup_goes_on() {
    let dir = TestDir::new();
    let pg = Cluster::new(dir.path(), "pg");
    let t = Tool::new(&dir);
    t.pre("fuzzed", &[("default", pg.conninfo())], &[]).ok();
    let r = raw_request(&t, "fuzzed", b"this is not json\n");
    assert!(r.contains("\"kind\":\"error\"") && r.contains("malformed"), "{}", r);
    let r = raw_request(&t, "fuzzed", b"{\"v\":7,\"op\":\"stop\",\"archive_timeout_secs\":1}\n");
    assert!(r.contains("unsupported protocol version 7"), "{}", r);
    let r = raw_request(&t, "fuzzed", b"{\"v\":1,\"op\":\"drop_everything\"}\n");
    assert!(r.contains("\"kind\":\"error\""), "{}", r);
    let big = vec![b'x'; 2 << 20];
    let r = raw_request(&t, "fuzzed", &big);
    assert!(r.contains("too long") || r.is_empty(), "{}", r);
    let r = raw_request(&t, "fuzzed", &[0xff, 0xfe, b'\n']);
    assert!(r.contains("\"kind\":\"error\""), "{}", r);
    let _ = raw_request(&t, "fuzzed", b"");
    assert_eq!(pg.backup_sessions("fuzzed"), 1, "the backup is still held");
    t.post("fuzzed").ok();
}

#[test]
fn a_peer_with_another_uid_is_refused_and_logged() {
    if !nix::unistd::geteuid().is_root() {
        crate::common::skip("needs root to connect as another user");
        return;
    }
    let dir = TestDir::new();
    let pg = Cluster::new(dir.path(), "pg");
    let t = Tool::new(&dir);
    t.pre("peer", &[("default", pg.conninfo())], &[]).ok();
    // Open the door on purpose (mode bits), so that only the peer-credential check is left.
    use std::os::unix::fs::PermissionsExt;
    let sock = t.run_dir.join("peer.sock");
    std::fs::set_permissions(&t.run_dir, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    std::fs::set_permissions(&sock, std::fs::Permissions::from_mode(0o666)).expect("chmod");
    let script = format!(
        "import socket\ns=socket.socket(socket.AF_UNIX)\ns.connect({:?})\ntry:\n    s.sendall(b'{{\"v\":1,\"op\":\"abort\"}}\\n')\n    print('reply:', s.recv(4096))\nexcept OSError as e:\n    print('reply: refused', e)",
        sock.display().to_string()
    );
    let out = common::server_command("python3").arg("-c").arg(&script).output().expect("python3");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("reply: b''") || text.contains("reply: refused"),
        "the stranger got no answer: {} {}",
        text,
        String::from_utf8_lossy(&out.stderr)
    );
    std::thread::sleep(Duration::from_millis(200));
    let log = std::fs::read_to_string(t.run_dir.join("peer.log")).expect("log");
    assert!(log.contains("refused a connection from uid"), "{}", log);
    assert_eq!(pg.backup_sessions("peer"), 1, "the stranger's abort did nothing");
    std::fs::set_permissions(&t.run_dir, std::fs::Permissions::from_mode(0o700)).expect("chmod");
    t.post("peer").ok();
}

#[test]
fn a_run_dir_others_can_write_is_refused() {
    let dir = TestDir::new();
    let pg = Cluster::new(dir.path(), "pg");
    let t = Tool::new(&dir);
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&t.run_dir, std::fs::Permissions::from_mode(0o777)).expect("chmod");
    t.pre("open", &[("default", pg.conninfo())], &[]).fails(1, "writable by group or others");
    if nix::unistd::geteuid().is_root() {
        std::fs::set_permissions(&t.run_dir, std::fs::Permissions::from_mode(0o700)).expect("chmod");
        common::chown_to_server_user(&t.run_dir);
        t.pre("open", &[("default", pg.conninfo())], &[]).fails(1, "not by us");
    }
    assert_eq!(pg.backup_sessions("open"), 0);
}

/// A TCP proxy we can cut: forwards 127.0.0.1:<port> to the server until told to drop.
struct Proxy {
    port: u16,
    cut: Arc<AtomicBool>,
}

impl Proxy {
    fn new(target: u16) -> Proxy {
        let l = common::local_listener();
        let port = l.local_addr().expect("addr").port();
        let cut = Arc::new(AtomicBool::new(false));
        let c = cut.clone();
        std::thread::spawn(move || {
            for conn in l.incoming() {
                let Ok(client) = conn else { return };
                let Ok(server) = TcpStream::connect(("127.0.0.1", target)) else { continue };
                for (mut from, mut to) in
                    [(client.try_clone().expect("clone"), server.try_clone().expect("clone")), (server, client)]
                {
                    let c = c.clone();
                    std::thread::spawn(move || {
                        let _ = from.set_read_timeout(Some(Duration::from_millis(100)));
                        let mut buf = [0u8; 16384];
                        loop {
                            if c.load(Ordering::SeqCst) {
                                let _ = from.shutdown(std::net::Shutdown::Both);
                                let _ = to.shutdown(std::net::Shutdown::Both);
                                return;
                            }
                            match from.read(&mut buf) {
                                Ok(0) => return,
                                Ok(n) => {
                                    if to.write_all(&buf[..n]).is_err() {
                                        return;
                                    }
                                }
                                Err(e)
                                    if matches!(
                                        e.kind(),
                                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                                    ) => {}
                                Err(_) => return,
                            }
                        }
                    });
                }
            }
        });
        Proxy { port, cut }
    }
}

#[test]
fn a_cut_network_to_one_node_is_detected_and_post_names_it() {
    let dir = TestDir::new();
    let a = Cluster::new(dir.path(), "a");
    let b = Cluster::new(dir.path(), "b");
    let t = Tool::new(&dir);
    let proxy = Proxy::new(b.port);
    let via_proxy = format!("host=127.0.0.1 port={} user=postgres dbname=postgres", proxy.port);
    t.pre("netcut", &[("a", a.conninfo()), ("b", via_proxy)], &["--heartbeat", "1"]).ok();
    proxy.cut.store(true, Ordering::SeqCst);
    common::wait_until(Duration::from_secs(20), "status to show node b lost", || {
        t.status_json("netcut")[0]["nodes"][1]["failed"] == true
    });
    let health = t.status_json("netcut")[0]["nodes"][1]["health"].as_str().unwrap_or("").to_string();
    assert!(health.contains("session lost"), "{}", health);
    t.post("netcut").fails(1, "node b");
    common::wait_until(Duration::from_secs(10), "node b's backup to end", || b.backup_sessions("netcut") == 0);
    // The helper replies to post, then exits; node a's session closes with it.
    a.wait_no_backup_sessions("netcut");
}

#[test]
fn a_standby_promoted_during_the_backup_is_detected() {
    let dir = TestDir::new();
    let primary = Cluster::new(dir.path(), "primary");
    let standby = common::standby_of(&primary, dir.path(), "standby");
    let t = Tool::new(&dir);
    let pre = t.pre("promo", &[("standby", standby.conninfo())], &["--heartbeat", "1"]).ok();
    assert!(pre.stderr.contains("standby without archive_mode = always"), "{}", pre.stderr);
    standby.execute("select pg_promote()");
    common::wait_until(Duration::from_secs(20), "status to show the promotion", || {
        t.status_json("promo")[0]["nodes"][0]["failed"] == true
    });
    let st = t.status_json("promo");
    assert!(st[0]["nodes"][0]["health"].as_str().unwrap_or("").contains("promoted"), "{}", st);
    t.post("promo").fails(1, "promoted");
}

#[test]
fn a_backup_from_a_standby_stores_a_standby_label() {
    let dir = TestDir::new();
    let primary = Cluster::new(dir.path(), "primary");
    let standby = common::standby_of(&primary, dir.path(), "standby");
    let t = Tool::new(&dir);
    t.pre("fromstandby", &[("standby", standby.conninfo())], &[]).ok();
    primary.execute("create table x as select generate_series(1,1000) i");
    t.post("fromstandby").ok();
    let label = t.label("fromstandby", "standby");
    assert_eq!(label_field(&label, "BACKUP FROM"), "standby");
    let m = t.manifest("fromstandby");
    assert_eq!(m["nodes"][0]["from_standby"], true);
    assert!(m["nodes"][0]["archive_note"].as_str().unwrap_or("").contains("from the primary"), "{}", m);
    assert!(m["restore_point_note"].as_str().unwrap_or("").contains("standby"), "{}", m);
}

#[test]
fn an_immediate_restart_of_a_node_is_detected_too() {
    let dir = TestDir::new();
    let pg = Cluster::new(dir.path(), "pg");
    let t = Tool::new(&dir);
    t.pre("crash", &[("default", pg.conninfo())], &["--heartbeat", "1"]).ok();
    pg.restart("immediate");
    common::wait_until(Duration::from_secs(15), "status to show the node failed", || {
        t.status_json("crash")[0]["nodes"][0]["failed"] == true
    });
    t.post("crash").fails(1, "node default");
    assert!(!t.backup_dir("crash").join("manifest.json").exists());
}

#[test]
fn abort_after_a_successful_post_leaves_the_stored_backup_alone() {
    let dir = TestDir::new();
    let pg = Cluster::new(dir.path(), "pg");
    let t = Tool::new(&dir);
    t.pre("kept", &[("default", pg.conninfo())], &[]).ok();
    t.post("kept").ok();
    let before = std::fs::read(t.backup_dir("kept").join("manifest.json")).expect("manifest");
    let r = t.abort("kept").ok();
    assert!(r.stdout.contains("nothing to abort") && r.stdout.contains("already stored"), "{}", r.stdout);
    assert_eq!(std::fs::read(t.backup_dir("kept").join("manifest.json")).expect("manifest"), before);
    t.run(&["verify", "--backup-id", "kept", "--sidecar-dir", &t.sidecar.display().to_string()]).ok();
}

#[test]
fn a_corrupted_sidecar_is_refused_with_a_precise_message() {
    let dir = TestDir::new();
    let pg = Cluster::new(dir.path(), "pg");
    let t = Tool::new(&dir);
    t.pre("dmg", &[("default", pg.conninfo())], &[]).ok();
    t.post("dmg").ok();
    let side = t.sidecar.display().to_string();
    let verify = || t.run(&["verify", "--backup-id", "dmg", "--sidecar-dir", &side]);
    let label = t.backup_dir("dmg").join("default/backup_label");
    let manifest = t.backup_dir("dmg").join("manifest.json");
    let good_label = std::fs::read(&label).expect("label");
    let good_manifest = std::fs::read(&manifest).expect("manifest");

    // An edited label (someone "fixed" the checkpoint location by hand).
    let edited = String::from_utf8_lossy(&good_label).replace("CHECKPOINT LOCATION: ", "CHECKPOINT LOCATION: 1");
    std::fs::write(&label, edited).expect("write");
    verify().fails(1, "does not match its sha256");
    // A missing file.
    std::fs::remove_file(&label).expect("rm");
    verify().fails(1, "cannot read");
    std::fs::write(&label, &good_label).expect("write");
    verify().ok();
    // A manifest that is not JSON any more.
    std::fs::write(&manifest, &good_manifest[..good_manifest.len() / 2]).expect("truncate");
    verify().fails(1, "is not a valid manifest");
    // restore-prep says the same before touching a data directory.
    pg.stop("fast");
    let r = t.run(&[
        "restore-prep",
        "--backup-id",
        "dmg",
        "--sidecar-dir",
        &side,
        "--pgdata",
        &pg.datadir.display().to_string(),
        "--archive-dir",
        &pg.archive_dir.display().to_string(),
    ]);
    assert_ne!(r.code, 0);
    assert!(r.stderr.contains("manifest") && r.stderr.lines().count() == 1, "{}", r.stderr);
}

#[test]
fn a_post_killed_while_waiting_for_the_archive_does_not_block_the_next_one() {
    let dir = TestDir::new();
    let pg = Cluster::new(dir.path(), "pg");
    let t = Tool::new(&dir);
    pg.set_archiving_works(false);
    t.pre("killedpost", &[("default", pg.conninfo())], &[]).ok();
    // The first post waits (up to an hour) for an archive that does not move; kill it.
    let run = t.run_dir.display().to_string();
    let mut first = t
        .cmd(&["post", "--backup-id", "killedpost", "--run-dir", &run])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("post");
    std::thread::sleep(Duration::from_secs(1));
    first.kill().expect("kill post");
    let _ = first.wait();
    // The helper still waits for the first post; a retry must not queue behind that wait.
    let t0 = std::time::Instant::now();
    t.with_run("post", "killedpost", &["--archive-timeout", "2"]).fails(3, "NOT restorable");
    assert!(t0.elapsed() < Duration::from_secs(20), "the retry ran its own wait: {:?}", t0.elapsed());
    pg.set_archiving_works(true);
    t.with_run("post", "killedpost", &["--archive-timeout", "60"]).ok();
    assert_eq!(t.manifest("killedpost")["status"], "complete");
}
