//! `__gen` (hidden): write what is generated from the command-line definitions: man pages,
//! completions, env.example, README's tables. The packaging script and the docs use it; the
//! work is in `crate::docgen`.

use std::io::Write;
use std::path::Path;

use crate::cli::{GenArgs, GenWhat};
use crate::docgen;
use crate::error::{exit, Context, Result};

pub fn run(a: GenArgs) -> Result<i32> {
    match a.what {
        GenWhat::Man { dir } => {
            for path in docgen::write_man_pages(&dir)? {
                println!("{}", path.display());
            }
            Ok(exit::OK)
        }
        GenWhat::Completion { shell } => print(&docgen::completion(shell)),
        GenWhat::EnvExample => print(docgen::env_example().as_bytes()),
        GenWhat::Readme { path, check } => readme(&path, check),
    }
}

fn print(data: &[u8]) -> Result<i32> {
    let mut out = std::io::stdout().lock();
    out.write_all(data).and_then(|_| out.flush()).context(|| "cannot write to standard output")?;
    Ok(exit::OK)
}

/// Rewrite README's generated part; with `check`, fail when it is not up to date.
fn readme(path: &Path, check: bool) -> Result<i32> {
    // Absolute, so that the atomic write can fsync the directory of a bare `README.md`.
    let path = &std::path::absolute(path).context(|| format!("cannot resolve {}", path.display()))?;
    let old = std::fs::read_to_string(path).context(|| format!("cannot read {}", path.display()))?;
    let new = docgen::splice_readme(&old, &docgen::readme_section())?;
    if new == old {
        return Ok(exit::OK);
    }
    if check {
        return Err(err!("{}'s generated tables are out of date: run `{}`", path.display(), docgen::REGENERATE));
    }
    crate::fsutil::write_atomic(path, new.as_bytes(), 0o644, None)?;
    println!("rewrote the generated part of {}", path.display());
    Ok(exit::OK)
}
