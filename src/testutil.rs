//! What the unit tests beside the filesystem code share (compiled for `cargo test` only).

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

/// The names in `dir`, sorted: what a test compares to see that nothing else was left behind.
pub fn names(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> =
        fs::read_dir(dir).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into()).collect();
    v.sort();
    v
}

/// The permission bits of `p` (the link's target when `p` is a link).
pub fn mode(p: &Path) -> u32 {
    fs::metadata(p).unwrap().mode() & 0o7777
}

/// The owner files are given to: a real other user (nobody, 65534) as root, ourselves otherwise.
pub fn someone() -> (u32, u32) {
    if nix::unistd::geteuid().is_root() {
        (65534, 65534)
    } else {
        (nix::unistd::geteuid().as_raw(), nix::unistd::getegid().as_raw())
    }
}
