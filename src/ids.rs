//! Backup ids: one string serves as the backup label, a file name in the sidecar and run
//! directories, and (through a derived name) a restore point. It is checked once, here.

use crate::error::{Error, Result};

/// Restore-point names must be shorter than 64 bytes.
pub const MAX_ID_LEN: usize = 63;

pub fn validate(id: &str) -> Result<()> {
    let bad = |why: &str| {
        Err(Error::usage(format!(
            "backup id {:?} {}: use 1-{} characters from A-Z a-z 0-9 . _ - : + @ = , starting with a letter or digit (it becomes a backup label, a file name and a restore-point name)",
            id, why, MAX_ID_LEN
        )))
    };
    if id.is_empty() {
        return bad("is empty");
    }
    if id.len() > MAX_ID_LEN {
        return bad(&format!("is {} bytes long", id.len()));
    }
    if let Some(c) = id.chars().find(|c| !(c.is_ascii_alphanumeric() || "._-:+@=,".contains(*c))) {
        return bad(&format!("contains {:?}", c));
    }
    if !id.starts_with(|c: char| c.is_ascii_alphanumeric()) {
        return bad("does not start with a letter or digit");
    }
    Ok(())
}

/// A backup id from a name the backup program gives (a job name, a job id): characters
/// outside the allowed set become `_`, the tail (the unique part of most job names) is kept
/// when it is too long, and leading characters that cannot start an id are dropped.
pub fn from_job_name(name: &str) -> Result<String> {
    let mapped: String =
        name.chars().map(|c| if c.is_ascii_alphanumeric() || "._-:+@=,".contains(c) { c } else { '_' }).collect();
    let tail = &mapped[mapped.len().saturating_sub(MAX_ID_LEN)..];
    let id = tail.trim_start_matches(|c: char| !c.is_ascii_alphanumeric()).to_string();
    if id.is_empty() {
        return Err(Error::usage(format!("cannot make a backup id from {:?}: it has no letter or digit", name)));
    }
    validate(&id)?;
    Ok(id)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_job_names() {
        for id in ["pgdata.2026-11-22_16.40.55_03", "job42", "veeam-20261123T110000Z", "a:b+c@d=e,f"] {
            assert!(validate(id).is_ok(), "{}", id);
        }
    }

    #[test]
    fn refuses_what_cannot_be_a_label_file_or_restore_point() {
        for id in ["", "..", ".hidden", "-x", "a/b", "a b", "a\nb", "it's", "x\"y", "a;drop", &"x".repeat(64)] {
            let e = validate(id).unwrap_err();
            assert_eq!(e.code, 2);
            assert!(e.msg.contains("backup id"), "{}", e.msg);
        }
    }

    #[test]
    fn job_names_become_ids_as_the_shell_wrappers_made_them() {
        assert_eq!(from_job_name("pgdata.2026-11-22_16.40.55_03").unwrap(), "pgdata.2026-11-22_16.40.55_03");
        assert_eq!(from_job_name("cv-12 34/x").unwrap(), "cv-12_34_x");
        assert_eq!(from_job_name("__a").unwrap(), "a");
        assert_eq!(from_job_name(&format!("{}tail", "y".repeat(70))).unwrap().len(), MAX_ID_LEN);
        assert!(from_job_name(&format!("{}tail", "y".repeat(70))).unwrap().ends_with("tail"));
        assert_eq!(from_job_name("ü").unwrap_err().code, 2);
        assert_eq!(from_job_name("").unwrap_err().code, 2);
    }
}
