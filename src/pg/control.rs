//! Reading `global/pg_control` without a server: the system identifier and the latest
//! checkpoint, after checking the file's CRC-32C.
//!
//! Layout (native byte order; we only support little-endian x86_64/aarch64 builds):
//! system_identifier u64 @0, pg_control_version u32 @8, catalog_version_no u32 @12,
//! state u32 @16, checkPoint u64 @32, and the CRC-32C of every byte before it at an offset
//! that depends on the control-file version (288 on 10 and 12-17, 280 on 11, 292 on 18).
//! PostgreSQL 10 also has prevCheckPoint u64 @40 (11 removed it).
//! minRecoveryPoint u64 and minRecoveryPointTLI u32 follow the checkpoint copy and
//! unloggedLSN: @136/@144 on 10 and 12-18, @128/@136 on 11 (the checkpoint copy is 80 bytes
//! up to 11 and 88 from 12; 10 has prevCheckPoint). Checked against pg_control_recovery() on a
//! standby of every major 10 to 18.
//!
//! restore-prep also writes it: see [`prepare`].

use std::path::Path;

use crate::error::Result;
use crate::pg::wal::Lsn;

pub const CONTROL_FILE: &str = "global/pg_control";

#[derive(Clone, Debug, PartialEq)]
pub struct ControlFile {
    pub system_identifier: u64,
    pub pg_control_version: u32,
    pub catalog_version_no: u32,
    pub state: u32,
    pub checkpoint: Lsn,
    /// minRecoveryPoint: recovery must replay at least to here before the copy is consistent.
    pub min_recovery_point: Lsn,
    pub min_recovery_point_tli: u32,
}

/// Where the CRC lives for each control-file version we know.
fn crc_offset(version: u32) -> Option<usize> {
    match version {
        1002 | 1201 | 1300 | 1700 => Some(288),
        1100 => Some(280),
        1800 => Some(292),
        _ => None,
    }
}

/// Where minRecoveryPoint lives (its timeline follows 8 bytes later).
fn min_recovery_offset(version: u32) -> usize {
    if version == 1100 {
        128
    } else {
        136
    }
}

/// The control-file version each supported major writes.
pub fn expected_version(major: u32) -> Option<u32> {
    match major {
        10 => Some(1002),
        11 => Some(1100),
        12 => Some(1201),
        13..=16 => Some(1300),
        17 => Some(1700),
        18 => Some(1800),
        _ => None,
    }
}

/// The `state` field as pg_controldata prints it.
pub fn state_name(state: u32) -> &'static str {
    match state {
        0 => "starting up",
        1 => "shut down",
        2 => "shut down in recovery",
        3 => "shutting down",
        4 => "in crash recovery",
        5 => "in archive recovery",
        6 => "in production",
        _ => "unknown",
    }
}

fn u32_at(b: &[u8], off: usize) -> u32 {
    let mut a = [0u8; 4];
    a.copy_from_slice(&b[off..off + 4]);
    u32::from_ne_bytes(a)
}

fn u64_at(b: &[u8], off: usize) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[off..off + 8]);
    u64::from_ne_bytes(a)
}

/// Parse and CRC-check the bytes of a pg_control file. The error says what is wrong.
pub fn parse(bytes: &[u8]) -> Result<ControlFile> {
    if bytes.len() < 296 {
        return Err(err!("it is only {} bytes long (a pg_control file has 8192): truncated copy", bytes.len()));
    }
    let version = u32_at(bytes, 8);
    let off = crc_offset(version).ok_or_else(|| {
        err!("unknown pg_control version {} (this build knows PostgreSQL 10 to 18), or the file is damaged", version)
    })?;
    let stored = u32_at(bytes, off);
    let computed = crc32c::crc32c(&bytes[..off]);
    if stored != computed {
        return Err(err!(
            "its CRC does not match (stored {:08x}, computed {:08x}): the copy is torn or damaged",
            stored,
            computed
        ));
    }
    Ok(ControlFile {
        system_identifier: u64_at(bytes, 0),
        pg_control_version: version,
        catalog_version_no: u32_at(bytes, 12),
        state: u32_at(bytes, 16),
        checkpoint: Lsn(u64_at(bytes, 32)),
        min_recovery_point: Lsn(u64_at(bytes, min_recovery_offset(version))),
        min_recovery_point_tli: u32_at(bytes, min_recovery_offset(version) + 8),
    })
}

