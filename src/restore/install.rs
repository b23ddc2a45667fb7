//! Putting the label, the tablespace map and the recovery files in place, and the
//! tablespace_map format (with its version-dependent escaping).

use std::fs;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::fsutil;
use crate::pg::control;
use crate::pg::wal::Lsn;

#[derive(Clone, Debug, PartialEq)]
pub struct Tablespace {
    pub oid: String,
    pub path: String,
}

/// Parse tablespace_map as the server of `major` reads it. Up to 13 a backslash escapes only
/// a following \n or \r; from 14 it escapes any character.
pub fn parse_map(text: &str, major: u32) -> Result<Vec<Tablespace>> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut chars = text.chars().peekable();
    let mut lines = Vec::new();
    while let Some(c) = chars.next() {
        match c {
            '\\' if major >= 14 => match chars.next() {
                Some(n) => cur.push(n),
                None => return Err(err!("ends in a lone backslash")),
            },
            '\\' if matches!(chars.peek(), Some('\n') | Some('\r')) => {
                if let Some(n) = chars.next() {
                    cur.push(n);
                }
            }
            '\n' | '\r' => {
                if !cur.is_empty() {
                    lines.push(std::mem::take(&mut cur));
                }
            }
            c => cur.push(c),
        }
    }
    if !cur.is_empty() {
        lines.push(cur);
    }
    for l in lines {
        let (oid, path) = l.split_once(' ').ok_or_else(|| err!("line {:?} is not \"OID PATH\"", l))?;
        if oid.is_empty() || !oid.bytes().all(|b| b.is_ascii_digit()) || path.is_empty() {
            return Err(err!("line {:?} is not \"OID PATH\"", l));
        }
        out.push(Tablespace { oid: oid.to_string(), path: path.to_string() });
    }
    Ok(out)
}

pub fn render_map(map: &[Tablespace], major: u32) -> String {
    let mut s = String::new();
    for t in map {
        s.push_str(&t.oid);
        s.push(' ');
        for c in t.path.chars() {
            if c == '\n' || c == '\r' || (major >= 14 && c == '\\') {
                s.push('\\');
            }
            s.push(c);
        }
        s.push('\n');
    }
    s
}

/// Apply `--tablespace-map OLD=NEW` (OLD is the path in the map, or the tablespace's OID).
/// Returns the final map's text: the sidecar's bytes unchanged when nothing was remapped.
pub fn remap(original: &str, major: u32, specs: &[String]) -> Result<(String, Vec<Tablespace>)> {
    let mut map = parse_map(original, major)
        .map_err(|e| err!("the sidecar's tablespace_map cannot be read ({}): the sidecar is damaged", e))?;
    if specs.is_empty() {
        return Ok((original.to_string(), map));
    }
    for spec in specs {
        let (old, new) = spec.split_once('=').filter(|(o, n)| !o.is_empty() && !n.is_empty()).ok_or_else(|| {
            Error::usage(format!(
                "--tablespace-map {:?}: expected OLD=NEW (OLD the path in the backup or the tablespace OID)",
                spec
            ))
        })?;
        if !new.starts_with('/') {
            return Err(Error::usage(format!("--tablespace-map {:?}: the new path must be absolute", spec)));
        }
        let old_trim = old.trim_end_matches('/');
        let hit = map.iter_mut().find(|t| t.path.trim_end_matches('/') == old_trim || t.oid == old);
        match hit {
            Some(t) => t.path = new.to_string(),
            None => {
                return Err(Error::usage(format!(
                    "--tablespace-map {:?}: the backup has no tablespace at {:?}; its tablespaces are: {}",
                    spec,
                    old,
                    if map.is_empty() {
                        "none".to_string()
                    } else {
                        map.iter().map(|t| format!("{} {}", t.oid, t.path)).collect::<Vec<_>>().join(", ")
                    }
                )))
            }
        }
    }
    Ok((render_map(&map, major), map))
}

