//! The WAL archive as this tool keeps it: a plain directory of archived WAL files, written by
//! `wal-archive`, read by `wal-restore`, `restore-prep`, `list` and `expire`.
//!
//! - [`file`]: one archived file: its stored name (a WAL file name, plus `.zst` or `.lz4` when
//!   compressed), its kind, how it is written and read back.
//! - [`scan`]: what a directory holds: segments per timeline, history files, gaps, how far it
//!   reaches from a backup's start.

pub mod catalog;
pub mod expire;
pub mod file;
pub mod scan;
pub mod segment;
pub mod store;
