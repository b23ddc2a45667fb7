//! The backup_label parser must never panic, and what it reads must be what is written.
#![no_main]

use libfuzzer_sys::fuzz_target;
use pg_backup_hooks::pg::label::BackupLabel;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    if let Ok(l) = BackupLabel::parse(text) {
        // The LSN we report is the one on the START WAL LOCATION line.
        let line = text.lines().find(|l| l.starts_with("START WAL LOCATION: ")).expect("line");
        let lsn = line["START WAL LOCATION: ".len()..].split(' ').next().expect("lsn");
        assert_eq!(lsn.parse::<pg_backup_hooks::pg::wal::Lsn>().expect("lsn"), l.start_lsn);
        assert!(text.lines().any(|x| x == format!("LABEL: {}", l.label)));
    }
});
