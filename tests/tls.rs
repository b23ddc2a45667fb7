//! Connections over TLS, with libpq's sslmode rules, against a server with a self-signed
//! certificate made by the test.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use crate::common;
use crate::common::tool::Tool;
use crate::common::{Cluster, ClusterOpts, TestDir};

/// A self-signed certificate for `localhost`, readable by the server user.
fn certificate(dir: &Path) -> (PathBuf, PathBuf) {
    let (crt, key) = (dir.join("server.crt"), dir.join("server.key"));
    common::run_checked(
        std::process::Command::new("openssl")
            .args(["req", "-new", "-x509", "-days", "2", "-nodes", "-subj", "/CN=localhost"])
            .args(["-addext", "subjectAltName=DNS:localhost", "-keyout"])
            .arg(&key)
            .arg("-out")
            .arg(&crt),
    );
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).expect("chmod key");
    common::chown_to_server_user(dir);
    (crt, key)
}

fn ssl_cluster(dir: &TestDir) -> (Cluster, PathBuf) {
    let certs = dir.mkdir("certs");
    let (crt, key) = certificate(&certs);
    let opts = ClusterOpts {
        extra_conf: vec![
            "ssl = on".into(),
            format!("ssl_cert_file = '{}'", crt.display()),
            format!("ssl_key_file = '{}'", key.display()),
        ],
        ..Default::default()
    };
    (Cluster::with_opts(dir.path(), "tls", opts), crt)
}

#[test]
fn sslmode_require_encrypts_the_held_session() {
    let dir = TestDir::new();
    let (pg, _) = ssl_cluster(&dir);
    let t = Tool::new(&dir);
    let ci = format!("host=localhost port={} user=postgres dbname=postgres sslmode=require", pg.port);
    t.pre("tls-req", &[("default", ci)], &[]).ok();
    let ssl = pg.query_scalar(
        "select s.ssl from pg_stat_ssl s join pg_stat_activity a using (pid) where a.application_name = 'pg-backup-hooks tls-req'",
    );
    assert_eq!(ssl, "t", "the helper's session is encrypted");
    t.post("tls-req").ok();
}

#[test]
fn sslmode_verify_full_checks_the_certificate_and_the_host_name() {
    let dir = TestDir::new();
    let (pg, crt) = ssl_cluster(&dir);
    let t = Tool::new(&dir);
    let full = |host: &str| {
        format!(
            "host={} port={} user=postgres dbname=postgres sslmode=verify-full sslrootcert={}",
            host,
            pg.port,
            crt.display()
        )
    };
    t.pre("tls-full", &[("default", full("localhost"))], &[]).ok();
    t.post("tls-full").ok();
    // The certificate names localhost, not 127.0.0.1.
    let r = t.pre("tls-wrong-host", &[("default", full("127.0.0.1"))], &[]).fails(1, "node default: cannot connect");
    assert!(r.stderr.to_lowercase().contains("certificate"), "{}", r.stderr);
    // verify-ca without a CA certificate says what is missing.
    let ca = format!("host=localhost port={} user=postgres dbname=postgres sslmode=verify-ca", pg.port);
    let r: common::tool::Ran = t
        .cmd(&[
            "pre",
            "--backup-id",
            "tls-ca",
            "--sidecar-dir",
            &t.sidecar.display().to_string(),
            "--run-dir",
            &t.run_dir.display().to_string(),
            "--node",
            &format!("default={}", ca),
        ])
        .env("HOME", dir.path())
        .output()
        .expect("run")
        .into();
    r.fails(1, "needs the CA certificate");
}

#[test]
fn sslmode_require_against_a_server_without_tls_is_refused() {
    let dir = TestDir::new();
    let pg = Cluster::new(dir.path(), "plain");
    let t = Tool::new(&dir);
    let ci = format!("host=127.0.0.1 port={} user=postgres dbname=postgres sslmode=require", pg.port);
    t.pre("tls-none", &[("default", ci)], &[]).fails(1, "node default: cannot connect");
    // As in libpq, a Unix-domain socket never uses TLS: require does not get in the way.
    let sock = format!("{} sslmode=require", pg.socket_conninfo());
    t.pre("tls-sock", &[("default", sock)], &[]).ok();
    t.post("tls-sock").ok();
    // prefer (the default) falls back to a plain connection, as psql does.
    t.pre("tls-prefer", &[("default", pg.conninfo())], &[]).ok();
    t.post("tls-prefer").ok();
}

