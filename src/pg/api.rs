//! Version-aware SQL: the only place that knows which backup functions and settings each
//! major version has. Everything here takes parameters as bind values, never by formatting.

use postgres::Client;

use crate::error::{pg_error, Error, Result};
use crate::pg::wal::Lsn;

/// Oldest major we support: the non-exclusive API with wait_for_archive arrived in 10.
pub const MIN_VERSION_NUM: i32 = 100000;

/// Refuse servers older than [`MIN_VERSION_NUM`] with a message that says why.
pub fn check_supported(version_num: i32) -> Result<()> {
    if version_num < MIN_VERSION_NUM {
        return Err(err!(
            "server version {} is not supported: pg-backup-hooks needs PostgreSQL 10 or later (non-exclusive backups)",
            version_num
        ));
    }
    Ok(())
}

/// What we learn about a node once, right after connecting.
#[derive(Clone, Debug)]
pub struct ServerFacts {
    pub version_num: i32,
    pub version: String,
    pub system_identifier: u64,
    pub timeline: u32,
    pub in_recovery: bool,
    pub data_directory: Option<String>,
    pub archive_mode: ArchiveMode,
    pub archive_command: String,
    pub archive_library: String,
    pub wal_segment_size: u64,
}

/// The server's archive_mode setting.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ArchiveMode {
    Off,
    /// Archives on a primary only: a standby archives nothing itself.
    On,
    /// Archives on a standby too.
    Always,
}

impl ArchiveMode {
    /// The setting as `current_setting('archive_mode')` shows it.
    pub fn parse(setting: &str) -> crate::error::Result<ArchiveMode> {
        match setting {
            "off" => Ok(ArchiveMode::Off),
            "on" => Ok(ArchiveMode::On),
            "always" => Ok(ArchiveMode::Always),
            other => Err(err!("unexpected archive_mode {:?} (expected off, on or always)", other)),
        }
    }
}

/// The outcome of the stop function.
#[derive(Clone, Debug)]
pub struct StopOutput {
    pub lsn: Lsn,
    pub labelfile: String,
    pub spcmapfile: String,
}

/// pg_stat_archiver, as text.
#[derive(Clone, Debug, Default, serde::Serialize, serde::Deserialize, PartialEq)]
pub struct ArchiverStats {
    pub last_archived_wal: Option<String>,
    pub last_archived_time: Option<String>,
    pub last_failed_wal: Option<String>,
    pub last_failed_time: Option<String>,
    pub failed_count: i64,
    /// last_failed_time is newer than last_archived_time.
    pub failing: bool,
}

/// A server error with its full text (severity, message, detail, hint).
fn db(e: postgres::Error) -> Error {
    Error::new(pg_error(&e))
}

fn q1(c: &mut Client, sql: &str) -> Result<postgres::Row> {
    c.query_one(sql, &[]).map_err(db)
}

/// Turn off every timeout that could end the held session, for this session only.
pub fn prepare_session(c: &mut Client, version_num: i32) -> Result<()> {
    let mut sql =
        String::from("SET statement_timeout = 0; SET lock_timeout = 0; SET idle_in_transaction_session_timeout = 0;");
    if version_num >= 140000 {
        sql.push_str(" SET idle_session_timeout = 0;");
    }
    if version_num >= 170000 {
        sql.push_str(" SET transaction_timeout = 0;");
    }
    c.batch_execute(&sql).map_err(db)
}

pub fn server_version_num(c: &mut Client) -> Result<i32> {
    let row = q1(c, "SELECT current_setting('server_version_num')::int4, current_setting('server_version')")?;
    Ok(row.get(0))
}

