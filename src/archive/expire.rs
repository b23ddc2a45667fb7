//! `expire`: remove the archived WAL and the sidecar directories that no kept backup needs.
//!
//! The plan is a pure function of the backups the catalog found, the archive listings and the
//! policy ([`plan`]); removal ([`apply`]) only unlinks names the plan took from that one
//! listing, so a segment archived after the listing is never touched. See docs/expire.md.
//!
//! - Kept: the newest `keep_backups` complete backups, and every backup started less than
//!   `keep_days` days ago (by the start time in its manifest or backup history file). A
//!   backup is kept or expired with all its nodes.
//! - Kept in an archive: every segment (and `.partial`) from the oldest kept backup's start
//!   on, on its timeline and on every timeline that descends from it; every `.history` file;
//!   the `.backup` file of every kept backup; hidden names (writes in progress) and the marker.
//! - Nothing is removed when no complete backup would remain, when the newest complete backup
//!   cannot be restored from the archive, or when an archive directory holds a name that is
//!   not an archived WAL file (not a plain archive in this tool's layout).

use std::ffi::OsStr;
use std::fs::File;
use std::path::{Path, PathBuf};

use nix::fcntl::{Flock, FlockArg};
use nix::unistd::{unlinkat, UnlinkatFlags};
use serde::Serialize;

use crate::archive::catalog::{ArchiveDir, Entry};
use crate::archive::file::{self, Kind};
use crate::error::Result;
use crate::fsutil;
use crate::pg::wal::Lsn;
use crate::sidecar::Status;

/// The lock file in each archive directory (hidden: scanners take it for a temporary name).
pub const LOCK: &str = ".pgbh-expire.lock";

/// What to keep.
#[derive(Clone, Copy, Debug)]
pub struct Policy {
    pub keep_days: Option<u64>,
    pub keep_backups: Option<usize>,
    /// Now, in seconds since the epoch.
    pub now: i64,
}

/// What expire will do (or, with a refusal, why it does nothing).
#[derive(Serialize, Debug, Default)]
pub struct Plan {
    pub kept: Vec<String>,
    pub expired: Vec<String>,
    /// Why nothing is removed (None: the plan is carried out).
    pub refused: Option<String>,
    pub archives: Vec<ArchivePlan>,
    /// Sidecar directories (DIR/ID) of expired backups.
    pub sidecars: Vec<PathBuf>,
}

/// One archive directory's part of the plan.
#[derive(Serialize, Debug)]
pub struct ArchivePlan {
    pub dir: PathBuf,
    /// Stored names to remove, from the listing.
    pub remove: Vec<String>,
    pub kept_files: usize,
}

/// Where a kept node's WAL starts: its timeline and first segment.
struct Start {
    timeline: u32,
    lsn: Lsn,
    segno: u64,
}

/// The plan for `entries` (newest first, as the catalog sorts them) and their archives.
pub fn plan(entries: &[Entry], archives: &mut [ArchiveDir], p: Policy) -> Result<Plan> {
    let mut out = Plan::default();
    let kept = kept_indexes(entries, p);
    for (i, e) in entries.iter().enumerate() {
        if kept.contains(&i) {
            out.kept.push(e.backup_id.clone())
        } else {
            out.expired.push(e.backup_id.clone())
        }
    }
    if let Some(why) = refusal(entries, &kept, archives) {
        out.refused = Some(why);
        return Ok(out);
    }
    for a in archives.iter_mut() {
        match archive_plan(entries, &kept, a)? {
            Ok(ap) => out.archives.push(ap),
            Err(why) => {
                out.refused = Some(why);
                out.archives.clear();
                return Ok(out);
            }
        }
    }
    for (i, e) in entries.iter().enumerate().filter(|(i, _)| !kept.contains(i)) {
        let _ = i;
        out.sidecars.extend(e.sidecar_dirs.iter().map(|d| d.join(&e.backup_id)));
    }
    Ok(out)
}

