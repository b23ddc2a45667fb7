//! `hook PRODUCT EVENT [ARGS...]`: run as a backup product's job script (src/hook/).

use crate::cli::HookArgs;
use crate::error::Result;

pub fn run(a: HookArgs) -> Result<i32> {
    crate::hook::run(a)
}
