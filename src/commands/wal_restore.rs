//! `wal-restore`: restore_command for a plain archive directory.
//!
//! Exit 0 when the file was put in place; 1, quietly, when the archive does not have it
//! (PostgreSQL asks for files past the end of the archive: that is how recovery ends);
//! 2 for a usage error; 126 for anything else (unreadable archive, damaged or foreign
//! segment, write error): an exit status above 125 makes PostgreSQL abort recovery instead
//! of taking the failure for the end of the archive and promoting too early.

use std::fs::{self, File};
use std::io::{self, Write};
use std::path::Path;

use crate::archive::file::{self, Compression};
use crate::archive::segment::{LongHeader, PageCheck};

use crate::cli::WalRestoreArgs;
use crate::error::{exit, Error, Result};
use crate::fsutil;
use crate::pg::wal::is_segment_name;

/// Anything but "not in the archive": PostgreSQL aborts recovery.
fn loud(msg: String) -> Error {
    Error::with_code(exit::ABORT_RECOVERY, msg)
}

/// Check a segment's long page header: flag, system identifier, segment size.
fn check_header(name: &str, head: &[u8], len: u64, sysid: Option<u64>) -> Result<()> {
    let h = LongHeader::parse(&format!("archived segment {}", name), head).map_err(|e| loud(e.msg))?;
    check_sysid(name, &h, sysid)?;
    if h.seg_size != len {
        return Err(loud(format!(
            "archived segment {} is {} bytes, its header says {}: truncated or still being archived",
            name, len, h.seg_size
        )));
    }
    Ok(())
}

/// The segment's system identifier is the one asked for (when one is).
fn check_sysid(name: &str, h: &LongHeader, sysid: Option<u64>) -> Result<()> {
    if let Some(want) = sysid {
        if h.system_identifier != want {
            return Err(loud(format!(
                "archived segment {} belongs to the cluster with system identifier {}, not {}: the archive directory holds another cluster's WAL (check --archive-dir)",
                name, h.system_identifier, want
            )));
        }
    }
    Ok(())
}

/// Is `f` a name PostgreSQL asks restore_command for? A segment (24 hex digits, upper case
/// as the server writes them), a timeline history file (`<8 hex>.history`), a partial
/// segment (`<segment>.partial`) or a backup history file (`<segment>.<8 hex>.backup`).
/// Anything else (a path, `..`, another shape) is refused, so wal-restore can only ever
/// hand out WAL files from the archive directory itself.
pub fn is_wal_request(f: &str) -> bool {
    file::kind_of(f).is_some()
}

/// Open the archived file of `f` in whatever form it is stored (NAME, NAME.zst, NAME.lz4),
/// never through a link (O_NOFOLLOW): a link in the archive could make us hand out any file
/// the server's user can read. Ok(None) when the archive does not have it.
fn open_archived(dir: &Path, f: &str) -> Result<Option<(File, Compression, String)>> {
    file::open_stored(dir, f).map_err(|e| {
        if e.msg.contains("Too many levels of symbolic links") {
            loud(format!(
                "{}: a symbolic link: refusing to follow it (archive_command stores plain files; replace the link with the file)",
                e.msg
            ))
        } else {
            loud(e.msg)
        }
    })
}

/// Copy into a new 0600 file under an unpredictable name next to `dest` (O_EXCL|O_NOFOLLOW),
/// then rename it to `dest`: the server never sees a partial file under the name it asked for.
///
/// No fsync: what restore_command writes is a scratch copy. RestoreArchivedFile
/// (xlogarchive.c, PostgreSQL 10-18) reads it under a temporary name (RECOVERYXLOG,
/// RECOVERYHISTORY) and removes it when done; when the server keeps a restored file
/// (KeepFileRestoredFromArchive, e.g. in standby mode or for timeline history files) it
/// moves it into place with durable_rename(), which fsyncs the file and pg_wal itself. After
/// a crash the server asks the archive again, which still has the file.
/// Read from offset 0 into `buf` until it is full or the file ends; the file offset is not moved.
fn read_at_most(file: &File, buf: &mut [u8]) -> io::Result<usize> {
    use std::os::unix::fs::FileExt;
    let mut n = 0;
    while n < buf.len() {
        match file.read_at(&mut buf[n..], n as u64)? {
            0 => break,
            k => n += k,
        }
    }
    Ok(n)
}

fn copy(src: &mut File, dest: &Path) -> Result<()> {
    write_via_temp(dest, |out| io::copy(src, out).map(|_| ()).map_err(|e| e.to_string()))
}

