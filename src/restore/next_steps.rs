//! What restore-prep tells the operator to run next, with nothing left to fill in: the start
//! command (the full path of the copy's major's pg_ctl, run as the data directory's owner,
//! with a log file) and the exact restore-check command line.

use std::path::{Path, PathBuf};
use std::process::Command;

use serde::Serialize;

use crate::restore::autoconf;
use crate::restore::recovery::shell_quote;

/// The log file pg_ctl's `-l` writes into, inside the data directory (the owner can write
/// there; its parent may be root's).
pub const START_LOG: &str = "pg-backup-hooks-restore.log";

/// The commands after restore-prep, as the report prints them.
#[derive(Serialize, Debug, Clone)]
pub struct NextSteps {
    /// Starts the server: `[runuser -u OWNER --] PG_CTL -D DIR -l LOG start`.
    pub start_command: String,
    /// Why the start command is not complete, or what else it needs (no pg_ctl found, the
    /// configuration lives outside the data directory).
    pub start_notes: Vec<String>,
    /// restore-check with the backup id, the sidecar directories and the node; None when
    /// there is no sidecar to check against (--label-from-archive without one).
    pub check_command: Option<String>,
}

/// What the next steps are made from.
pub struct Request<'a> {
    pub pgdata: &'a Path,
    pub major: u32,
    pub owner: u32,
    pub backup_id: &'a str,
    pub node: &'a str,
    pub sidecar_dirs: &'a [PathBuf],
    /// This program (restore-check is run with the same binary).
    pub exe: &'a Path,
}

/// The start command and the restore-check command line for this copy.
pub fn plan(r: &Request) -> NextSteps {
    let q = |p: &Path| shell_quote(&p.to_string_lossy());
    let owner = owner_name(r.owner);
    let as_owner = owner.as_ref().map(|u| format!("runuser -u {} -- ", u)).unwrap_or_default();
    let mut notes = Vec::new();
    let pg_ctl = match find_pg_ctl(r.major) {
        Some(p) => q(&p),
        None => {
            notes.push(format!(
                "pg_ctl of PostgreSQL {} was not found (not in PGBH_PG_BINDIR, /usr/lib/postgresql/{}/bin or pg_config --bindir): install PostgreSQL {}'s server programs and use its pg_ctl",
                r.major, r.major, r.major
            ));
            "pg_ctl".to_string()
        }
    };
    if !r.pgdata.join("postgresql.conf").is_file() {
        notes.push(format!(
            "{} holds no postgresql.conf: the server's configuration lives elsewhere (on Debian /etc/postgresql/{}/CLUSTER: start it with pg_ctlcluster {} CLUSTER start, or add -o '-c config_file=FILE')",
            r.pgdata.display(),
            r.major,
            r.major
        ));
    }
    let start_command = format!("{}{} -D {} -l {} start", as_owner, pg_ctl, q(r.pgdata), q(&r.pgdata.join(START_LOG)));
    let check_command = (!r.sidecar_dirs.is_empty()).then(|| check_command(r, owner.as_deref()));
    NextSteps { start_command, start_notes: notes, check_command }
}

/// `restore-check --backup-id ID --sidecar-dir D1:D2 --node NAME='CONNINFO'`, the conninfo
/// from the copy's own port and socket directory and the owner's name (the superuser initdb
/// made is named after it).
fn check_command(r: &Request, owner: Option<&str>) -> String {
    let dirs: Vec<String> = r
        .sidecar_dirs
        .iter()
        .map(|d| std::fs::canonicalize(d).unwrap_or_else(|_| d.clone()).to_string_lossy().into_owned())
        .collect();
    let mut conninfo = Vec::new();
    let (host, port) = listen_settings(r.pgdata);
    if let Some(h) = host {
        conninfo.push(format!("host={}", conninfo_value(&h)));
    }
    conninfo.push(format!("port={}", port.unwrap_or_else(|| "5432".into())));
    let user = owner.map(str::to_string).or_else(|| owner_name_any(r.owner));
    if let Some(u) = user {
        conninfo.push(format!("user={}", conninfo_value(&u)));
    }
    conninfo.push("dbname=postgres".into());
    format!(
        "{} restore-check --backup-id {} --sidecar-dir {} --node {}",
        shell_quote(&r.exe.to_string_lossy()),
        shell_quote(r.backup_id),
        shell_quote(&dirs.join(":")),
        shell_quote(&format!("{}={}", r.node, conninfo.join(" ")))
    )
}

/// A conninfo value, quoted when it holds a space, a quote or a backslash.
fn conninfo_value(v: &str) -> String {
    if !v.is_empty() && !v.contains(|c: char| c.is_whitespace() || c == '\'' || c == '\\') {
        return v.to_string();
    }
    format!("'{}'", v.replace('\\', "\\\\").replace('\'', "\\'"))
}