pub fn server_facts(c: &mut Client, version_num: i32) -> Result<ServerFacts> {
    let row = q1(
        c,
        "SELECT current_setting('server_version'),
                (SELECT system_identifier::text FROM pg_control_system()),
                (SELECT timeline_id FROM pg_control_checkpoint()),
                pg_is_in_recovery(),
                current_setting('archive_mode'),
                current_setting('archive_command'),
                (SELECT setting::int8 * CASE unit WHEN '8kB' THEN 8192 WHEN 'MB' THEN 1048576 ELSE 1 END
                   FROM pg_settings WHERE name = 'wal_segment_size')",
    )?;
    let sysid: String = row.get(1);
    let archive_library = if version_num >= 150000 {
        q1(c, "SELECT current_setting('archive_library')")?.get::<_, String>(0)
    } else {
        String::new()
    };
    // data_directory needs superuser or pg_read_all_settings; it is informational only.
    let data_directory =
        c.query_one("SELECT current_setting('data_directory')", &[]).ok().map(|r| r.get::<_, String>(0));
    Ok(ServerFacts {
        version_num,
        version: row.get(0),
        system_identifier: sysid.parse().map_err(|_| err!("unexpected system identifier \"{}\"", sysid))?,
        timeline: row.get::<_, i32>(2) as u32,
        in_recovery: row.get(3),
        data_directory,
        archive_mode: ArchiveMode::parse(&row.get::<_, String>(4))?,
        archive_command: row.get(5),
        archive_library,
        wal_segment_size: row.get::<_, i64>(6) as u64,
    })
}

/// Start a non-exclusive backup. The label is a bind parameter.
pub fn start_backup(c: &mut Client, version_num: i32, label: &str, fast: bool) -> Result<Lsn> {
    let sql = if version_num >= 150000 {
        "SELECT pg_backup_start($1, $2)::text"
    } else {
        "SELECT pg_start_backup($1, $2, false)::text"
    };
    let row = c.query_one(sql, &[&label, &fast]).map_err(db)?;
    row.get::<_, String>(0).parse()
}

/// Stop the backup without letting the server wait for archiving: a stop cancelled during
/// that wait loses the label, so we wait ourselves afterwards.
pub fn stop_backup(c: &mut Client, version_num: i32) -> Result<StopOutput> {
    let sql = if version_num >= 150000 {
        "SELECT lsn::text, labelfile, spcmapfile FROM pg_backup_stop(false)"
    } else {
        "SELECT lsn::text, labelfile, spcmapfile FROM pg_stop_backup(false, false)"
    };
    let row = q1(c, sql)?;
    Ok(StopOutput {
        lsn: row.get::<_, String>(0).parse()?,
        labelfile: row.get::<_, Option<String>>(1).unwrap_or_default(),
        spcmapfile: row.get::<_, Option<String>>(2).unwrap_or_default(),
    })
}

/// The cheap heartbeat: also tells whether a standby was promoted.
pub fn heartbeat(c: &mut Client) -> Result<bool> {
    Ok(q1(c, "SELECT pg_is_in_recovery()")?.get(0))
}

pub fn archiver_stats(c: &mut Client) -> Result<ArchiverStats> {
    let row = q1(
        c,
        "SELECT last_archived_wal, last_archived_time::text, last_failed_wal, last_failed_time::text,
                failed_count, coalesce(last_failed_time > coalesce(last_archived_time, '-infinity'), false)
           FROM pg_stat_archiver",
    )?;
    Ok(ArchiverStats {
        last_archived_wal: row.get(0),
        last_archived_time: row.get(1),
        last_failed_wal: row.get(2),
        last_failed_time: row.get(3),
        failed_count: row.get(4),
        failing: row.get(5),
    })
}

/// Archive status of the given files from pg_wal/archive_status (12+, needs pg_monitor or
/// superuser). Returns None when the function is not available to us.
/// Some(true) means every file is archived: `.done` exists, or no `.ready` is left.
pub fn archive_status_done(c: &mut Client, version_num: i32, files: &[String]) -> Option<bool> {
    if version_num < 120000 {
        return archive_status_done_stat_file(c, files);
    }
    let rows = c.query("SELECT name FROM pg_ls_archive_statusdir()", &[]).ok()?;
    let names: Vec<String> = rows.iter().map(|r| r.get::<_, String>(0)).collect();
    Some(files.iter().all(|f| {
        let done = format!("{}.done", f);
        let ready = format!("{}.ready", f);
        names.contains(&done) || !names.contains(&ready)
    }))
}

