//! The postgresql.auto.conf editor: whatever the file holds, after `set` the value read back
//! is the value written, every other line is kept, and a second `set` changes nothing.
#![no_main]

use libfuzzer_sys::fuzz_target;
use pg_backup_hooks::restore::autoconf;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let (file, value) = text.split_once('\u{0}').unwrap_or((text, "cp /archive/%f %p"));
    if value.contains(['\n', '\r', '\u{0}']) {
        return; // restore-prep refuses such values before they get here
    }
    let settings = vec![("restore_command", value.to_string()), ("recovery_target", String::new())];
    let once = autoconf::set(file, &settings);
    assert_eq!(autoconf::get(&once, "restore_command").as_deref(), Some(value));
    assert_eq!(autoconf::get(&once, "RECOVERY_TARGET").as_deref(), Some(""));
    let twice = autoconf::set(&once, &settings);
    assert_eq!(once, twice);
    for line in file.split_terminator('\n') {
        let managed = matches!(autoconf::line_key(line).as_deref(), Some("restore_command" | "recovery_target"));
        if !managed && !line.trim_start().starts_with(autoconf::MARKER) {
            assert!(once.split_terminator('\n').any(|l| l == line), "line lost: {:?}", line);
        }
    }
});
