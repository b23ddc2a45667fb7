//! The hooks' environment file: `KEY=value` lines, parsed here and never run as shell
//! code. It is trusted only when owned by root or the running user and writable by
//! nobody else, and it may set only known keys (our PGBH_* settings and libpq's PG*
//! variables), so a typo is an error instead of a setting silently ignored.
//!
//! Syntax (the subset of sh that the shell wrappers' files used): blank lines and `#`
//! comments; an optional `export `; values bare, 'single-quoted' (taken as is) or
//! "double-quoted" (backslash escapes \" \\ \$ \`); a `# comment` after the value. Anything
//! the shell would expand or run ($, `, ;, |, &, <, >, parentheses) is refused.

use std::fs::File;
use std::io::Read;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

pub const DEFAULT_PATH: &str = "/etc/pg-backup-hooks/env";

/// libpq's environment variables (PostgreSQL documentation, "Environment Variables").
pub const LIBPQ_KEYS: &[&str] = &[
    "PGHOST",
    "PGHOSTADDR",
    "PGPORT",
    "PGDATABASE",
    "PGUSER",
    "PGPASSWORD",
    "PGPASSFILE",
    "PGREQUIREAUTH",
    "PGCHANNELBINDING",
    "PGSERVICE",
    "PGSERVICEFILE",
    "PGOPTIONS",
    "PGAPPNAME",
    "PGSSLMODE",
    "PGREQUIRESSL",
    "PGSSLCOMPRESSION",
    "PGSSLCERT",
    "PGSSLKEY",
    "PGSSLCERTMODE",
    "PGSSLROOTCERT",
    "PGSSLCRL",
    "PGSSLCRLDIR",
    "PGSSLSNI",
    "PGSSLNEGOTIATION",
    "PGREQUIREPEER",
    "PGSSLMINPROTOCOLVERSION",
    "PGSSLMAXPROTOCOLVERSION",
    "PGGSSENCMODE",
    "PGKRBSRVNAME",
    "PGGSSLIB",
    "PGGSSDELEGATION",
    "PGCONNECT_TIMEOUT",
    "PGCLIENTENCODING",
    "PGTARGETSESSIONATTRS",
    "PGLOADBALANCEHOSTS",
    "PGDATESTYLE",
    "PGTZ",
    "PGGEQO",
    "PGSYSCONFDIR",
    "PGLOCALEDIR",
];

/// Read the environment file named by PGBH_ENV_FILE (which must exist), else the default
/// one if it exists, and set its variables in this process (the file wins over the
/// environment, as the wrappers' `. FILE` did). Returns the file read, if any.
pub fn load_default(known: &[String]) -> Result<Option<PathBuf>> {
    let (path, explicit) = match std::env::var_os("PGBH_ENV_FILE").filter(|v| !v.is_empty()) {
        Some(p) => (PathBuf::from(p), true),
        None => (PathBuf::from(DEFAULT_PATH), false),
    };
    if !explicit && std::fs::symlink_metadata(&path).is_err() {
        return Ok(None);
    }
    let text = read_trusted(&path).map_err(|e| {
        if explicit && std::fs::metadata(&path).is_err() {
            Error::usage(format!("PGBH_ENV_FILE={} does not exist: create it or unset PGBH_ENV_FILE", path.display()))
        } else {
            e
        }
    })?;
    for (key, value) in parse(&text, &path, known)? {
        std::env::set_var(key, value);
    }
    Ok(Some(path))
}

/// The file's text, if root or we own it and neither group nor others may write it.
pub fn read_trusted(path: &Path) -> Result<String> {
    let mut f = File::open(path).map_err(|e| {
        err!("cannot read the environment file {}: {} (run the hook as a user that may read it)", path.display(), e)
    })?;
    let meta = f.metadata().map_err(|e| err!("environment file {}: {}", path.display(), e))?;
    let me = nix::unistd::geteuid().as_raw();
    if !meta.is_file() {
        return Err(err!("environment file {} is not a regular file", path.display()));
    }
    if meta.uid() != 0 && meta.uid() != me {
        return Err(err!(
            "environment file {} is owned by uid {}, not by root or us (uid {}): refusing to read settings someone else controls; chown it",
            path.display(),
            meta.uid(),
            me
        ));
    }
    if meta.mode() & 0o022 != 0 {
        return Err(err!(
            "environment file {} is writable by group or others (mode {:o}): refusing to read settings someone else controls; chmod 600 it",
            path.display(),
            meta.mode() & 0o777
        ));
    }
    let mut text = String::new();
    f.read_to_string(&mut text).map_err(|e| err!("cannot read the environment file {}: {}", path.display(), e))?;
    Ok(text)
}