/// Write into a new 0600 file next to `dest` with `fill`, then rename it to `dest`; on any
/// error the temporary file is removed and `dest` is left as it was.
fn write_via_temp(dest: &Path, fill: impl FnOnce(&mut File) -> std::result::Result<(), String>) -> Result<()> {
    let dir = match dest.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let name = dest.file_name().map(|n| n.to_string_lossy().to_string()).unwrap_or_default();
    let (mut out, tmp) = fsutil::create_temp_in(dir, &format!(".{}.pgbh.", name), 0o600)
        .map_err(|e| loud(format!("cannot write {}: {}", dest.display(), e.msg)))?;
    let result = fill(&mut out)
        .and_then(|()| fs::rename(&tmp, dest).map_err(|e| format!("cannot write {}: {}", dest.display(), e)));
    if let Err(e) = result {
        let _ = fs::remove_file(&tmp);
        return Err(loud(e));
    }
    Ok(())
}

/// A plain segment: every page header checked by positioned reads, then the copy left to the
/// kernel (io::copy between files is copy_file_range), as cp's is.
fn copy_plain_segment(mut file: File, stored: &Path, f: &str, sysid: Option<u64>, dest: &Path) -> Result<()> {
    let damaged = |e: String| loud(format!("archived file {} cannot be used: {}", stored.display(), e));
    let len = file.metadata().map_err(|e| loud(format!("cannot stat {}: {}", stored.display(), e)))?.len();
    let mut head = vec![0u8; 8192];
    let n = read_at_most(&file, &mut head).map_err(|e| damaged(e.to_string()))?;
    let mut pc = PageCheck::new(f, &head[..n]).map_err(|e| damaged(e.msg))?;
    check_sysid(f, &pc.header(), sysid)?;
    pc.check_file(&file, len).map_err(|e| damaged(e.msg))?;
    copy(&mut file, dest)
}

/// Decompress (and, for a segment, check every page header of) `file` into `dest`. The
/// format's checksum is checked at the end of the stream: a damaged file never reaches `dest`.
fn copy_checked(file: File, c: Compression, stored: &Path, f: &str, sysid: Option<u64>, dest: &Path) -> Result<()> {
    let mut r = file::decoder(file, c).map_err(|e| loud(format!("cannot read {}: {}", stored.display(), e)))?;
    let segment = is_segment_name(f);
    write_via_temp(dest, |out| {
        let damaged = |e: String| format!("archived file {} cannot be used: {}", stored.display(), e);
        let mut buf = vec![0u8; 1 << 20];
        let mut check: Option<PageCheck> = None;
        loop {
            let n = crate::archive::store::read_full(&mut r, &mut buf).map_err(|e| damaged(e.to_string()))?;
            if n == 0 {
                break;
            }
            if segment {
                if check.is_none() {
                    let pc = PageCheck::new(f, &buf[..n]).map_err(|e| damaged(e.msg))?;
                    check_sysid(f, &pc.header(), sysid).map_err(|e| e.msg)?;
                    check = Some(pc);
                }
                if let Some(c) = check.as_mut() {
                    c.feed(&buf[..n]).map_err(|e| damaged(e.msg))?;
                }
            }
            out.write_all(&buf[..n]).map_err(|e| format!("cannot write {}: {}", dest.display(), e))?;
        }
        match (&check, segment) {
            (Some(c), _) => c.finish().map_err(|e| damaged(e.msg)),
            (None, true) => Err(damaged("it is empty".into())),
            (None, false) => Ok(()),
        }
    })
}

