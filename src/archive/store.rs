//! Writing one WAL file into the archive durably, as archive_command must: copy (or compress)
//! into a hidden temporary name in the directory, fsync it, rename it into place without ever
//! replacing a file, fsync the directory. A file already archived is compared, never
//! overwritten. Also the archive's identity marker, `pg-backup-hooks-archive.json`.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use fs2::FileExt;
use serde::{Deserialize, Serialize};

use crate::archive::file::{self, Compression};
use crate::error::{Context, Result};
use crate::fsutil;

/// The marker file naming the cluster an archive directory belongs to.
pub const MARKER: &str = "pg-backup-hooks-archive.json";
/// The marker's format this version writes and reads.
pub const MARKER_FORMAT: u32 = 1;

/// What the marker says.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct Marker {
    pub format_version: u32,
    /// A string: it exceeds JSON's safe integers.
    pub system_identifier: String,
    pub wal_segment_size: u64,
}

/// The marker of `dir`, or None when it has none yet.
pub fn read_marker(dir: &Path) -> Result<Option<Marker>> {
    let p = dir.join(MARKER);
    let Some(bytes) = fsutil::read_regular(&p, 64 * 1024)? else { return Ok(None) };
    let m: Marker = serde_json::from_slice(&bytes).context(|| format!("{} is damaged", p.display()))?;
    if m.format_version != MARKER_FORMAT {
        return Err(err!(
            "{} has format version {}, this pg-backup-hooks reads {}: use the version that wrote it",
            p.display(),
            m.format_version,
            MARKER_FORMAT
        ));
    }
    Ok(Some(m))
}

/// Write the marker for a first segment; a marker written meanwhile by another run is kept
/// and returned.
pub fn create_marker(dir: &Path, m: &Marker) -> Result<Marker> {
    let data = serde_json::to_vec_pretty(m).context(|| "cannot encode the archive marker")?;
    let tmp = TempFile::create(dir, MARKER)?;
    let placed = (|| {
        (&tmp.file).write_all(&data).context(|| format!("cannot write {}", tmp.path.display()))?;
        place(&tmp, &dir.join(MARKER))
    })();
    tmp.remove();
    match placed? {
        true => Ok(m.clone()),
        false => read_marker(dir)?.ok_or_else(|| err!("{} vanished while it was written", dir.join(MARKER).display())),
    }
}

/// A hidden temporary file for `name`, locked (flock) while it is written. Its name is fixed
/// per file (`.NAME.pgbh-tmp`), so a run that was killed leaves at most one, and the next
/// run removes it once it can take its lock (its writer is gone).
struct TempFile {
    file: File,
    path: PathBuf,
}

impl TempFile {
    fn create(dir: &Path, name: &str) -> Result<TempFile> {
        let path = dir.join(format!(".{}.pgbh-tmp", name));
        for _ in 0..2 {
            match open_new(&path) {
                Ok(file) => {
                    file.try_lock_exclusive().context(|| format!("cannot lock {}", path.display()))?;
                    return Ok(TempFile { file, path });
                }
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => remove_stale(&path)?,
                Err(e) => return Err(err!("cannot create {}: {}", path.display(), e)),
            }
        }
        Err(err!("cannot create {}: it keeps coming back", path.display()))
    }

    /// Remove the temporary name (after a rename it is already gone).
    fn remove(&self) {
        let _ = fs::remove_file(&self.path);
    }
}

/// O_CREAT|O_EXCL|O_NOFOLLOW, mode 0640 less the umask (PostgreSQL's own: 0600 or 0640).
fn open_new(path: &Path) -> io::Result<File> {
    OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .mode(0o640)
        .custom_flags(nix::libc::O_NOFOLLOW | nix::libc::O_CLOEXEC)
        .open(path)
}