/// Tablespace paths are where restore-prep cleans and the restored server writes: each must
/// be absolute and plain (no `..`), not `/`, and neither inside nor around the data directory.
/// An edited sidecar (or a mistyped --tablespace-map) cannot point them anywhere else.
pub fn validate_map(map: &[Tablespace], pgdata: &Path) -> Result<()> {
    for t in map {
        let p = Path::new(&t.path);
        let why = if !p.is_absolute() {
            Some("it is not an absolute path")
        } else if p.components().any(|c| matches!(c, std::path::Component::ParentDir)) {
            Some("it contains \"..\"")
        } else if p.parent().is_none() {
            Some("it is the root directory")
        } else {
            let c = fs::canonicalize(p).unwrap_or_else(|_| p.to_path_buf());
            if c.starts_with(pgdata) {
                Some("it is inside the data directory")
            } else if pgdata.starts_with(&c) {
                Some("it contains the data directory")
            } else {
                None
            }
        };
        if let Some(why) = why {
            return Err(err!(
                "tablespace {} would be restored at {:?}, but {}: the tablespace_map in the sidecar was edited or damaged, or --tablespace-map is wrong; give --tablespace-map {}=NEW_PATH with an absolute directory outside the data directory",
                t.oid, t.path, why, t.oid
            ));
        }
    }
    Ok(())
}

/// Every tablespace path in the final map must be an existing directory.
pub fn check_tablespaces(map: &[Tablespace]) -> Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    for t in map {
        let p = PathBuf::from(&t.path);
        if !p.is_dir() {
            return Err(err!(
                "tablespace {} must be restored to {}, which is not a directory: restore the tablespace's files there too, or move them with --tablespace-map {}=NEW_PATH",
                t.oid, t.path, t.path
            ));
        }
        out.push(p);
    }
    Ok(out)
}

/// restore-prep never reads or writes through a link in the data directory: a file it
/// rewrites (postgresql.auto.conf, recovery.conf, backup_label...) that is a link is refused.
pub fn refuse_link(path: &Path) -> Result<()> {
    match fs::symlink_metadata(path) {
        Ok(m) if m.file_type().is_symlink() => {
            let to = fs::read_link(path).map(|t| t.display().to_string()).unwrap_or_else(|_| "?".into());
            Err(err!(
                "{} is a symbolic link to {}: restore-prep never writes through a link; replace it with a regular file (a copy of what it should hold) owned by the data directory's owner",
                path.display(),
                to
            ))
        }
        _ => Ok(()),
    }
}

/// One file to write.
#[derive(Clone, Debug)]
pub struct FileWrite {
    pub path: PathBuf,
    pub data: Vec<u8>,
    pub what: String,
    /// Mode and owner (uid, gid) to keep; None: 0600 and the data directory's owner.
    /// (pg_control keeps its own, whose mode may be 0640.)
    pub keep: Option<(u32, (u32, u32))>,
}

/// Is this file already there with exactly this content?
pub fn unchanged(w: &FileWrite) -> bool {
    fs::read(&w.path).map(|b| b == w.data).unwrap_or(false)
}

/// Write each file atomically (0600 unless it says otherwise, owned by the data directory's
/// owner), in order.
pub fn write_all(writes: &[FileWrite], owner: (u32, u32)) -> Result<Vec<PathBuf>> {
    let mut done = Vec::new();
    for w in writes {
        if unchanged(w) {
            continue;
        }
        let (mode, owner) = w.keep.unwrap_or((0o600, owner));
        fsutil::write_atomic(&w.path, &w.data, mode, Some(owner))?;
        done.push(w.path.clone());
    }
    Ok(done)
}

pub fn label_write(pgdata: &Path, text: &str) -> FileWrite {
    FileWrite {
        path: pgdata.join("backup_label"),
        data: text.as_bytes().to_vec(),
        what: "the label from the sidecar".into(),
        keep: None,
    }
}