/// restore-prep's invalid checkpoint location: the copy's checkpoint with the top 16 bits set.
/// It is a well-formed location (PostgreSQL 15+ refuses to start at all, label or not, when
/// pg_control's checkpoint has an impossible page offset), but in a WAL segment that can never
/// exist (2^64 - 2^48 bytes of WAL), so a server started without backup_label cannot read a
/// checkpoint record there and stops ("could not locate a valid checkpoint record") instead
/// of running crash recovery from the copy's own checkpoint. With backup_label the server
/// reads the label's checkpoint and overwrites this field. The original location is kept in
/// the low 48 bits, so a rerun of restore-prep can still check that the copy belongs to the
/// backup.
pub const INVALIDATED_BITS: u64 = 0xFFFF_0000_0000_0000;

/// Was this checkpoint location written by [`invalidate`]?
pub fn is_invalidated(checkpoint: Lsn) -> bool {
    checkpoint.0 & INVALIDATED_BITS == INVALIDATED_BITS
}

/// The copy's own checkpoint location, whether or not [`invalidate`] changed it.
pub fn original_checkpoint(checkpoint: Lsn) -> Lsn {
    if is_invalidated(checkpoint) {
        Lsn(checkpoint.0 & !INVALIDATED_BITS)
    } else {
        checkpoint
    }
}

/// The bytes of a pg_control file whose checkpoint location (and on PostgreSQL 10 the
/// previous checkpoint's too, which 10 falls back to) is invalid, with a correct CRC. Every
/// other byte is unchanged; applying it twice gives the same bytes.
pub fn invalidate(bytes: &[u8]) -> Result<Vec<u8>> {
    prepare(bytes, None)
}

/// What restore-prep writes into a restored pg_control, in one rewrite with one CRC:
/// the checkpoint location invalidated (see [`invalidate`]), and with `raise` = Some((stop,
/// tli)) minRecoveryPoint raised to the backup's stop location on that timeline (only ever
/// raised, never lowered). For a `BACKUP FROM: standby` label recovery takes minRecoveryPoint
/// as the end of the backup (xlog.c StartupXLOG on 10-14, xlogrecovery.c InitWalRecovery from
/// 15: `backupEndPoint = ControlFile->minRecoveryPoint`), and a pg_control copied before the
/// rest of the files holds an earlier one. Applying it twice gives the same bytes.
pub fn prepare(bytes: &[u8], raise: Option<(Lsn, u32)>) -> Result<Vec<u8>> {
    let c = parse(bytes)?;
    let off = crc_offset(c.pg_control_version).ok_or_else(|| err!("unknown pg_control version"))?;
    let mut out = bytes.to_vec();
    let mut fields = vec![32usize];
    if c.pg_control_version == 1002 {
        // PostgreSQL 10: prevCheckPoint u64 @40, tried when checkPoint cannot be read.
        fields.push(40);
    }
    for f in fields {
        let v = u64_at(&out, f) | INVALIDATED_BITS;
        out[f..f + 8].copy_from_slice(&v.to_ne_bytes());
    }
    if let Some((stop, tli)) = raise {
        if stop > c.min_recovery_point {
            let m = min_recovery_offset(c.pg_control_version);
            out[m..m + 8].copy_from_slice(&stop.0.to_ne_bytes());
            out[m + 8..m + 12].copy_from_slice(&tli.to_ne_bytes());
        }
    }
    let crc = crc32c::crc32c(&out[..off]);
    out[off..off + 4].copy_from_slice(&crc.to_ne_bytes());
    Ok(out)
}

/// Read `<pgdata>/global/pg_control`.
pub fn read(pgdata: &Path) -> Result<ControlFile> {
    let p = pgdata.join(CONTROL_FILE);
    let bytes = std::fs::read(&p).map_err(|e| err!("cannot read {}: {}", p.display(), e))?;
    parse(&bytes).map_err(|why| {
        err!(
            "{} cannot be used: {}; restore the data directory again from the backup (if it keeps failing, the backup program copied pg_control while it was being written: take a new backup)",
            p.display(),
            why
        )
    })
}