/// A temporary file left by an earlier run: removed when no live run holds its lock (a link
/// planted there is removed, never followed); an error while another run writes it.
fn remove_stale(path: &Path) -> Result<()> {
    use std::os::unix::fs::MetadataExt;
    let f =
        OpenOptions::new().read(true).write(true).custom_flags(nix::libc::O_NOFOLLOW | nix::libc::O_CLOEXEC).open(path);
    match f {
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) if e.raw_os_error() == Some(nix::libc::ELOOP) => {}
        Err(e) => return Err(err!("cannot open the leftover temporary file {}: {}", path.display(), e)),
        Ok(f) => {
            if f.try_lock_exclusive().is_err() {
                return Err(err!("{} is being written by another run right now: retry later", path.display()));
            }
            // Still the file at the path (not one a concurrent run just made)?
            let (a, b) = (f.metadata(), fs::symlink_metadata(path));
            if !matches!((a, b), (Ok(a), Ok(b)) if a.ino() == b.ino() && a.dev() == b.dev()) {
                return Ok(());
            }
        }
    }
    fs::remove_file(path).context(|| format!("cannot remove the leftover temporary file {}", path.display()))
}

/// Rename `tmp` to `dest` without replacing anything (renameat2 RENAME_NOREPLACE; link and
/// unlink where the file system has no such rename), after fsyncing it; then fsync the
/// directory. false when `dest` already exists (nothing changed).
fn place(tmp: &TempFile, dest: &Path) -> Result<bool> {
    tmp.file.sync_all().context(|| format!("cannot fsync {}", tmp.path.display()))?;
    let r = nix::fcntl::renameat2(None, &tmp.path, None, dest, nix::fcntl::RenameFlags::RENAME_NOREPLACE);
    match r {
        Ok(()) => {}
        Err(nix::errno::Errno::EEXIST) => return Ok(false),
        Err(nix::errno::Errno::EINVAL) | Err(nix::errno::Errno::ENOSYS) => match fs::hard_link(&tmp.path, dest) {
            Ok(()) => tmp.remove(),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => return Ok(false),
            Err(e) => return Err(err!("cannot link {} to {}: {}", tmp.path.display(), dest.display(), e)),
        },
        Err(e) => return Err(err!("cannot rename {} to {}: {}", tmp.path.display(), dest.display(), e)),
    }
    let dir = dest.parent().unwrap_or(Path::new("."));
    fsutil::fsync_dir(dir)?;
    Ok(true)
}

/// How a store ended.
#[derive(Debug, PartialEq, Eq)]
pub enum Stored {
    /// Written now, under this name.
    New(String),
    /// Already archived with the same content, under this name (a retry).
    Already(String),
}

/// Copy `src` (WAL file `wal_name`, opened at offset 0) into `dir` stored with `c`, durably.
/// A stored form of the same WAL file already there is compared: the same content is success,
/// other content an error naming both, and nothing is overwritten.
pub fn store(dir: &Path, wal_name: &str, src_path: &Path, c: Compression) -> Result<Stored> {
    if let Some(found) = existing(dir, wal_name, src_path)? {
        return Ok(Stored::Already(found));
    }
    let stored = file::stored_name(wal_name, c);
    let dest = dir.join(&stored);
    let tmp = TempFile::create(dir, wal_name)?;
    let written = (|| {
        let mut src = File::open(src_path).context(|| format!("cannot open {}", src_path.display()))?;
        write_form(&mut src, &tmp.file, c).context(|| format!("cannot write {}", tmp.path.display()))?;
        place(&tmp, &dest)
    })();
    tmp.remove();
    if !written? {
        // Archived meanwhile by another run under the same name.
        return existing(dir, wal_name, src_path)?
            .map(Stored::Already)
            .ok_or_else(|| err!("{} vanished", dest.display()));
    }
    Ok(Stored::New(stored))
}

