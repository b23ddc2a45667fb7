//! Putting the label, the tablespace map and the recovery files in place, and the
//! tablespace_map format (with its version-dependent escaping).

use std::fs;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::fsutil;
use crate::pg::control;
use crate::pg::wal::Lsn;
use crate::restore::recovery::FileWrite;

#[derive(Clone, Debug, PartialEq)]
pub struct Tablespace {
    pub oid: String,
    pub path: String,
}

/// Parse tablespace_map as the server of `major` reads it. Up to 13 a backslash escapes only
/// a following \n or \r; from 14 it escapes any character.
pub fn parse_map(text: &str, major: u32) -> std::result::Result<Vec<Tablespace>, String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut chars = text.chars().peekable();
    let mut lines = Vec::new();
    while let Some(c) = chars.next() {
        match c {
            '\\' if major >= 14 => match chars.next() {
                Some(n) => cur.push(n),
                None => return Err("ends in a lone backslash".into()),
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
        let (oid, path) = l.split_once(' ').ok_or_else(|| format!("line {:?} is not \"OID PATH\"", l))?;
        if oid.is_empty() || !oid.bytes().all(|b| b.is_ascii_digit()) || path.is_empty() {
            return Err(format!("line {:?} is not \"OID PATH\"", l));
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
}