/// global/pg_control with its checkpoint location made invalid ([`control::invalidate`]), so
/// that a server started without backup_label refuses to start instead of running crash
/// recovery from the copy's own checkpoint. Same size, mode and owner as the copy's.
/// `raise`: a standby backup's stop location and timeline, for [`control::prepare`].
pub fn control_write(pgdata: &Path, raise: Option<(Lsn, u32)>) -> Result<FileWrite> {
    use std::os::unix::fs::MetadataExt;
    let p = pgdata.join(control::CONTROL_FILE);
    let bytes = fs::read(&p).map_err(|e| err!("cannot read {}: {}", p.display(), e))?;
    let m = fs::metadata(&p).map_err(|e| err!("cannot stat {}: {}", p.display(), e))?;
    let data = control::prepare(&bytes, raise).map_err(|why| {
        err!("{} cannot be used: {}; restore the data directory again from the backup", p.display(), why)
    })?;
    Ok(FileWrite {
        path: p,
        data,
        what: match raise {
            None => "checkpoint location invalidated: the server refuses to start without backup_label".into(),
            Some((stop, _)) => format!(
                "checkpoint location invalidated: the server refuses to start without backup_label; minimum recovery point at least {}",
                stop
            ),
        },
        keep: Some((m.mode() & 0o7777, (m.uid(), m.gid()))),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::{names, someone};

    #[test]
    fn escaping_follows_the_version() {
        let map = vec![
            Tablespace { oid: "16384".into(), path: "/ts/a b".into() },
            Tablespace { oid: "16385".into(), path: "/ts/new\nline\\x".into() },
        ];
        let v15 = render_map(&map, 15);
        assert_eq!(v15, "16384 /ts/a b\n16385 /ts/new\\\nline\\\\x\n");
        assert_eq!(parse_map(&v15, 15).unwrap(), map);
        let v13 = render_map(&map, 13);
        assert_eq!(v13, "16384 /ts/a b\n16385 /ts/new\\\nline\\x\n");
        assert_eq!(parse_map(&v13, 13).unwrap(), map);
        assert!(parse_map("", 15).unwrap().is_empty());
    }

    #[test]
    fn remap_by_path_or_oid() {
        let text = "16384 /old/ts1\n16390 /old/ts2\n";
        let (same, _) = remap(text, 15, &[]).unwrap();
        assert_eq!(same, text);
        let (out, map) = remap(text, 15, &["/old/ts1/=/new/one".into(), "16390=/new/two".into()]).unwrap();
        assert_eq!(out, "16384 /new/one\n16390 /new/two\n");
        assert_eq!(map.len(), 2);
        let e = remap(text, 15, &["/nowhere=/x".into()]).unwrap_err();
        assert!(e.msg.contains("no tablespace at"), "{}", e.msg);
        assert!(remap(text, 15, &["/old/ts1=relative".into()]).is_err());
    }

    use std::os::unix::fs::{MetadataExt, PermissionsExt};

    #[test]
    fn files_are_written_0600_for_the_owner_and_an_unchanged_one_is_left_alone() {
        let d = tempfile::tempdir().unwrap();
        let w = label_write(d.path(), "START WAL LOCATION: 0/2000028\n");
        let done = write_all(std::slice::from_ref(&w), someone()).unwrap();
        assert_eq!(done, vec![d.path().join("backup_label")]);
        let m = fs::metadata(d.path().join("backup_label")).unwrap();
        assert_eq!(m.mode() & 0o7777, 0o600);
        assert_eq!((m.uid(), m.gid()), someone());
        assert_eq!(fs::read(d.path().join("backup_label")).unwrap(), w.data);
        assert!(write_all(&[w], someone()).unwrap().is_empty(), "same content: not rewritten");
        assert_eq!(names(d.path()), vec!["backup_label"], "no temporary file left");
    }

    #[test]
    fn a_file_that_keeps_its_mode_and_owner_keeps_them() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("pg_control");
        let w =
            FileWrite { path: p.clone(), data: b"new".to_vec(), what: String::new(), keep: Some((0o640, someone())) };
        write_all(&[w], (0, 0)).unwrap();
        let m = fs::metadata(&p).unwrap();
        assert_eq!((m.mode() & 0o7777, m.uid(), m.gid()), (0o640, someone().0, someone().1));
    }

    #[test]
    fn a_link_where_a_file_is_written_is_refused_and_never_written_through() {
        let d = tempfile::tempdir().unwrap();
        let outside = d.path().join("outside");
        fs::write(&outside, b"not yours").unwrap();
        let pgdata = d.path().join("data");
        fs::create_dir(&pgdata).unwrap();
        let link = pgdata.join("postgresql.auto.conf");
        std::os::unix::fs::symlink(&outside, &link).unwrap();
        let e = refuse_link(&link).unwrap_err();
        assert!(
            e.msg.contains(&link.display().to_string()) && e.msg.contains(&outside.display().to_string()),
            "{}",
            e.msg
        );
        assert!(refuse_link(&pgdata.join("backup_label")).is_ok(), "a missing file is fine");
        // Even without the check, the write replaces the link and leaves its target alone.
        let w = FileWrite {
            path: link.clone(),
            data: b"restore_command = 'x'\n".to_vec(),
            what: String::new(),
            keep: None,
        };
        write_all(&[w], someone()).unwrap();
        assert_eq!(fs::read(&outside).unwrap(), b"not yours");
        assert!(!fs::symlink_metadata(&link).unwrap().file_type().is_symlink());
    }

    #[test]
    fn a_failed_write_leaves_what_was_there_and_no_temporary_file() {
        let d = tempfile::tempdir().unwrap();
        // A directory where the file should go: the final rename fails.
        let p = d.path().join("recovery.signal");
        fs::create_dir(&p).unwrap();
        fs::write(p.join("inside"), b"kept").unwrap();
        let w = FileWrite { path: p.clone(), data: b"".to_vec(), what: String::new(), keep: None };
        let e = write_all(&[w], someone()).unwrap_err();
        assert!(e.msg.contains(&p.display().to_string()), "{}", e.msg);
        assert_eq!(fs::read(p.join("inside")).unwrap(), b"kept");
        assert_eq!(names(d.path()), vec!["recovery.signal"], "no temporary file left");
    }

    #[test]
    fn a_write_the_owner_may_not_make_fails_and_leaves_the_old_file() {
        if !nix::unistd::geteuid().is_root() {
            return;
        }
        let d = tempfile::tempdir().unwrap();
        fs::set_permissions(d.path(), fs::Permissions::from_mode(0o755)).unwrap();
        let p = d.path().join("backup_label");
        fs::write(&p, b"old").unwrap();
        let w = label_write(d.path(), "new");
        let e = crate::restore::privs::as_owner((65534, 65534), || write_all(std::slice::from_ref(&w), (65534, 65534)))
            .unwrap_err();
        assert!(e.msg.contains(&d.path().display().to_string()), "{}", e.msg);
        assert_eq!(fs::read(&p).unwrap(), b"old");
        assert_eq!(names(d.path()), vec!["backup_label"]);
    }

    #[test]
    fn tablespace_paths_outside_the_rules_are_refused_with_the_oid() {
        let d = tempfile::tempdir().unwrap();
        let pgdata = d.path().join("data");
        fs::create_dir_all(pgdata.join("sub")).unwrap();
        std::os::unix::fs::symlink(pgdata.join("sub"), d.path().join("sneaky")).unwrap();
        let ts = |p: &Path| vec![Tablespace { oid: "16384".into(), path: p.display().to_string() }];
        for (bad, why) in [
            (PathBuf::from("rel/ts"), "not an absolute path"),
            (d.path().join("a/../b"), "contains \"..\""),
            (PathBuf::from("/"), "root directory"),
            (pgdata.join("ts"), "inside the data directory"),
            (d.path().join("sneaky"), "inside the data directory"),
            (d.path().to_path_buf(), "contains the data directory"),
        ] {
            let e = validate_map(&ts(&bad), &pgdata).unwrap_err();
            assert!(e.msg.contains(why) && e.msg.contains("tablespace 16384"), "{}: {}", bad.display(), e.msg);
        }
        let good = d.path().join("ts");
        validate_map(&ts(&good), &pgdata).unwrap();
        let e = check_tablespaces(&ts(&good)).unwrap_err();
        assert!(e.msg.contains("not a directory") && e.msg.contains(&good.display().to_string()), "{}", e.msg);
        fs::create_dir(&good).unwrap();
        assert_eq!(check_tablespaces(&ts(&good)).unwrap(), vec![good]);
    }

    #[test]
    fn a_damaged_map_or_a_missing_control_file_is_named() {
        let e = remap("16384 /a\nnot a line\n", 15, &[]).unwrap_err();
        assert!(e.msg.contains("\"not a line\"") && e.msg.contains("damaged"), "{}", e.msg);
        assert!(remap("16384 /a\\", 15, &[]).unwrap_err().msg.contains("lone backslash"));
        let d = tempfile::tempdir().unwrap();
        let e = control_write(d.path(), None).unwrap_err();
        assert!(e.msg.contains(&d.path().join("global/pg_control").display().to_string()), "{}", e.msg);
    }
}
