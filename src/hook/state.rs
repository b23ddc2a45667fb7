//! What adapters keep between a product's pre and post in the run directory (which
//! RunDir::open has checked: ours, not writable by group or others): an invented backup id
//! (`KEY.current-id`, one line), a product's small JSON record (`NAME.json`), and a lock
//! per key (`KEY.hooklock`) so that two scripts of one job do not race. Files are opened
//! without following links and written atomically.

use std::fs::{File, OpenOptions};
use std::io::Read;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use fs2::FileExt;
use serde::{de::DeserializeOwned, Serialize};

use crate::error::{Error, Result};
use crate::ids;
use crate::rundir::RunDir;

/// A key for what a product names with several parts (a configuration file and a repository,
/// a configuration and a disk): readable at the front, and distinct for distinct parts however
/// long they are (a file name for a key keeps only its last 63 characters).
pub fn key_of(product: &str, parts: &[&str]) -> String {
    let hash = crate::sidecar::sha256_hex(parts.join("\0").as_bytes());
    format!("{}-{}", product, &hash[..16])
}

/// A file name for a key (job names may hold any character).
fn name(key: &str, ext: &str) -> Result<String> {
    Ok(format!("{}.{}", ids::from_job_name(key)?, ext))
}

fn path(run: &RunDir, key: &str, ext: &str) -> Result<PathBuf> {
    Ok(run.dir.join(name(key, ext)?))
}

/// Read a file we wrote: no link, ours.
fn read_own(p: &Path) -> Result<Option<String>> {
    let mut f = match OpenOptions::new().read(true).custom_flags(libc_nofollow()).open(p) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(err!("cannot read {}: {} (a link there is refused)", p.display(), e)),
    };
    let meta = f.metadata().map_err(|e| err!("{}: {}", p.display(), e))?;
    if !meta.is_file() || meta.uid() != nix::unistd::geteuid().as_raw() {
        return Err(err!("{} is not a file of ours: remove it", p.display()));
    }
    let mut s = String::new();
    f.read_to_string(&mut s).map_err(|e| err!("cannot read {}: {}", p.display(), e))?;
    Ok(Some(s))
}

fn libc_nofollow() -> i32 {
    nix::fcntl::OFlag::O_NOFOLLOW.bits()
}

/// The id kept under `key`, if any.
pub fn kept_id(run: &RunDir, key: &str) -> Result<Option<String>> {
    let p = path(run, key, "current-id")?;
    let Some(text) = read_own(&p)? else { return Ok(None) };
    let id = text.lines().next().unwrap_or("").trim().to_string();
    if id.is_empty() {
        return Ok(None);
    }
    ids::validate(&id).map_err(|e| err!("{}: {}", p.display(), e.msg))?;
    Ok(Some(id))
}

pub fn kept_id_path(run: &RunDir, key: &str) -> PathBuf {
    path(run, key, "current-id").unwrap_or_else(|_| run.dir.join("?.current-id"))
}

pub fn keep_id(run: &RunDir, key: &str, id: &str) -> Result<()> {
    crate::fsutil::write_atomic(&path(run, key, "current-id")?, format!("{}\n", id).as_bytes(), 0o600, None)
}

pub fn forget_id(run: &RunDir, key: &str) {
    if let Ok(p) = path(run, key, "current-id") {
        let _ = std::fs::remove_file(p);
    }
}

/// A new id: PREFIX-<UTC time>-<pid>.
pub fn new_id(prefix: &str) -> Result<String> {
    ids::from_job_name(&format!("{}-{}-{}", prefix, chrono::Utc::now().format("%Y%m%dT%H%M%SZ"), std::process::id()))
}

pub fn read_json<T: DeserializeOwned>(run: &RunDir, key: &str) -> Result<Option<T>> {
    let p = path(run, key, "json")?;
    let Some(text) = read_own(&p)? else { return Ok(None) };
    serde_json::from_str(&text)
        .map(Some)
        .map_err(|e| err!("{} is damaged ({}): remove it after checking `pg-backup-hooks status`", p.display(), e))
}

pub fn write_json<T: Serialize>(run: &RunDir, key: &str, value: &T) -> Result<()> {
    let text = serde_json::to_vec_pretty(value).map_err(|e| Error::new(e.to_string()))?;
    crate::fsutil::write_atomic(&path(run, key, "json")?, &text, 0o600, None)
}

pub fn remove_json(run: &RunDir, key: &str) {
    if let Ok(p) = path(run, key, "json") {
        let _ = std::fs::remove_file(p);
    }
}

/// Hold the key's lock until the returned file is dropped (waits for another script of
/// the same job, e.g. a second NetBackup stream while the first one's pre runs).
pub fn lock(run: &RunDir, key: &str) -> Result<File> {
    let p = path(run, key, "hooklock")?;
    let f = OpenOptions::new()
        .create(true)
        .truncate(false)
        .read(true)
        .write(true)
        .mode(0o600)
        .custom_flags(libc_nofollow())
        .open(&p)
        .map_err(|e| err!("cannot open lock file {}: {}", p.display(), e))?;
    f.lock_exclusive().map_err(|e| err!("cannot lock {}: {}", p.display(), e))?;
    Ok(f)
}

#[cfg(test)]
mod tests {
    use super::key_of;

    #[test]
    fn keys_of_long_parts_that_differ_only_at_the_front_differ() {
        let disk = "/srv/postgresql/clusters/main/a/very/long/path/to/the/data/directory";
        assert_ne!(key_of("amanda", &["daily", disk]), key_of("amanda", &["weekly", disk]));
        assert_ne!(key_of("amanda", &["a b", "c"]), key_of("amanda", &["a", "b c"]));
        assert_eq!(key_of("amanda", &["daily", disk]), key_of("amanda", &["daily", disk]));
        assert!(crate::ids::validate(&key_of("borgmatic", &["x", "y"])).is_ok());
    }
}
