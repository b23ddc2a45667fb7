//! restore-prep's proof of the copy's files against the node's inventories (see
//! inventory::compare): refuse a copy with missing or older files, move stale ones aside
//! into `<pgdata>.pgbh-stale/<backup id>/` under their relative path (never deleted).
//!
//! The move is a write as root over a tree the data directory's owner controls: it runs with
//! the owner's rights (privs::as_owner), every directory is opened with O_NOFOLLOW below its
//! parent's descriptor (only `pg_tblspc/<oid>` is followed, as the server follows it), and
//! each path is moved with renameat2(RENAME_NOREPLACE), then both directories are fsynced.

use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::os::fd::AsRawFd;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use nix::dir::Dir;
use nix::errno::Errno;
use nix::fcntl::{renameat2, OFlag, RenameFlags};
use nix::sys::stat::{mkdirat, Mode};

use crate::error::Result;
use crate::fsutil;
use crate::inventory::{self, compare, Inventory};
use crate::sidecar::{self, NodeEntry};

/// How many paths a refusal or report names.
const FIRST: usize = 5;

/// What the proof found, for the report, --json and [`move_stale`].
#[derive(serde::Serialize, Debug, Default)]
pub struct Proof {
    /// The copy was compared to an inventory.
    pub verified: bool,
    /// The report line: what was proven, or why the files were not verified.
    pub line: String,
    /// --accept-unverified-files let these findings through (the report says so).
    pub accepted: Option<String>,
    /// Stale paths relative to the data directory, moved (or in a dry run: to move) to `stale_dir`.
    pub stale: Vec<PathBuf>,
    pub stale_dir: PathBuf,
    /// The tablespaces by oid, where they will be (--tablespace-map applied): stale paths in
    /// them are moved from there, never through the copy's original link.
    #[serde(skip)]
    pub tablespaces: BTreeMap<String, PathBuf>,
}

/// `<pgdata>.pgbh-stale`.
pub fn stale_root(pgdata: &Path) -> PathBuf {
    let mut s = pgdata.as_os_str().to_os_string();
    s.push(".pgbh-stale");
    PathBuf::from(s)
}

/// Prove the copy in `pgdata` against the node's inventories in `sidecar_dir` (checksums
/// were checked by restore::checks). Refuses missing or older files unless `accept`.
pub fn prove(
    pgdata: &Path,
    sidecar_dir: &Path,
    id: &str,
    node: &NodeEntry,
    accept: bool,
    tablespaces: &BTreeMap<String, PathBuf>,
) -> Result<Proof> {
    let stale_dir = stale_root(pgdata).join(id);
    if node.inventory_source.is_none() {
        let why = node.inventory_note.clone().unwrap_or_else(|| {
            "the sidecar holds no inventory (written by an older pg-backup-hooks, or rebuilt from the archive)".into()
        });
        let line = format!("files not verified: {}", why);
        return Ok(Proof { line, stale_dir, ..Proof::default() });
    }
    let (start, stop) = read_inventories(sidecar_dir, id, &node.name)?;
    let copy = inventory::walk::walk_mapped(pgdata, tablespaces)?;
    let v = compare::compare(&start, &stop, &copy);
    let accepted = findings(&v, &start, node, pgdata, id, accept)?;
    let stale: Vec<PathBuf> = v.stale.iter().map(|s| PathBuf::from(&s.path)).collect();
    if !stale.is_empty() {
        refuse_planted(&stale_dir)?;
    }
    let line = format!(
        "files verified against the {} inventory: {} files, none missing{}{}",
        node.inventory_source.map(|s| s.as_str()).unwrap_or(""),
        v.files_checked,
        if accepted.is_some() { " or older but accepted" } else { ", none older than at the backup's start" },
        if stale.is_empty() {
            String::new()
        } else {
            format!(", {} stale path(s) to move to {}", stale.len(), stale_dir.display())
        }
    );
    Ok(Proof { verified: accepted.is_none(), line, accepted, stale, stale_dir, tablespaces: tablespaces.clone() })
}