/// The content of `src` written to `out` in form `c` (compressed files with their checksum).
fn write_form(src: &mut File, out: &File, c: Compression) -> io::Result<()> {
    let mut out = out;
    match c {
        Compression::None => {
            io::copy(src, &mut out)?;
        }
        Compression::Zstd => {
            let mut z = zstd::stream::write::Encoder::new(io::BufWriter::with_capacity(1 << 20, out), 3)?;
            z.include_checksum(true)?;
            z.set_pledged_src_size(src.metadata().ok().map(|m| m.len()))?;
            io::copy(src, &mut z)?;
            z.finish()?.flush()?;
        }
        Compression::Lz4 => {
            let info = lz4_flex::frame::FrameInfo::new().content_checksum(true);
            let mut l =
                lz4_flex::frame::FrameEncoder::with_frame_info(info, io::BufWriter::with_capacity(1 << 20, out));
            io::copy(src, &mut l)?;
            l.finish().map_err(io::Error::other)?.flush()?;
        }
    }
    Ok(())
}

/// The stored name of WAL file `wal_name` already in `dir` with the content of `src`; None
/// when it is not archived; an error when it is archived with other content.
fn existing(dir: &Path, wal_name: &str, src_path: &Path) -> Result<Option<String>> {
    let Some((f, c, stored)) = file::open_stored(dir, wal_name)? else { return Ok(None) };
    let p = dir.join(&stored);
    let theirs = file::decoder(f, c).context(|| format!("cannot read {}", p.display()))?;
    let ours = File::open(src_path).context(|| format!("cannot open {}", src_path.display()))?;
    match same_content(ours, theirs) {
        Ok(true) => Ok(Some(stored)),
        Ok(false) => Err(err!(
            "{} is already archived as {} with other content: refusing to overwrite it (find out which is right; remove the archived one only if it is wrong)",
            src_path.display(),
            p.display()
        )),
        Err(e) => Err(err!(
            "{} is already archived as {}, which cannot be read ({}): refusing to overwrite it; check that file",
            src_path.display(),
            p.display(),
            e
        )),
    }
}

/// Whether two readers give the same bytes (errors from the second are errors).
fn same_content(mut a: impl Read, mut b: impl Read) -> io::Result<bool> {
    let (mut x, mut y) = (vec![0u8; 1 << 16], vec![0u8; 1 << 16]);
    loop {
        let n = read_full(&mut a, &mut x)?;
        let m = read_full(&mut b, &mut y)?;
        if n != m || x[..n] != y[..m] {
            // Read the second to its end: a damaged file is an error, not "other content".
            io::copy(&mut b, &mut io::sink())?;
            return Ok(false);
        }
        if n == 0 {
            return Ok(true);
        }
    }
}

