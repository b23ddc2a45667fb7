//! The plain shell script that does what a backup program and a DBA do
//! (tests/backup-job.sh, also the README's demo) must pass end to end.

use crate::common;

#[test]
fn the_backup_job_script_round_trips_a_live_cluster() {
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/backup-job.sh");
    let out = std::process::Command::new("bash")
        .arg(&script)
        .env("PGBH_BIN", common::bin())
        .env("PGBH_PG_BINDIR", common::bindir())
        .output()
        .expect("running tests/backup-job.sh");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "backup-job.sh failed\nstdout:\n{}\nstderr:\n{}", stdout, stderr);
    assert!(stdout.contains("round trip OK: every committed row is back"), "{}", stdout);
    assert!(stdout.contains("is complete and restorable"), "{}", stdout);
    assert!(stdout.contains("node default: PROVEN (latest"), "{}", stdout);
}
