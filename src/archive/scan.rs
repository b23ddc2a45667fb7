//! What an archive directory holds: segments per timeline, history files, gaps, and how far
//! the archive reaches from a backup's start.
//!
//! A [`Scan`] is built once from one listing of the directory (names only: no file is
//! stat'ed, only the few `.history` files are read) and then answers many questions:
//! restore-prep's proof that a backup's WAL is there, `list`'s recovery windows, `expire`'s
//! plan and a monitoring check. Segments are kept per timeline as sorted segment numbers, so
//! a question about a range costs a binary search and a walk over that range.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use crate::archive::file::{self, Compression, Kind};
use crate::error::Result;
use crate::pg::wal::Lsn;

/// The file wal-archive keeps in an archive directory it writes (not a WAL file name).
pub const MARKER: &str = "pg-backup-hooks-archive.json";

/// A timeline history file larger than this is not PostgreSQL's.
const MAX_TIMELINE_HISTORY: usize = 1 << 20;

/// One archived segment of a timeline.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Stored {
    pub segno: u64,
    pub compression: Compression,
}

/// A line of a timeline history file: `timeline` was left at `switchpoint` for a newer one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Branch {
    pub timeline: u32,
    pub switchpoint: Lsn,
}

/// How far the archive reaches contiguously from a point.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reach {
    /// The newest segment of the unbroken run, and its timeline.
    pub timeline: u32,
    pub segno: u64,
    /// Its WAL file name and the name it is stored under.
    pub name: String,
    pub stored: String,
    /// The end of that segment: as far as recovery can replay.
    pub end: Lsn,
    /// The timeline recovery follows (`recovery_target_timeline = latest`).
    pub target_timeline: u32,
    /// PostgreSQL's `latest` when it is not a descendant of the point (recovery to `latest`
    /// then refuses to start: "requested timeline is not a child of this server's history").
    pub latest_not_descendant: Option<u32>,
}

/// An archive directory's listing, parsed.
#[derive(Debug)]
pub struct Scan {
    dir: PathBuf,
    seg_size: u64,
    segments: BTreeMap<u32, Vec<Stored>>,
    /// Per timeline: its ancestors, oldest first, from its `.history` file.
    histories: BTreeMap<u32, Vec<Branch>>,
    /// Backup history files, `.partial` files: WAL name → how stored.
    backups: BTreeMap<String, Compression>,
    partials: BTreeMap<String, Compression>,
    /// Hidden names (temporary files of a write in progress or of a killed run).
    pub temporary: Vec<String>,
    /// Names that are neither archived WAL files, temporary files nor the marker.
    pub others: Vec<String>,
    /// The wal-archive marker file is there.
    pub marker: bool,
    /// What could not be read (a damaged history file, a WAL file stored twice): one line each.
    pub problems: Vec<String>,
}

impl Scan {
    /// List `dir` once and parse every name; `seg_size` is the backup's WAL segment size.
    pub fn read(dir: &Path, seg_size: u64) -> Result<Scan> {
        let rd = std::fs::read_dir(dir).map_err(|e| err!("cannot list archive directory {}: {}", dir.display(), e))?;
        let mut names = Vec::new();
        for e in rd {
            let e = e.map_err(|e| err!("cannot list archive directory {}: {}", dir.display(), e))?;
            names.push(e.file_name().to_string_lossy().into_owned());
        }
        Scan::from_names(dir, seg_size, names)
    }

