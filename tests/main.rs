//! The integration tests: one crate, one binary, a module per file (as ripgrep keeps its
//! tests). `common` is the harness (throw-away PostgreSQL clusters, our binary as a hook runs
//! it), `products` what the Amanda and borgmatic end-to-end tests share; every other module is
//! one topic, its tests named `topic::test_name`, so `cargo test --test integration standby::`
//! runs tests/standby.rs alone.
//!
//! All tests run in this one process, several at a time (libtest's threads), tests of
//! different files side by side. So a test may not change process-wide state (environment
//! variables, umask, working directory, signal handlers): it sets what a program it runs needs
//! on that program's `Command`. Ports come from `common::free_port` (or
//! `common::local_listener` for a server the test plays itself), which never hands one out
//! twice in the process; everything else a test makes is in its own `TestDir` or named after
//! it (Amanda's configuration), so no test needs another to be finished first.

mod common;
mod products;

mod amanda;
mod archive_proof;
mod bacula;
mod borgmatic;
mod check;
mod cli_docs;
mod copy_proof;
mod core;
mod distributed;
mod exclude;
mod expire;
mod faults;
mod harness;
mod hooks;
mod inventory;
mod label_archive;
mod list;
mod patroni;
mod restore;
mod restore_check;
mod restore_messages;
mod restore_safety;
mod restore_test;
mod security;
mod shell;
mod standby;
mod tls;
mod versions;
mod wal_archive;

/// With `autotests = false` cargo builds only what this file declares: a tests/*.rs file left
/// out of the list above would silently never run.
#[test]
fn every_test_file_is_a_module_here() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests");
    let main = std::fs::read_to_string(dir.join("main.rs")).expect("tests/main.rs is readable");
    let mut missing = Vec::new();
    for entry in std::fs::read_dir(&dir).expect("tests/ is readable") {
        let name = entry.expect("a tests/ entry").file_name().to_string_lossy().into_owned();
        if let Some(module) = name.strip_suffix(".rs").filter(|m| *m != "main") {
            if !main.lines().any(|l| l.trim() == format!("mod {};", module)) {
                missing.push(name);
            }
        }
    }
    assert!(missing.is_empty(), "declare these in tests/main.rs (`mod NAME;`) or they never run: {:?}", missing);
}
