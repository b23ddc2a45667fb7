//! Every fact about the command line is defined once, in src/cli.rs and src/error.rs: README's
//! tables, --help, the man pages, the completions and env.example all say what the binary does.

use std::path::Path;
use std::process::{Command, Output};

use pg_backup_hooks::docgen;
use pg_backup_hooks::error::exit;

use crate::common::{bin, TestDir};

fn repo_file(rel: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(rel);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("reading {}: {}", path.display(), e))
}

fn run_ok(cmd: &mut Command) -> Output {
    let out = cmd.output().unwrap_or_else(|e| panic!("running {:?}: {}", cmd, e));
    assert!(
        out.status.success(),
        "{:?} failed ({})\nstdout:\n{}\nstderr:\n{}",
        cmd,
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn tool(args: &[&str]) -> String {
    String::from_utf8_lossy(&run_ok(Command::new(bin()).args(args)).stdout).into_owned()
}

#[test]
fn readme_tables_are_the_generated_ones() {
    let readme = repo_file("README.md");
    let have = docgen::readme_generated_part(&readme).unwrap_or_else(|e| panic!("{}", e));
    let want = docgen::readme_section();
    if have.trim() != want.trim() {
        let first = have.lines().zip(want.lines()).find(|(h, w)| h != w);
        panic!(
            "README.md's generated tables differ from src/cli.rs and src/error.rs.\n\
             Run `{}` and commit README.md.\nfirst difference:\n  README: {:?}\n  code:   {:?}",
            docgen::REGENERATE,
            first.map(|p| p.0),
            first.map(|p| p.1)
        );
    }
}

/// The README row of a subcommand's command table.
fn readme_row<'a>(readme: &'a str, sub: &str) -> &'a str {
    let prefix = format!("| `{} ", sub);
    let bare = format!("| `{}` ", sub);
    readme
        .lines()
        .find(|l| l.starts_with(&prefix) || l.starts_with(&bare))
        .unwrap_or_else(|| panic!("README's command table has no row for {}", sub))
}

#[test]
fn readme_lists_every_subcommand_flag_and_exit_code() {
    let readme = repo_file("README.md");
    let cmd = docgen::command();
    for sub in docgen::visible_subcommands(&cmd) {
        let row = readme_row(&readme, sub.get_name());
        for arg in docgen::visible_args(sub) {
            let shown = match arg.get_long() {
                Some(long) => format!("--{} ", long),
                None => arg.get_value_names().map(|n| n[0].to_string()).unwrap_or_default(),
            };
            assert!(
                row.contains(&shown) || row.contains(shown.trim_end()),
                "README's row for {} lacks {}",
                sub.get_name(),
                shown
            );
        }
    }
    let help = tool(&["--help"]);
    for c in exit::TABLE {
        assert!(readme.contains(&format!("\n| {} | ", c.code)), "README's exit-code table lacks {}", c.code);
        assert!(help.contains(&format!("\n  {} ", c.code)), "--help's exit codes lack {}:\n{}", c.code, help);
    }
    assert!(readme.contains("| 126 | wal-restore |"), "README does not say wal-restore exits 126");
}

/// The lines --help prints for one long flag: its own line and the more indented ones after it.
fn help_entry(help: &str, long: &str) -> String {
    let head = format!("--{}", long);
    let is_flag_line = |l: &str| {
        let t = l.trim_start();
        let rest = t.strip_prefix(&head).or_else(|| t.split_once(", ").and_then(|(_, r)| r.strip_prefix(&head)));
        l.len() - t.len() < 8 && rest.is_some_and(|r| r.is_empty() || r.starts_with(' '))
    };
    let mut lines = help.lines().skip_while(|l| !is_flag_line(l));
    let mut entry = lines.next().unwrap_or_else(|| panic!("--help has no {}:\n{}", head, help)).to_string();
    for l in lines.take_while(|l| l.trim().is_empty() || l.len() - l.trim_start().len() >= 8) {
        entry.push_str(l);
    }
    entry
}