/// The latest checkpoint's redo location and timeline (checkPointCopy.redo and
/// .ThisTimeLineID): @40 and @48 from PostgreSQL 11 on, @48 and @56 on 10, which still has
/// prevCheckPoint @40. restore-prep leaves both alone when it invalidates checkPoint.
pub fn checkpoint_redo(pgdata: &Path) -> Result<(Lsn, u32)> {
    let p = pgdata.join(CONTROL_FILE);
    let bytes = std::fs::read(&p).map_err(|e| err!("cannot read {}: {}", p.display(), e))?;
    let c = parse(&bytes).map_err(|why| err!("{} cannot be used: {}", p.display(), why))?;
    let off = if c.pg_control_version == 1002 { 48 } else { 40 };
    Ok((Lsn(u64_at(&bytes, off)), u32_at(&bytes, off + 8)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(version: u32) -> Vec<u8> {
        let mut b = vec![0u8; 8192];
        b[0..8].copy_from_slice(&7_300_000_000_000_000_001u64.to_ne_bytes());
        b[8..12].copy_from_slice(&version.to_ne_bytes());
        b[16..20].copy_from_slice(&6u32.to_ne_bytes());
        b[32..40].copy_from_slice(&0x1_0900_0060u64.to_ne_bytes());
        let off = crc_offset(version).unwrap();
        let crc = crc32c::crc32c(&b[..off]);
        b[off..off + 4].copy_from_slice(&crc.to_ne_bytes());
        b
    }

    #[test]
    fn parses_every_known_version() {
        for v in [1002, 1100, 1201, 1300, 1700, 1800] {
            let c = parse(&sample(v)).unwrap();
            assert_eq!(c.system_identifier, 7_300_000_000_000_000_001);
            assert_eq!(c.pg_control_version, v);
            assert_eq!(c.checkpoint.to_string(), "1/9000060");
            assert_eq!(state_name(c.state), "in production");
        }
    }

    #[test]
    fn invalidate_keeps_the_crc_right_and_is_idempotent() {
        for v in [1002, 1100, 1201, 1300, 1700, 1800] {
            let mut b = sample(v);
            b[40..48].copy_from_slice(&0x1_0800_0028u64.to_ne_bytes());
            let off = crc_offset(v).unwrap();
            let crc = crc32c::crc32c(&b[..off]);
            b[off..off + 4].copy_from_slice(&crc.to_ne_bytes());
            assert!(!is_invalidated(parse(&b).unwrap().checkpoint));
            let once = invalidate(&b).unwrap();
            assert_eq!(once.len(), 8192);
            let c = parse(&once).unwrap();
            assert!(is_invalidated(c.checkpoint));
            assert_eq!(c.checkpoint.to_string(), "FFFF0001/9000060");
            assert_eq!(original_checkpoint(c.checkpoint).to_string(), "1/9000060");
            assert_eq!(u64_at(&once, 40) == 0xFFFF_0001_0800_0028, v == 1002, "prevCheckPoint only on 10");
            assert_eq!(invalidate(&once).unwrap(), once);
            let diff: Vec<usize> = (0..8192).filter(|&i| once[i] != b[i]).collect();
            assert!(
                diff.iter().all(|&i| (32..48).contains(&i) || (off..off + 4).contains(&i)),
                "{v}: changed {diff:?}"
            );
        }
    }

    #[test]
    fn prepare_raises_min_recovery_point_only_upwards_and_is_idempotent() {
        for v in [1002, 1100, 1201, 1300, 1700, 1800] {
            let m = min_recovery_offset(v);
            let mut b = sample(v);
            b[m..m + 8].copy_from_slice(&0x11A5_BA10u64.to_ne_bytes());
            b[m + 8..m + 12].copy_from_slice(&1u32.to_ne_bytes());
            let off = crc_offset(v).unwrap();
            let crc = crc32c::crc32c(&b[..off]);
            b[off..off + 4].copy_from_slice(&crc.to_ne_bytes());
            assert_eq!(parse(&b).unwrap().min_recovery_point.to_string(), "0/11A5BA10");

            let stop: Lsn = "0/45F4C150".parse().unwrap();
            let once = prepare(&b, Some((stop, 3))).unwrap();
            let c = parse(&once).unwrap();
            assert_eq!((c.min_recovery_point, c.min_recovery_point_tli), (stop, 3), "{v}");
            assert!(is_invalidated(c.checkpoint), "{v}: both changes in one rewrite");
            assert_eq!(prepare(&once, Some((stop, 3))).unwrap(), once, "{v}: a second run changes nothing");
            let diff: Vec<usize> = (0..8192).filter(|&i| once[i] != b[i]).collect();
            assert!(
                diff.iter().all(|&i| (32..48).contains(&i) || (m..m + 12).contains(&i) || (off..off + 4).contains(&i)),
                "{v}: changed {diff:?}"
            );
            // Never lowered: a pg_control copied after the stop keeps its later point.
            let lower = prepare(&b, Some(("0/1000000".parse().unwrap(), 3))).unwrap();
            let c = parse(&lower).unwrap();
            assert_eq!((c.min_recovery_point.to_string(), c.min_recovery_point_tli), ("0/11A5BA10".into(), 1));
            assert_eq!(prepare(&b, None).unwrap(), invalidate(&b).unwrap());
        }
    }

    #[test]
    fn torn_or_unknown_is_refused() {
        let mut b = sample(1300);
        b[40] ^= 1;
        assert!(parse(&b).unwrap_err().msg.contains("CRC does not match"));
        assert!(parse(&sample(1300)[..100]).unwrap_err().msg.contains("truncated"));
        let mut b = sample(1300);
        b[8..12].copy_from_slice(&942u32.to_ne_bytes());
        assert!(parse(&b).unwrap_err().msg.contains("unknown pg_control version"));
    }
}
