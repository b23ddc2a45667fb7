//! `exclude-list`: what a file set must leave out of a copy of a running cluster, in the
//! backup program's syntax. The list itself lives in `crate::exclude`.

use crate::cli::ExcludeListArgs;
use crate::error::Result;
use crate::exclude;

pub fn run(a: ExcludeListArgs) -> Result<i32> {
    let pgdata = a.pgdata.as_deref().map(exclude::check_pgdata).transpose()?;
    print!("{}", exclude::render(a.format, pgdata.as_deref()));
    Ok(0)
}