/// The entries the policy keeps: the newest N complete ones, those younger than the days,
/// and every backup newer than the oldest of those (an unfinished newer backup is kept).
fn kept_indexes(entries: &[Entry], p: Policy) -> Vec<usize> {
    let complete: Vec<usize> = (0..entries.len()).filter(|&i| entries[i].status == Status::Complete).collect();
    let mut keep: Vec<usize> = Vec::new();
    if let Some(n) = p.keep_backups {
        keep.extend(complete.iter().take(n));
    }
    if let Some(d) = p.keep_days {
        let limit = p.now.saturating_sub(i64::try_from(d.saturating_mul(86_400)).unwrap_or(i64::MAX));
        keep.extend(complete.iter().filter(|&&i| entries[i].sort_key > limit));
    }
    let Some(&oldest) = keep.iter().max() else { return Vec::new() };
    (0..=oldest).collect()
}

/// Why nothing may be removed, if so.
fn refusal(entries: &[Entry], kept: &[usize], archives: &[ArchiveDir]) -> Option<String> {
    if !kept.iter().any(|&i| entries[i].status == Status::Complete) {
        return Some("no complete backup would remain: nothing removed".into());
    }
    let newest = entries.iter().find(|e| e.status == Status::Complete)?;
    if !archives.is_empty() && newest.restorable != Some(true) {
        let missing = newest.nodes.iter().filter_map(|n| n.archive.as_ref()?.first_missing.clone()).next();
        return Some(format!(
            "the newest complete backup {} cannot be restored from the archive{}: nothing removed; repair the archive (or take a new backup) first",
            newest.backup_id,
            missing.map(|m| format!(" (segment {} is missing)", m)).unwrap_or_default()
        ));
    }
    None
}

/// One archive directory's removals, or why it is not a plain archive of this tool's layout.
fn archive_plan(
    entries: &[Entry],
    kept: &[usize],
    a: &mut ArchiveDir,
) -> Result<std::result::Result<ArchivePlan, String>> {
    let nodes: Vec<_> = kept
        .iter()
        .flat_map(|&i| entries[i].nodes.iter())
        .filter(|n| n.archive.as_ref().and_then(|x| x.dir.as_deref()) == Some(a.dir.as_path()))
        .collect();
    let Some(seg_size) = nodes.first().map(|n| n.seg_size) else {
        return Ok(Ok(ArchivePlan { dir: a.dir.clone(), remove: Vec::new(), kept_files: a.names.len() }));
    };
    if nodes.iter().any(|n| n.seg_size != seg_size) {
        return Ok(Err(format!(
            "{}: backups with different WAL segment sizes share it: nothing removed",
            a.dir.display()
        )));
    }
    a.scan(seg_size)?;
    let a = &*a;
    let Some(s) = a.scans.iter().find(|x| x.seg_size() == seg_size) else { return Err(err!("internal: no scan")) };
    if let Some(o) = s.others.first() {
        return Ok(Err(format!(
            "{} is not a plain WAL archive ({} is not an archived WAL file name): nothing removed",
            s.dir().display(),
            o
        )));
    }
    if let Some(p) = s.problems.first() {
        return Ok(Err(format!("{}: nothing removed", p)));
    }
    let starts: Vec<Start> = nodes
        .iter()
        .map(|n| Start { timeline: n.timeline, lsn: n.start_lsn, segno: s.segno_of(n.start_lsn) })
        .collect();
    let kept_labels: Vec<&str> =
        kept.iter().flat_map(|&i| entries[i].nodes.iter()).filter_map(|n| n.backup_history_file.as_deref()).collect();
    let needed =
        |tli: u32, segno: u64| starts.iter().any(|st| segno >= st.segno && s.descends_from(tli, st.timeline, st.lsn));
    let mut remove = Vec::new();
    for n in &a.names {
        let Some((wal, kind, _)) = file::parse_stored(n) else { continue };
        let drop = match kind {
            Kind::Segment | Kind::Partial => match s.parse_segment_name(&wal[..24.min(wal.len())]) {
                Some((tli, segno)) => !needed(tli, segno),
                None => false,
            },
            Kind::Backup => !kept_labels.contains(&wal),
            Kind::History => false,
        };
        if drop {
            remove.push(n.clone());
        }
    }
    remove.sort();
    Ok(Ok(ArchivePlan { dir: a.dir.clone(), kept_files: a.names.len() - remove.len(), remove }))
}

