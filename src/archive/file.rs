//! One archived WAL file: the names it is stored under and what kind of file it is.
//!
//! An archived file is stored under the name PostgreSQL gave it (`%f`), with `.zst` or `.lz4`
//! appended when it was compressed; exactly one of these exists for one WAL file name.
//! Hidden names (starting with `.`) are temporary files of a write in progress or of a run
//! that was killed: readers never take them for archived files.

use std::fs::File;
use std::io::{self, Read};
use std::path::Path;

use crate::error::Result;
use crate::fsutil;

/// How an archived file's bytes are stored. Compressed files carry their format's own
/// content checksum (zstd: XXH64, lz4 frame: XXH32), checked when they are read to the end.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Compression {
    #[value(skip)]
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

/// A reader of the WAL content of `file` stored with `c` (decompressing; a compressed
/// file's checksum is checked when it is read to its end, and a damaged one is an error).
pub fn decoder<'a>(file: File, c: Compression) -> io::Result<Box<dyn Read + 'a>> {
    Ok(match c {
        Compression::None => Box::new(file),
        Compression::Zstd => Box::new(zstd::stream::read::Decoder::new(file)?),
        Compression::Lz4 => Box::new(lz4_flex::frame::FrameDecoder::new(io::BufReader::with_capacity(1 << 16, file))),
    })
}

/// The archived file of WAL file `wal_name` in `dir`: the first stored form found (in the
/// order of [`Compression::ALL`]), opened without following a link; None when there is none.
pub fn open_stored(dir: &Path, wal_name: &str) -> Result<Option<(File, Compression, String)>> {
    for c in Compression::ALL {
        let stored = stored_name(wal_name, c);
        if let Some(f) = fsutil::open_regular(&dir.join(&stored))? {
            return Ok(Some((f, c, stored)));
        }
    }
    Ok(None)
}

/// Up to `max` bytes read from `r`.
fn read_max(r: impl Read, max: usize, what: &Path) -> Result<Vec<u8>> {
    let mut buf = Vec::new();
    r.take(max as u64).read_to_end(&mut buf).map_err(|e| err!("cannot read {}: {}", what.display(), e))?;
    Ok(buf)
}

/// Up to `max` bytes of the WAL content of the file stored as `stored` in archive directory
/// `dir` (decompressed), never read through a symlink; None when there is no such file.
pub fn read_head(dir: &Path, stored: &str, max: usize) -> Result<Option<Vec<u8>>> {
    let p = dir.join(stored);
    let Some((_, _, c)) = parse_stored(stored) else {
        return Err(err!("{}: not an archived WAL file name", p.display()));
    };
    let Some(f) = fsutil::open_regular(&p)? else { return Ok(None) };
    let r = decoder(f, c).map_err(|e| err!("cannot read {}: {}", p.display(), e))?;
    read_max(r, max, &p).map(Some)
}

/// Up to `max` bytes of the WAL content of WAL file `wal_name` in `dir`, whatever form it is
/// stored in; None when the archive does not have it.
pub fn read_wal(dir: &Path, wal_name: &str, max: usize) -> Result<Option<Vec<u8>>> {
    let Some((f, c, stored)) = open_stored(dir, wal_name)? else { return Ok(None) };
    let p = dir.join(stored);
    let r = decoder(f, c).map_err(|e| err!("cannot read {}: {}", p.display(), e))?;
    read_max(r, max, &p).map(Some)
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

    #[test]
    fn read_head_and_read_wal_decompress_and_never_follow_a_link() {
        use std::io::Write;
        let d = tempfile::tempdir().unwrap();
        let data: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8).collect();
        let mut z = zstd::stream::write::Encoder::new(Vec::new(), 3).unwrap();
        z.write_all(&data).unwrap();
        std::fs::write(d.path().join("000000010000000000000001.zst"), z.finish().unwrap()).unwrap();
        let mut l = lz4_flex::frame::FrameEncoder::new(Vec::new());
        l.write_all(&data).unwrap();
        std::fs::write(d.path().join("000000010000000000000002.lz4"), l.finish().unwrap()).unwrap();
        std::fs::write(d.path().join("000000010000000000000003"), &data).unwrap();
        for (stored, wal) in [
            ("000000010000000000000001.zst", "000000010000000000000001"),
            ("000000010000000000000002.lz4", "000000010000000000000002"),
            ("000000010000000000000003", "000000010000000000000003"),
        ] {
            assert_eq!(read_head(d.path(), stored, 40).unwrap().unwrap(), &data[..40], "{}", stored);
            assert_eq!(read_wal(d.path(), wal, usize::MAX).unwrap().unwrap(), data, "{}", wal);
        }
        assert_eq!(read_head(d.path(), "000000010000000000000004.zst", 40).unwrap(), None);
        assert_eq!(read_wal(d.path(), "000000010000000000000004", 40).unwrap(), None);
        std::os::unix::fs::symlink(
            d.path().join("000000010000000000000003"),
            d.path().join("000000010000000000000005"),
        )
        .unwrap();
        assert!(read_wal(d.path(), "000000010000000000000005", 40).is_err());
        assert!(read_head(d.path(), "x", 40).is_err());
    }
}
