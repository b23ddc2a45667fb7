//! What a file-level copy of a running cluster must leave out, in one place, and how to
//! say it in each backup program's syntax.
//!
//! The list follows what pg_basebackup leaves out, as PostgreSQL's basebackup.c
//! (src/backend/replication/ up to 14, src/backend/backup/ from 15) says: the contents of the
//! directories in its `excludeDirContents` (pg_stat_tmp, pg_replslot, pg_dynshmem, pg_notify,
//! pg_serial, pg_snapshots, pg_subtrans) and of pg_wal, but not the directories; the files in
//! its `excludeFiles` (postmaster.pid, postmaster.opts, backup_label, tablespace_map,
//! backup_manifest, pg_internal.init*; `*.tmp` widens its postgresql.auto.conf.tmp); and
//! temporary files (`pgsql_tmp*`, PG_TEMP_FILE_PREFIX). Copying these files
//! does harm on restore: a stale postmaster.pid, a backup_label that is not this backup's,
//! torn WAL segments and stale `.ready` files, replication slots that pin WAL forever.

use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

/// One thing to leave out, relative to the data directory.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Rule {
    /// Keep this directory (the server needs it) but leave out everything in it.
    Contents(&'static str),
    /// A file at the top of the data directory.
    TopFile(&'static str),
    /// A name pattern (`*` wildcard) at any depth: a file, or a directory with all it holds.
    AnyDepth(&'static str),
}

/// The whole list. Keep README/docs in step when this changes.
pub const RULES: &[Rule] = &[
    Rule::Contents("pg_wal"),
    Rule::Contents("pg_replslot"),
    Rule::Contents("pg_dynshmem"),
    Rule::Contents("pg_notify"),
    Rule::Contents("pg_serial"),
    Rule::Contents("pg_snapshots"),
    Rule::Contents("pg_stat_tmp"),
    Rule::Contents("pg_subtrans"),
    Rule::TopFile("postmaster.pid"),
    Rule::TopFile("postmaster.opts"),
    Rule::TopFile("backup_label"),
    Rule::TopFile("tablespace_map"),
    Rule::TopFile("backup_manifest"),
    Rule::AnyDepth("pgsql_tmp*"),
    Rule::AnyDepth("pg_internal.init*"),
    Rule::AnyDepth("*.tmp"),
];

/// Output syntaxes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// One pattern a line, relative to the data directory (absolute with --pgdata); `**/` means any depth
    Plain,
    /// An `Options { Exclude = yes ... }` block for the FileSet's Include (Bacula and Bareos)
    Bacula,
    /// One `--exclude=PATTERN` argument a line for GNU tar
    Tar,
    /// A file for rsync's `--exclude-from` (with --pgdata, for a transfer rooted at `/`, e.g. `rsync -aR`)
    Rsync,
}

/// Characters that would be read as wildcards or break a quoted string in one of the
/// syntaxes; a data directory path holding one is refused rather than half-escaped.
const UNSAFE: &[char] = &['*', '?', '[', ']', '\\', '"', '\n', '\r'];

/// Checks `--pgdata` and returns it without trailing slashes.
pub fn check_pgdata(p: &Path) -> Result<PathBuf> {
    let s = p.to_str().ok_or_else(|| {
        Error::usage(format!(
            "--pgdata {:?}: the path is not valid UTF-8; give the data directory's path in plain characters",
            p
        ))
    })?;
    if !s.starts_with('/') {
        return Err(Error::usage(format!("--pgdata {}: give the data directory as an absolute path", s)));
    }
    if let Some(c) = s.chars().find(|c| UNSAFE.contains(c)) {
        return Err(Error::usage(format!(
            "--pgdata {:?}: the path contains {:?}, which the backup programs' patterns would read as a wildcard or quote; use a path (or a symlink to the data directory) without it",
            s, c
        )));
    }
    let trimmed = s.trim_end_matches('/');
    if trimmed.is_empty() {
        return Err(Error::usage("--pgdata /: that is not a data directory; give the cluster's data directory"));
    }
    Ok(PathBuf::from(trimmed))
}

/// The exclude list in `format`, one entry a line, ending with a newline. With `pgdata`
/// (already checked by [`check_pgdata`]) the patterns are absolute paths under it.
pub fn render(format: Format, pgdata: Option<&Path>) -> String {
    let base = pgdata.map(|p| p.to_string_lossy().into_owned());
    let base = base.as_deref();
    match format {
        Format::Plain => render_plain(base),
        Format::Tar => render_tar(base),
        Format::Rsync => render_rsync(base),
        Format::Bacula => render_bacula(base),
    }
}

/// One pattern a line, relative (or under `base`); `dir/*` for contents, `**/` for any depth.
fn render_plain(base: Option<&str>) -> String {
    let mut out = String::new();
    for r in RULES {
        let rel = match r {
            Rule::Contents(d) => format!("{}/*", d),
            Rule::TopFile(f) => f.to_string(),
            Rule::AnyDepth(p) => format!("**/{}", p),
        };
        match base {
            Some(b) => out.push_str(&format!("{}/{}\n", b, rel)),
            None => out.push_str(&format!("{}\n", rel)),
        }
    }
    out
}

/// GNU tar matches exclude patterns unanchored, with `*` matching `/`, and excludes what is
/// below a matched directory.
fn render_tar(base: Option<&str>) -> String {
    let mut out = String::new();
    for r in RULES {
        let pat = match (r, base) {
            (Rule::Contents(d), None) => format!("{}/*", d),
            (Rule::TopFile(f), None) => f.to_string(),
            (Rule::AnyDepth(p), None) => p.to_string(),
            (Rule::Contents(d), Some(b)) => format!("{}/{}/*", b, d),
            (Rule::TopFile(f), Some(b)) => format!("{}/{}", b, f),
            (Rule::AnyDepth(p), Some(b)) => any_depth_under(b, p),
        };
        out.push_str(&format!("--exclude={}\n", pat));
    }
    out
}

/// rsync: a leading `/` anchors at the transfer root; a pattern without `/` matches a name
/// at any depth; an excluded directory is not descended into.
fn render_rsync(base: Option<&str>) -> String {
    let mut out = String::new();
    let b = base.unwrap_or("");
    for r in RULES {
        let pat = match r {
            Rule::Contents(d) => format!("{}/{}/*", b, d),
            Rule::TopFile(f) => format!("{}/{}", b, f),
            Rule::AnyDepth(p) if base.is_some() => format!("{}/**/{}", b, p),
            Rule::AnyDepth(p) => p.to_string(),
        };
        out.push_str(&pat);
        out.push('\n');
    }
    out
}

/// Bacula's `Wild` is matched with fnmatch against the full path, `*` matching `/`; the
/// first Options block that matches a file decides, so this one goes first.
fn render_bacula(base: Option<&str>) -> String {
    let mut out = String::new();
    out.push_str("    # Leave out what a copy of a running PostgreSQL cluster must not hold\n");
    out.push_str("    # (pg-backup-hooks exclude-list). Put this Options block first in the Include.\n");
    out.push_str("    Options {\n      Exclude = yes\n");
    for r in RULES {
        let pat = match (r, base) {
            (Rule::Contents(d), None) => format!("*/{}/*", d),
            (Rule::TopFile(f), None) => format!("*/{}", f),
            (Rule::AnyDepth(p), None) => format!("*/{}", p),
            (Rule::Contents(d), Some(b)) => format!("{}/{}/*", b, d),
            (Rule::TopFile(f), Some(b)) => format!("{}/{}", b, f),
            (Rule::AnyDepth(p), Some(b)) => any_depth_under(b, p),
        };
        out.push_str(&format!("      Wild = \"{}\"\n", pat));
    }
    out.push_str("    }\n");
    out
}

/// `base/*/pat` for fnmatch-style matchers where `*` also matches `/` (tar, Bacula): any
/// depth below `base` (a pattern starting with `*` needs no extra component).
fn any_depth_under(base: &str, pat: &str) -> String {
    if pat.starts_with('*') {
        format!("{}/{}", base, pat)
    } else {
        format!("{}/*/{}", base, pat)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines(s: &str) -> Vec<&str> {
        s.lines().collect()
    }

    #[test]
    fn every_format_names_every_rule() {
        for f in [Format::Plain, Format::Bacula, Format::Tar, Format::Rsync] {
            for pgdata in [None, Some(Path::new("/srv/pg/data"))] {
                let out = render(f, pgdata);
                for r in RULES {
                    let name = match r {
                        Rule::Contents(n) | Rule::TopFile(n) | Rule::AnyDepth(n) => n,
                    };
                    assert!(out.contains(name), "{:?} {:?} lacks {}:\n{}", f, pgdata, name, out);
                }
            }
        }
    }

    #[test]
    fn directories_are_kept_only_their_contents_go() {
        for f in [Format::Plain, Format::Bacula, Format::Tar, Format::Rsync] {
            let out = render(f, Some(Path::new("/d")));
            assert!(out.contains("/d/pg_wal/*"), "{}", out);
            // Never the directory itself.
            for l in lines(&out) {
                let l = l.trim().trim_end_matches('"');
                assert!(!l.ends_with("/pg_wal"), "{:?} excludes pg_wal itself: {}", f, l);
            }
        }
    }

    #[test]
    fn plain_relative_and_absolute() {
        let rel = render(Format::Plain, None);
        assert_eq!(lines(&rel)[0], "pg_wal/*");
        assert!(lines(&rel).contains(&"postmaster.pid"));
        assert!(lines(&rel).contains(&"**/pgsql_tmp*"));
        let abs = render(Format::Plain, Some(Path::new("/var/lib/pg/data")));
        assert!(lines(&abs).iter().all(|l| l.starts_with("/var/lib/pg/data/")), "{}", abs);
        assert!(lines(&abs).contains(&"/var/lib/pg/data/**/pg_internal.init*"));
    }

    #[test]
    fn tar_lines_are_exclude_arguments() {
        let rel = render(Format::Tar, None);
        assert!(lines(&rel).iter().all(|l| l.starts_with("--exclude=")));
        assert!(lines(&rel).contains(&"--exclude=pg_wal/*"));
        assert!(lines(&rel).contains(&"--exclude=*.tmp"));
        let abs = render(Format::Tar, Some(Path::new("/d")));
        assert!(lines(&abs).contains(&"--exclude=/d/postmaster.pid"));
        assert!(lines(&abs).contains(&"--exclude=/d/*/pgsql_tmp*"));
        assert!(lines(&abs).contains(&"--exclude=/d/*.tmp"));
    }

    #[test]
    fn rsync_anchors_at_the_transfer_root() {
        let rel = render(Format::Rsync, None);
        assert!(lines(&rel).contains(&"/pg_wal/*"));
        assert!(lines(&rel).contains(&"/postmaster.pid"));
        assert!(lines(&rel).contains(&"pgsql_tmp*"));
        let abs = render(Format::Rsync, Some(Path::new("/d")));
        assert!(lines(&abs).contains(&"/d/pg_wal/*"));
        assert!(lines(&abs).contains(&"/d/**/pgsql_tmp*"));
    }

    #[test]
    fn bacula_is_one_options_block() {
        let out = render(Format::Bacula, Some(Path::new("/d")));
        assert!(out.contains("Options {\n      Exclude = yes\n"), "{}", out);
        assert!(out.contains("      Wild = \"/d/pg_wal/*\"\n"));
        assert!(out.contains("      Wild = \"/d/backup_label\"\n"));
        assert!(out.contains("      Wild = \"/d/*/pg_internal.init*\"\n"));
        assert_eq!(out.matches('{').count(), out.matches('}').count());
        let rel = render(Format::Bacula, None);
        assert!(rel.contains("      Wild = \"*/pg_wal/*\"\n"));
    }

    #[test]
    fn pgdata_is_checked() {
        assert_eq!(check_pgdata(Path::new("/a/b/")).ok(), Some(PathBuf::from("/a/b")));
        assert!(check_pgdata(Path::new("rel/data")).is_err());
        assert!(check_pgdata(Path::new("/")).is_err());
        for bad in ["/a*b", "/a\"b", "/a[1]", "/a\nb", "/a\\b", "/a?"] {
            let e = check_pgdata(Path::new(bad)).err().map(|e| (e.code, e.msg.contains('\n')));
            assert_eq!(e, Some((crate::error::exit::USAGE, false)), "{:?}", bad);
        }
    }
}
