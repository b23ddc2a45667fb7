//! One error type for the whole tool: a one-line message for the operator and an exit code.

use std::fmt;

/// Exit codes. `TABLE` is the one list of them: README.md's table, the man pages and
/// `--help` are generated from it (`pg-backup-hooks __gen readme`). Hook wrappers rely on them.
pub mod exit {
    pub const OK: i32 = 0;
    pub const FAILURE: i32 = 1;
    pub const USAGE: i32 = 2;
    /// `post`: the label is stored but archiving has not finished: not restorable yet.
    pub const NOT_RESTORABLE_YET: i32 = 3;
    /// `post`/`status`: no helper is running for this backup id.
    pub const NO_BACKUP: i32 = 4;

    /// What an exit code means for the copy the backup program just made, in the words a
    /// job log needs (hook adapters print it after each command).
    pub fn meaning(code: i32) -> &'static str {
        match code {
            OK => "succeeded",
            USAGE => "usage error: check the job's command line and the environment file",
            NOT_RESTORABLE_YET => "labels stored but the WAL is not archived yet: this backup is NOT restorable until archiving catches up and post is run again",
            NO_BACKUP => "no backup with this id is in progress (did pre fail or not run?): this backup is NOT restorable",
            _ => "failed",
        }
    }

    /// `restore-check`: recovery is not proven to have ended where the backup says.
    pub const NOT_PROVEN: i32 = 5;

    /// `wal-restore`: anything but "not in the archive"; above 125 so PostgreSQL aborts recovery.
    pub const ABORT_RECOVERY: i32 = 126;

    /// One exit code: its number, the commands that use it (empty: every command) and what it means.
    pub struct Code {
        pub code: i32,
        pub commands: &'static [&'static str],
        pub meaning: &'static str,
    }

    /// Every exit code, in order. A new code gets a constant above and a row here.
    pub const TABLE: &[Code] = &[
        Code {
            code: OK,
            commands: &[],
            meaning: "success (also: post of a backup already stored, abort with nothing to abort)",
        },
        Code {
            code: FAILURE,
            commands: &[],
            meaning: "failure: the message says what failed, on which node, and what to do; \
                      wal-restore: the archive does not have the file (how recovery finds the end of the archive); \
                      wal-archive: not archived, PostgreSQL keeps the WAL file and retries",
        },
        Code { code: USAGE, commands: &[], meaning: "usage error (bad flag, bad backup id, bad connection string)" },
        Code {
            code: NOT_RESTORABLE_YET,
            commands: &["post"],
            meaning: "labels stored but WAL archiving has not caught up: **not restorable yet**; \
                      fix archiving and run post again",
        },
        Code { code: NO_BACKUP, commands: &["post", "status"], meaning: "no backup with this id is in progress" },
        Code {
            code: NOT_PROVEN,
            commands: &["restore-check", "restore-test"],
            meaning: "recovery is not proven to have ended where the backup says (the message says what was found); \
                      the restored nodes must not go into service until it is; \
                      restore-test: a step of the test restore failed (the report names it)",
        },
        Code {
            code: ABORT_RECOVERY,
            commands: &["wal-restore"],
            meaning: "the archive has the file but it cannot be used (unreadable, damaged, another system's, \
                      write error): PostgreSQL aborts recovery instead of ending it early",
        },
    ];

    /// The codes in one paragraph, for `--help`.
    pub fn summary() -> String {
        let rows: Vec<String> = TABLE
            .iter()
            .map(|c| {
                let who = if c.commands.is_empty() { String::new() } else { format!("{}: ", c.commands.join("/")) };
                format!("{} {}{}", c.code, who, c.meaning.replace("**", ""))
            })
            .collect();
        format!("Exit codes:\n  {}", rows.join("\n  "))
    }
}

#[derive(Debug)]
pub struct Error {
    pub code: i32,
    pub msg: String,
}

pub type Result<T> = std::result::Result<T, Error>;

