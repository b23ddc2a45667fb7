//! `wal-restore`: restore_command for a plain archive directory.
//!
//! Exit 0 when the file was put in place; 1, quietly, when the archive does not have it
//! (PostgreSQL asks for files past the end of the archive: that is how recovery ends);
//! 2 for a usage error; 126 for anything else (unreadable archive, damaged or foreign
//! segment, write error): an exit status above 125 makes PostgreSQL abort recovery instead
//! of taking the failure for the end of the archive and promoting too early.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::path::Path;

use crate::cli::WalRestoreArgs;
use crate::error::{Error, Result};
use crate::fsutil;
use crate::pg::wal::is_segment_name;

pub const ABORT_RECOVERY: i32 = crate::error::exit::ABORT_RECOVERY;

fn loud(msg: String) -> Error {
    Error::with_code(ABORT_RECOVERY, msg)
}

/// Check a segment's long page header: flag, system identifier, segment size.
fn check_header(name: &str, head: &[u8], len: u64, sysid: Option<u64>) -> Result<()> {
    if head.len() < 40 {
        return Err(loud(format!(
            "archived segment {} is only {} bytes long: damaged or still being archived",
            name, len
        )));
    }
    let info = u16::from_ne_bytes([head[2], head[3]]);
    if info & 0x0002 == 0 {
        return Err(loud(format!(
            "archived segment {} does not start with a long page header: not a WAL segment, or damaged",
            name
        )));
    }
    let mut b8 = [0u8; 8];
    b8.copy_from_slice(&head[24..32]);
    let file_sysid = u64::from_ne_bytes(b8);
    if let Some(want) = sysid {
        if file_sysid != want {
            return Err(loud(format!(
                "archived segment {} belongs to the cluster with system identifier {}, not {}: the archive directory holds another cluster's WAL (check --archive-dir)",
                name, file_sysid, want
            )));
        }
    }
    let mut b4 = [0u8; 4];
    b4.copy_from_slice(&head[32..36]);
    let seg_size = u32::from_ne_bytes(b4) as u64;
    if seg_size != len {
        return Err(loud(format!(
            "archived segment {} is {} bytes, its header says {}: truncated or still being archived",
            name, len, seg_size
        )));
    }
    Ok(())
}

fn copy(src: &mut File, head: &[u8], dest: &Path) -> Result<()> {
    let dir = match dest.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let name = dest.file_name().map(|n| n.to_string_lossy().to_string()).unwrap_or_default();
    let tmp = dir.join(format!(".{}.pgbh.{}", name, std::process::id()));
    let result = (|| -> io::Result<()> {
        let mut out = OpenOptions::new().write(true).create(true).truncate(true).open(&tmp)?;
        out.write_all(head)?;
        io::copy(src, &mut out)?;
        out.sync_all()?;
        fs::rename(&tmp, dest)
    })();
    if let Err(e) = result {
        let _ = fs::remove_file(&tmp);
        return Err(loud(format!("cannot write {}: {}", dest.display(), e)));
    }
    fsutil::fsync_dir(dir).map_err(|e| loud(e.msg))
}

pub fn run(a: WalRestoreArgs) -> Result<i32> {
    let f = &a.file;
    if f.is_empty() || f.contains('/') || f.starts_with('.') {
        return Err(Error::usage(format!("{:?} is not a WAL file name (use %f in restore_command)", f)));
    }
    if !a.archive_dir.is_dir() {
        return Err(loud(format!(
            "archive directory {} is missing or not a directory (unmounted?)",
            a.archive_dir.display()
        )));
    }
    let src = a.archive_dir.join(f);
    let mut file = match File::open(&src) {
        Ok(file) => file,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(1),
        Err(e) => return Err(loud(format!("cannot read {}: {}", src.display(), e))),
    };
    let len = file.metadata().map_err(|e| loud(format!("cannot stat {}: {}", src.display(), e)))?.len();
    let mut head = Vec::new();
    if is_segment_name(f) {
        (&mut file)
            .take(40)
            .read_to_end(&mut head)
            .map_err(|e| loud(format!("cannot read {}: {}", src.display(), e)))?;
        check_header(f, &head, len, a.system_identifier)?;
    }
    copy(&mut file, &head, &a.dest)?;
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(sysid: u64, size: u32) -> Vec<u8> {
        let mut h = vec![0u8; 40];
        h[0..2].copy_from_slice(&0xD110u16.to_ne_bytes());
        h[2..4].copy_from_slice(&0x0006u16.to_ne_bytes());
        h[24..32].copy_from_slice(&sysid.to_ne_bytes());
        h[32..36].copy_from_slice(&size.to_ne_bytes());
        h
    }

    #[test]
    fn header_checks() {
        assert!(check_header("x", &header(7, 1024), 1024, Some(7)).is_ok());
        assert!(check_header("x", &header(7, 1024), 1024, None).is_ok());
        let e = check_header("x", &header(8, 1024), 1024, Some(7)).unwrap_err();
        assert_eq!(e.code, ABORT_RECOVERY);
        assert!(e.msg.contains("system identifier 8, not 7"));
        assert!(check_header("x", &header(7, 2048), 1024, Some(7)).is_err());
        assert!(check_header("x", &[0u8; 10], 10, None).is_err());
    }
}