/// An exclusive lock on `dir`'s lock file, held while the returned file lives.
pub fn lock(dir: &Path) -> Result<Flock<File>> {
    let path = dir.join(LOCK);
    let f = match fsutil::create_new_nofollow(&path, 0o600) {
        Ok(f) => f,
        Err(_) => open_nofollow(&path)?,
    };
    Flock::lock(f, FlockArg::LockExclusiveNonblock)
        .map_err(|(_, e)| err!("{}: another expire holds the lock ({}); try again when it ended", path.display(), e))
}

/// Open an existing lock file without following a link.
fn open_nofollow(path: &Path) -> Result<File> {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc_nofollow())
        .open(path)
        .map_err(|e| err!("cannot open lock file {}: {}", path.display(), e))
}

fn libc_nofollow() -> i32 {
    nix::fcntl::OFlag::O_NOFOLLOW.bits()
}

/// Carry out the plan: unlink the archive names (never through a link), then remove the
/// expired sidecar directories (renamed to a hidden name first, so no reader sees half of one).
pub fn apply(p: &Plan) -> Result<()> {
    for a in &p.archives {
        remove_names(&a.dir, &a.remove)?;
    }
    for d in &p.sidecars {
        remove_sidecar(d)?;
    }
    Ok(())
}

/// Unlink `names` in `dir` through the directory's descriptor, then fsync it.
fn remove_names(dir: &Path, names: &[String]) -> Result<()> {
    if names.is_empty() {
        return Ok(());
    }
    let d = fsutil::open_dir_below(dir, Path::new(""))
        .map_err(|e| err!("cannot open archive directory {}: {}", dir.display(), e))?;
    for n in names {
        match unlinkat(Some(std::os::fd::AsRawFd::as_raw_fd(&d)), OsStr::new(n), UnlinkatFlags::NoRemoveDir) {
            Ok(()) | Err(nix::errno::Errno::ENOENT) => {}
            Err(e) => return Err(err!("cannot remove {}: {}", dir.join(n).display(), e)),
        }
    }
    fsutil::fsync_dir_fd(&d).map_err(|e| err!("cannot fsync {}: {}", dir.display(), e))
}