pub fn run(a: WalRestoreArgs) -> Result<i32> {
    let f = &a.file;
    if !is_wal_request(f) {
        return Err(Error::usage(format!(
            "{:?} is not a WAL file name PostgreSQL asks for (a segment, .history, .partial or .backup file; use %f in restore_command)",
            f
        )));
    }
    if !a.archive_dir.is_dir() {
        return Err(loud(format!(
            "archive directory {} is missing or not a directory (unmounted?)",
            a.archive_dir.display()
        )));
    }
    let Some((mut file, c, stored)) = open_archived(&a.archive_dir, f)? else {
        // Not in the archive: quietly, the way recovery finds the end of the archive.
        return Ok(exit::FAILURE);
    };
    let src = a.archive_dir.join(stored);
    if c == Compression::None && is_segment_name(f) {
        copy_plain_segment(file, &src, f, a.system_identifier, &a.dest)?;
        return Ok(0);
    }
    if c != Compression::None {
        copy_checked(file, c, &src, f, a.system_identifier, &a.dest)?;
        return Ok(0);
    }
    if f.ends_with(".partial") {
        let len = file.metadata().map_err(|e| loud(format!("cannot stat {}: {}", src.display(), e)))?.len();
        // pread: the file offset stays at 0, so the copy below is one aligned in-kernel copy.
        let mut head = vec![0u8; 40];
        let n = read_at_most(&file, &mut head).map_err(|e| loud(format!("cannot read {}: {}", src.display(), e)))?;
        head.truncate(n);
        check_header(f, &head, len, a.system_identifier)?;
    }
    copy(&mut file, &a.dest)?;
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::names;

    fn header(sysid: u64, size: u32) -> Vec<u8> {
        let mut h = crate::archive::segment::tests::segment("000000010000000000000003", sysid, 8192, 1024);
        h.truncate(40);
        h[32..36].copy_from_slice(&size.to_ne_bytes());
        h
    }

    fn segment(name: &str, sysid: u64) -> Vec<u8> {
        crate::archive::segment::tests::segment(name, sysid, 8192, 1024)
    }

    #[test]
    fn only_names_postgres_asks_for() {
        for ok in [
            "000000010000000000000009",
            "0000000200000001000000FF.partial",
            "00000002.history",
            "000000010000000000000009.00000028.backup",
        ] {
            assert!(is_wal_request(ok), "{}", ok);
        }
        for bad in [
            "",
            "../000000010000000000000009",
            "x/000000010000000000000009",
            "00000001000000000000000a",
            "000000010000000000000009.00000028",
            "00000002.history/..",
            ".history",
            "postgresql.conf",
            "000000010000000000000009.backup",
        ] {
            assert!(!is_wal_request(bad), "{}", bad);
        }
    }

    #[test]
    fn header_checks() {
        assert!(check_header("x", &header(7, 1024), 1024, Some(7)).is_ok());
        assert!(check_header("x", &header(7, 1024), 1024, None).is_ok());
        let e = check_header("x", &header(8, 1024), 1024, Some(7)).unwrap_err();
        assert_eq!(e.code, exit::ABORT_RECOVERY);
        assert!(e.msg.contains("system identifier 8, not 7"));
        assert!(check_header("x", &header(7, 2048), 1024, Some(7)).is_err());
        assert!(check_header("x", &[0u8; 10], 10, None).is_err());
    }

    fn args(arch: &Path, file: &str, dest: &Path) -> WalRestoreArgs {
        WalRestoreArgs {
            archive_dir: arch.to_path_buf(),
            system_identifier: Some(7),
            file: file.into(),
            dest: dest.to_path_buf(),
        }
    }

    #[test]
    fn a_segment_is_copied_a_missing_one_is_a_quiet_1_and_a_bad_one_aborts() {
        let d = tempfile::tempdir().unwrap();
        let (arch, pgwal) = (d.path().join("arch"), d.path().join("pg_wal"));
        fs::create_dir_all(&arch).unwrap();
        fs::create_dir_all(&pgwal).unwrap();
        let seg = segment("000000010000000000000003", 7);
        fs::write(arch.join("000000010000000000000003"), &seg).unwrap();
        let dest = pgwal.join("RECOVERYXLOG");
        assert_eq!(run(args(&arch, "000000010000000000000003", &dest)).unwrap(), exit::OK);
        assert_eq!(fs::read(&dest).unwrap(), seg);
        assert_eq!(run(args(&arch, "000000010000000000000004", &dest)).unwrap(), exit::FAILURE);
        // Another cluster's segment: recovery aborts and what was there stays.
        let other = segment("000000010000000000000005", 8);
        fs::write(arch.join("000000010000000000000005"), &other).unwrap();
        let e = run(args(&arch, "000000010000000000000005", &dest)).unwrap_err();
        assert_eq!(e.code, exit::ABORT_RECOVERY);
        assert_eq!(fs::read(&dest).unwrap(), seg);
        assert_eq!(names(&pgwal), vec!["RECOVERYXLOG"], "no temporary file left");
        let e = run(args(&arch, "../etc/passwd", &dest)).unwrap_err();
        assert_eq!(e.code, exit::USAGE);
    }

    #[test]
    fn a_plain_segment_with_a_damaged_page_header_or_cut_short_aborts_and_leaves_no_file() {
        let d = tempfile::tempdir().unwrap();
        let (arch, pgwal) = (d.path().join("arch"), d.path().join("pg_wal"));
        fs::create_dir_all(&arch).unwrap();
        fs::create_dir_all(&pgwal).unwrap();
        let dest = pgwal.join("RECOVERYXLOG");
        let mut bad = segment("000000010000000000000003", 7);
        bad[5 * 1024 + 9] ^= 0x40; // the page address of page 5
        fs::write(arch.join("000000010000000000000003"), &bad).unwrap();
        let e = run(args(&arch, "000000010000000000000003", &dest)).unwrap_err();
        assert_eq!(e.code, exit::ABORT_RECOVERY);
        assert!(e.msg.contains("offset 5120") && e.msg.contains("damaged"), "{}", e.msg);
        let mut short = segment("000000010000000000000004", 7);
        short.truncate(4096);
        fs::write(arch.join("000000010000000000000004"), &short).unwrap();
        let e = run(args(&arch, "000000010000000000000004", &dest)).unwrap_err();
        assert_eq!(e.code, exit::ABORT_RECOVERY);
        assert!(e.msg.contains("truncated"), "{}", e.msg);
        assert!(names(&pgwal).is_empty(), "nothing written: {:?}", names(&pgwal));
    }

    #[test]
    fn a_link_in_the_archive_is_refused_and_its_target_not_handed_out() {
        let d = tempfile::tempdir().unwrap();
        let arch = d.path().join("arch");
        fs::create_dir_all(&arch).unwrap();
        fs::write(d.path().join("secret"), b"not WAL").unwrap();
        std::os::unix::fs::symlink(d.path().join("secret"), arch.join("00000002.history")).unwrap();
        let dest = d.path().join("RECOVERYHISTORY");
        let e = run(args(&arch, "00000002.history", &dest)).unwrap_err();
        assert_eq!(e.code, exit::ABORT_RECOVERY);
        assert!(e.msg.contains("symbolic link") && e.msg.contains("00000002.history"), "{}", e.msg);
        assert!(!dest.exists());
        let e = run(args(&d.path().join("unmounted"), "00000002.history", &dest)).unwrap_err();
        assert_eq!(e.code, exit::ABORT_RECOVERY, "a missing archive is not the end of the archive");
    }

    #[test]
    fn compressed_segments_are_restored_and_a_damaged_one_aborts_recovery() {
        use crate::archive::store::store;
        let d = tempfile::tempdir().unwrap();
        let (arch, pgwal) = (d.path().join("arch"), d.path().join("pg_wal"));
        fs::create_dir_all(&arch).unwrap();
        fs::create_dir_all(&pgwal).unwrap();
        let dest = pgwal.join("RECOVERYXLOG");
        for (i, c) in [Compression::Zstd, Compression::Lz4].into_iter().enumerate() {
            let name = format!("00000001000000000000000{}", i + 6);
            let seg = segment(&name, 7);
            let src = d.path().join("src");
            fs::write(&src, &seg).unwrap();
            store(&arch, &name, &src, c).unwrap();
            assert_eq!(run(args(&arch, &name, &dest)).unwrap(), exit::OK);
            assert_eq!(fs::read(&dest).unwrap(), seg, "{:?}", c);
            let stored = arch.join(file::stored_name(&name, c));
            let mut bytes = fs::read(&stored).unwrap();
            let at = bytes.len() / 2;
            bytes[at] ^= 0x01;
            fs::write(&stored, &bytes).unwrap();
            fs::remove_file(&dest).unwrap();
            let e = run(args(&arch, &name, &dest)).unwrap_err();
            assert_eq!(e.code, exit::ABORT_RECOVERY, "{:?}: {}", c, e.msg);
            assert!(e.msg.contains("cannot be used"), "{}", e.msg);
            assert_eq!(names(&pgwal), Vec::<String>::new(), "nothing reaches pg_wal");
        }
        // A plain segment with one page header damaged (or under the wrong name) aborts too.
        let mut seg = segment("000000010000000000000009", 7);
        seg[5 * 1024 + 8] ^= 1;
        fs::write(arch.join("000000010000000000000009"), &seg).unwrap();
        let e = run(args(&arch, "000000010000000000000009", &dest)).unwrap_err();
        assert!(e.code == exit::ABORT_RECOVERY && e.msg.contains("offset 5120"), "{}", e.msg);
        fs::write(arch.join("00000001000000000000000A"), segment("000000010000000000000003", 7)).unwrap();
        assert_eq!(run(args(&arch, "00000001000000000000000A", &dest)).unwrap_err().code, exit::ABORT_RECOVERY);
    }
}
