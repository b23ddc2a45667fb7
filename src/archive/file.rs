//! One archived WAL file: the names it is stored under and what kind of file it is.
//!
//! An archived file is stored under the name PostgreSQL gave it (`%f`), with `.zst` or `.lz4`
//! appended when it was compressed; exactly one of these exists for one WAL file name.
//! Hidden names (starting with `.`) are temporary files of a write in progress or of a run
//! that was killed: readers never take them for archived files.

use std::path::Path;

use crate::error::Result;

/// How an archived file's bytes are stored.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Compression {
    None,
    Zstd,
    Lz4,
}

impl Compression {
    /// Every way a file may be stored, in the order readers look for them.
    pub const ALL: [Compression; 3] = [Compression::None, Compression::Zstd, Compression::Lz4];

    /// The suffix appended to the WAL file name ("" when not compressed).
    pub fn suffix(self) -> &'static str {
        match self {
            Compression::None => "",
            Compression::Zstd => ".zst",
            Compression::Lz4 => ".lz4",
        }
    }
}

/// What PostgreSQL's file is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// `TTTTTTTTXXXXXXXXYYYYYYYY`: a WAL segment.
    Segment,
    /// `<segment>.partial`: the last, incomplete segment of a timeline a promotion left.
    Partial,
    /// `TTTTTTTT.history`: a timeline's history.
    History,
    /// `<segment>.<offset 8 hex>.backup`: a backup history file.
    Backup,
}

fn hex(s: &str, n: usize) -> bool {
    s.len() == n && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'A'..=b'F'))
}

/// The kind of a WAL file name as PostgreSQL writes it (upper-case hex), or None.
pub fn kind_of(wal_name: &str) -> Option<Kind> {
    if hex(wal_name, 24) {
        return Some(Kind::Segment);
    }
    if let Some(seg) = wal_name.strip_suffix(".partial") {
        return hex(seg, 24).then_some(Kind::Partial);
    }
    if let Some(tli) = wal_name.strip_suffix(".history") {
        return hex(tli, 8).then_some(Kind::History);
    }
    if let Some(rest) = wal_name.strip_suffix(".backup") {
        let (seg, off) = rest.split_once('.')?;
        return (hex(seg, 24) && hex(off, 8)).then_some(Kind::Backup);
    }
    None
}

/// The name a WAL file is stored under with `c`.
pub fn stored_name(wal_name: &str, c: Compression) -> String {
    format!("{}{}", wal_name, c.suffix())
}

/// A directory entry's WAL file name, kind and compression; None for anything that is not
/// an archived WAL file (temporary files, other files).
pub fn parse_stored(name: &str) -> Option<(&str, Kind, Compression)> {
    if name.starts_with('.') {
        return None;
    }
    for c in [Compression::Zstd, Compression::Lz4, Compression::None] {
        if let Some(wal) = name.strip_suffix(c.suffix()) {
            if c == Compression::None && name != wal {
                continue;
            }
            return kind_of(wal).map(|k| (wal, k, c));
        }
    }
    None
}

/// Up to `max` bytes of the WAL content of the file stored as `stored` in archive directory
/// `dir` (decompressed), never read through a symlink; None when there is no such file.
/// Compressed files: not readable yet (wal-archive's compression adds them).
pub fn read_head(dir: &Path, stored: &str, max: usize) -> Result<Option<Vec<u8>>> {
    match parse_stored(stored) {
        Some((_, _, Compression::None)) => crate::restore::archive::read_regular(&dir.join(stored), max),
        Some((_, _, c)) => {
            Err(err!("{}: {:?}-compressed archive files cannot be read yet", dir.join(stored).display(), c))
        }
        None => Err(err!("{}: not an archived WAL file name", dir.join(stored).display())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stored_names_read_back() {
        assert_eq!(
            parse_stored("000000010000000000000009"),
            Some(("000000010000000000000009", Kind::Segment, Compression::None))
        );
        assert_eq!(
            parse_stored("000000010000000000000009.zst"),
            Some(("000000010000000000000009", Kind::Segment, Compression::Zstd))
        );
        assert_eq!(parse_stored("00000002.history.lz4"), Some(("00000002.history", Kind::History, Compression::Lz4)));
        assert_eq!(
            parse_stored("000000010000000000000009.00000028.backup"),
            Some(("000000010000000000000009.00000028.backup", Kind::Backup, Compression::None))
        );
        assert_eq!(
            parse_stored("000000010000000000000009.partial"),
            Some(("000000010000000000000009.partial", Kind::Partial, Compression::None))
        );
        for other in [
            ".000000010000000000000009.tmp",
            "000000010000000000000009.tmp",
            "00000001000000000000000g",
            "x.zst",
            "0000000100000000000000090",
            "000000010000000000000009.gz",
        ] {
            assert_eq!(parse_stored(other), None, "{}", other);
        }
        assert_eq!(stored_name("00000002.history", Compression::Zstd), "00000002.history.zst");
    }
}
