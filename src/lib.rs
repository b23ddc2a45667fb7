//! pg-backup-hooks as a library: the binary (src/main.rs) is a thin front end, and the
//! fuzz targets (fuzz/) reach the parsers through here.

// First, so that `err!` is in scope in every module below.
#[macro_use]
pub mod error;

pub mod archive;
pub mod check;
pub mod cli;
pub mod commands;
pub mod docgen;
pub mod exclude;
pub mod fsutil;
pub mod helper;
pub mod hook;
pub mod ids;
pub mod inventory;
pub mod nodes;
pub mod pg;
pub mod protocol;
pub mod restore;
pub mod restore_test;
pub mod rundir;
pub mod sidecar;
#[cfg(test)]
mod testutil;
