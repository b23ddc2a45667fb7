//! Recovery configuration for the server's version.
//!
//! * 12 and later: `recovery.signal` (a copied `standby.signal` or `recovery.conf` is
//!   removed: the first would make a standby, the second is FATAL) and the settings in
//!   postgresql.auto.conf, every recovery target blanked before the one we want.
//! * 10 and 11: `recovery.conf` (unknown keys are FATAL there, so it holds only recovery
//!   settings); `archive_mode` still goes into postgresql.auto.conf.

use std::fs;
use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::error::{Error, Result};
use crate::pg::wal::Lsn;
use crate::restore::autoconf;
use crate::sidecar::Manifest;

/// What the server does once it reaches the recovery target: `--target-action`, written as
/// recovery_target_action in the same spelling. (No doc comments on the variants: clap would
/// print them in `--help`.)
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum TargetAction {
    // Ends recovery and opens for writes (PostgreSQL's default).
    Promote,
    // Stays in recovery, replay paused, read-only.
    Pause,
    // Stops the server.
    Shutdown,
}

impl TargetAction {
    /// The spelling of `--target-action` and of recovery_target_action.
    pub fn as_str(self) -> &'static str {
        match self {
            TargetAction::Promote => "promote",
            TargetAction::Pause => "pause",
            TargetAction::Shutdown => "shutdown",
        }
    }
}

impl std::fmt::Display for TargetAction {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// `--archive-mode`: what restore-prep does to the restored server's archive_mode.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum ArchiveMode {
    // Leaves archive_mode as the copy has it.
    Keep,
    // Writes archive_mode = 'off' into postgresql.auto.conf (a test restore must not archive
    // into the production archive).
    Off,
}

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
    /// The target in --target's syntax (a restore point as `name:NAME`): what restore-prep's
    /// record keeps for restore-check.
    pub fn spec(&self) -> String {
        match self {
            Target::Latest => "latest".into(),
            Target::BackupEnd => "backup-end".into(),
            Target::Name(n) => format!("name:{}", n),
            Target::Time(t) => format!("time:{}", t),
            Target::Lsn(l) => format!("lsn:{}", l),
            Target::Xid(x) => format!("xid:{}", x),
        }
    }

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