    /// A scan of `dir` from its names (as [`Scan::read`] listed them).
    pub fn from_names(dir: &Path, seg_size: u64, names: Vec<String>) -> Result<Scan> {
        if !seg_size.is_power_of_two() || !(1 << 20..=1 << 30).contains(&seg_size) {
            return Err(err!(
                "WAL segment size {} is not one PostgreSQL uses (a power of 2 from 1 MiB to 1 GiB)",
                seg_size
            ));
        }
        let mut s = Scan {
            dir: dir.to_path_buf(),
            seg_size,
            segments: BTreeMap::new(),
            histories: BTreeMap::new(),
            backups: BTreeMap::new(),
            partials: BTreeMap::new(),
            temporary: Vec::new(),
            others: Vec::new(),
            marker: false,
            problems: Vec::new(),
        };
        let mut history_files = Vec::new();
        for n in names {
            s.add_name(n, &mut history_files);
        }
        for v in s.segments.values_mut() {
            v.sort_unstable_by_key(|x| x.segno);
            let before = v.len();
            v.dedup_by_key(|x| x.segno);
            if v.len() != before {
                s.problems.push(format!(
                    "{}: a segment is stored both plain and compressed; remove one of them",
                    s.dir.display()
                ));
            }
        }
        for (tli, stored) in history_files {
            s.read_timeline_history(tli, &stored);
        }
        Ok(s)
    }

    /// Sort one directory entry into its place.
    fn add_name(&mut self, n: String, history_files: &mut Vec<(u32, String)>) {
        if n == MARKER {
            self.marker = true;
            return;
        }
        if n.starts_with('.') {
            self.temporary.push(n);
            return;
        }
        let Some((wal, kind, c)) = file::parse_stored(&n) else {
            self.others.push(n);
            return;
        };
        match kind {
            Kind::Segment => {
                let (tli, segno) = parse_segment(wal, self.seg_size);
                self.segments.entry(tli).or_default().push(Stored { segno, compression: c });
            }
            Kind::History => history_files.push((u32::from_str_radix(&wal[..8], 16).unwrap_or(0), n.clone())),
            Kind::Backup => {
                self.backups.insert(wal.to_string(), c);
            }
            Kind::Partial => {
                self.partials.insert(wal.to_string(), c);
            }
        }
    }

    /// Read one `TTTTTTTT.history` file into [`Scan::histories`].
    fn read_timeline_history(&mut self, tli: u32, stored: &str) {
        let text = match file::read_head(&self.dir, stored, MAX_TIMELINE_HISTORY) {
            Ok(Some(b)) => String::from_utf8_lossy(&b).into_owned(),
            Ok(None) => return,
            Err(e) => return self.problems.push(e.msg),
        };
        match parse_timeline_history(&text) {
            Some(h) => {
                self.histories.insert(tli, h);
            }
            None => self.problems.push(format!(
                "{} is not a timeline history file (lines of parent timeline, switch point, reason)",
                self.dir.join(stored).display()
            )),
        }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn seg_size(&self) -> u64 {
        self.seg_size
    }

    /// The timelines that have segments, oldest first.
    pub fn timelines(&self) -> impl Iterator<Item = u32> + '_ {
        self.segments.keys().copied()
    }

    /// A timeline's archived segments, by segment number.
    pub fn segments(&self, tli: u32) -> &[Stored] {
        self.segments.get(&tli).map(Vec::as_slice).unwrap_or(&[])
    }

    /// Every archived segment (all timelines).
    pub fn segment_count(&self) -> usize {
        self.segments.values().map(Vec::len).sum()
    }

    /// How segment `segno` of timeline `tli` is stored, if it is.
    pub fn segment(&self, tli: u32, segno: u64) -> Option<Stored> {
        let v = self.segments(tli);
        v.binary_search_by_key(&segno, |s| s.segno).ok().map(|i| v[i])
    }

    /// The WAL file name of a segment.
    pub fn segment_name(&self, tli: u32, segno: u64) -> String {
        segment_name(tli, segno, self.seg_size)
    }

    /// (timeline, segment number) of a segment's WAL file name; None for another name.
    pub fn parse_segment_name(&self, name: &str) -> Option<(u32, u64)> {
        parse_segment_name(name, self.seg_size)
    }

    /// The segment holding `lsn`.
    pub fn segno_of(&self, lsn: Lsn) -> u64 {
        lsn.0 / self.seg_size
    }

    /// The name segment `segno` of `tli` is stored under, if it is there.
    pub fn stored_segment_name(&self, tli: u32, segno: u64) -> Option<String> {
        self.segment(tli, segno).map(|s| file::stored_name(&self.segment_name(tli, segno), s.compression))
    }

