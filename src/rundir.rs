//! The run directory: where helpers keep their lock, socket, log and outcome markers.
//!
//! Layout, per backup id: `ID.lock` (held by the live helper), `ID.sock` (its socket),
//! `ID.log` (its log), and after the helper ends one marker: `ID.done` (post stored the
//! sidecar), `ID.aborted` or `ID.failed` (with the reason inside). `ID.inventory/` (0700)
//! holds the helper's inventories, `NODE.start.zst` and `NODE.stop.zst` (0600), from the
//! start until post has stored them in the sidecar.

use std::fs::{self, File, OpenOptions};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use fs2::FileExt;

use crate::error::{Context, Error, Result};

/// Unix socket paths are limited to 107 bytes.
const MAX_SOCKET_PATH: usize = 107;

/// The default run directory. It must outlive a login session: a helper holds a backup
/// from pre (one SSH-run script) to post (another), and systemd-logind empties
/// $XDG_RUNTIME_DIR when the user's last session ends, so that is never used.
/// Root: /run/pg-backup-hooks (created at boot by the tmpfiles.d line in docs/hooks), and
/// root ignores XDG_* variables, which `sudo -E` or `su` may carry over from a user.
/// Others: $XDG_STATE_HOME/pg-backup-hooks/run, else ~/.local/state/pg-backup-hooks/run,
/// else (no home) /tmp/pg-backup-hooks-UID.
pub fn default_dir() -> PathBuf {
    let uid = nix::unistd::geteuid();
    if uid.is_root() {
        return PathBuf::from("/run/pg-backup-hooks");
    }
    let absolute = |v: Option<std::ffi::OsString>| v.map(PathBuf::from).filter(|p| p.is_absolute());
    if let Some(state) = absolute(std::env::var_os("XDG_STATE_HOME")) {
        return state.join("pg-backup-hooks/run");
    }
    let home = absolute(std::env::var_os("HOME")).or_else(|| {
        nix::unistd::User::from_uid(uid)
            .ok()
            .flatten()
            .map(|u| u.dir)
            .filter(|p| p.is_absolute() && p != Path::new("/"))
    });
    match home {
        Some(h) => h.join(".local/state/pg-backup-hooks/run"),
        None => PathBuf::from(format!("/tmp/pg-backup-hooks-{}", uid)),
    }
}

#[derive(Clone, Debug)]
pub struct RunDir {
    pub dir: PathBuf,
}

#[derive(Debug, PartialEq)]
pub enum Marker {
    Done(String),
    Aborted(String),
    Failed(String),
}

impl Marker {
    /// The markers' file extensions, in the order [`RunDir::marker`] looks for them.
    const EXTS: [&'static str; 3] = ["done", "aborted", "failed"];

    fn ext(&self) -> &'static str {
        match self {
            Marker::Done(_) => "done",
            Marker::Aborted(_) => "aborted",
            Marker::Failed(_) => "failed",
        }
    }

    fn text(&self) -> &str {
        match self {
            Marker::Done(t) | Marker::Aborted(t) | Marker::Failed(t) => t,
        }
    }

    fn with_ext(ext: &str, text: String) -> Option<Marker> {
        match ext {
            "done" => Some(Marker::Done(text)),
            "aborted" => Some(Marker::Aborted(text)),
            "failed" => Some(Marker::Failed(text)),
            _ => None,
        }
    }
}

impl RunDir {
    /// Open the run directory, creating it (0700) if missing, and refuse one that another
    /// user could tamper with.
    pub fn open(dir: Option<PathBuf>, create: bool) -> Result<RunDir> {
        let dir = dir.unwrap_or_else(default_dir);
        if !dir.exists() && create {
            if let Some(parent) = dir.parent() {
                fs::create_dir_all(parent)
                    .context(|| format!("cannot create run directory parent {}", parent.display()))?;
            }
            crate::fsutil::create_dir_mode(&dir, 0o700)?;
        }
        let meta = match fs::symlink_metadata(&dir) {
            Ok(m) => m,
            Err(_) if !create => return Ok(RunDir { dir }),
            Err(e) => return Err(err!("run directory {}: {}", dir.display(), e)),
        };
        if !meta.is_dir() {
            return Err(err!("run directory {} is not a directory", dir.display()));
        }
        let me = nix::unistd::geteuid().as_raw();
        if meta.uid() != me {
            return Err(err!(
                "run directory {} is owned by uid {}, not by us (uid {}): refusing to trust it; use --run-dir with a directory of your own",
                dir.display(),
                meta.uid(),
                me
            ));
        }
        if meta.permissions().mode() & 0o022 != 0 {
            return Err(err!(
                "run directory {} is writable by group or others (mode {:o}): refusing to trust it; chmod 0700 it",
                dir.display(),
                meta.permissions().mode() & 0o777
            ));
        }
        Ok(RunDir { dir })
    }

