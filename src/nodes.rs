//! `--node NAME=CONNINFO`, as pre, check and restore-check take it: the name rules (a name
//! becomes a directory in the sidecar) and the list without duplicates. Messages never quote
//! the connection string itself, and what they quote has its passwords redacted.

use std::path::PathBuf;

use crate::error::{Error, Result};
use crate::pg::conninfo::{redact_text, ConnInfo};

/// 1-63 characters from A-Z a-z 0-9 _ - . starting with a letter or digit.
pub fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 63
        && name.chars().all(|c| c.is_ascii_alphanumeric() || "_-.".contains(c))
        && name.starts_with(|c: char| c.is_ascii_alphanumeric())
}

/// Split `NAME=CONNINFO`, the conninfo checked by libpq's rules.
pub fn parse(spec: &str) -> Result<(String, String)> {
    let (name, conninfo) = spec.split_once('=').ok_or_else(|| {
        Error::usage(
            "a --node value has no \"=\": expected NAME=CONNINFO, e.g. --node worker1='host=10.0.0.2 port=5432' (a URI needs a name too: --node main=postgresql://...)",
        )
    })?;
    if !valid_name(name) {
        return Err(Error::usage(format!(
            "--node name {:?}: use 1-63 characters from A-Z a-z 0-9 _ - . starting with a letter or digit",
            redact_text(name)
        )));
    }
    ConnInfo::parse(conninfo).map_err(|e| Error::usage(format!("--node {}: {}", name, redact_text(&e.msg))))?;
    Ok((name.to_string(), conninfo.to_string()))
}

/// `--archive-dir` values split into DIR (for every node) and NAME=DIR (for node NAME), as
/// check and restore-test take them: a value is NAME=DIR only when NAME is a node name, so a
/// directory with `=` in its path stays a directory.
pub fn split_archive_dirs(values: &[String]) -> (Vec<PathBuf>, Vec<(String, PathBuf)>) {
    let (mut every, mut per_node) = (Vec::new(), Vec::new());
    for d in values.iter().filter(|d| !d.trim().is_empty()) {
        match d.split_once('=') {
            Some((node, dir)) if valid_name(node) => per_node.push((node.to_string(), PathBuf::from(dir))),
            _ => every.push(PathBuf::from(d)),
        }
    }
    (every, per_node)
}

/// Every non-empty `--node` value parsed, in order; a name given twice is a usage error.
pub fn parse_all(specs: &[String]) -> Result<Vec<(String, String)>> {
    let mut nodes: Vec<(String, String)> = Vec::new();
    for spec in specs.iter().filter(|s| !s.trim().is_empty()) {
        let n = parse(spec.trim())?;
        if nodes.iter().any(|(name, _)| *name == n.0) {
            return Err(Error::usage(format!("--node {} is given twice", n.0)));
        }
        nodes.push(n);
    }
    Ok(nodes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_conninfo_and_duplicates() {
        let v = parse_all(&["a=host=x port=1".into(), " ".into(), "b.2=dbname=d".into()]).unwrap();
        assert_eq!(v, vec![("a".into(), "host=x port=1".into()), ("b.2".into(), "dbname=d".into())]);
        let e = parse_all(&["a=host=x".into(), "a=host=y".into()]).unwrap_err();
        assert!(e.msg.contains("--node a is given twice"), "{}", e.msg);
        assert!(parse("-x=host=y").unwrap_err().msg.contains("starting with a letter or digit"));
        assert!(parse("nodash").unwrap_err().msg.contains("has no \"=\""));
        let e = parse("n=password=hunter2 host='unterminated").unwrap_err();
        assert!(!e.msg.contains("hunter2"), "{}", e.msg);
        assert!(!valid_name("") && !valid_name(&"a".repeat(64)) && valid_name(&"a".repeat(63)));
    }

    #[test]
    fn archive_dirs_for_every_node_and_for_one() {
        let v: Vec<String> = ["/a", "n1=/b", "", "/c=d/e", "n2=/f"].iter().map(|s| s.to_string()).collect();
        let (every, per_node) = split_archive_dirs(&v);
        assert_eq!(every, [PathBuf::from("/a"), PathBuf::from("/c=d/e")]);
        assert_eq!(per_node, [("n1".to_string(), PathBuf::from("/b")), ("n2".to_string(), PathBuf::from("/f"))]);
    }
}