    /// A timeline's ancestors, oldest first (empty for timeline 1 or without its history file).
    pub fn history(&self, tli: u32) -> &[Branch] {
        self.histories.get(&tli).map(Vec::as_slice).unwrap_or(&[])
    }

    /// Is `tli`'s `.history` file in the archive?
    pub fn has_history(&self, tli: u32) -> bool {
        self.histories.contains_key(&tli)
    }

    /// The timelines that have a history file.
    pub fn history_timelines(&self) -> impl Iterator<Item = u32> + '_ {
        self.histories.keys().copied()
    }

    /// How a backup history file (`<segment>.<offset>.backup`) is stored, if it is there.
    pub fn backup_file(&self, wal_name: &str) -> Option<Compression> {
        self.backups.get(wal_name).copied()
    }

    /// Every backup history file's WAL name, in name order.
    pub fn backup_files(&self) -> impl Iterator<Item = &str> + '_ {
        self.backups.keys().map(String::as_str)
    }

    /// Every `.partial` file's WAL name, in name order.
    pub fn partial_files(&self) -> impl Iterator<Item = &str> + '_ {
        self.partials.keys().map(String::as_str)
    }

    /// The first segment from `from` to `to` (both included) of timeline `tli` that the archive
    /// lacks; None when all are there.
    pub fn first_missing(&self, tli: u32, from: u64, to: u64) -> Option<u64> {
        let v = self.segments(tli);
        let mut i = v.partition_point(|s| s.segno < from);
        let mut want = from;
        while want <= to {
            if v.get(i).map(|s| s.segno) != Some(want) {
                return Some(want);
            }
            i += 1;
            want += 1;
        }
        None
    }

    /// The gaps of a timeline between its oldest and newest archived segment, as ranges of
    /// missing segment numbers (first, last).
    pub fn gaps(&self, tli: u32) -> Vec<(u64, u64)> {
        self.segments(tli)
            .windows(2)
            .filter(|w| w[1].segno > w[0].segno + 1)
            .map(|w| (w[0].segno + 1, w[1].segno - 1))
            .collect()
    }

    /// Does timeline `t` descend from `tli` at `lsn` (it is `tli`, or its history left `tli`
    /// after `lsn`)?
    pub fn descends_from(&self, t: u32, tli: u32, lsn: Lsn) -> bool {
        t == tli || self.history(t).iter().any(|b| b.timeline == tli && b.switchpoint > lsn)
    }

    /// The timeline `recovery_target_timeline = latest` picks starting from `tli`, as
    /// PostgreSQL finds it: the last of tli+1, tli+2, ... whose history file is there.
    pub fn latest_timeline(&self, tli: u32) -> u32 {
        let mut t = tli;
        while self.has_history(t + 1) {
            t += 1;
        }
        t
    }

    /// How far the archive reaches without a gap from `lsn` on `tli`, following the timeline
    /// recovery to `latest` follows (the newest descendant when PostgreSQL's `latest` is not
    /// one); None when even the segment holding `lsn` is missing.
    pub fn reach(&self, tli: u32, lsn: Lsn) -> Option<Reach> {
        let latest = self.latest_timeline(tli);
        let target = if self.descends_from(latest, tli, lsn) {
            latest
        } else {
            self.histories.keys().copied().filter(|&t| self.descends_from(t, tli, lsn)).max().unwrap_or(tli)
        };
        let (t, segno) = self.walk(&self.path(target, tli), self.segno_of(lsn))?;
        let name = self.segment_name(t, segno);
        let stored = self.stored_segment_name(t, segno).unwrap_or_default();
        Some(Reach {
            timeline: t,
            segno,
            name,
            stored,
            end: Lsn((segno + 1) * self.seg_size),
            target_timeline: target,
            latest_not_descendant: (latest != target).then_some(latest),
        })
    }

    /// The timelines recovery on `target` goes through from `tli`, each with the first
    /// segment it serves (the segment holding the switch point is the newer timeline's).
    fn path(&self, target: u32, tli: u32) -> Vec<(u32, u64)> {
        let mut path = vec![(tli, 0)];
        if target == tli {
            return path;
        }
        let h = self.history(target);
        let from = h.iter().position(|b| b.timeline == tli).unwrap_or(h.len());
        for (i, b) in h.iter().enumerate().skip(from) {
            let next = h.get(i + 1).map(|n| n.timeline).unwrap_or(target);
            path.push((next, self.segno_of(b.switchpoint)));
        }
        path
    }

    /// The last segment of the unbroken run from `start` along `path`.
    fn walk(&self, path: &[(u32, u64)], start: u64) -> Option<(u32, u64)> {
        let mut last = None;
        let mut want = start;
        for (i, &(t, _)) in path.iter().enumerate() {
            let end = path.get(i + 1).map(|n| n.1);
            if end.is_some_and(|e| want >= e) {
                continue;
            }
            let v = self.segments(t);
            let mut j = v.partition_point(|s| s.segno < want);
            while v.get(j).map(|s| s.segno) == Some(want) && end.is_none_or(|e| want < e) {
                last = Some((t, want));
                want += 1;
                j += 1;
            }
            if end.is_none_or(|e| want < e) {
                break;
            }
        }
        last
    }

    /// When a stored file was last written (one stat, never through a link).
    pub fn mtime(&self, stored: &str) -> Option<SystemTime> {
        std::fs::symlink_metadata(self.dir.join(stored)).ok().filter(|m| m.is_file()).and_then(|m| m.modified().ok())
    }
}

