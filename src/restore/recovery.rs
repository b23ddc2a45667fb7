//! Recovery configuration for the server's version.
//!
//! * 12 and later: `recovery.signal` (a copied `standby.signal` or `recovery.conf` is
//!   removed: the first would make a standby, the second is FATAL) and the settings in
//!   postgresql.auto.conf, every recovery target blanked before the one we want.
//! * 10 and 11: `recovery.conf` (unknown keys are FATAL there, so it holds only recovery
//!   settings); `archive_mode` still goes into postgresql.auto.conf.

use std::fs;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::pg::wal::Lsn;
use crate::restore::autoconf;
use crate::sidecar::Manifest;

#[derive(Clone, Debug, PartialEq)]
pub enum Target {
    /// Replay everything in the archive (no target).
    Latest,
    /// Stop as soon as the copy is consistent (recovery_target = 'immediate').
    BackupEnd,
    /// A named restore point (recovery_target_name).
    Name(String),
    Time(String),
    Lsn(Lsn),
    Xid(String),
}

impl Target {
    pub fn describe(&self) -> String {
        match self {
            Target::Latest => "latest (replay all archived WAL)".into(),
            Target::BackupEnd => "backup-end (stop once consistent)".into(),
            Target::Name(n) => format!("restore point {:?}", n),
            Target::Time(t) => format!("time {}", t),
            Target::Lsn(l) => format!("lsn {}", l),
            Target::Xid(x) => format!("xid {}", x),
        }
    }
}

/// Parse --target; `None` picks the default (latest for one node, the restore point for several).
pub fn parse_target(spec: Option<&str>, m: &Manifest) -> Result<Target> {
    let spec = match spec {
        Some(s) => s.trim().to_string(),
        None if m.nodes.len() > 1 => "restore-point".to_string(),
        None => "latest".to_string(),
    };
    let bad = |why: String| Error::usage(format!("--target {:?}: {}", spec, why));
    if spec.contains(|c: char| c.is_control()) {
        return Err(bad("contains a line break or control character".into()));
    }
    let t = match spec.split_once(':') {
        _ if spec == "latest" => Target::Latest,
        _ if spec == "backup-end" => Target::BackupEnd,
        _ if spec == "restore-point" => match &m.restore_point {
            Some(rp) => Target::Name(rp.name.clone()),
            None => {
                return Err(Error::usage(format!(
                    "backup {} has no restore point in its manifest{}: choose --target latest, backup-end, time:TS, lsn:LSN, xid:XID or name:NAME",
                    m.backup_id,
                    if m.nodes.len() > 1 { " (a multi-node backup restores to it by default)" } else { "" }
                )))
            }
        },
        Some(("time", v)) if !v.trim().is_empty() => Target::Time(v.trim().to_string()),
        Some(("lsn", v)) => Target::Lsn(v.parse::<Lsn>().map_err(|e| bad(e.msg))?),
        Some(("xid", v)) if !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit()) => Target::Xid(v.to_string()),
        Some(("xid", _)) => return Err(bad("a transaction id is a number".into())),
        Some(("name", v)) if !v.is_empty() && v.len() < 64 => Target::Name(v.to_string()),
        Some(("name", _)) => return Err(bad("a restore point name has 1 to 63 bytes".into())),
        _ => return Err(bad("use latest, backup-end, restore-point, time:TS, lsn:LSN, xid:XID or name:NAME".into())),
    };
    Ok(t)
}

/// Quote for /bin/sh: `'...'` with ' written as '\''.
pub fn shell_quote(s: &str) -> String {
    if !s.is_empty() && s.bytes().all(|b| b.is_ascii_alphanumeric() || b"/._-+:=,@".contains(&b)) {
        return s.to_string();
    }
    format!("'{}'", s.replace('\'', "'\\''"))
}

/// The program that restores one WAL file: `pg-backup-hooks-wal-restore` where it stands next
/// to `exe` (it links no OpenSSL, so it starts several times faster: restore_command runs once
/// per WAL file; docs/benchmarks-wal-restore.md), else `exe wal-restore`.
pub struct WalRestoreProgram {
    pub path: PathBuf,
    pub subcommand: bool,
}

pub fn wal_restore_program(exe: &Path) -> WalRestoreProgram {
    let lean = exe.with_file_name("pg-backup-hooks-wal-restore");
    if lean.is_file() {
        WalRestoreProgram { path: lean, subcommand: false }
    } else {
        WalRestoreProgram { path: exe.to_path_buf(), subcommand: true }
    }
}