/// The file's assignments, in order; an unknown key or a line we cannot read is an error
/// naming the file and line.
pub fn parse(text: &str, path: &Path, known: &[String]) -> Result<Vec<(String, String)>> {
    let mut out = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        let at = |why: String| Error::usage(format!("environment file {} line {}: {}", path.display(), i + 1, why));
        let line = raw.trim_end_matches('\r').trim_start();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let line = line.strip_prefix("export ").map(str::trim_start).unwrap_or(line);
        let Some((key, rest)) = line.split_once('=') else {
            return Err(at("expected KEY=value".into()));
        };
        let key_ok = key.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_')
            && key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
        if !key_ok {
            return Err(at(format!("{:?} is not a variable name (no spaces around '=')", key)));
        }
        if !known.iter().any(|k| k == key) {
            return Err(at(format!(
                "unknown setting {}: only pg-backup-hooks settings (PGBH_*, see --help of each command and docs/hooks) and libpq variables (PGHOST, PGPORT, ...) may be set here",
                key
            )));
        }
        let value = value(rest).map_err(|why| at(format!("{}: {}", key, why)))?;
        out.push((key.to_string(), value));
    }
    Ok(out)
}

/// One value: quoted and bare pieces up to whitespace, then nothing or a comment.
fn value(s: &str) -> Result<String> {
    let mut out = String::new();
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\'' => loop {
                match chars.next() {
                    Some('\'') => break,
                    Some(ch) => out.push(ch),
                    None => return Err(err!("a ' quote is not closed")),
                }
            },
            '"' => loop {
                match chars.next() {
                    Some('"') => break,
                    Some('\\') => match chars.next() {
                        Some(e @ ('"' | '\\' | '$' | '`')) => out.push(e),
                        Some(e) => {
                            out.push('\\');
                            out.push(e)
                        }
                        None => return Err(err!("a \" quote is not closed")),
                    },
                    Some(ch @ ('$' | '`')) => return Err(refused(ch)),
                    Some(ch) => out.push(ch),
                    None => return Err(err!("a \" quote is not closed")),
                }
            },
            ' ' | '\t' => {
                let rest: String = chars.collect();
                let rest = rest.trim_start();
                if rest.is_empty() || rest.starts_with('#') {
                    return Ok(out);
                }
                return Err(err!("a value with spaces must be quoted"));
            }
            '$' | '`' | ';' | '|' | '&' | '<' | '>' | '(' | ')' | '\\' => return Err(refused(c)),
            _ => out.push(c),
        }
    }
    Ok(out)
}

fn refused(c: char) -> Error {
    err!("{:?} would be shell syntax; this file is read as KEY=value, never run: write the value literally in single quotes", c)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn known() -> Vec<String> {
        ["PGBH_FAST", "PGBH_NODES", "PGHOST", "PGBH_BIN"].iter().map(|s| s.to_string()).collect()
    }

    fn ok(text: &str) -> Vec<(String, String)> {
        parse(text, Path::new("/x/env"), &known()).unwrap()
    }

    #[test]
    fn reads_what_the_shell_wrappers_read() {
        let got = ok("# comment\n\nPGBH_FAST=true   # fast\nexport PGHOST=/run/pg\nPGBH_NODES='a=host=x port=1;b=host=y'\nPGBH_BIN=\"/usr/bin/p\\\"q\"\n");
        assert_eq!(
            got,
            vec![
                ("PGBH_FAST".into(), "true".into()),
                ("PGHOST".into(), "/run/pg".into()),
                ("PGBH_NODES".into(), "a=host=x port=1;b=host=y".into()),
                ("PGBH_BIN".into(), "/usr/bin/p\"q".into()),
            ]
        );
        assert_eq!(ok("PGBH_NODES='it''s'\r\n"), vec![("PGBH_NODES".into(), "its".into())]);
    }

    #[test]
    fn refuses_unknown_keys_and_shell_code_naming_file_and_line() {
        for (text, needle) in [
            ("PGBH_FAST=1\nPGBH_FAAST=1\n", "line 2: unknown setting PGBH_FAAST"),
            ("LD_PRELOAD=/tmp/x.so\n", "line 1: unknown setting LD_PRELOAD"),
            ("PGBH_BIN=$(id)\n", "shell syntax"),
            ("PGBH_BIN=\"`id`\"\n", "shell syntax"),
            ("PGBH_BIN=a;b\n", "shell syntax"),
            ("PGBH_NODES=a b\n", "must be quoted"),
            ("PGBH_NODES='a\n", "not closed"),
            ("PGBH_FAST = 1\n", "not a variable name"),
            ("echo hi\n", "expected KEY=value"),
        ] {
            let e = parse(text, Path::new("/x/env"), &known()).unwrap_err();
            assert!(e.msg.contains("/x/env") && e.msg.contains(needle), "{:?}: {}", text, e.msg);
            assert_eq!(e.code, 2);
        }
    }
}