/// Remove one sidecar directory DIR/ID: rename it to a hidden name, fsync DIR, remove it.
fn remove_sidecar(path: &Path) -> Result<()> {
    let (Some(parent), Some(name)) = (path.parent(), path.file_name()) else { return Ok(()) };
    let mut d = fsutil::open_dir_below(parent, Path::new(""))
        .map_err(|e| err!("cannot open sidecar directory {}: {}", parent.display(), e))?;
    let hidden = format!(".{}.expired.{}", name.to_string_lossy(), fsutil::random_suffix()?);
    let fd = std::os::fd::AsRawFd::as_raw_fd(&d);
    match nix::fcntl::renameat(Some(fd), name, Some(fd), OsStr::new(&hidden)) {
        Ok(()) => {}
        Err(nix::errno::Errno::ENOENT) => return Ok(()),
        Err(e) => return Err(err!("cannot remove sidecar directory {}: {}", path.display(), e)),
    }
    fsutil::fsync_dir_fd(&d).map_err(|e| err!("cannot fsync {}: {}", parent.display(), e))?;
    fsutil::remove_at(&mut d, OsStr::new(&hidden))
        .map_err(|e| err!("cannot remove {}: {}", parent.join(&hidden).display(), e))?;
    fsutil::fsync_dir_fd(&d).map_err(|e| err!("cannot fsync {}: {}", parent.display(), e))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::archive::catalog::{NodeArchive, NodeRow};
    use crate::archive::scan::segment_name;

    const SEG: u64 = 16 << 20;

    /// A backup started in segment `segno` of `tli`, `age_days` ago.
    fn backup(id: &str, tli: u32, segno: u64, age_days: i64, dir: &Path) -> Entry {
        let label = format!("{}.00000028.backup", segment_name(tli, segno, SEG));
        Entry {
            backup_id: id.into(),
            status: Status::Complete,
            started_at: None,
            stopped_at: None,
            sidecar_present: true,
            sidecar_dirs: vec![PathBuf::from("/s")],
            label_in_archive: Some(true),
            restorable: Some(true),
            nodes: vec![NodeRow {
                name: Some("n".into()),
                system_identifier: None,
                timeline: tli,
                start_lsn: Lsn(segno * SEG + 0x28),
                stop_lsn: Lsn(segno * SEG + 0x100),
                from_standby: false,
                backup_history_file: Some(label),
                label_archive_dir: Some(dir.into()),
                archive: Some(NodeArchive {
                    dir: Some(dir.into()),
                    restorable: true,
                    first_missing: None,
                    window: None,
                }),
                inventory_source: None,
                inventory_note: None,
                seg_size: SEG,
            }],
            sort_key: 1_000_000_000 - age_days * 86_400,
        }
    }

    /// Six backups, three on timeline 1 (segments 1..=10) and three on timeline 2 (which
    /// branched from 1 in segment 10; its segments 10..=20), newest first; and the archive.
    fn six(dir: &Path, extra: &[&str]) -> (Vec<Entry>, ArchiveDir) {
        let mut entries = vec![
            backup("b6", 2, 18, 0, dir),
            backup("b5", 2, 15, 1, dir),
            backup("b4", 2, 12, 2, dir),
            backup("b3", 1, 8, 3, dir),
            backup("b2", 1, 5, 4, dir),
            backup("b1", 1, 2, 5, dir),
        ];
        entries[0].sidecar_dirs.push(PathBuf::from("/t"));
        let mut names: Vec<String> = (1..=10).map(|s| segment_name(1, s, SEG)).collect();
        names.extend((10..=20).map(|s| segment_name(2, s, SEG)));
        names.extend(entries.iter().map(|e| e.nodes[0].backup_history_file.clone().unwrap_or_default()));
        names.push("00000002.history".into());
        names.push(format!("{}.partial", segment_name(1, 10, SEG)));
        names.push(".wal-archive.tmp.123".into());
        names.extend(extra.iter().map(|s| s.to_string()));
        let a = ArchiveDir { dir: dir.into(), set: names.iter().cloned().collect(), names, scans: Vec::new() };
        (entries, a)
    }

    fn history_dir() -> tempfile::TempDir {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(d.path().join("00000002.history"), "1\t0/A000000\tno recovery target specified\n").unwrap();
        d
    }

    fn policy(days: Option<u64>, n: Option<usize>) -> Policy {
        Policy { keep_days: days, keep_backups: n, now: 1_000_000_000 }
    }

    #[test]
    fn keep_three_of_six_over_two_timelines_removes_only_what_the_oldest_kept_does_not_need() {
        let d = history_dir();
        let (entries, a) = six(d.path(), &[]);
        let p = plan(&entries, &mut [a], policy(None, Some(3))).unwrap();
        assert_eq!(p.refused, None);
        assert_eq!(p.kept, ["b6", "b5", "b4"]);
        assert_eq!(p.expired, ["b3", "b2", "b1"]);
        let mut want: Vec<String> = (1..=10).map(|s| segment_name(1, s, SEG)).collect();
        want.extend((10..12).map(|s| segment_name(2, s, SEG)));
        want.push(format!("{}.partial", segment_name(1, 10, SEG)));
        want.extend(entries[3..].iter().map(|e| e.nodes[0].backup_history_file.clone().unwrap()));
        want.sort();
        assert_eq!(p.archives[0].remove, want);
        assert!(!p.archives[0].remove.iter().any(|n| n.ends_with(".history") || n.starts_with('.')));
        let ids: Vec<_> = p.sidecars.iter().map(|s| s.display().to_string()).collect();
        assert_eq!(ids, ["/s/b3", "/s/b2", "/s/b1"]);
    }

    #[test]
    fn keep_days_keeps_the_timeline_one_backup_and_everything_its_descendants_need() {
        let d = history_dir();
        let (entries, a) = six(d.path(), &[]);
        // b3 is 3 days old: kept with 4 days; it is on timeline 1 at segment 8.
        let p = plan(&entries, &mut [a], policy(Some(4), Some(1))).unwrap();
        assert_eq!(p.kept, ["b6", "b5", "b4", "b3"]);
        let r = &p.archives[0].remove;
        assert!(r.contains(&segment_name(1, 7, SEG)));
        assert!(!r.contains(&segment_name(1, 8, SEG)) && !r.contains(&segment_name(1, 10, SEG)));
        assert!(!r.contains(&segment_name(2, 10, SEG)));
        assert!(!r.iter().any(|n| n.ends_with(".partial")));
    }

    #[test]
    fn a_gap_that_breaks_the_newest_backup_removes_nothing() {
        let d = history_dir();
        let (mut entries, a) = six(d.path(), &[]);
        entries[0].restorable = Some(false);
        let p = plan(&entries, &mut [a], policy(None, Some(3))).unwrap();
        assert!(p.refused.as_deref().unwrap().contains("cannot be restored"), "{:?}", p.refused);
        assert!(p.archives.is_empty() && p.sidecars.is_empty());
    }

    #[test]
    fn an_unknown_file_in_the_archive_removes_nothing() {
        let d = history_dir();
        let (entries, a) = six(d.path(), &["notes.txt"]);
        let p = plan(&entries, &mut [a], policy(None, Some(3))).unwrap();
        assert!(p.refused.as_deref().unwrap().contains("not a plain WAL archive (notes.txt"), "{:?}", p.refused);
        assert!(p.archives.is_empty() && p.sidecars.is_empty());
    }

    #[test]
    fn no_complete_backup_left_removes_nothing() {
        let d = history_dir();
        let (mut entries, a) = six(d.path(), &[]);
        for e in entries.iter_mut() {
            e.status = Status::ArchivePending;
        }
        let p = plan(&entries, &mut [a], policy(Some(1), None)).unwrap();
        assert!(p.refused.as_deref().unwrap().contains("no complete backup"));
    }

    #[test]
    fn removal_unlinks_listed_names_only_and_never_follows_a_link() {
        let d = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        std::fs::write(outside.path().join("victim"), "x").unwrap();
        std::fs::write(d.path().join("a"), "x").unwrap();
        std::fs::write(d.path().join("new"), "x").unwrap();
        std::os::unix::fs::symlink(outside.path().join("victim"), d.path().join("link")).unwrap();
        remove_names(d.path(), &["a".into(), "link".into(), "gone".into()]).unwrap();
        assert!(!d.path().join("a").exists() && d.path().join("new").exists());
        assert!(std::fs::symlink_metadata(d.path().join("link")).is_err());
        assert!(outside.path().join("victim").exists());
        // a sidecar dir that is a link: renamed away and unlinked, its target untouched
        let s = tempfile::tempdir().unwrap();
        std::fs::create_dir(outside.path().join("b1")).unwrap();
        std::fs::write(outside.path().join("b1/manifest.json"), "x").unwrap();
        std::os::unix::fs::symlink(outside.path().join("b1"), s.path().join("b1")).unwrap();
        remove_sidecar(&s.path().join("b1")).unwrap();
        assert!(outside.path().join("b1/manifest.json").exists());
        assert_eq!(std::fs::read_dir(s.path()).unwrap().count(), 0);
    }

    #[test]
    fn a_second_run_cannot_take_the_lock() {
        let d = tempfile::tempdir().unwrap();
        let l = lock(d.path()).unwrap();
        assert!(lock(d.path()).unwrap_err().msg.contains("another expire"));
        drop(l);
        lock(d.path()).unwrap();
    }

    /// cargo test --release --lib expire_timing -- --ignored --nocapture
    #[test]
    #[ignore]
    fn expire_timing_100k_segments() {
        let d = history_dir();
        let (entries, mut a) = six(d.path(), &[]);
        a.names.extend((21..100_021).map(|s| segment_name(2, s, SEG)));
        a.names.extend((11..50_000).map(|s| segment_name(1, s + 100_000, SEG)));
        let t = std::time::Instant::now();
        let p = plan(&entries, &mut [a], policy(None, Some(3))).unwrap();
        let el = t.elapsed();
        eprintln!(
            "plan over {} names: {:?}, {} to remove",
            p.archives[0].kept_files + p.archives[0].remove.len(),
            el,
            p.archives[0].remove.len()
        );
        assert!(el < std::time::Duration::from_secs(2));
    }
}