    pub fn path(&self, id: &str, ext: &str) -> PathBuf {
        self.dir.join(format!("{}.{}", id, ext))
    }

    pub fn socket(&self, id: &str) -> Result<PathBuf> {
        let p = self.path(id, "sock");
        if p.as_os_str().len() > MAX_SOCKET_PATH {
            return Err(Error::usage(format!(
                "socket path {} is longer than {} bytes: use a shorter --run-dir",
                p.display(),
                MAX_SOCKET_PATH
            )));
        }
        Ok(p)
    }

    pub fn log(&self, id: &str) -> PathBuf {
        self.path(id, "log")
    }

    /// Where the helper keeps this backup's inventories.
    pub fn inventory_dir(&self, id: &str) -> PathBuf {
        self.path(id, "inventory")
    }

    /// One node's inventory: `which` is "start" or "stop".
    pub fn inventory_file(&self, id: &str, node: &str, which: &str) -> PathBuf {
        self.inventory_dir(id).join(format!("{}.{}.zst", node, which))
    }

    /// A fresh, empty inventory directory (0700): what an earlier run of the id left there
    /// is removed first (a link at its name is removed, never followed).
    pub fn create_inventory_dir(&self, id: &str) -> Result<PathBuf> {
        self.remove_inventory_dir(id);
        let d = self.inventory_dir(id);
        crate::fsutil::create_dir_mode(&d, 0o700)?;
        Ok(d)
    }

    /// Forget this backup's inventories (after post stored them, or when the backup ended).
    pub fn remove_inventory_dir(&self, id: &str) {
        let d = self.inventory_dir(id);
        match fs::symlink_metadata(&d) {
            Ok(m) if m.is_dir() => {
                let _ = fs::remove_dir_all(&d);
            }
            Ok(_) => {
                let _ = fs::remove_file(&d);
            }
            Err(_) => {}
        }
    }

    /// Try to take the per-id lock. Ok(None) when another live process holds it.
    /// A helper removes its lock file on the way out; if we locked a file that was
    /// removed meanwhile, the lock means nothing, so we check the path still names the
    /// file we hold, and try again if not.
    pub fn try_lock(&self, id: &str) -> Result<Option<File>> {
        let p = self.path(id, "lock");
        for _ in 0..5 {
            let f = OpenOptions::new()
                .create(true)
                .truncate(false)
                .read(true)
                .write(true)
                .open(&p)
                .context(|| format!("cannot open lock file {}", p.display()))?;
            match f.try_lock_exclusive() {
                Ok(()) => {}
                Err(e) if e.raw_os_error() == fs2::lock_contended_error().raw_os_error() => return Ok(None),
                Err(e) => return Err(err!("cannot lock {}: {}", p.display(), e)),
            }
            let held = f.metadata().map(|m| (m.dev(), m.ino())).ok();
            let named = fs::metadata(&p).map(|m| (m.dev(), m.ino())).ok();
            if held.is_some() && held == named {
                return Ok(Some(f));
            }
        }
        Err(err!("cannot lock {}: it keeps being replaced", p.display()))
    }

