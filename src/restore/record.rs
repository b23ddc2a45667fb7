//! restore-prep's record in the restored data directory: whether the copy's files were
//! verified against the inventory and how many stale paths were moved aside. restore-check
//! reads it over SQL (`pg_read_file`, relative to the data directory) and shows it per node.
//!
//! It is one of the inventory's restore control files (never required, never stale), written
//! with the other files restore-prep writes: atomically, fsynced, with the owner's rights.

use std::path::Path;

use postgres::Client;
use serde::{Deserialize, Serialize};

use super::files::Proof;
use super::install::FileWrite;
use crate::error::Result;

/// The record's name in the data directory.
pub const FILE: &str = crate::inventory::RESTORE_RECORD_FILE;

#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct Record {
    pub backup_id: String,
    pub node: String,
    /// The copy's files were proven against the inventory (false: not verified, or findings
    /// let through with --accept-unverified-files).
    pub files_verified: bool,
    /// restore-prep's line about the files.
    pub files: String,
    /// --accept-unverified-files let findings through.
    pub accepted_unverified: bool,
    /// Stale paths moved out of the data directory.
    pub stale_moved: usize,
    pub stale_dir: Option<String>,
    /// The recovery target restore-prep configured, in --target's syntax (records of older
    /// builds have none). restore-check falls back to it when the server's own settings no
    /// longer say (Patroni clears them after a bootstrap).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
}

impl Record {
    pub fn new(id: &str, node: &str, p: &Proof) -> Record {
        Record {
            backup_id: id.to_string(),
            node: node.to_string(),
            files_verified: p.verified,
            files: p.line.clone(),
            accepted_unverified: p.accepted.is_some(),
            stale_moved: p.stale.len(),
            stale_dir: (!p.stale.is_empty()).then(|| p.stale_dir.display().to_string()),
            target: None,
        }
    }

    /// One line for restore-check's report.
    pub fn summary(&self) -> String {
        let files = if self.files_verified {
            "the copy's files were verified against the inventory".to_string()
        } else if self.accepted_unverified {
            "the copy's files were NOT verified: --accept-unverified-files let findings through".to_string()
        } else {
            format!("the copy's files were not verified ({})", self.files)
        };
        match &self.stale_dir {
            Some(d) => format!("{}; {} stale path(s) moved to {}", files, self.stale_moved, d),
            None => format!("{}; no stale path moved", files),
        }
    }

    /// The record as a file restore-prep writes (0600, the data directory's owner).
    pub fn write(&self, pgdata: &Path) -> Result<FileWrite> {
        let mut data =
            serde_json::to_vec_pretty(self).map_err(|e| err!("cannot encode restore-prep's record: {}", e))?;
        data.push(b'\n');
        Ok(FileWrite {
            path: pgdata.join(FILE),
            data,
            what: "restore-prep's record for restore-check".into(),
            keep: None,
        })
    }
}

/// The record of a restored server, over SQL; None when there is none (a copy restore-prep
/// of an older build prepared). Reading needs pg_read_file (superuser, or the grant).
pub fn read(c: &mut Client) -> Result<Option<Record>> {
    let row = c
        .query_one("SELECT pg_catalog.pg_read_file($1, 0, 1048576, true)", &[&FILE])
        .map_err(|e| err!("cannot read restore-prep's record {} over SQL ({}): connect as a superuser, or GRANT EXECUTE ON FUNCTION pg_read_file(text, bigint, bigint, boolean) to the role", FILE, e))?;
    let Some(text): Option<String> = row.get(0) else { return Ok(None) };
    serde_json::from_str(&text).map(Some).map_err(|e| err!("restore-prep's record {} is not readable: {}", FILE, e))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    #[test]
    fn the_summary_says_what_was_verified_and_moved() {
        let mut p = Proof {
            verified: true,
            line: "files verified".into(),
            stale_dir: PathBuf::from("/d.pgbh-stale/ID"),
            ..Proof::default()
        };
        assert_eq!(
            Record::new("ID", "a", &p).summary(),
            "the copy's files were verified against the inventory; no stale path moved"
        );
        p.stale = vec![PathBuf::from("base/5/1"), PathBuf::from("base/5/2")];
        assert_eq!(
            Record::new("ID", "a", &p).summary(),
            "the copy's files were verified against the inventory; 2 stale path(s) moved to /d.pgbh-stale/ID"
        );
        let q = Proof { verified: false, line: "files not verified: no inventory".into(), ..Proof::default() };
        assert!(Record::new("ID", "a", &q).summary().contains("not verified (files not verified: no inventory)"));
        let w = Record::new("ID", "a", &p).write(Path::new("/pg")).unwrap();
        assert_eq!(w.path, PathBuf::from("/pg/pg-backup-hooks-restore.json"));
        let back: Record = serde_json::from_slice(&w.data).unwrap();
        assert_eq!(back, Record::new("ID", "a", &p));
    }
}
