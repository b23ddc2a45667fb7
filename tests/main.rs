//! The integration tests: one crate, one binary, a module per file (as ripgrep keeps its
//! tests). `common` is the harness (throw-away PostgreSQL clusters, our binary as a hook runs
//! it), `products` what the Amanda and borgmatic end-to-end tests share; every other module is
//! one topic, its tests named `topic::test_name`, so `cargo test --test integration standby::`
//! runs tests/standby.rs alone.
//!
//! All tests run in this one process, several at a time (libtest's threads): a test may not
//! change process-wide state (environment, umask, working directory, signal handlers), and
//! the tests that must not overlap hold [`common::exclusive`].

mod common;
mod products;

mod amanda;
mod bacula;
mod borgmatic;
mod cli_docs;
mod core;
mod distributed;
mod exclude;
mod faults;
mod harness;
mod hooks;
mod label_archive;
mod list;
mod restore;
mod restore_check;
mod restore_safety;
mod security;
mod shell;
mod standby;
mod tls;
mod versions;