/// What a segment's first page header (XLogLongPageHeaderData) says about it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Head {
    /// xlp_tli: the timeline of the first page (an older one when the segment is the first of
    /// a timeline, copied from its parent up to the switch point).
    pub timeline: u32,
    /// xlp_pageaddr: the WAL location of the first page, i.e. which segment this is.
    pub pageaddr: Lsn,
    pub system_identifier: u64,
    pub seg_size: u32,
}

/// How many bytes of a segment [`parse_head`] needs.
pub const HEAD_BYTES: usize = 40;

/// The long page header at the start of a segment (in the byte order of the machine that
/// wrote it, as PostgreSQL reads it); None when too short or without the long-header flag.
pub fn parse_head(b: &[u8]) -> Option<Head> {
    let u32_at = |o: usize| b.get(o..o + 4).and_then(|s| s.try_into().ok()).map(u32::from_ne_bytes);
    let u64_at = |o: usize| b.get(o..o + 8).and_then(|s| s.try_into().ok()).map(u64::from_ne_bytes);
    let info = b.get(2..4).and_then(|s| s.try_into().ok()).map(u16::from_ne_bytes)?;
    // XLP_LONG_HEADER
    if info & 0x0002 == 0 {
        return None;
    }
    Some(Head {
        timeline: u32_at(4)?,
        pageaddr: Lsn(u64_at(8)?),
        system_identifier: u64_at(24)?,
        seg_size: u32_at(32)?,
    })
}

/// The WAL file name of segment `segno` of timeline `tli`.
pub fn segment_name(tli: u32, segno: u64, seg_size: u64) -> String {
    let per_id = 0x1_0000_0000u64 / seg_size;
    format!("{:08X}{:08X}{:08X}", tli, segno / per_id, segno % per_id)
}

/// (timeline, segment number) of a segment's WAL file name; None for another name.
pub fn parse_segment_name(name: &str, seg_size: u64) -> Option<(u32, u64)> {
    (file::kind_of(name) == Some(Kind::Segment) && seg_size.is_power_of_two()).then(|| parse_segment(name, seg_size))
}

/// (timeline, segment number) of a 24-hex-digit segment name.
fn parse_segment(name: &str, seg_size: u64) -> (u32, u64) {
    let hex = |r: std::ops::Range<usize>| u64::from_str_radix(&name[r], 16).unwrap_or(0);
    let per_id = 0x1_0000_0000u64 / seg_size;
    (hex(0..8) as u32, hex(8..16) * per_id + hex(16..24))
}