    /// Take the lock, waiting up to `patience` while it is contended. Another command's
    /// liveness probe (`helper_alive`) holds the lock for an instant; a live helper holds
    /// it for good, so only a lock still held after `patience` means "in use".
    pub fn lock_with_patience(&self, id: &str, patience: std::time::Duration) -> Result<Option<File>> {
        let deadline = std::time::Instant::now() + patience;
        loop {
            if let Some(f) = self.try_lock(id)? {
                return Ok(Some(f));
            }
            if std::time::Instant::now() >= deadline {
                return Ok(None);
            }
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
    }

    /// Is a live helper holding this id's lock?
    pub fn helper_alive(&self, id: &str) -> bool {
        if !self.path(id, "lock").exists() {
            return false;
        }
        matches!(self.lock_with_patience(id, std::time::Duration::from_millis(200)), Ok(None))
    }

    /// The helper's outcome marker for this id; `done` wins over the others.
    pub fn marker(&self, id: &str) -> Option<Marker> {
        Marker::EXTS
            .iter()
            .find_map(|ext| fs::read_to_string(self.path(id, ext)).ok().and_then(|text| Marker::with_ext(ext, text)))
    }

    pub fn set_marker(&self, id: &str, marker: &Marker) -> Result<()> {
        crate::fsutil::write_atomic(&self.path(id, marker.ext()), marker.text().as_bytes(), 0o600, None)
    }

    pub fn clear_markers(&self, id: &str) {
        for ext in Marker::EXTS {
            let _ = fs::remove_file(self.path(id, ext));
        }
    }

    /// Backup ids that have a lock or socket here (live or stale).
    pub fn ids(&self) -> Vec<String> {
        let mut ids: Vec<String> = fs::read_dir(&self.dir)
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|e| {
                let name = e.file_name().to_string_lossy().to_string();
                name.strip_suffix(".lock").or(name.strip_suffix(".sock")).map(str::to_string)
            })
            .collect();
        ids.sort();
        ids.dedup();
        ids
    }

    /// Forget outcome markers and logs of backups older than `days` (never a live helper's).
    pub fn prune(&self, days: u64) {
        let cutoff = std::time::SystemTime::now() - std::time::Duration::from_secs(days * 86400);
        for e in fs::read_dir(&self.dir).into_iter().flatten().flatten() {
            let name = e.file_name().to_string_lossy().to_string();
            let Some((id, ext)) = name.rsplit_once('.') else { continue };
            if !(Marker::EXTS.contains(&ext) || matches!(ext, "log" | "json")) || self.helper_alive(id) {
                continue;
            }
            if e.metadata().and_then(|m| m.modified()).is_ok_and(|t| t < cutoff) {
                let _ = fs::remove_file(e.path());
            }
        }
    }