/// The targets a backup offers, for a message about a --target it does not: the words that
/// name its own points (its end, its restore point) and the forms that take a value.
pub fn offered_targets(m: &Manifest) -> String {
    let rp = match &m.restore_point {
        Some(rp) => format!("restore-point (its restore point {:?})", rp.name),
        None => "no restore point".to_string(),
    };
    format!("latest, backup-end, {}; or time:TS, lsn:LSN, xid:XID, name:NAME of a restore point made later", rp)
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
pub fn settings(
    restore_command: &str,
    target: &Target,
    action: TargetAction,
    pre12: bool,
) -> Vec<(&'static str, String)> {
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
    s.push(("recovery_target_action", action.as_str().to_string()));
    s.push(("recovery_target_timeline", "latest".into()));
    if pre12 {
        s.retain(|(_, v)| !v.is_empty());
    }
    s
}

/// One file to write (defined beside the code that writes it; recovery only plans).
pub use crate::restore::install::FileWrite;

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

/// The recovery configuration to write for this major (the file that starts recovery last),
/// and the copied files that must go.
pub fn plan(
    pgdata: &Path,
    major: u32,
    restore_command: &str,
    target: &Target,
    action: TargetAction,
    archive_mode: ArchiveMode,
) -> Result<RecoveryPlan> {
    let pre12 = major < 12;
    let auto_path = pgdata.join("postgresql.auto.conf");
    crate::restore::install::refuse_link(&auto_path)?;
    let auto_text = read_opt(&auto_path)?.unwrap_or_default();
    let mut auto_settings: Vec<(&str, String)> = Vec::new();
    let recovery = settings(restore_command, target, action, pre12);
    if !pre12 {
        auto_settings.extend(recovery.iter().cloned());
    }
    if archive_mode == ArchiveMode::Off {
        auto_settings.push(("archive_mode", "off".into()));
    }
    for (k, v) in auto_settings.iter().chain(recovery.iter()) {
        check_config_value(if pre12 { "recovery.conf" } else { "postgresql.auto.conf" }, k, v)?;
    }
    let mut writes = Vec::new();
    if !auto_settings.is_empty() {
        writes.push(FileWrite {
            path: auto_path,
            data: autoconf::set(&auto_text, &auto_settings).into_bytes(),
            what: "recovery settings".into(),
            keep: None,
        });
    }
    let (start, removes) = if pre12 { (recovery_conf(pgdata, &recovery), Vec::new()) } else { recovery_signal(pgdata) };
    writes.push(start);
    Ok(RecoveryPlan { writes, removes })
}

/// Before 12: recovery.conf, holding the recovery settings; it starts archive recovery.
fn recovery_conf(pgdata: &Path, recovery: &[(&'static str, String)]) -> FileWrite {
    let mut text = String::from("# written by pg-backup-hooks restore-prep\n");
    for (k, v) in recovery {
        text.push_str(&format!("{} = {}\n", k, autoconf::quote(v)));
    }
    FileWrite {
        path: pgdata.join("recovery.conf"),
        data: text.into_bytes(),
        what: "recovery settings; starts archive recovery".into(),
        keep: None,
    }
}

/// From 12: recovery.signal starts archive recovery; a copied standby.signal (it would make a
/// standby) or recovery.conf (FATAL from 12) is removed.
fn recovery_signal(pgdata: &Path) -> (FileWrite, Vec<PathBuf>) {
    let removes = ["standby.signal", "recovery.conf"].iter().map(|f| pgdata.join(f)).filter(|p| p.exists()).collect();
    let signal = FileWrite {
        path: pgdata.join("recovery.signal"),
        data: Vec::new(),
        what: "starts archive recovery".into(),
        keep: None,
    };
    (signal, removes)
}

/// The archive_command the restored server would run, if archiving is on.
pub fn effective_archive_command(pgdata: &Path, archive_mode: ArchiveMode) -> Result<Option<String>> {
    if archive_mode == ArchiveMode::Off {
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
        let s = settings("cp /a/%f %p", &Target::BackupEnd, TargetAction::Promote, false);
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
        let old = settings("x %f %p", &Target::Lsn("0/5000000".parse().unwrap()), TargetAction::Pause, true);
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

    #[test]
    fn target_action_and_archive_mode_keep_their_spellings() {
        use clap::ValueEnum;
        let names =
            |v: Vec<clap::builder::PossibleValue>| v.iter().map(|p| p.get_name().to_string()).collect::<Vec<_>>();
        let actions = TargetAction::value_variants();
        assert_eq!(
            names(actions.iter().filter_map(|a| a.to_possible_value()).collect()),
            ["promote", "pause", "shutdown"]
        );
        for a in actions {
            assert_eq!(a.to_possible_value().unwrap().get_name(), a.as_str());
            assert_eq!(a.to_string(), a.as_str());
            assert_eq!(serde_json::to_string(a).unwrap(), format!("\"{}\"", a.as_str()));
        }
        let modes = ArchiveMode::value_variants();
        assert_eq!(names(modes.iter().filter_map(|m| m.to_possible_value()).collect()), ["keep", "off"]);
    }

    #[test]
    fn from_12_the_settings_go_into_auto_conf_and_the_signal_comes_last() {
        let d = tempfile::tempdir().unwrap();
        fs::write(d.path().join("postgresql.auto.conf"), "work_mem = '4MB'\n").unwrap();
        fs::write(d.path().join("standby.signal"), "").unwrap();
        let rec = plan(d.path(), 16, "cp /a/%f %p", &Target::BackupEnd, TargetAction::Pause, ArchiveMode::Off).unwrap();
        let paths: Vec<PathBuf> = rec.writes.iter().map(|w| w.path.clone()).collect();
        assert_eq!(paths, [d.path().join("postgresql.auto.conf"), d.path().join("recovery.signal")]);
        let auto = String::from_utf8(rec.writes[0].data.clone()).unwrap();
        for line in [
            "work_mem = '4MB'",
            "recovery_target_action = 'pause'",
            "archive_mode = 'off'",
            "recovery_target = 'immediate'",
        ] {
            assert!(auto.lines().any(|l| l == line), "{:?} not in {}", line, auto);
        }
        assert_eq!(rec.removes, [d.path().join("standby.signal")]);
        // Only planned: nothing on disk changed.
        assert_eq!(fs::read_to_string(d.path().join("postgresql.auto.conf")).unwrap(), "work_mem = '4MB'\n");
        assert!(!d.path().join("recovery.signal").exists());
    }

    #[test]
    fn before_12_recovery_conf_holds_the_settings_and_archive_mode_keep_writes_nothing_else() {
        let d = tempfile::tempdir().unwrap();
        let rec =
            plan(d.path(), 11, "cp /a/%f %p", &Target::Latest, TargetAction::Shutdown, ArchiveMode::Keep).unwrap();
        assert_eq!(rec.writes.len(), 1);
        assert_eq!(rec.writes[0].path, d.path().join("recovery.conf"));
        assert_eq!(
            String::from_utf8(rec.writes[0].data.clone()).unwrap(),
            "# written by pg-backup-hooks restore-prep\nrestore_command = 'cp /a/%f %p'\n\
             recovery_target_action = 'shutdown'\nrecovery_target_timeline = 'latest'\n"
        );
    }

    #[test]
    fn a_linked_auto_conf_is_refused() {
        let d = tempfile::tempdir().unwrap();
        let outside = d.path().join("outside.conf");
        fs::write(&outside, "").unwrap();
        let data = d.path().join("data");
        fs::create_dir(&data).unwrap();
        std::os::unix::fs::symlink(&outside, data.join("postgresql.auto.conf")).unwrap();
        let e = plan(&data, 16, "cp /a/%f %p", &Target::Latest, TargetAction::Promote, ArchiveMode::Keep);
        let msg = e.err().map(|e| e.msg).unwrap_or_default();
        assert!(msg.contains("postgresql.auto.conf is a symbolic link to"), "{}", msg);
    }

    #[test]
    fn archive_mode_off_means_no_archive_command_to_worry_about() {
        let d = tempfile::tempdir().unwrap();
        fs::write(d.path().join("postgresql.conf"), "archive_mode = on\narchive_command = 'cp %p /arch/%f'\n").unwrap();
        let cmd = effective_archive_command(d.path(), ArchiveMode::Keep).unwrap();
        assert_eq!(cmd.as_deref(), Some("cp %p /arch/%f"));
        assert_eq!(effective_archive_command(d.path(), ArchiveMode::Off).unwrap(), None);
    }
}
