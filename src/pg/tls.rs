//! Connecting with libpq's sslmode rules, over OpenSSL.
//!
//! | sslmode | encryption | certificate checked | host name checked |
//! |---|---|---|---|
//! | disable, allow | no | - | - |
//! | prefer (default) | if the server offers it | no | no |
//! | require | yes | only when a root certificate file exists (as libpq) | no |
//! | verify-ca | yes | yes | no |
//! | verify-full | yes | yes | yes |
//!
//! As in libpq, a Unix-domain socket never uses TLS, whatever the sslmode.
//!
//! The root certificate is `sslrootcert`, else ~/.postgresql/root.crt; a client certificate
//! `sslcert`/`sslkey`, else ~/.postgresql/postgresql.{crt,key} when present.

use std::path::{Path, PathBuf};

use openssl::ssl::{SslConnector, SslFiletype, SslMethod, SslVerifyMode};
use postgres::Client;
use postgres_openssl::MakeTlsConnector;

use crate::error::{pg_error, Result};
use crate::pg::conninfo::{ConnInfo, SslMode, TargetSessionAttrs};

fn home_file(name: &str) -> Option<PathBuf> {
    std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".postgresql").join(name))
}

/// Open a session with the settings in `info` (password from the file or environment,
/// TLS per sslmode, target_session_attrs as libpq). Errors name the server and never
/// include the password.
pub fn connect(info: &ConnInfo, application_name: &str) -> Result<Client> {
    let attrs = info.target_session_attrs()?;
    let want_standby = match attrs {
        TargetSessionAttrs::Primary => false,
        TargetSessionAttrs::Standby | TargetSessionAttrs::PreferStandby => true,
        _ => return connect_one(info, application_name),
    };
    let mut why = Vec::new();
    for host in info.per_host() {
        match connect_one(&host, application_name) {
            Ok(mut c) => match c.query_one("SELECT pg_catalog.pg_is_in_recovery()", &[]) {
                Ok(row) if row.get::<_, bool>(0) == want_standby => return Ok(c),
                Ok(row) => why.push(format!(
                    "{} is a {}",
                    host.endpoint(),
                    if row.get::<_, bool>(0) { "standby" } else { "primary" }
                )),
                Err(e) => why.push(format!("{}: {}", host.endpoint(), pg_error(&e))),
            },
            Err(e) => why.push(e.msg),
        }
    }
    if attrs == TargetSessionAttrs::PreferStandby {
        // libpq: no standby among the hosts, so take any server, in order.
        let mut any = info.clone();
        any.set("target_session_attrs", "any");
        return connect(&any, application_name);
    }
    Err(err!(
        "no server matches target_session_attrs={} ({})",
        info.get("target_session_attrs").unwrap_or(""),
        why.join("; ")
    ))
}

fn connect_one(info: &ConnInfo, application_name: &str) -> Result<Client> {
    let cfg = info.to_config(application_name)?;
    let mode = info.ssl_mode()?;
    let fail = |e: postgres::Error| err!("cannot connect to {}: {}", info.endpoint(), pg_error(&e));
    // libpq never uses TLS on a Unix-domain socket, whatever sslmode says.
    let unix_only =
        info.get("hostaddr").is_none() && info.get("host").is_some_and(|h| h.split(',').all(|h| h.starts_with('/')));
    let mut client = if matches!(mode, SslMode::Disable | SslMode::Allow) || unix_only {
        let mut cfg = cfg;
        cfg.ssl_mode(postgres::config::SslMode::Disable);
        cfg.connect(postgres::NoTls).map_err(fail)?
    } else {
        cfg.connect(connector(info, mode)?).map_err(fail)?
    };
    pin_search_path(&mut client).map_err(|e| err!("{}: {}", info.endpoint(), pg_error(&e)))?;
    Ok(client)
}

/// Every name our queries use lives in pg_catalog. A database owner can set a search_path
/// that puts another schema first (ALTER DATABASE ... SET search_path = x, pg_catalog) and
/// shadow pg_backup_start or pg_dist_node there; pin the session's path so that nothing
/// we call or read can be redirected, whatever the role's or database's settings say.
fn pin_search_path(c: &mut Client) -> std::result::Result<(), postgres::Error> {
    c.query_one("SELECT pg_catalog.set_config('search_path', 'pg_catalog, pg_temp', false)", &[]).map(|_| ())
}

/// libpq's rule for a client key file (fe-secure-openssl.c): a regular file, and no access
/// for group or others, except that a key owned by root may be group-readable (0640).
fn check_key_file(key: &Path) -> Result<()> {
    use std::os::unix::fs::MetadataExt;
    let meta = std::fs::metadata(key).map_err(|e| err!("sslkey {}: {}", key.display(), e))?;
    if !meta.is_file() {
        return Err(err!("sslkey {} is not a regular file", key.display()));
    }
    let mode = meta.mode();
    let too_open = if meta.uid() == 0 { mode & 0o037 != 0 } else { mode & 0o077 != 0 };
    if too_open {
        return Err(err!(
            "sslkey {} has group or world access (mode {:o}): chmod 0600 it (a key owned by root may be 0640), as libpq requires",
            key.display(),
            mode & 0o7777
        ));
    }
    Ok(())
}

fn connector(info: &ConnInfo, mode: SslMode) -> Result<MakeTlsConnector> {
    let what = |e: openssl::error::ErrorStack| err!("TLS setup for {}: {}", info.endpoint(), e);
    let mut b = SslConnector::builder(SslMethod::tls_client()).map_err(what)?;
    let root = match info.get("sslrootcert") {
        Some(p) => Some(PathBuf::from(p)),
        None => home_file("root.crt").filter(|p| p.exists()),
    };
    let verify = match (mode, &root) {
        (SslMode::VerifyCa | SslMode::VerifyFull, None) => {
            return Err(err!(
                "sslmode={} for {} needs the CA certificate: set sslrootcert (or PGSSLROOTCERT), or put it in ~/.postgresql/root.crt",
                mode,
                info.endpoint()
            ))
        }
        (SslMode::VerifyCa | SslMode::VerifyFull | SslMode::Require, Some(_)) => true,
        _ => false,
    };
    if let (true, Some(root)) = (verify, &root) {
        b.set_ca_file(root).map_err(|e| err!("sslrootcert {}: {}", root.display(), e))?;
        b.set_verify(SslVerifyMode::PEER);
    } else {
        b.set_verify(SslVerifyMode::NONE);
    }
    let cert = info.get("sslcert").map(PathBuf::from).or_else(|| home_file("postgresql.crt").filter(|p| p.exists()));
    if let Some(cert) = cert {
        let key = info.get("sslkey").map(PathBuf::from).or_else(|| home_file("postgresql.key")).unwrap_or_default();
        b.set_certificate_chain_file(&cert).map_err(|e| err!("sslcert {}: {}", cert.display(), e))?;
        check_key_file(&key)?;
        b.set_private_key_file(&key, SslFiletype::PEM).map_err(|e| err!("sslkey {}: {}", key.display(), e))?;
    }
    let mut tls = MakeTlsConnector::new(b.build());
    let check_host = mode == SslMode::VerifyFull;
    tls.set_callback(move |c, _| {
        c.set_verify_hostname(check_host);
        Ok(())
    });
    Ok(tls)
}
