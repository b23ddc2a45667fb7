//! Backup history files: what a primary's pg_backup_stop writes into pg_wal as
//! `<start segment>.<offset 8 hex>.backup` and the archiver archives like a segment.
//!
//! It holds every line of the backup_label the stop returned, in the same order, plus three
//! STOP lines (STOP WAL LOCATION after the first line; STOP TIME and, from 11, STOP TIMELINE
//! at the end): the label is the history file without them (xlog.c do_pg_stop_backup up to
//! 14, xlogbackup.c build_backup_content from 15). A standby's stop writes none.

use crate::error::Result;
use crate::pg::label::BackupLabel;
use crate::pg::wal::Lsn;

/// A history file is a few hundred bytes; anything bigger is not one.
pub const MAX_HISTORY_BYTES: usize = 64 * 1024;
const STOP_KEYS: [&str; 3] = ["STOP WAL LOCATION: ", "STOP TIME: ", "STOP TIMELINE: "];

/// A parsed backup history file.
#[derive(Clone, Debug)]
pub struct History {
    pub name: String,
    pub text: String,
    pub label: BackupLabel,
    pub stop_lsn: Lsn,
    pub stop_timeline: Option<u32>,
    pub stop_time: Option<String>,
}

/// `000000010000000000000009.00000028.backup`?
pub fn is_history_name(name: &str) -> bool {
    let b = name.as_bytes();
    b.len() == 40
        && name.ends_with(".backup")
        && b[24] == b'.'
        && b[..24].iter().chain(&b[25..33]).all(|c| c.is_ascii_hexdigit())
}

/// The backup_label the stop returned: the history file without its STOP lines.
pub fn label_text(history: &str) -> String {
    history.split_inclusive('\n').filter(|l| !STOP_KEYS.iter().any(|k| l.starts_with(k))).collect()
}

fn field<'a>(text: &'a str, key: &str) -> Option<&'a str> {
    text.lines().find_map(|l| l.strip_prefix(key))
}

impl History {
    pub fn parse(name: &str, text: &str) -> Result<History> {
        let label = BackupLabel::parse(&label_text(text))?;
        let stop = field(text, STOP_KEYS[0]).ok_or_else(|| err!("no STOP WAL LOCATION line"))?;
        let stop_lsn = stop.split(' ').next().unwrap_or("").parse::<Lsn>()?;
        Ok(History {
            name: name.to_string(),
            text: text.to_string(),
            label,
            stop_lsn,
            stop_timeline: field(text, STOP_KEYS[2]).and_then(|t| t.trim().parse().ok()),
            stop_time: field(text, STOP_KEYS[1]).map(str::to_string),
        })
    }

    /// Timeline the backup started on (START TIMELINE, or the start segment's name on 10).
    pub fn timeline(&self) -> u32 {
        self.label.start_timeline.or(self.label.start_file_timeline()).unwrap_or(1)
    }
}

/// The system identifier in a WAL segment's long page header (u64 at 24), if it has one.
pub fn segment_sysid(head: &[u8]) -> Option<u64> {
    let b: [u8; 8] = head.get(24..32)?.try_into().ok()?;
    Some(u64::from_ne_bytes(b))
}

#[cfg(test)]
mod tests {
    use super::*;

    // A PostgreSQL 15 history file, as pg_backup_stop wrote it.
    const HISTORY: &str = "START WAL LOCATION: 0/9000028 (file 000000010000000000000009)\n\
STOP WAL LOCATION: 0/9000100 (file 000000010000000000000009)\n\
CHECKPOINT LOCATION: 0/9000060\nBACKUP METHOD: streamed\nBACKUP FROM: primary\n\
START TIME: 2026-11-23 11:00:00 UTC\nLABEL: job-42\nSTART TIMELINE: 1\n\
STOP TIME: 2026-11-23 11:00:05 UTC\nSTOP TIMELINE: 1\n";

    #[test]
    fn label_is_the_history_without_its_stop_lines() {
        let label = label_text(HISTORY);
        assert_eq!(
            label,
            "START WAL LOCATION: 0/9000028 (file 000000010000000000000009)\nCHECKPOINT LOCATION: 0/9000060\n\
BACKUP METHOD: streamed\nBACKUP FROM: primary\nSTART TIME: 2026-11-23 11:00:00 UTC\nLABEL: job-42\nSTART TIMELINE: 1\n"
        );
        let h = History::parse("000000010000000000000009.00000028.backup", HISTORY).unwrap();
        assert_eq!(h.stop_lsn.to_string(), "0/9000100");
        assert_eq!(h.label.label, "job-42");
        assert_eq!(h.stop_timeline, Some(1));
        assert_eq!(h.stop_time.as_deref(), Some("2026-11-23 11:00:05 UTC"));
        assert!(History::parse("x", &label).is_err(), "a label alone is no history file");
    }

    #[test]
    fn history_names() {
        assert!(is_history_name("000000010000000000000009.00000028.backup"));
        assert!(!is_history_name("000000010000000000000009"));
        assert!(!is_history_name("00000002.history"));
        assert!(!is_history_name("000000010000000000000009.0000002G.backup"));
    }
}
