//! Listing a node's data directory over SQL, on the session the helper holds: one recursive
//! query over `pg_ls_dir(text, boolean, boolean)` and `pg_stat_file(text)` with paths
//! relative to the data directory (a non-superuser needs EXECUTE on exactly these two
//! signatures: docs/security.md).
//!
//! The server follows links where it lists (`pg_tblspc/<oid>` as it does for its own use; a
//! link its owner planted elsewhere too, which shows the listing nothing the server's user
//! could not read anyway); the depth is bounded so that a link loop cannot run forever.
//! Directories whose contents a copy leaves out are not entered, names the exclude rules
//! leave out at any depth are not examined, and the rest is filtered by [`listed`].
//!
//! A file removed between `pg_ls_dir` and `pg_stat_file` makes the query fail; it is run
//! again (a few times). A failed statement outside a transaction block leaves the session,
//! and the backup it holds, as they were.

use postgres::Client;

use super::{listed, Entry, Kind};
use crate::error::{pg_error, Result};
use crate::exclude::{Rule, RULES};

/// How deep the listing goes below the data directory (relation files are at most 5 deep,
/// `pg_tblspc/<oid>/<version>/<db>/<file>`).
pub const MAX_DEPTH: i32 = 12;

/// How many times a listing is tried when files vanish under it.
const TRIES: usize = 4;

const LIST: &str = "
WITH RECURSIVE t(path, isdir, size, mtime, depth) AS (
    SELECT n, s.isdir, s.size, floor(extract(epoch FROM s.modification))::int8, 1
      FROM pg_ls_dir('.', true, false) AS n, LATERAL pg_stat_file(n) AS s
     WHERE NOT n LIKE ANY ($1::text[])
  UNION ALL
    SELECT t.path || '/' || n, s.isdir, s.size, floor(extract(epoch FROM s.modification))::int8, t.depth + 1
      FROM t, LATERAL pg_ls_dir(t.path, true, false) AS n, LATERAL pg_stat_file(t.path || '/' || n) AS s
     WHERE t.isdir AND t.depth < $3 AND NOT t.path = ANY ($2::text[]) AND NOT n LIKE ANY ($1::text[])
)
SELECT path, isdir, size, mtime FROM t";

/// May this session list the data directory: EXECUTE on both functions (a superuser has it)?
/// Before 11 the functions check for a superuser themselves, whatever was granted. Err says
/// what is missing, for pre's message.
pub fn check_allowed(c: &mut Client) -> std::result::Result<(), String> {
    let row = c
        .query_one(
            "SELECT has_function_privilege('pg_catalog.pg_ls_dir(text, boolean, boolean)', 'EXECUTE'),
                    has_function_privilege('pg_catalog.pg_stat_file(text)', 'EXECUTE'), current_user::text,
                    current_setting('server_version_num')::int,
                    coalesce((SELECT rolsuper FROM pg_catalog.pg_roles WHERE rolname = current_user), false)",
            &[],
        )
        .map_err(|e| format!("cannot check the session's privileges: {}", pg_error(&e)))?;
    let (ls, stat, user): (bool, bool, String) = (row.get(0), row.get(1), row.get(2));
    let (version, superuser): (i32, bool) = (row.get(3), row.get(4));
    if version < 110000 && !superuser {
        return Err(format!(
            "role {} may not list the data directory over SQL: before PostgreSQL 11 pg_ls_dir and pg_stat_file are for superusers only, whatever is granted",
            user
        ));
    }
    let missing: Vec<&str> = [(ls, "pg_ls_dir(text, boolean, boolean)"), (stat, "pg_stat_file(text)")]
        .into_iter()
        .filter(|(ok, _)| !ok)
        .map(|(_, f)| f)
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    let grants: Vec<String> = missing.iter().map(|f| format!("GRANT EXECUTE ON FUNCTION {} TO {};", f, user)).collect();
    Err(format!("role {} may not list the data directory over SQL ({})", user, grants.join(" ")))
}

/// Every path of the data directory that belongs in an inventory, unsorted.
pub fn list(c: &mut Client) -> Result<Vec<Entry>> {
    let (skip_names, no_descend) = exclusions();
    let mut last = String::new();
    for _ in 0..TRIES {
        match c.query(LIST, &[&skip_names, &no_descend, &MAX_DEPTH]) {
            Ok(rows) => return Ok(entries(rows)),
            Err(e) => last = pg_error(&e),
        }
    }
    Err(err!("listing the data directory over SQL failed {} times (last: {})", TRIES, last))
}

/// The exclude rules as the query takes them: LIKE patterns for names never examined, and
/// the directories never entered.
fn exclusions() -> (Vec<String>, Vec<String>) {
    let mut names = Vec::new();
    let mut dirs = Vec::new();
    for r in RULES {
        match *r {
            Rule::AnyDepth(p) => names.push(like_pattern(p)),
            Rule::Contents(d) => dirs.push(d.to_string()),
            Rule::TopFile(_) => {}
        }
    }
    (names, dirs)
}

/// `*` becomes `%`; `%`, `_` and `\` are escaped.
fn like_pattern(glob: &str) -> String {
    let mut out = String::new();
    for ch in glob.chars() {
        match ch {
            '*' => out.push('%'),
            '%' | '_' | '\\' => {
                out.push('\\');
                out.push(ch);
            }
            c => out.push(c),
        }
    }
    out
}

fn entries(rows: Vec<postgres::Row>) -> Vec<Entry> {
    rows.into_iter()
        .filter_map(|r| {
            let path: String = r.get(0);
            if !listed(&path) {
                return None;
            }
            let isdir: bool = r.get(1);
            let kind = if isdir { Kind::Dir } else { Kind::File };
            let size = if isdir { 0 } else { r.get::<_, i64>(2).max(0) as u64 };
            Some(Entry { path, kind, size, mtime: r.get(3) })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_exclude_rules_become_like_patterns_and_directories_not_entered() {
        assert_eq!(like_pattern("pgsql_tmp*"), "pgsql\\_tmp%");
        assert_eq!(like_pattern("*.tmp"), "%.tmp");
        let (names, dirs) = exclusions();
        assert!(names.contains(&"pg\\_internal.init%".to_string()), "{:?}", names);
        assert!(dirs.contains(&"pg_wal".to_string()) && dirs.contains(&"pg_stat_tmp".to_string()), "{:?}", dirs);
    }
}
