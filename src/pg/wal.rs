//! WAL positions and file names, computed the way the server does (pg_walfile_name is not
//! available on a standby, so we never depend on it).

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::error::Error;

/// A WAL location, printed as PostgreSQL prints it (`16/B374D848`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Lsn(pub u64);

impl FromStr for Lsn {
    type Err = Error;
    fn from_str(s: &str) -> Result<Lsn, Error> {
        let (hi, lo) = s.trim().split_once('/').ok_or_else(|| err!("\"{}\" is not a WAL location (want X/Y)", s))?;
        let hi = u32::from_str_radix(hi, 16).map_err(|_| err!("\"{}\" is not a WAL location", s))?;
        let lo = u32::from_str_radix(lo, 16).map_err(|_| err!("\"{}\" is not a WAL location", s))?;
        Ok(Lsn(((hi as u64) << 32) | lo as u64))
    }
}

impl fmt::Display for Lsn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:X}/{:X}", self.0 >> 32, self.0 & 0xFFFF_FFFF)
    }
}

impl Serialize for Lsn {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Lsn {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Lsn, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// Name of the WAL segment file holding `lsn` on timeline `tli`.
pub fn segment_name(tli: u32, lsn: Lsn, seg_size: u64) -> String {
    let segno = lsn.0 / seg_size;
    let per_id = 0x1_0000_0000u64 / seg_size;
    format!("{:08X}{:08X}{:08X}", tli, segno / per_id, segno % per_id)
}

/// The segment that must be archived for a backup that stopped at `stop`: the one holding
/// the last byte before the stop location (what the server itself waits for).
pub fn stop_segment_name(tli: u32, stop: Lsn, seg_size: u64) -> String {
    segment_name(tli, Lsn(stop.0.saturating_sub(1)), seg_size)
}

/// The backup history file the server writes at stop: `<start segment>.<offset>.backup`.
pub fn backup_history_name(tli: u32, start: Lsn, seg_size: u64) -> String {
    format!("{}.{:08X}.backup", segment_name(tli, start, seg_size), start.0 % seg_size)
}

/// Is this a WAL segment file name (24 hex digits)?
pub fn is_segment_name(name: &str) -> bool {
    name.len() == 24 && name.bytes().all(|b| b.is_ascii_hexdigit())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lsn_round_trip() {
        let l: Lsn = "16/B374D848".parse().unwrap();
        assert_eq!(l.0, 0x16_B374_D848);
        assert_eq!(l.to_string(), "16/B374D848");
        assert_eq!("0/0".parse::<Lsn>().unwrap().to_string(), "0/0");
        assert!("nonsense".parse::<Lsn>().is_err());
    }

    #[test]
    fn names_match_the_server() {
        let seg = 16 * 1024 * 1024;
        // select pg_walfile_name('0/9000028') on timeline 1 → 000000010000000000000009
        assert_eq!(segment_name(1, "0/9000028".parse().unwrap(), seg), "000000010000000000000009");
        assert_eq!(segment_name(3, "1/FF000000".parse().unwrap(), seg), "0000000300000001000000FF");
        assert_eq!(stop_segment_name(1, "0/A000000".parse().unwrap(), seg), "000000010000000000000009");
        assert_eq!(
            backup_history_name(1, "0/9000028".parse().unwrap(), seg),
            "000000010000000000000009.00000028.backup"
        );
        // 1 GiB segments: 4 per xlogid
        assert_eq!(segment_name(1, "2/40000000".parse().unwrap(), 1 << 30), "000000010000000200000001");
        assert!(is_segment_name("000000010000000000000009"));
        assert!(!is_segment_name("000000010000000000000009.partial"));
    }
}