/// The two inventories of the node in the sidecar.
fn read_inventories(sidecar_dir: &Path, id: &str, node: &str) -> Result<(Inventory, Inventory)> {
    let dir = sidecar::backup_dir(sidecar_dir, id).join(node);
    let read = |name: &str| -> Result<Inventory> {
        let p = dir.join(name);
        let data =
            std::fs::read(&p).map_err(|e| err!("cannot read {}: {} (the sidecar is damaged)", p.display(), e))?;
        Inventory::decode(&data, &p.display().to_string())
    };
    Ok((read(sidecar::INVENTORY_START_FILE)?, read(sidecar::INVENTORY_STOP_FILE)?))
}

/// Refuse missing or older files in one line, or with `accept` return the warning.
/// What stands in the copy where a file should be, when something does (lstat: no link followed).
fn in_copy_as(pgdata: &Path, rel: &str) -> &'static str {
    match std::fs::symlink_metadata(pgdata.join(rel)) {
        Ok(m) if m.file_type().is_symlink() => " (a symbolic link in the copy, not a file)",
        Ok(m) if m.is_dir() => " (a directory in the copy, not a file)",
        Ok(m) if !m.is_file() => " (not a regular file in the copy)",
        _ => "",
    }
}

fn findings(
    v: &compare::Verdict,
    start: &Inventory,
    node: &NodeEntry,
    pgdata: &Path,
    id: &str,
    accept: bool,
) -> Result<Option<String>> {
    if v.proven() {
        return Ok(None);
    }
    let mut parts = Vec::new();
    if !v.missing.is_empty() {
        let first: Vec<String> = v
            .missing
            .iter()
            .take(FIRST)
            .map(|p| format!("{}{}", inventory::describe(p, &start.databases), in_copy_as(pgdata, p)))
            .collect();
        parts.push(format!("{} file(s) missing from the copy: {}", v.missing.len(), first.join(", ")));
    }
    if !v.older.is_empty() {
        let first: Vec<String> =
            v.older.iter().take(FIRST).map(|o| inventory::describe(&o.path, &start.databases)).collect();
        parts.push(format!(
            "{} file(s) older than at the backup's start (from another backup, or a level skipped): {}",
            v.older.len(),
            first.join(", ")
        ));
    }
    let what = format!(
        "node {}: the copy in {} is not all of backup {}: {}",
        node.name,
        pgdata.display(),
        id,
        parts.join("; ")
    );
    if accept {
        return Ok(Some(format!("--accept-unverified-files: {}", what)));
    }
    Err(err!(
        "{}; restore the data directory again from every level of backup {}, in order (or, if you have decided the copy is right, e.g. a clock stepped back during the backup, rerun with --accept-unverified-files)",
        what,
        id
    ))
}

