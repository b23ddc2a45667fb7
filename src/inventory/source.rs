//! Where a node's inventory is read from, chosen once per node when the helper connects:
//!
//! 1. local: the data directory the server reports (`data_directory`) is on this host, and
//!    its `global/pg_control` holds the server's system identifier (a path alone could name
//!    another cluster's directory here, or a stale copy);
//! 2. sql: else, when the session may run `pg_ls_dir(text, boolean, boolean)` and
//!    `pg_stat_file(text)` ([`super::sql`]);
//! 3. none: else, with the reason, which pre prints and the manifest keeps.

use std::path::PathBuf;
use std::sync::Mutex;

use postgres::Client;

use super::{sql, walk, Inventory, Source};
use crate::error::Result;
use crate::pg::api::ServerFacts;

/// A node's inventory source, as chosen at connect time.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Chosen {
    /// The data directory, on this host.
    Local(PathBuf),
    /// Over the held session.
    Sql,
    /// No inventory can be taken; why, in one sentence.
    None(String),
}

impl Chosen {
    pub fn source(&self) -> Option<Source> {
        match self {
            Chosen::Local(_) => Some(Source::Local),
            Chosen::Sql => Some(Source::Sql),
            Chosen::None(_) => None,
        }
    }

    /// For pre's output: "local (/var/lib/postgresql/15/main)", "sql", or "none".
    pub fn describe(&self) -> String {
        match self {
            Chosen::Local(p) => format!("local ({})", p.display()),
            Chosen::Sql => "sql (pg_ls_dir/pg_stat_file over the held session)".into(),
            Chosen::None(_) => "none".into(),
        }
    }
}

/// Choose the source for a node whose facts are `facts`, on its session `c`.
pub fn choose(facts: &ServerFacts, c: &mut Client) -> Chosen {
    let local = match local_dir(facts) {
        Ok(dir) => return Chosen::Local(dir),
        Err(why) => why,
    };
    match sql::check_allowed(c) {
        Ok(()) => Chosen::Sql,
        Err(why) => Chosen::None(format!(
            "no inventory source: the data directory is not readable here ({}) and {}; this copy's files cannot be verified at restore (run pre on the database host as its owner or root, or grant the functions)",
            local, why
        )),
    }
}

/// The node's data directory when it is this host's and the server's own.
fn local_dir(facts: &ServerFacts) -> std::result::Result<PathBuf, String> {
    let Some(dir) = facts.data_directory.as_deref().filter(|d| !d.is_empty()) else {
        return Err("the server does not show data_directory to this role".into());
    };
    let dir = PathBuf::from(dir);
    let control =
        crate::pg::control::read(&dir).map_err(|_| format!("cannot read {}/global/pg_control", dir.display()))?;
    if control.system_identifier != facts.system_identifier {
        return Err(format!(
            "{} here belongs to system {}, the server is system {}",
            dir.display(),
            control.system_identifier,
            facts.system_identifier
        ));
    }
    Ok(dir)
}

/// Take an inventory from `chosen` now; the session gives the database names (and, for
/// `sql`, the listing). It is locked only while it is used: a local walk leaves it free for
/// the restore point and the archive wait. `names_only`: a local listing without sizes and mtimes
/// (the stop inventory). None for [`Chosen::None`].
pub fn take(chosen: &Chosen, client: &Mutex<Client>, names_only: bool) -> Result<Option<Inventory>> {
    let session = || client.lock().unwrap_or_else(|p| p.into_inner());
    let source = match chosen.source() {
        Some(s) => s,
        None => return Ok(None),
    };
    let taken_at = chrono::Utc::now().to_rfc3339();
    let (entries, names_only) = match chosen {
        Chosen::Local(dir) if names_only => (walk::walk_names(dir)?, true),
        Chosen::Local(dir) => (walk::walk(dir)?, false),
        _ => (sql::list(&mut session())?, false),
    };
    let mut inv = Inventory { source, taken_at, databases: databases(&mut session()), entries, names_only };
    inv.normalize();
    Ok(Some(inv))
}

/// Database names by oid; empty when the catalog cannot be read (names are for people only).
fn databases(c: &mut Client) -> std::collections::BTreeMap<u32, String> {
    c.query("SELECT oid::int8, datname::text FROM pg_database", &[])
        .map(|rows| rows.iter().map(|r| (r.get::<_, i64>(0) as u32, r.get::<_, String>(1))).collect())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pg::api::ArchiveMode;

    fn facts(dir: Option<&std::path::Path>, sysid: u64) -> ServerFacts {
        ServerFacts {
            version_num: 150000,
            version: "15".into(),
            system_identifier: sysid,
            timeline: 1,
            in_recovery: false,
            data_directory: dir.map(|d| d.display().to_string()),
            archive_mode: ArchiveMode::On,
            archive_command: "cp".into(),
            archive_library: String::new(),
            wal_segment_size: 16 << 20,
        }
    }

    /// A pg_control of version 1300 for system `sysid` under `dir`.
    fn plant_control(dir: &std::path::Path, sysid: u64) {
        let mut b = vec![0u8; 8192];
        b[0..8].copy_from_slice(&sysid.to_ne_bytes());
        b[8..12].copy_from_slice(&1300u32.to_ne_bytes());
        let crc = crc32c::crc32c(&b[..288]);
        b[288..292].copy_from_slice(&crc.to_ne_bytes());
        std::fs::create_dir_all(dir.join("global")).unwrap();
        std::fs::write(dir.join("global/pg_control"), b).unwrap();
    }

    #[test]
    fn the_local_source_needs_the_servers_path_and_its_system_identifier() {
        let t = tempfile::tempdir().unwrap();
        plant_control(t.path(), 42);
        assert_eq!(local_dir(&facts(Some(t.path()), 42)), Ok(t.path().to_path_buf()));
        let other = local_dir(&facts(Some(t.path()), 43)).unwrap_err();
        assert!(other.contains("belongs to system 42, the server is system 43"), "{}", other);
        assert!(local_dir(&facts(None, 42)).unwrap_err().contains("data_directory"));
        let missing = local_dir(&facts(Some(&t.path().join("nope")), 42)).unwrap_err();
        assert!(missing.contains("cannot read") && missing.contains("nope/global/pg_control"), "{}", missing);
    }
}