    /// Remove what a dead helper left behind (never while a helper holds the lock).
    pub fn clean_stale(&self, id: &str) {
        if !self.helper_alive(id) {
            let _ = fs::remove_file(self.path(id, "sock"));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::names;
    use std::os::unix::fs::symlink;

    #[test]
    fn open_creates_a_private_directory_and_a_missing_one_is_fine_without_create() {
        let d = tempfile::tempdir().unwrap();
        let dir = d.path().join("state/run");
        let r = RunDir::open(Some(dir.clone()), false).unwrap();
        assert!(!r.dir.exists(), "not created without create");
        let r = RunDir::open(Some(dir.clone()), true).unwrap();
        assert_eq!(r.dir, dir);
        assert_eq!(fs::metadata(&dir).unwrap().permissions().mode() & 0o7777, 0o700);
    }

    #[test]
    fn a_run_directory_others_could_tamper_with_is_refused_by_name() {
        let d = tempfile::tempdir().unwrap();
        let dir = d.path().join("run");
        fs::create_dir(&dir).unwrap();
        fs::set_permissions(&dir, fs::Permissions::from_mode(0o770)).unwrap();
        let e = RunDir::open(Some(dir.clone()), true).unwrap_err();
        assert!(e.msg.contains(&dir.display().to_string()) && e.msg.contains("mode 770"), "{}", e.msg);
        fs::set_permissions(&dir, fs::Permissions::from_mode(0o700)).unwrap();
        RunDir::open(Some(dir.clone()), true).unwrap();
        let link = d.path().join("link");
        symlink(&dir, &link).unwrap();
        assert!(
            RunDir::open(Some(link), true).unwrap_err().msg.contains("is not a directory"),
            "a link is not trusted"
        );
        if nix::unistd::geteuid().is_root() {
            std::os::unix::fs::chown(&dir, Some(65534), Some(65534)).unwrap();
            let e = RunDir::open(Some(dir.clone()), true).unwrap_err();
            assert!(e.msg.contains("owned by uid 65534"), "{}", e.msg);
        }
    }

    #[test]
    fn a_socket_path_too_long_is_a_usage_error() {
        let r = RunDir { dir: PathBuf::from(format!("/{}", "d".repeat(100))) };
        let e = r.socket("backup-1").unwrap_err();
        assert_eq!(e.code, crate::error::exit::USAGE);
        assert!(e.msg.contains("--run-dir"), "{}", e.msg);
        assert_eq!(RunDir { dir: PathBuf::from("/run/x") }.socket("b").unwrap(), PathBuf::from("/run/x/b.sock"));
    }

    #[test]
    fn markers_are_private_files_read_back_done_first_and_cleared() {
        let d = tempfile::tempdir().unwrap();
        let r = RunDir { dir: d.path().to_path_buf() };
        assert_eq!(r.marker("b"), None);
        r.set_marker("b", &Marker::Failed("node n1: gone".into())).unwrap();
        assert_eq!(r.marker("b"), Some(Marker::Failed("node n1: gone".into())));
        r.set_marker("b", &Marker::Done("stored".into())).unwrap();
        assert_eq!(r.marker("b"), Some(Marker::Done("stored".into())), "done wins");
        assert_eq!(fs::metadata(r.path("b", "done")).unwrap().permissions().mode() & 0o7777, 0o600);
        assert_eq!(names(d.path()), vec!["b.done", "b.failed"], "no temporary file left");
        r.clear_markers("b");
        assert_eq!(r.marker("b"), None);
        for m in [Marker::Done("d".into()), Marker::Aborted("a".into()), Marker::Failed("f".into())] {
            r.set_marker("c", &m).unwrap();
            assert_eq!(r.marker("c").as_ref(), Some(&m));
            r.clear_markers("c");
        }
        r.set_marker("c", &Marker::Failed("f".into())).unwrap();
        r.set_marker("c", &Marker::Aborted("a".into())).unwrap();
        assert_eq!(r.marker("c"), Some(Marker::Aborted("a".into())), "aborted before failed");
        r.clear_markers("c");
        assert!(names(d.path()).is_empty());
    }

    #[test]
    fn a_link_planted_as_a_marker_is_replaced_not_written_through() {
        let d = tempfile::tempdir().unwrap();
        let outside = d.path().join("outside");
        fs::write(&outside, b"not yours").unwrap();
        let r = RunDir { dir: d.path().join("run") };
        fs::create_dir(&r.dir).unwrap();
        symlink(&outside, r.path("b", "aborted")).unwrap();
        r.set_marker("b", &Marker::Aborted("by the job".into())).unwrap();
        assert_eq!(fs::read(&outside).unwrap(), b"not yours");
        assert_eq!(r.marker("b"), Some(Marker::Aborted("by the job".into())));
    }

    #[test]
    fn one_lock_per_id_and_ids_lists_locks_and_sockets() {
        let d = tempfile::tempdir().unwrap();
        let r = RunDir { dir: d.path().to_path_buf() };
        let held = r.try_lock("b1").unwrap().expect("free");
        assert!(r.try_lock("b1").unwrap().is_none(), "held by the first");
        assert!(r.helper_alive("b1"));
        assert!(r.lock_with_patience("b1", std::time::Duration::from_millis(20)).unwrap().is_none());
        drop(held);
        assert!(!r.helper_alive("b1"));
        assert!(r.try_lock("b1").unwrap().is_some());
        assert!(!r.helper_alive("b9"), "no lock file: not alive");
        for f in ["b2.sock", "b1.log", "b3.done", "b0.lock"] {
            fs::write(d.path().join(f), b"").unwrap();
        }
        assert_eq!(r.ids(), vec!["b0", "b1", "b2"]);
    }

    #[test]
    fn prune_forgets_old_outcomes_only() {
        let d = tempfile::tempdir().unwrap();
        let r = RunDir { dir: d.path().to_path_buf() };
        let old = std::time::SystemTime::now() - std::time::Duration::from_secs(3 * 86400);
        for f in ["old.done", "old.log", "old.lock", "new.failed", "live.log", "other.txt"] {
            fs::write(d.path().join(f), b"").unwrap();
        }
        let _live = r.try_lock("live").unwrap().unwrap();
        for f in ["old.done", "old.log", "old.lock", "live.log", "other.txt"] {
            fs::File::options().write(true).open(d.path().join(f)).unwrap().set_modified(old).unwrap();
        }
        r.prune(2);
        assert_eq!(names(d.path()), vec!["live.lock", "live.log", "new.failed", "old.lock", "other.txt"]);
    }
}
