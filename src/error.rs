//! One error type for the whole tool: a one-line message for the operator and an exit code.

use std::fmt;

/// Exit codes, listed in README.md. Hook wrappers rely on them.
pub mod exit {
    pub const OK: i32 = 0;
    pub const FAILURE: i32 = 1;
    pub const USAGE: i32 = 2;
    /// `post`: the label is stored but archiving has not finished: not restorable yet.
    pub const NOT_RESTORABLE_YET: i32 = 3;
    /// `post`/`status`: no helper is running for this backup id.
    pub const NO_BACKUP: i32 = 4;
    /// `restore-check`: recovery is not proven to have ended where the backup says.
    pub const NOT_PROVEN: i32 = 5;
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
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.msg)
    }
}

impl std::error::Error for Error {}

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
        self.map_err(|e| Error::new(format!("{}: {}", f().into(), one_line(&e.to_string()))))
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