/// A cluster with TLS where role `bk` (password `bkSECRET`) must authenticate: with a
/// clear-text password without TLS, with SCRAM-SHA-256 over TLS.
fn password_cluster(dir: &TestDir) -> Cluster {
    let (pg, _) = ssl_cluster(dir);
    pg.execute("set password_encryption = 'scram-sha-256'; create role bk login superuser password 'bkSECRET'");
    let hba = pg.datadir.join("pg_hba.conf");
    let old = std::fs::read_to_string(&hba).expect("read pg_hba.conf");
    let lines = "hostnossl all bk 127.0.0.1/32 password\nhostssl all bk 127.0.0.1/32 scram-sha-256\n";
    std::fs::write(&hba, format!("{}{}", lines, old)).expect("write pg_hba.conf");
    pg.execute("select pg_reload_conf()");
    std::thread::sleep(std::time::Duration::from_millis(300));
    pg
}

fn pre_with_password(t: &Tool, id: &str, conninfo: &str) -> common::tool::Ran {
    let (sidecar, run) = (t.sidecar.display().to_string(), t.run_dir.display().to_string());
    let node = format!("default={}", conninfo);
    let args = ["pre", "--backup-id", id, "--sidecar-dir", &sidecar, "--run-dir", &run, "--fast", "--node", &node];
    t.cmd(&args).env("PGPASSWORD", "bkSECRET").output().expect("run pre").into()
}

#[test]
fn channel_binding_require_is_honoured_or_refused_never_ignored() {
    let dir = TestDir::new();
    let pg = password_cluster(&dir);
    let t = Tool::new(&dir);
    let ci = |host: &str, ssl: &str, cb: &str| {
        format!("host={} port={} user=bk dbname=postgres sslmode={} channel_binding={}", host, pg.port, ssl, cb)
    };
    // The server asks for a clear-text password: require must not send it.
    let r = pre_with_password(&t, "cb-clear", &ci("127.0.0.1", "disable", "require")).fails(1, "node default");
    assert!(r.stderr.contains("channel binding"), "says why: {}", r.stderr);
    assert!(!r.stderr.contains("bkSECRET"), "{}", r.stderr);
    assert_eq!(pg.backup_sessions("cb-clear"), 0);
    // The same without require: libpq sends it (the user asked for no protection).
    pre_with_password(&t, "cb-plain", &ci("127.0.0.1", "disable", "prefer")).ok();
    t.post("cb-plain").ok();
    // Over TLS with SCRAM the driver binds the channel (SCRAM-SHA-256-PLUS): require works.
    pre_with_password(&t, "cb-tls", &ci("localhost", "require", "require")).ok();
    let ssl = pg.query_scalar(
        "select s.ssl from pg_stat_ssl s join pg_stat_activity a using (pid) where a.application_name = 'pg-backup-hooks cb-tls'",
    );
    assert_eq!(ssl, "t");
    t.post("cb-tls").ok();
    // A value libpq does not know is a usage error.
    pre_with_password(&t, "cb-bad", &ci("localhost", "require", "always")).fails(2, "channel_binding");
}

#[test]
fn an_sslkey_others_can_read_is_refused_as_libpq_does() {
    let dir = TestDir::new();
    let (pg, _) = ssl_cluster(&dir);
    let t = Tool::new(&dir);
    let client = dir.mkdir("client");
    let (crt, key) = certificate(&client);
    let me = nix::unistd::geteuid();
    for f in [&client, &crt, &key] {
        nix::unistd::chown(f.as_path(), Some(me), None).expect("chown to us");
    }
    let ci = format!(
        "host=localhost port={} user=postgres dbname=postgres sslmode=require sslcert={} sslkey={}",
        pg.port,
        crt.display(),
        key.display()
    );
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).expect("chmod");
    let r = t.pre("key-open", &[("default", ci.clone())], &[]).fails(1, "group or world access");
    assert!(r.stderr.contains(&key.display().to_string()), "names the file: {}", r.stderr);
    assert_eq!(pg.backup_sessions("key-open"), 0);
    // libpq lets a key owned by root be group-readable; anyone else's must be 0600 or less.
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o640)).expect("chmod");
    let r = t.pre("key-0640", &[("default", ci.clone())], &[]);
    if me.is_root() {
        r.ok();
        t.post("key-0640").ok();
    } else {
        r.fails(1, "group or world access");
    }
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    t.pre("key-0600", &[("default", ci)], &[]).ok();
    t.post("key-0600").ok();
}