/// The copy's first socket directory (an absolute one) and port, from postgresql.conf and
/// postgresql.auto.conf in the data directory (the last setting wins).
fn listen_settings(pgdata: &Path) -> (Option<String>, Option<String>) {
    let (mut host, mut port) = (None, None);
    for f in ["postgresql.conf", "postgresql.auto.conf"] {
        let Ok(text) = std::fs::read_to_string(pgdata.join(f)) else { continue };
        if let Some(dirs) = autoconf::get(&text, "unix_socket_directories") {
            host = dirs.split(',').map(str::trim).find(|d| d.starts_with('/')).map(str::to_string).or(host);
        }
        port = autoconf::get(&text, "port").filter(|p| p.parse::<u16>().is_ok()).or(port);
    }
    (host, port)
}

/// The owner's user name when we are not the owner (then the commands run as the owner).
fn owner_name(owner: u32) -> Option<String> {
    if nix::unistd::Uid::effective().as_raw() == owner {
        return None;
    }
    owner_name_any(owner)
}

fn owner_name_any(owner: u32) -> Option<String> {
    nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(owner)).ok().flatten().map(|u| u.name)
}

/// The pg_ctl of this major: PGBH_PG_BINDIR, Debian's /usr/lib/postgresql/N/bin, or
/// `pg_config --bindir` when that pg_config is of this major.
pub fn find_pg_ctl(major: u32) -> Option<PathBuf> {
    let env = std::env::var_os("PGBH_PG_BINDIR").map(PathBuf::from).map(|d| d.join("pg_ctl"));
    if let Some(p) = env.filter(|p| version_of(p, "--version") == Some(major)) {
        return Some(p);
    }
    let debian = PathBuf::from(format!("/usr/lib/postgresql/{}/bin/pg_ctl", major));
    if debian.is_file() {
        return Some(debian);
    }
    pg_config_bindir(major).map(|d| d.join("pg_ctl")).filter(|p| p.is_file())
}

/// The major version a PostgreSQL program prints (`pg_ctl (PostgreSQL) 15.14`,
/// `PostgreSQL 15.14 (Debian ...)`).
fn version_of(program: &Path, arg: &str) -> Option<u32> {
    let o = Command::new(program).arg(arg).output().ok().filter(|o| o.status.success())?;
    let text = String::from_utf8_lossy(&o.stdout);
    let v = text.split("PostgreSQL").nth(1)?.trim_start_matches([')', ' ']);
    v.split(|c: char| !c.is_ascii_digit()).next()?.parse().ok()
}

/// `pg_config --bindir`, if that pg_config is PostgreSQL `major`'s.
fn pg_config_bindir(major: u32) -> Option<PathBuf> {
    if version_of(Path::new("pg_config"), "--version")? != major {
        return None;
    }
    let o = Command::new("pg_config").arg("--bindir").output().ok().filter(|o| o.status.success())?;
    Some(PathBuf::from(String::from_utf8_lossy(&o.stdout).trim()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_check_command_names_the_sidecar_dirs_the_node_and_the_copys_socket_and_port() {
        let d = tempfile::tempdir().unwrap();
        let (a, b) = (d.path().join("a"), d.path().join("b"));
        std::fs::create_dir(&a).unwrap();
        std::fs::write(d.path().join("postgresql.conf"), "port = 6543\nunix_socket_directories = '/run/x, /tmp'\n")
            .unwrap();
        std::fs::write(d.path().join("postgresql.auto.conf"), "port = '6544'\n").unwrap();
        let dirs = [a.clone(), b.clone()];
        let r = Request {
            pgdata: d.path(),
            major: 15,
            owner: nix::unistd::Uid::effective().as_raw(),
            backup_id: "job-1",
            node: "w1",
            sidecar_dirs: &dirs,
            exe: Path::new("/usr/bin/pg-backup-hooks"),
        };
        let s = plan(&r);
        let me = owner_name_any(r.owner).unwrap();
        assert_eq!(
            s.check_command.unwrap(),
            format!(
                "/usr/bin/pg-backup-hooks restore-check --backup-id job-1 --sidecar-dir {}:{} --node 'w1=host=/run/x port=6544 user={} dbname=postgres'",
                a.canonicalize().unwrap().display(),
                b.display(),
                me
            )
        );
        assert!(s.start_command.ends_with(&format!(
            "-D {} -l {}/{} start",
            d.path().display(),
            d.path().display(),
            START_LOG
        )));
        assert!(s.start_notes.is_empty(), "{:?}", s.start_notes);
    }

    #[test]
    fn a_major_without_pg_ctl_is_said_plainly() {
        let d = tempfile::tempdir().unwrap();
        let r = Request {
            pgdata: d.path(),
            major: 99,
            owner: nix::unistd::Uid::effective().as_raw(),
            backup_id: "job-1",
            node: "default",
            sidecar_dirs: &[],
            exe: Path::new("/usr/bin/pg-backup-hooks"),
        };
        let s = plan(&r);
        assert!(s.start_notes[0].starts_with("pg_ctl of PostgreSQL 99 was not found"), "{:?}", s.start_notes);
        assert!(s.start_notes[1].contains("holds no postgresql.conf"), "{:?}", s.start_notes);
        assert!(s.check_command.is_none());
    }
}
