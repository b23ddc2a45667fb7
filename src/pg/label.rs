//! The backup_label text returned by the stop function: parsed for checks, never rewritten.

use crate::error::Result;
use crate::pg::wal::Lsn;

#[derive(Clone, Debug, PartialEq)]
pub struct BackupLabel {
    pub start_lsn: Lsn,
    pub start_wal_file: String,
    pub checkpoint_lsn: Lsn,
    pub backup_method: String,
    pub backup_from: String,
    pub start_time: String,
    pub label: String,
    pub start_timeline: Option<u32>,
}

impl BackupLabel {
    pub fn parse(text: &str) -> Result<BackupLabel> {
        let mut start = None;
        let mut ckpt = None;
        let mut method = None;
        let mut from = None;
        let mut time = None;
        let mut label = None;
        let mut tli = None;
        for line in text.lines() {
            let Some((key, value)) = line.split_once(": ") else { continue };
            match key {
                "START WAL LOCATION" => {
                    // "0/9000028 (file 000000010000000000000009)"
                    let (lsn, rest) =
                        value.split_once(' ').ok_or_else(|| err!("START WAL LOCATION has no file name"))?;
                    let file = rest
                        .strip_prefix("(file ")
                        .and_then(|r| r.strip_suffix(')'))
                        .ok_or_else(|| err!("START WAL LOCATION: malformed file name"))?;
                    start = Some((lsn.parse::<Lsn>()?, file.to_string()));
                }
                "CHECKPOINT LOCATION" => ckpt = Some(value.parse::<Lsn>()?),
                "BACKUP METHOD" => method = Some(value.to_string()),
                "BACKUP FROM" => from = Some(value.to_string()),
                "START TIME" => time = Some(value.to_string()),
                "LABEL" => label = Some(value.to_string()),
                "START TIMELINE" => {
                    tli = Some(value.trim().parse::<u32>().map_err(|_| err!("START TIMELINE is not a number"))?)
                }
                _ => {}
            }
        }
        let (start_lsn, start_wal_file) = start.ok_or_else(|| err!("no START WAL LOCATION line"))?;
        Ok(BackupLabel {
            start_lsn,
            start_wal_file,
            checkpoint_lsn: ckpt.ok_or_else(|| err!("no CHECKPOINT LOCATION line"))?,
            backup_method: method.ok_or_else(|| err!("no BACKUP METHOD line"))?,
            backup_from: from.ok_or_else(|| err!("no BACKUP FROM line"))?,
            start_time: time.unwrap_or_default(),
            label: label.ok_or_else(|| err!("no LABEL line"))?,
            start_timeline: tli,
        })
    }

    /// The timeline in the start segment's name (the first 8 hex digits).
    pub fn start_file_timeline(&self) -> Option<u32> {
        self.start_wal_file.get(0..8).and_then(|t| u32::from_str_radix(t, 16).ok())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PG15: &str = "START WAL LOCATION: 0/9000028 (file 000000010000000000000009)\n\
CHECKPOINT LOCATION: 0/9000060\nBACKUP METHOD: streamed\nBACKUP FROM: primary\n\
START TIME: 2026-11-23 11:00:00 UTC\nLABEL: job-42\nSTART TIMELINE: 1\n";

    #[test]
    fn parses_a_real_label() {
        let l = BackupLabel::parse(PG15).unwrap();
        assert_eq!(l.start_lsn.to_string(), "0/9000028");
        assert_eq!(l.checkpoint_lsn.to_string(), "0/9000060");
        assert_eq!(l.label, "job-42");
        assert_eq!(l.backup_from, "primary");
        assert_eq!(l.start_timeline, Some(1));
        assert_eq!(l.start_file_timeline(), Some(1));
    }

    #[test]
    fn pg10_label_without_timeline() {
        let text = PG15.replace("START TIMELINE: 1\n", "").replace("primary", "master");
        let l = BackupLabel::parse(&text).unwrap();
        assert_eq!(l.start_timeline, None);
    }

    #[test]
    fn truncated_label_is_refused() {
        assert!(BackupLabel::parse("START WAL LOCATION: 0/9000028 (file 000000010000000000000009)\n").is_err());
        assert!(BackupLabel::parse("garbage").is_err());
    }
}