/// Fill `buf` from a stream until it is full or the stream ends; the bytes read.
pub fn read_full(r: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..])? {
            0 => break,
            k => n += k,
        }
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::names;

    fn setup() -> (tempfile::TempDir, PathBuf, PathBuf) {
        let d = tempfile::tempdir().unwrap();
        let arch = d.path().join("arch");
        fs::create_dir(&arch).unwrap();
        let src = d.path().join("src");
        let data: Vec<u8> = (0..300_000u32).map(|i| (i * 7 % 253) as u8).collect();
        fs::write(&src, data).unwrap();
        (d, arch, src)
    }

    const N: &str = "000000010000000000000009";

    #[test]
    fn a_retry_succeeds_other_content_is_refused_and_the_original_kept() {
        for c in Compression::ALL {
            let (_d, arch, src) = setup();
            let name = file::stored_name(N, c);
            assert_eq!(store(&arch, N, &src, c).unwrap(), Stored::New(name.clone()));
            assert_eq!(file::read_wal(&arch, N, usize::MAX).unwrap().unwrap(), fs::read(&src).unwrap());
            let stored = fs::read(arch.join(&name)).unwrap();
            // A retry, in any form: the file already there counts.
            for again in Compression::ALL {
                assert_eq!(store(&arch, N, &src, again).unwrap(), Stored::Already(name.clone()));
            }
            let mut other = fs::read(&src).unwrap();
            other[1000] ^= 1;
            fs::write(&src, &other).unwrap();
            let e = store(&arch, N, &src, Compression::None).unwrap_err();
            assert!(e.msg.contains("other content") && e.msg.contains(&name) && !e.msg.contains('\n'), "{}", e.msg);
            assert_eq!(fs::read(arch.join(&name)).unwrap(), stored, "the original is kept");
            assert_eq!(names(&arch), vec![name]);
        }
    }

    #[test]
    fn a_damaged_compressed_file_is_an_error_when_read_and_when_compared() {
        for c in [Compression::Zstd, Compression::Lz4] {
            let (_d, arch, src) = setup();
            store(&arch, N, &src, c).unwrap();
            let p = arch.join(file::stored_name(N, c));
            let mut bytes = fs::read(&p).unwrap();
            let mid = bytes.len() / 2;
            bytes[mid] ^= 0x10;
            fs::write(&p, &bytes).unwrap();
            let (f, c2, _) = file::open_stored(&arch, N).unwrap().unwrap();
            assert!(io::copy(&mut file::decoder(f, c2).unwrap(), &mut io::sink()).is_err(), "{:?}", c);
            assert!(store(&arch, N, &src, c).unwrap_err().msg.contains("cannot be read"));
            // Truncated: also an error.
            fs::write(&p, &bytes[..mid]).unwrap();
            let (f, c2, _) = file::open_stored(&arch, N).unwrap().unwrap();
            assert!(io::copy(&mut file::decoder(f, c2).unwrap(), &mut io::sink()).is_err(), "{:?} truncated", c);
        }
    }

    #[test]
    fn a_killed_runs_temporary_file_does_not_block_but_a_live_one_does() {
        let (_d, arch, src) = setup();
        let tmp = arch.join(format!(".{}.pgbh-tmp", N));
        fs::write(&tmp, b"half a segment").unwrap();
        assert_eq!(
            store(&arch, "000000010000000000000009", &src, Compression::Zstd).unwrap(),
            Stored::New(format!("{}.zst", N))
        );
        assert_eq!(names(&arch), vec![format!("{}.zst", N)], "the leftover is gone");
        // One still locked by a live writer: refused for now (PostgreSQL retries).
        let n2 = "00000001000000000000000A";
        let live = arch.join(format!(".{}.pgbh-tmp", n2));
        let f = File::create(&live).unwrap();
        f.lock_exclusive().unwrap();
        assert!(store(&arch, n2, &src, Compression::None).unwrap_err().msg.contains("another run"));
        drop(f);
        store(&arch, n2, &src, Compression::None).unwrap();
        // A link planted at the temporary name is removed, its target untouched.
        let n3 = "00000001000000000000000B";
        let victim = arch.parent().unwrap().join("victim");
        fs::write(&victim, b"keep").unwrap();
        std::os::unix::fs::symlink(&victim, arch.join(format!(".{}.pgbh-tmp", n3))).unwrap();
        store(&arch, n3, &src, Compression::Lz4).unwrap();
        assert_eq!(fs::read(&victim).unwrap(), b"keep");
        assert!(!names(&arch).iter().any(|n| n.starts_with('.')));
    }

    #[test]
    fn the_marker_is_written_once_and_read_back() {
        let d = tempfile::tempdir().unwrap();
        assert_eq!(read_marker(d.path()).unwrap(), None);
        let m = Marker { format_version: 1, system_identifier: "7".into(), wal_segment_size: 16 << 20 };
        assert_eq!(create_marker(d.path(), &m).unwrap(), m);
        let other = Marker { system_identifier: "8".into(), ..m.clone() };
        assert_eq!(create_marker(d.path(), &other).unwrap(), m, "the first one stays");
        assert_eq!(read_marker(d.path()).unwrap(), Some(m));
        assert_eq!(names(d.path()), vec![MARKER]);
        fs::write(d.path().join(MARKER), b"{").unwrap();
        assert!(read_marker(d.path()).unwrap_err().msg.contains("damaged"));
    }
}
