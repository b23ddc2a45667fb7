//! Everything that knows PostgreSQL: connection settings, the version-aware backup API,
//! WAL names and the backup label.

pub mod api;
pub mod conninfo;
pub mod control;
pub mod discovery;
pub mod history;
pub mod label;
pub mod patroni;
pub mod tls;
pub mod wal;
