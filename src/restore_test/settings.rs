//! The settings a test restore runs with, given as `-c` options on the postgres command line
//! so they win over whatever the restored postgresql.conf and postgresql.auto.conf say: no
//! TCP (listen_addresses ''), a private Unix socket directory (mode 0700, owned by the data
//! directory's owner) with its own pg_hba.conf and pg_ident.conf, no archiving, no
//! replication connection, no commands the production configuration may run (archive
//! cleanup, recovery end), no external pid file, no log collector (the log is ours), a small
//! shared_buffers. restore_command comes only from restore-prep's recovery settings.
//! max_connections and the other settings a hot standby must not lower are left alone.

use std::path::{Path, PathBuf};

use crate::error::{Context, Result};
use crate::fsutil;

/// The private directory of one test restore: socket, hba and ident files, and an empty
/// postgresql.conf when the data directory has none (Debian keeps it under /etc).
#[derive(Debug, Clone)]
pub struct Private {
    pub dir: PathBuf,
    pub port: u16,
    pub hba_file: PathBuf,
    pub ident_file: PathBuf,
    pub config_file: PathBuf,
}

/// pg_hba.conf of the test server: Unix-socket connections only (the socket directory is
/// the owner's, mode 0700: only the owner and root reach it).
const HBA: &str = "# pg-backup-hooks restore-test: local connections through this private socket directory only\n\
local all all trust\n";

/// Make the private directory under the system's temporary directory, owned by `owner`.
pub fn make_private(pgdata: &Path, owner: (u32, u32)) -> Result<Private> {
    let dir = fsutil::create_temp_dir_in(&std::env::temp_dir(), "pgbh-restore-test.", 0o700)?;
    fsutil::chown(&dir, owner.0, owner.1)?;
    let hba_file = dir.join("pg_hba.conf");
    let ident_file = dir.join("pg_ident.conf");
    fsutil::write_atomic(&hba_file, HBA.as_bytes(), 0o600, Some(owner))?;
    fsutil::write_atomic(&ident_file, b"", 0o600, Some(owner))?;
    let config_file = if pgdata.join("postgresql.conf").is_file() {
        pgdata.join("postgresql.conf")
    } else {
        let c = dir.join("postgresql.conf");
        fsutil::write_atomic(
            &c,
            b"# pg-backup-hooks restore-test: the data directory has no postgresql.conf\n",
            0o600,
            Some(owner),
        )?;
        c
    };
    Ok(Private { port: free_port()?, dir, hba_file, ident_file, config_file })
}

/// A port nothing listens on now. The server listens on no TCP address, so the port only
/// names its socket file in the private directory; a free one keeps `ps` and logs unambiguous.
fn free_port() -> Result<u16> {
    let l = std::net::TcpListener::bind("127.0.0.1:0").context(|| "cannot find a free port")?;
    Ok(l.local_addr().context(|| "cannot find a free port")?.port())
}

/// The overriding settings, in order (name, value).
pub fn overrides(p: &Private, pgdata: &Path, major: u32) -> Vec<(&'static str, String)> {
    let s = |p: &Path| p.to_string_lossy().into_owned();
    let mut v: Vec<(&'static str, String)> = vec![
        ("config_file", s(&p.config_file)),
        ("data_directory", s(pgdata)),
        ("hba_file", s(&p.hba_file)),
        ("ident_file", s(&p.ident_file)),
        ("listen_addresses", String::new()),
        ("port", p.port.to_string()),
        ("unix_socket_directories", s(&p.dir)),
        ("unix_socket_permissions", "0700".into()),
        ("external_pid_file", String::new()),
        ("archive_mode", "off".into()),
        ("archive_command", String::new()),
        ("synchronous_standby_names", String::new()),
        ("shared_buffers", "128MB".into()),
        ("huge_pages", "try".into()),
        ("ssl", "off".into()),
        ("hot_standby", "on".into()),
        ("logging_collector", "off".into()),
        ("log_destination", "stderr".into()),
        ("cluster_name", "pg-backup-hooks restore-test".into()),
    ];
    if major >= 12 {
        // Before 12 these live in recovery.conf, which restore-prep writes.
        v.push(("primary_conninfo", String::new()));
        v.push(("primary_slot_name", String::new()));
        v.push(("archive_cleanup_command", String::new()));
        v.push(("recovery_end_command", String::new()));
    }
    if major >= 15 {
        v.push(("archive_library", String::new()));
    }
    v
}

/// `-c name=value` for each override (one argument each: no shell is involved).
pub fn args(p: &Private, pgdata: &Path, major: u32) -> Vec<String> {
    overrides(p, pgdata, major).into_iter().flat_map(|(k, v)| ["-c".to_string(), format!("{}={}", k, v)]).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nothing_listens_archives_or_replicates() {
        let p = Private {
            dir: "/tmp/x".into(),
            port: 5999,
            hba_file: "/tmp/x/pg_hba.conf".into(),
            ident_file: "/tmp/x/pg_ident.conf".into(),
            config_file: "/d/postgresql.conf".into(),
        };
        let a = args(&p, Path::new("/d"), 15);
        for want in [
            "listen_addresses=",
            "archive_mode=off",
            "archive_command=",
            "primary_conninfo=",
            "unix_socket_directories=/tmp/x",
            "hba_file=/tmp/x/pg_hba.conf",
            "external_pid_file=",
            "archive_library=",
        ] {
            assert!(a.iter().any(|x| x == want), "{} missing from {:?}", want, a);
        }
        let old = args(&p, Path::new("/d"), 11);
        assert!(!old.iter().any(|x| x.starts_with("primary_conninfo")), "11 has no such GUC: {:?}", old);
        assert!(a.chunks(2).all(|c| c[0] == "-c"));
    }
}