/// restore_command that runs our wal-restore on a plain archive directory. `%` in the paths is
/// doubled (PostgreSQL expands %f, %p, %r and %%).
pub fn wal_restore_command(program: &WalRestoreProgram, archive: &Path, sysid: &str) -> String {
    let q = |p: &Path| shell_quote(&p.to_string_lossy()).replace('%', "%%");
    let sub = if program.subcommand { " wal-restore" } else { "" };
    format!("{}{} --archive-dir {} --system-identifier {} %f %p", q(&program.path), sub, q(archive), sysid)
}

pub fn check_restore_command(cmd: &str) -> Result<()> {
    if cmd.contains(|c: char| c.is_control()) {
        return Err(Error::usage(format!(
            "--restore-command {:?} contains a line break or control character: a configuration value must be one line",
            cmd
        )));
    }
    if !(cmd.contains("%f") && cmd.contains("%p")) {
        return Err(Error::usage(format!(
            "--restore-command {:?} must contain %f (the file PostgreSQL wants) and %p (where to put it), e.g. 'cp /archive/%f %p'",
            cmd
        )));
    }
    Ok(())
}

/// Refuse a value that would not stay one line in a configuration file: any control
/// character (newline, carriage return, NUL, the other C0 controls, DEL) is never written.
pub fn check_config_value(file: &str, key: &str, value: &str) -> Result<()> {
    if let Some(c) = value.chars().find(|c| c.is_control()) {
        return Err(Error::usage(format!(
            "refusing to write {} = {:?} into {}: it contains the control character {:?} (U+{:04X}); a configuration value must be one line: fix the option it comes from (--archive-dir, --restore-command, --target) or, for a restore point name, the sidecar's manifest",
            key, value, file, c, c as u32
        )));
    }
    Ok(())
}

const TARGET_KEYS: &[&str] =
    &["recovery_target", "recovery_target_lsn", "recovery_target_time", "recovery_target_xid", "recovery_target_name"];