impl Error {
    pub fn new(msg: impl Into<String>) -> Self {
        Error { code: exit::FAILURE, msg: msg.into() }
    }
    pub fn usage(msg: impl Into<String>) -> Self {
        Error { code: exit::USAGE, msg: msg.into() }
    }
    pub fn with_code(code: i32, msg: impl Into<String>) -> Self {
        Error { code, msg: msg.into() }
    }
    /// The same error with `what` in front, keeping its exit code: `e.within(format_args!("node {}", n))`.
    pub fn within(self, what: impl fmt::Display) -> Self {
        Error { code: self.code, msg: format!("{}: {}", what, self.msg) }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.msg)
    }
}

impl std::error::Error for Error {}

/// Print a command's error the way the binary does and return the exit code.
pub fn report(result: Result<i32>) -> i32 {
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("pg-backup-hooks: error: {}", e.msg);
            e.code
        }
    }
}

/// Build an error from a format string: `err!("cannot read {}", path)`.
#[macro_export]
macro_rules! err {
    ($($arg:tt)*) => { $crate::error::Error::new(format!($($arg)*)) };
}

/// Attach context to any displayable error: `fs::read(p).context(|| format!("reading {}", p))?`.
pub trait Context<T> {
    fn context<S: Into<String>>(self, f: impl FnOnce() -> S) -> Result<T>;
}

impl<T, E: fmt::Display> Context<T> for std::result::Result<T, E> {
    fn context<S: Into<String>>(self, f: impl FnOnce() -> S) -> Result<T> {
        self.map_err(|e| err!("{}: {}", f().into(), one_line(&e.to_string())))
    }
}

/// Errors from servers and the OS may span lines; the operator gets one line.
pub fn one_line(s: &str) -> String {
    s.split('\n').map(str::trim).filter(|l| !l.is_empty()).collect::<Vec<_>>().join(" / ")
}

/// The full text of a postgres error, server message included (the crate's Display
/// only says "db error" for server-side errors).
pub fn pg_error(e: &postgres::Error) -> String {
    if let Some(db) = e.as_db_error() {
        let mut s = format!("{}: {}", db.severity(), db.message());
        if let Some(d) = db.detail() {
            s.push_str(&format!(" (detail: {})", d));
        }
        if let Some(h) = db.hint() {
            s.push_str(&format!(" (hint: {})", h));
        }
        return one_line(&s);
    }
    let mut s = e.to_string();
    let mut src = std::error::Error::source(e);
    while let Some(inner) = src {
        let t = inner.to_string();
        if !s.contains(&t) {
            s.push_str(": ");
            s.push_str(&t);
        }
        src = inner.source();
    }
    one_line(&s)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn within_keeps_the_code_and_context_makes_one_line_failures() {
        let e = Error::usage("bad flag").within(format_args!("node {}", "a"));
        assert_eq!((e.code, e.msg.as_str()), (exit::USAGE, "node a: bad flag"));
        let r: std::result::Result<(), String> = Err("first\n  second\n\n".into());
        let e = r.context(|| "reading x").unwrap_err();
        assert_eq!((e.code, e.msg.as_str()), (exit::FAILURE, "reading x: first / second"));
        let e = Error::with_code(exit::NOT_PROVEN, "x");
        assert_eq!(e.code, 5);
        assert_eq!(err!("{} {}", 1, "two").msg, "1 two");
    }

    #[test]
    fn every_exit_code_is_in_the_table_once_and_in_the_summary() {
        let codes: Vec<i32> = exit::TABLE.iter().map(|c| c.code).collect();
        let want = [
            exit::OK,
            exit::FAILURE,
            exit::USAGE,
            exit::NOT_RESTORABLE_YET,
            exit::NO_BACKUP,
            exit::NOT_PROVEN,
            exit::ABORT_RECOVERY,
        ];
        assert_eq!(codes, want);
        let summary = exit::summary();
        for c in exit::TABLE {
            assert!(summary.contains(&format!("\n  {} ", c.code)), "{}", summary);
        }
        assert!(!summary.contains("**"));
        assert_eq!(exit::meaning(exit::OK), "succeeded");
        assert_eq!(exit::meaning(exit::NOT_PROVEN), "failed");
    }
}