/// Is the citus extension installed in the database we are connected to?
pub fn has_citus(c: &mut Client) -> Result<bool> {
    Ok(q1(c, "SELECT EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'citus')")?.get(0))
}

/// A named restore point on this server; returns its WAL location.
pub fn create_restore_point(c: &mut Client, name: &str) -> Result<Lsn> {
    let row = c.query_one("SELECT pg_create_restore_point($1)::text", &[&name]).map_err(db)?;
    row.get::<_, String>(0).parse()
}

/// Citus: one restore point on the coordinator and every worker, with distributed
/// commits blocked for that instant. Returns the coordinator's location.
pub fn citus_create_restore_point(c: &mut Client, name: &str) -> Result<Lsn> {
    let row = c.query_one("SELECT citus_create_restore_point($1)::text", &[&name]).map_err(db)?;
    row.get::<_, String>(0).parse()
}

pub fn current_wal_lsn(c: &mut Client) -> Result<Lsn> {
    q1(c, "SELECT pg_current_wal_lsn()::text")?.get::<_, String>(0).parse()
}

/// Close the current WAL segment so the archiver can take it.
pub fn switch_wal(c: &mut Client) -> Result<Lsn> {
    q1(c, "SELECT pg_switch_wal()::text")?.get::<_, String>(0).parse()
}

/// The WAL segment being written (None on a standby, where pg_walfile_name() fails) and the
/// seconds since pg_stat_archiver's last success (None: nothing archived yet). pg_monitor
/// is enough.
pub fn archive_position(c: &mut Client) -> Result<(Option<String>, Option<f64>)> {
    let row = q1(
        c,
        "SELECT CASE WHEN pg_is_in_recovery() THEN NULL ELSE pg_walfile_name(pg_current_wal_lsn()) END,
                (SELECT extract(epoch FROM now() - last_archived_time)::float8 FROM pg_stat_archiver)",
    )?;
    Ok((row.get(0), row.get(1)))
}

/// The setting's word, as `current_setting('archive_mode')` shows it.
pub fn archive_mode_word(m: ArchiveMode) -> &'static str {
    match m {
        ArchiveMode::Off => "off",
        ArchiveMode::On => "on",
        ArchiveMode::Always => "always",
    }
}

/// 10 and 11 have no pg_ls_archive_statusdir(): look at the status files with pg_stat_file()
/// (superuser on 10; superuser or GRANT EXECUTE on 11). None when we may not.
/// pg_stat_archiver alone cannot tell on these versions: the archiver can copy the stop
/// segment before the history file appears and then the history file, whose name sorts
/// lower, so last_archived_wal stays below the stop segment until the next segment is done.
fn archive_status_done_stat_file(c: &mut Client, files: &[String]) -> Option<bool> {
    let sql = "SELECT (pg_stat_file('pg_wal/archive_status/' || $1 || '.done', true)).size IS NOT NULL,
                      (pg_stat_file('pg_wal/archive_status/' || $1 || '.ready', true)).size IS NOT NULL";
    let mut all = true;
    for f in files {
        let row = c.query_one(sql, &[f]).ok()?;
        let (done, ready): (bool, bool) = (row.get(0), row.get(1));
        all &= done || !ready;
    }
    Some(all)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_96_and_older_clearly() {
        for v in [90624, 90500, 80400] {
            let e = check_supported(v).unwrap_err();
            assert!(e.msg.contains(&v.to_string()) && e.msg.contains("PostgreSQL 10 or later"), "{e}");
        }
        for v in [100000, 100023, 110022, 150018, 180004] {
            assert!(check_supported(v).is_ok(), "{v}");
        }
    }
}