/// The recovery settings in file order: blanks first, then the target we want.
pub fn settings(restore_command: &str, target: &Target, action: &str, pre12: bool) -> Vec<(&'static str, String)> {
    let mut s: Vec<(&'static str, String)> = vec![("restore_command", restore_command.to_string())];
    let chosen: Option<(&'static str, String)> = match target {
        Target::Latest => None,
        Target::BackupEnd => Some(("recovery_target", "immediate".into())),
        Target::Name(n) => Some(("recovery_target_name", n.clone())),
        Target::Time(t) => Some(("recovery_target_time", t.clone())),
        Target::Lsn(l) => Some(("recovery_target_lsn", l.to_string())),
        Target::Xid(x) => Some(("recovery_target_xid", x.clone())),
    };
    if !pre12 {
        // recovery.conf before 12 is ours alone: nothing to blank there.
        for k in TARGET_KEYS {
            s.push((k, String::new()));
        }
    }
    if let Some(c) = chosen {
        s.push(c);
    }
    s.push(("recovery_target_action", action.to_string()));
    s.push(("recovery_target_timeline", "latest".into()));
    if pre12 {
        s.retain(|(_, v)| !v.is_empty());
    }
    s
}

/// One file to write.
#[derive(Clone, Debug)]
pub struct FileWrite {
    pub path: PathBuf,
    pub data: Vec<u8>,
    pub what: String,
    /// Mode and owner (uid, gid) to keep; None: 0600 and the data directory's owner.
    /// (pg_control keeps its own, whose mode may be 0640.)
    pub keep: Option<(u32, (u32, u32))>,
}

pub struct RecoveryPlan {
    /// In the order they must be written (the signal or recovery.conf last).
    pub writes: Vec<FileWrite>,
    pub removes: Vec<PathBuf>,
}

fn read_opt(p: &Path) -> Result<Option<String>> {
    match fs::read(p) {
        Ok(b) => Ok(Some(String::from_utf8_lossy(&b).into_owned())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(err!("cannot read {}: {}", p.display(), e)),
    }
}

pub fn plan(
    pgdata: &Path,
    major: u32,
    restore_command: &str,
    target: &Target,
    action: &str,
    archive_mode_off: bool,
) -> Result<RecoveryPlan> {
    let pre12 = major < 12;
    let auto_path = pgdata.join("postgresql.auto.conf");
    crate::restore::install::refuse_link(&auto_path)?;
    let auto_text = read_opt(&auto_path)?.unwrap_or_default();
    let mut auto_settings: Vec<(&str, String)> = Vec::new();
    let recovery = settings(restore_command, target, action, pre12);
    let mut writes = Vec::new();
    let mut removes = Vec::new();
    if !pre12 {
        auto_settings.extend(recovery.iter().cloned());
    }
    if archive_mode_off {
        auto_settings.push(("archive_mode", "off".into()));
    }
    for (k, v) in auto_settings.iter().chain(recovery.iter()) {
        check_config_value(if pre12 { "recovery.conf" } else { "postgresql.auto.conf" }, k, v)?;
    }
    if !auto_settings.is_empty() {
        writes.push(FileWrite {
            path: auto_path,
            data: autoconf::set(&auto_text, &auto_settings).into_bytes(),
            what: "recovery settings".into(),
            keep: None,
        });
    }
    if pre12 {
        let mut text = String::from("# written by pg-backup-hooks restore-prep\n");
        for (k, v) in &recovery {
            text.push_str(&format!("{} = {}\n", k, autoconf::quote(v)));
        }
        writes.push(FileWrite {
            path: pgdata.join("recovery.conf"),
            data: text.into_bytes(),
            what: "recovery settings; starts archive recovery".into(),
            keep: None,
        });
    } else {
        for f in ["standby.signal", "recovery.conf"] {
            let p = pgdata.join(f);
            if p.exists() {
                removes.push(p);
            }
        }
        writes.push(FileWrite {
            path: pgdata.join("recovery.signal"),
            data: Vec::new(),
            what: "starts archive recovery".into(),
            keep: None,
        });
    }
    Ok(RecoveryPlan { writes, removes })
}

/// The archive_command the restored server would run, if archiving is on.
pub fn effective_archive_command(pgdata: &Path, archive_mode_off: bool) -> Result<Option<String>> {
    if archive_mode_off {
        return Ok(None);
    }
    let mut mode = None;
    let mut cmd = None;
    for f in ["postgresql.conf", "postgresql.auto.conf"] {
        if let Some(text) = read_opt(&pgdata.join(f))? {
            mode = autoconf::get(&text, "archive_mode").or(mode);
            cmd = autoconf::get(&text, "archive_command").or(cmd);
        }
    }
    let on =
        matches!(mode.as_deref().map(str::to_ascii_lowercase).as_deref(), Some("on" | "always" | "true" | "yes" | "1"));
    Ok(if on { cmd.filter(|c| !c.trim().is_empty()) } else { None })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_that_would_break_the_config_file_are_refused() {
        assert!(check_restore_command("cp /a/%f %p\nrecovery_target = 'immediate'").is_err());
        assert!(check_restore_command("cp /a/%f %p").is_ok());
    }

    #[test]
    fn blanks_come_before_the_target() {
        let s = settings("cp /a/%f %p", &Target::BackupEnd, "promote", false);
        let keys: Vec<&str> = s.iter().map(|(k, _)| *k).collect();
        assert_eq!(
            keys,
            vec![
                "restore_command",
                "recovery_target",
                "recovery_target_lsn",
                "recovery_target_time",
                "recovery_target_xid",
                "recovery_target_name",
                "recovery_target",
                "recovery_target_action",
                "recovery_target_timeline"
            ]
        );
        assert_eq!(s[6].1, "immediate");
        let old = settings("x %f %p", &Target::Lsn("0/5000000".parse().unwrap()), "pause", true);
        assert_eq!(
            old.iter().map(|(k, _)| *k).collect::<Vec<_>>(),
            vec!["restore_command", "recovery_target_lsn", "recovery_target_action", "recovery_target_timeline"]
        );
    }

    #[test]
    fn shell_and_percent_quoting() {
        assert_eq!(shell_quote("/usr/bin/x"), "/usr/bin/x");
        assert_eq!(shell_quote("/a b/it's"), "'/a b/it'\\''s'");
        let main = WalRestoreProgram { path: PathBuf::from("/opt/pg bh/bin"), subcommand: true };
        let c = wal_restore_command(&main, Path::new("/arch/100%"), "42");
        assert_eq!(c, "'/opt/pg bh/bin' wal-restore --archive-dir '/arch/100%%' --system-identifier 42 %f %p");
        let lean = WalRestoreProgram { path: PathBuf::from("/usr/bin/pg-backup-hooks-wal-restore"), subcommand: false };
        let c = wal_restore_command(&lean, Path::new("/arch"), "42");
        assert_eq!(c, "/usr/bin/pg-backup-hooks-wal-restore --archive-dir /arch --system-identifier 42 %f %p");
        assert!(check_restore_command("cp /a/%f").is_err());
        assert!(check_restore_command("cp /a/%f %p").is_ok());
    }
}