/// A timeline history file's lines (`parent<TAB>switchpoint<TAB>reason`; `#` comments and
/// blank lines skipped), oldest first; None when a line is not one.
pub fn parse_timeline_history(text: &str) -> Option<Vec<Branch>> {
    let mut out = Vec::new();
    for line in text.lines().map(str::trim).filter(|l| !l.is_empty() && !l.starts_with('#')) {
        let mut f = line.split_whitespace();
        let timeline = f.next()?.parse().ok()?;
        let switchpoint = f.next()?.parse().ok()?;
        out.push(Branch { timeline, switchpoint });
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use std::fs;

    use super::*;

    const SEG: u64 = 16 << 20;

    fn names(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    fn seg(tli: u32, segno: u64) -> String {
        format!("{:08X}{:08X}{:08X}", tli, segno / 256, segno % 256)
    }

    #[test]
    fn names_are_sorted_into_segments_backups_temporary_files_and_others() {
        let d = tempfile::tempdir().unwrap();
        let mut list = names(&[
            "000000010000000000000003",
            "000000010000000000000001.zst",
            "000000010000000000000002.lz4",
            "000000010000000000000001.00000028.backup",
            "000000010000000000000004.partial",
            ".000000010000000000000005.tmp",
            MARKER,
            "README",
        ]);
        list.push(seg(2, 0x1FF));
        let s = Scan::from_names(d.path(), SEG, list).unwrap();
        let v: Vec<u64> = s.segments(1).iter().map(|x| x.segno).collect();
        assert_eq!(v, [1, 2, 3]);
        assert_eq!(s.segment(1, 2).map(|x| x.compression), Some(Compression::Lz4));
        assert_eq!(s.segments(2)[0].segno, 0x1FF, "xlogid 1, seg FF: 256 segments of 16 MiB per xlogid");
        assert_eq!(s.segment_name(2, 0x1FF), "0000000200000001000000FF");
        assert_eq!(s.parse_segment_name("0000000200000001000000FF"), Some((2, 0x1FF)));
        assert!(s.backup_file("000000010000000000000001.00000028.backup").is_some());
        assert_eq!(s.partial_files().collect::<Vec<_>>(), ["000000010000000000000004.partial"]);
        assert_eq!(s.temporary, [".000000010000000000000005.tmp"]);
        assert_eq!(s.others, ["README"]);
        assert!(s.marker);
        assert_eq!(s.segment_count(), 4);
    }

    #[test]
    fn first_missing_and_gaps() {
        let d = tempfile::tempdir().unwrap();
        let list = [1, 2, 3, 5, 6, 9].iter().map(|&n| seg(1, n)).collect();
        let s = Scan::from_names(d.path(), SEG, list).unwrap();
        assert_eq!(s.first_missing(1, 1, 3), None);
        assert_eq!(s.first_missing(1, 2, 6), Some(4));
        assert_eq!(s.first_missing(1, 0, 3), Some(0));
        assert_eq!(s.first_missing(2, 1, 1), Some(1), "another timeline has nothing");
        assert_eq!(s.gaps(1), [(4, 4), (7, 8)]);
        let r = s.reach(1, Lsn(5 * SEG + 100)).unwrap();
        assert_eq!((r.timeline, r.segno, r.end), (1, 6, Lsn(7 * SEG)));
        assert_eq!(s.reach(1, Lsn(4 * SEG)), None);
    }

    #[test]
    fn reach_follows_the_latest_timeline_that_descends_from_the_point() {
        let d = tempfile::tempdir().unwrap();
        // Timeline 2 left 1 in segment 5; timeline 3 left 2 in segment 8.
        fs::write(d.path().join("00000002.history"), "1\t0/5000100\tno recovery target specified\n").unwrap();
        fs::write(d.path().join("00000003.history"), "1\t0/5000100\tx\n\n2\t0/8000000\tbefore 2026\n").unwrap();
        let mut list: Vec<String> = (1..=6).map(|n| seg(1, n)).collect();
        list.extend((5..=8).map(|n| seg(2, n)));
        list.extend((8..=10).map(|n| seg(3, n)));
        list.extend(names(&["00000002.history", "00000003.history"]));
        let s = Scan::from_names(d.path(), SEG, list).unwrap();
        assert!(s.problems.is_empty(), "{:?}", s.problems);
        assert_eq!(s.history(3).len(), 2);
        assert_eq!(s.latest_timeline(1), 3);
        let r = s.reach(1, Lsn(2 * SEG)).unwrap();
        assert_eq!((r.timeline, r.segno, r.target_timeline), (3, 10, 3), "{r:?}");
        assert_eq!(r.name, "00000003000000000000000A");
        // From a point after timeline 2 left 1: only timeline 1 descends from it.
        let r = s.reach(1, Lsn(5 * SEG + 0x200)).unwrap();
        assert_eq!((r.timeline, r.segno, r.latest_not_descendant), (1, 6, Some(3)));
        // A gap on timeline 2 before it leaves for 3 ends the run there.
        let mut list: Vec<String> = (1..=6).map(|n| seg(1, n)).collect();
        list.extend([5, 7, 8].iter().map(|&n| seg(2, n)));
        list.extend((8..=10).map(|n| seg(3, n)));
        list.extend(names(&["00000002.history", "00000003.history"]));
        let s = Scan::from_names(d.path(), SEG, list).unwrap();
        assert_eq!(s.reach(1, Lsn(2 * SEG)).map(|r| (r.timeline, r.segno)), Some((2, 5)));
    }

    #[test]
    fn a_damaged_history_file_is_a_problem_not_a_failure() {
        let d = tempfile::tempdir().unwrap();
        fs::write(d.path().join("00000002.history"), "garbage here\n").unwrap();
        let s = Scan::from_names(d.path(), SEG, names(&["00000002.history"])).unwrap();
        assert_eq!(s.problems.len(), 1);
        assert!(s.problems[0].contains("00000002.history"), "{:?}", s.problems);
        assert!(Scan::from_names(d.path(), 12345, Vec::new()).is_err());
    }

    /// `cargo test --release --lib -- --ignored scan::tests::listing`: the real directory
    /// listing of 100,000 segments (files created empty), built into a scan and walked.
    #[test]
    #[ignore]
    fn listing_a_directory_of_a_hundred_thousand_segments() {
        let d = tempfile::tempdir().unwrap();
        for n in 1..=100_000u64 {
            fs::File::create(d.path().join(seg(1, n))).unwrap();
        }
        let t = std::time::Instant::now();
        let s = Scan::read(d.path(), SEG).unwrap();
        let listed = t.elapsed();
        let r = s.reach(1, Lsn(SEG)).unwrap();
        assert_eq!((s.segment_count(), r.segno), (100_000, 100_000));
        assert!(s.mtime(&r.stored).is_some());
        let took = t.elapsed();
        eprintln!("listed in {:?}, listed + scanned + walked + one stat in {:?}", listed, took);
        assert!(took < std::time::Duration::from_secs(2), "{:?}", took);
    }

    #[test]
    fn a_hundred_thousand_segments_are_scanned_and_walked_quickly() {
        let d = tempfile::tempdir().unwrap();
        let list: Vec<String> = (1..=100_000u64).map(|n| seg(1, n)).collect();
        let t = std::time::Instant::now();
        let s = Scan::from_names(d.path(), SEG, list).unwrap();
        assert_eq!(s.first_missing(1, 1, 100_000), None);
        assert_eq!(s.reach(1, Lsn(SEG)).map(|r| r.segno), Some(100_000));
        let took = t.elapsed();
        eprintln!("100000 names parsed, checked and walked in {:?}", took);
        assert!(took < std::time::Duration::from_secs(2), "{:?}", took);
    }
}