/// Refuse a link (or non-directory) at `<pgdata>.pgbh-stale` or its `<id>` directory.
fn refuse_planted(stale_dir: &Path) -> Result<()> {
    for p in [stale_dir.parent().unwrap_or(stale_dir), stale_dir] {
        match std::fs::symlink_metadata(p) {
            Ok(m) if m.file_type().is_dir() => {}
            Ok(_) => {
                return Err(err!(
                    "{} is not a directory (a link or file is there): stale files go there; remove it, then run restore-prep again",
                    p.display()
                ))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(err!("cannot examine {}: {}", p.display(), e)),
        }
    }
    Ok(())
}

/// Create `<pgdata>.pgbh-stale` (as the caller: its parent may be root's), 0700 and the owner's.
pub fn create_stale_root(pgdata: &Path, owner: (u32, u32)) -> Result<()> {
    let root = stale_root(pgdata);
    match std::fs::symlink_metadata(&root) {
        Ok(m) if m.file_type().is_dir() && m.uid() == owner.0 => return Ok(()),
        Ok(m) if m.file_type().is_dir() => {
            return Err(err!(
                "{} is owned by uid {}, not by the data directory's owner (uid {}): remove or chown it, then run restore-prep again",
                root.display(),
                m.uid(),
                owner.0
            ))
        }
        Ok(_) => return refuse_planted(&root.join("x")),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(err!("cannot examine {}: {}", root.display(), e)),
    }
    fsutil::create_dir_mode(&root, 0o700)?;
    fsutil::chown(&root, owner.0, owner.1)?;
    fsutil::fsync_dir(root.parent().unwrap_or(Path::new("/")))
}

const DIR: OFlag = OFlag::O_RDONLY.union(OFlag::O_DIRECTORY).union(OFlag::O_CLOEXEC);

/// Move every stale path into `stale_dir` under its relative path (run with the owner's rights).
pub fn move_stale(pgdata: &Path, proof: &Proof) -> Result<Vec<PathBuf>> {
    let mut moved = Vec::new();
    for rel in &proof.stale {
        move_one(pgdata, &proof.stale_dir, rel, &proof.tablespaces).map_err(|e| {
            err!("cannot move stale {} to {}: {}", pgdata.join(rel).display(), proof.stale_dir.join(rel).display(), e)
        })?;
        moved.push(rel.clone());
    }
    Ok(moved)
}

fn move_one(
    pgdata: &Path,
    stale_dir: &Path,
    rel: &Path,
    tablespaces: &BTreeMap<String, PathBuf>,
) -> std::result::Result<(), String> {
    let name = rel.file_name().ok_or("no file name")?;
    let parent = rel.parent().unwrap_or(Path::new(""));
    let from = open_in_copy(pgdata, parent, tablespaces).map_err(|e| e.to_string())?;
    let root =
        fsutil::open_dir_below(stale_dir.parent().unwrap_or(stale_dir), Path::new("")).map_err(|e| e.to_string())?;
    let id = stale_dir.file_name().ok_or("no backup id")?;
    let to = mkdirs(root, &Path::new(id).join(parent)).map_err(|e| e.to_string())?;
    match renameat2(Some(from.as_raw_fd()), name, Some(to.as_raw_fd()), name, RenameFlags::RENAME_NOREPLACE) {
        Ok(()) => {}
        Err(Errno::EXDEV) => {
            return Err(
                "it is on another file system than the stale directory: move it out of the data directory yourself"
                    .into(),
            )
        }
        Err(Errno::EEXIST) => {
            return Err("a path of that name is already there (an earlier run?): move one of them yourself".into())
        }
        Err(e) => return Err(e.to_string()),
    }
    fsutil::fsync_dir_fd(&to).and_then(|_| fsutil::fsync_dir_fd(&from)).map_err(|e| e.to_string())
}

/// Open `rel` in the copy: O_NOFOLLOW throughout except at `pg_tblspc/<oid>`, which is a
/// mapped tablespace's directory where there is one, else the link the server follows.
fn open_in_copy(pgdata: &Path, rel: &Path, tablespaces: &BTreeMap<String, PathBuf>) -> nix::Result<Dir> {
    let comps: Vec<&OsStr> = rel.iter().collect();
    let mapped = match comps.as_slice() {
        [t, oid, ..] if *t == "pg_tblspc" => oid.to_str().and_then(|o| tablespaces.get(o)),
        _ => None,
    };
    if let Some(dir) = mapped {
        let mut cur = Dir::open(dir, DIR, Mode::empty())?;
        for c in &comps[2..] {
            cur = Dir::openat(Some(cur.as_raw_fd()), *c, DIR.union(OFlag::O_NOFOLLOW), Mode::empty())?;
        }
        return Ok(cur);
    }
    let mut cur = Dir::open(pgdata, DIR, Mode::empty())?;
    for (i, c) in comps.iter().enumerate() {
        let follow = i == 1 && comps[0] == "pg_tblspc";
        let flags = if follow { DIR } else { DIR.union(OFlag::O_NOFOLLOW) };
        cur = Dir::openat(Some(cur.as_raw_fd()), *c, flags, Mode::empty())?;
    }
    Ok(cur)
}

/// Open (creating 0700 where missing) `rel` below `root`, never through a link.
fn mkdirs(mut cur: Dir, rel: &Path) -> nix::Result<Dir> {
    for c in rel.iter() {
        match mkdirat(Some(cur.as_raw_fd()), c, Mode::from_bits_truncate(0o700)) {
            Ok(()) | Err(Errno::EEXIST) => {}
            Err(e) => return Err(e),
        }
        cur = Dir::openat(Some(cur.as_raw_fd()), c, DIR.union(OFlag::O_NOFOLLOW), Mode::empty())?;
    }
    Ok(cur)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    #[test]
    fn stale_paths_move_under_their_relative_path_and_a_link_on_the_way_is_refused() {
        let t = tempfile::tempdir().unwrap();
        let pg = t.path().join("data");
        fs::create_dir_all(pg.join("base/16384")).unwrap();
        fs::create_dir_all(pg.join("base/5")).unwrap();
        fs::write(pg.join("base/16384/1259"), "x").unwrap();
        fs::write(pg.join("base/5/16999"), "y").unwrap();
        let proof = Proof {
            stale: vec!["base/16384".into(), "base/5/16999".into()],
            stale_dir: stale_root(&pg).join("job"),
            ..Proof::default()
        };
        let me = (nix::unistd::geteuid().as_raw(), nix::unistd::getegid().as_raw());
        create_stale_root(&pg, me).unwrap();
        assert_eq!(move_stale(&pg, &proof).unwrap().len(), 2);
        let s = stale_root(&pg).join("job");
        assert_eq!(fs::read(s.join("base/16384/1259")).unwrap(), b"x");
        assert_eq!(fs::read(s.join("base/5/16999")).unwrap(), b"y");
        assert!(!pg.join("base/16384").exists() && !pg.join("base/5/16999").exists());
        assert_eq!(fs::metadata(stale_root(&pg)).unwrap().mode() & 0o777, 0o700);
        // A link planted at <pgdata>.pgbh-stale/<id> is refused before anything moves.
        let pg2 = t.path().join("data2");
        fs::create_dir_all(&pg2).unwrap();
        fs::create_dir(stale_root(&pg2)).unwrap();
        std::os::unix::fs::symlink(t.path(), stale_root(&pg2).join("job")).unwrap();
        let e = refuse_planted(&stale_root(&pg2).join("job")).unwrap_err();
        assert!(e.msg.contains("is not a directory"), "{}", e.msg);
        fs::write(pg2.join("f"), "z").unwrap();
        let p2 = Proof { stale: vec!["f".into()], stale_dir: stale_root(&pg2).join("job"), ..Proof::default() };
        assert!(move_stale(&pg2, &p2).is_err());
        assert!(pg2.join("f").exists() && !t.path().join("f").exists());
    }
}

/// `bench/restore-proof.sh`: the proof (walk of the copy + comparison) on a synthetic data
/// directory of PGBH_BENCH_FILES files (default 100000). Ignored in normal test runs.
#[cfg(test)]
mod bench {
    use crate::inventory::{compare, walk, Inventory, Source};

    #[test]
    #[ignore]
    fn proof_bench() {
        let n: usize = std::env::var("PGBH_BENCH_FILES").ok().and_then(|v| v.parse().ok()).unwrap_or(100_000);
        let t = tempfile::tempdir().unwrap();
        let pg = t.path().join("data");
        for i in 0..n {
            let d = pg.join(format!("base/{}", 16384 + i / 10_000));
            if i % 10_000 == 0 {
                std::fs::create_dir_all(&d).unwrap();
            }
            std::fs::File::create(d.join(format!("{}", 20000 + i))).unwrap();
        }
        let mut entries = walk::walk(&pg).unwrap();
        let mut inv = Inventory {
            source: Source::Local,
            taken_at: String::new(),
            databases: Default::default(),
            entries: std::mem::take(&mut entries),
            names_only: false,
        };
        inv.normalize();
        let stop = inv.clone();
        let t0 = std::time::Instant::now();
        let copy = walk::walk(&pg).unwrap();
        let t1 = t0.elapsed();
        let v = compare::compare(&inv, &stop, &copy);
        let t2 = t0.elapsed();
        assert!(v.proven() && v.stale.is_empty());
        let bytes = inv.encode().unwrap().len();
        let (dec0, _) = (std::time::Instant::now(), Inventory::decode(&inv.encode().unwrap(), "x").unwrap());
        let dec = dec0.elapsed();
        println!(
            "BENCH files={} walk={:.3}s compare={:.3}s proof_total={:.3}s decode_one_inventory={:.3}s inventory_bytes={}",
            n,
            t1.as_secs_f64(),
            (t2 - t1).as_secs_f64(),
            t2.as_secs_f64(),
            dec.as_secs_f64(),
            bytes
        );
    }
}
