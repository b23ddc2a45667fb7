//! One module per subcommand; each is thin and leaves the work to the library modules.

pub mod abort;
pub mod check;
pub mod exclude_list;
pub mod expire;
pub mod gen;
pub mod hook;
pub mod list;
pub mod post;
pub mod pre;
pub mod restore_check;
pub mod restore_prep;
pub mod restore_test;
pub mod status;
pub mod verify;
pub mod wal_archive;
pub mod wal_restore;