#[test]
fn help_marks_exactly_the_flags_that_read_an_environment_variable() {
    let cmd = docgen::command();
    let mut checked = 0;
    for sub in docgen::visible_subcommands(&cmd) {
        let help = tool(&[sub.get_name(), "--help"]);
        for arg in docgen::visible_args(sub).filter(|a| a.get_long().is_some()) {
            let entry = help_entry(&help, arg.get_long().unwrap_or_default());
            match arg.get_env() {
                Some(env) => assert!(
                    entry.contains(&format!("[env: {}", env.to_string_lossy())),
                    "{} --help does not say --{} reads {:?}: {}",
                    sub.get_name(),
                    arg.get_long().unwrap_or_default(),
                    env,
                    entry
                ),
                None => assert!(!entry.contains("[env:"), "{} --help claims an env var: {}", sub.get_name(), entry),
            }
            checked += 1;
        }
    }
    assert!(checked > 30, "only {} flags checked", checked);
    // The ones the issue names read none, and say so by not claiming one.
    for (sub, long) in [("status", "json"), ("verify", "json"), ("exclude-list", "format")] {
        assert!(!help_entry(&tool(&[sub, "--help"]), long).contains("[env:"), "{} --{}", sub, long);
    }
}

#[test]
fn environment_variables_do_what_help_says() {
    let dir = TestDir::new();
    let pgdata = dir.mkdir("data");
    let run = dir.path().join("run");
    std::fs::create_dir(&run).expect("creating a run directory");
    // Read: exclude-list's --pgdata from PGBH_PGDATA gives absolute paths under it.
    let out = run_ok(Command::new(bin()).arg("exclude-list").env("PGBH_PGDATA", &pgdata));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.lines().all(|l| l.starts_with(&pgdata.display().to_string())), "{}", text);
    // Not read: PGBH_JSON (restore-prep's) leaves status's output plain.
    let out = run_ok(Command::new(bin()).args(["status", "--run-dir"]).arg(&run).env("PGBH_JSON", "true"));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(serde_json::from_str::<serde_json::Value>(&text).is_err(), "status printed JSON: {}", text);
    assert!(text.contains("no backups in progress"), "{}", text);
    // A connection string or a restore command from the environment may hold a secret: --help
    // names the variable, never its value.
    for (sub, env) in [
        ("pre", "PGBH_NODES"),
        ("pre", "PGBH_NODE_PRIMARIES"),
        ("restore-prep", "PGBH_RESTORE_COMMAND"),
        ("restore-check", "PGBH_RESTORE_NODES"),
    ] {
        let out = run_ok(Command::new(bin()).args([sub, "--help"]).env(env, "a=host=x password=hunter2"));
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(text.contains(env) && !text.contains("hunter2"), "{}", text);
    }
}

#[test]
fn man_pages_render_for_the_tool_and_every_subcommand() {
    let dir = TestDir::new();
    let man_dir = dir.path().join("man1");
    tool(&["__gen", "man", man_dir.to_str().unwrap_or_default()]);
    let cmd = docgen::command();
    let mut pages = vec![("pg-backup-hooks".to_string(), "pg-backup-hooks".to_string())];
    for sub in docgen::visible_subcommands(&cmd) {
        pages.push((format!("pg-backup-hooks-{}", sub.get_name()), sub.get_name().to_string()));
    }
    for (page, _) in &pages {
        let file = man_dir.join(format!("{}.1", page));
        let out = Command::new("man")
            .args(["--warnings", "-E", "UTF-8", "-P", "cat", "-l"])
            .arg(&file)
            .env("MANWIDTH", "200")
            .env("LC_ALL", "C.UTF-8")
            .output()
            .unwrap_or_else(|e| panic!("running man (install man-db): {}", e));
        let text = String::from_utf8_lossy(&out.stdout);
        let warnings = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success() && warnings.trim().is_empty(), "man {}: {}", file.display(), warnings);
        assert!(text.contains("NAME") && text.contains(page.as_str()) && text.contains("EXIT STATUS"), "{}", text);
        if page == "pg-backup-hooks-restore-prep" {
            for needle in ["--archive-mode", "PGBH_ARCHIVE_MODE", "--tablespace-map", "--restore-command"] {
                assert!(text.contains(needle), "restore-prep's man page lacks {}:\n{}", needle, text);
            }
        }
    }
    // The main page names each subcommand's page (in roff, hyphens are `\-`) and no hidden one.
    let top = std::fs::read_to_string(man_dir.join("pg-backup-hooks.1")).expect("reading pg-backup-hooks.1");
    for (page, _) in &pages[1..] {
        let roff_name = format!("{}(1)", page.replace('-', "\\-"));
        assert!(top.contains(&roff_name), "pg-backup-hooks(1) does not name {}", page);
    }
    assert!(top.contains("126") && !top.contains("helper(1)") && !top.contains("__gen"), "{}", top);
}

