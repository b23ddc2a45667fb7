//! `verify`: check a stored sidecar and say precisely what is wrong with it.

use crate::cli::VerifyArgs;
use crate::error::Result;
use crate::ids;
use crate::sidecar;

pub fn run(a: VerifyArgs) -> Result<i32> {
    ids::validate(&a.backup_id)?;
    let (m, problems) = sidecar::verify(&a.sidecar_dir, &a.backup_id)?;
    let problems: Vec<String> = problems.iter().map(ToString::to_string).collect();
    if a.json {
        let v = serde_json::json!({"backup_id": a.backup_id, "ok": problems.is_empty(), "problems": problems, "nodes": m.nodes.iter().map(|n| &n.name).collect::<Vec<_>>()});
        println!("{}", v);
    }
    if !problems.is_empty() {
        return Err(err!(
            "sidecar {} is not usable: {}",
            sidecar::backup_dir(&a.sidecar_dir, &a.backup_id).display(),
            problems.join("; ")
        ));
    }
    if !a.json {
        println!("backup {}: sidecar OK ({} node(s), {:?})", a.backup_id, m.nodes.len(), m.status);
    }
    Ok(0)
}
