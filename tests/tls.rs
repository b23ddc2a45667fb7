//! Connections over TLS, with libpq's sslmode rules, against a server with a self-signed
//! certificate made by the test.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use common::tool::Tool;
use common::{Cluster, ClusterOpts, TestDir};

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