/// What bash completes for `words` (the last one being completed), with the script `__gen` prints.
fn bash_complete(script: &Path, words: &[&str]) -> Vec<String> {
    let driver = r#"source "$1"; shift
fn=$(complete -p pg-backup-hooks | sed -E 's/.* -F ([^ ]+) .*/\1/')
COMP_WORDS=("$@"); COMP_CWORD=$(( $# - 1 )); COMP_LINE="$*"; COMP_POINT=${#COMP_LINE}
"$fn" "$1" "${COMP_WORDS[COMP_CWORD]}" "${COMP_WORDS[COMP_CWORD-1]}"
printf '%s\n' "${COMPREPLY[@]}""#;
    let out = run_ok(Command::new("bash").args(["-c", driver, "bash"]).arg(script).args(words));
    String::from_utf8_lossy(&out.stdout).lines().filter(|l| !l.is_empty()).map(str::to_string).collect()
}

#[test]
fn bash_completion_completes_subcommands_flags_and_values() {
    let dir = TestDir::new();
    let script = dir.path().join("pg-backup-hooks");
    std::fs::write(&script, tool(&["__gen", "completion", "bash"])).expect("writing the completion script");
    assert_eq!(bash_complete(&script, &["pg-backup-hooks", "restore-p"]), ["restore-prep"]);
    let flags = bash_complete(&script, &["pg-backup-hooks", "restore-prep", "--arch"]);
    assert_eq!(flags, ["--archive-dir", "--archive-mode"]);
    let formats = bash_complete(&script, &["pg-backup-hooks", "exclude-list", "--format", ""]);
    assert_eq!(formats, ["plain", "bacula", "tar", "rsync"]);
    let all = bash_complete(&script, &["pg-backup-hooks", ""]);
    let cmd = docgen::command();
    for sub in docgen::visible_subcommands(&cmd) {
        assert!(all.iter().any(|w| w == sub.get_name()), "{} not completed: {:?}", sub.get_name(), all);
    }
    assert!(!all.iter().any(|w| w == "helper" || w == "__gen"), "hidden subcommands completed: {:?}", all);
    let pre = bash_complete(&script, &["pg-backup-hooks", "pre", "--"]);
    assert!(pre.contains(&"--discover-role".to_string()) && !pre.contains(&"--heartbeat".to_string()), "{:?}", pre);
}

#[test]
fn zsh_and_fish_completions_name_every_visible_subcommand_and_no_hidden_one() {
    let cmd = docgen::command();
    for shell in ["zsh", "fish"] {
        let script = tool(&["__gen", "completion", shell]);
        for sub in docgen::visible_subcommands(&cmd) {
            assert!(script.contains(sub.get_name()), "{} completion lacks {}", shell, sub.get_name());
        }
        assert!(!script.contains("__gen") && !script.contains("heartbeat"), "{} completes hidden things", shell);
    }
}

#[test]
fn env_example_lists_every_variable_and_is_valid_shell() {
    let dir = TestDir::new();
    let text = tool(&["__gen", "env-example"]);
    for env in docgen::env_uses(&docgen::command()).keys() {
        assert!(text.contains(&format!("\n#{}=", env)), "env.example lacks {}", env);
    }
    // Uncommented, its settings are sh syntax and reach the binary through the environment.
    let pgdata = dir.mkdir("data");
    let setting = format!("PGBH_PGDATA='{}'", pgdata.display());
    let live: String =
        text.lines().map(|l| format!("{}\n", if l.starts_with("#PGBH_PGDATA=") { &setting } else { l })).collect();
    let file = dir.path().join("env");
    std::fs::write(&file, live).expect("writing env");
    let out = run_ok(
        Command::new("sh").args(["-c", "set -a; . \"$1\"; exec \"$2\" exclude-list", "sh"]).arg(&file).arg(bin()),
    );
    let listed = String::from_utf8_lossy(&out.stdout);
    let under = format!("{}/", pgdata.display());
    assert!(!listed.is_empty() && listed.lines().all(|l| l.starts_with(&under)), "{}", listed);
}

fn mode_and_owner(path: &Path) -> (u32, u32) {
    use std::os::unix::fs::MetadataExt;
    let meta = std::fs::symlink_metadata(path).unwrap_or_else(|e| panic!("{}: {}", path.display(), e));
    assert!(meta.is_dir(), "{} is not a directory", path.display());
    (meta.mode() & 0o7777, meta.uid())
}

/// The package's postinst, run for `configure` into a scratch root (DPKG_ROOT) with the given PATH.
fn run_postinst(root: &Path, path: &std::ffi::OsStr) {
    let tmpfiles = root.join("usr/lib/tmpfiles.d");
    std::fs::create_dir_all(&tmpfiles).expect("creating usr/lib/tmpfiles.d");
    std::fs::write(tmpfiles.join("pg-backup-hooks.conf"), repo_file("pkg/deb/tmpfiles.conf")).expect("tmpfiles");
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("pkg/deb/postinst");
    run_ok(Command::new("/bin/sh").arg(script).arg("configure").env("DPKG_ROOT", root).env("PATH", path));
    let uid = nix::unistd::geteuid().as_raw();
    for dir in ["run/pg-backup-hooks", "var/lib/pg-backup-hooks/sidecar"] {
        let (mode, owner) = mode_and_owner(&root.join(dir));
        assert!(
            mode == 0o700 && owner == uid,
            "{} after postinst: mode {:o} owner {}, want 700 {}",
            dir,
            mode,
            owner,
            uid
        );
    }
}

#[test]
fn postinst_creates_the_run_and_sidecar_directories_0700_with_or_without_systemd() {
    let dir = TestDir::new();
    // Without systemd-tmpfiles on PATH (a container): postinst makes them itself.
    let bare = dir.path().join("bare-bin");
    std::fs::create_dir(&bare).expect("creating bare-bin");
    std::os::unix::fs::symlink("/bin/mkdir", bare.join("mkdir")).expect("linking mkdir");
    run_postinst(&dir.path().join("root-without"), bare.as_os_str());
    // With it (Debian with systemd): the tmpfiles.d entry does, as it does at boot.
    if Path::new("/usr/bin/systemd-tmpfiles").exists() || Path::new("/bin/systemd-tmpfiles").exists() {
        run_postinst(&dir.path().join("root-with"), std::ffi::OsStr::new("/usr/sbin:/usr/bin:/sbin:/bin"));
    } else {
        crate::common::skip("the systemd-tmpfiles half: systemd-tmpfiles is not installed");
    }
}

#[test]
fn packaging_scripts_are_shellcheck_clean() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let scripts = ["scripts/build-deb.sh", ".ci/check-deb.sh", "pkg/deb/postinst"];
    match Command::new("shellcheck").args(scripts.iter().map(|s| root.join(s))).output() {
        Ok(out) => assert!(out.status.success(), "shellcheck:\n{}", String::from_utf8_lossy(&out.stdout)),
        Err(_) if std::env::var_os("PGBH_REQUIRE_BACULA").is_none() => {
            crate::common::skip("shellcheck is not installed (apt-get install shellcheck)")
        }
        Err(e) => panic!("shellcheck: {}", e),
    }
}
