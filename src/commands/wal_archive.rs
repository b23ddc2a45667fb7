//! `wal-archive`: archive_command for a plain archive directory (docs/archive.md).
//!
//! Exit 0 when the file is archived (now, or already with the same content: a retry after a
//! crash); 1 otherwise, with one line on stderr for the server log: PostgreSQL keeps the WAL
//! file and retries later. Never above 125, which would make the archiver process exit.

use std::fs::File;
use std::io::Read;

use crate::archive::file::{self, Compression, Kind};
use crate::archive::segment::{LongHeader, LONG_HEADER_LEN};
use crate::archive::store::{self, Marker, Stored, MARKER_FORMAT};
use crate::cli::WalArchiveArgs;
use crate::error::{exit, Error, Result};

pub fn run(a: WalArchiveArgs) -> Result<i32> {
    let kind = file::kind_of(&a.file).ok_or_else(|| {
        Error::usage(format!(
            "{:?} is not a WAL file name PostgreSQL archives (a segment, .history, .partial or .backup file; use %f)",
            a.file
        ))
    })?;
    if !a.archive_dir.is_dir() {
        return Err(err!(
            "archive directory {} is missing or not a directory (unmounted?): {} not archived, PostgreSQL retries",
            a.archive_dir.display(),
            a.file
        ));
    }
    let marker = store::read_marker(&a.archive_dir)?;
    if matches!(kind, Kind::Segment | Kind::Partial) {
        check_identity(&a, marker)?;
    }
    let c = a.compress.unwrap_or(Compression::None);
    match store::store(&a.archive_dir, &a.file, &a.path, c)
        .map_err(|e| e.within(format_args!("{} not archived", a.file)))?
    {
        Stored::New(_) => {}
        Stored::Already(name) => {
            eprintln!(
                "pg-backup-hooks: {} is already archived as {} with the same content (a retry): nothing to do",
                a.file, name
            )
        }
    }
    Ok(exit::OK)
}

/// The segment's header against the archive's marker (written from this segment when the
/// archive has none yet): same system identifier, same segment size, the file that long.
fn check_identity(a: &WalArchiveArgs, marker: Option<Marker>) -> Result<()> {
    let mut f = File::open(&a.path).map_err(|e| err!("cannot open {}: {}", a.path.display(), e))?;
    let len = f.metadata().map_err(|e| err!("cannot stat {}: {}", a.path.display(), e))?.len();
    let mut head = vec![0u8; LONG_HEADER_LEN];
    let n = (&mut f)
        .take(LONG_HEADER_LEN as u64)
        .read(&mut head)
        .map_err(|e| err!("cannot read {}: {}", a.path.display(), e))?;
    let h = LongHeader::parse(&a.file, &head[..n])?;
    if h.seg_size != len {
        return Err(err!("{} is {} bytes, its header says {}: not archived", a.path.display(), len, h.seg_size));
    }
    let ours = Marker {
        format_version: MARKER_FORMAT,
        system_identifier: h.system_identifier.to_string(),
        wal_segment_size: h.seg_size,
    };
    let theirs = match marker {
        Some(m) => m,
        None => store::create_marker(&a.archive_dir, &ours)?,
    };
    if theirs.system_identifier != ours.system_identifier || theirs.wal_segment_size != ours.wal_segment_size {
        return Err(err!(
            "{} belongs to the cluster with system identifier {} (segments of {} bytes), archive directory {} to system {} (segments of {} bytes, {}): another cluster's archive; give this one its own --archive-dir",
            a.file,
            ours.system_identifier,
            ours.wal_segment_size,
            a.archive_dir.display(),
            theirs.system_identifier,
            theirs.wal_segment_size,
            store::MARKER
        ));
    }
    Ok(())
}
