//! `pg-backup-hooks hook PRODUCT EVENT [ARGS...]`: the backup products' adapters.
//!
//! Each product is one file holding a [`Product`]: its name, the settings it reads, the
//! program names it answers to (NetBackup runs files named bpstart_notify/bpend_notify),
//! default time limits below the product's own script timeout, and a function that turns
//! the product's event and arguments into pre, post or abort. This module does the part
//! every product shares: the environment file, the run directory, ids kept between pre
//! and post, and running the commands in-process with an outcome line for the job log.
//! Adding a product: one file here and one line in [`PRODUCTS`].

pub mod amanda;
pub mod bacula;
pub mod borgmatic;
pub mod commvault;
pub mod envfile;
pub mod generic;
pub mod netbackup;
pub mod patroni_gate;
pub mod state;
pub mod veeam;

use std::ffi::OsString;

use clap::Parser;

use crate::cli::{Cli, Command, HookArgs};
use crate::error::{exit, Error, Result};
use crate::rundir::RunDir;

/// The events of a product that runs us as `hook PRODUCT pre|post|abort` (borgmatic, Commvault).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum PrePostAbort {
    Pre,
    Post,
    Abort,
}

impl PrePostAbort {
    pub(crate) fn parse(event: &str) -> Option<PrePostAbort> {
        match event {
            "pre" => Some(PrePostAbort::Pre),
            "post" => Some(PrePostAbort::Post),
            "abort" => Some(PrePostAbort::Abort),
            _ => None,
        }
    }
}

/// Finds the environment file in a product's arguments.
pub type EnvFileArg = fn(&[String]) -> Option<String>;

pub struct Product {
    pub name: &'static str,
    /// Who calls it and its events with their arguments, for --help.
    pub summary: &'static str,
    /// Settings (environment file keys) this product's adapter reads.
    pub keys: &'static [&'static str],
    /// Program names (prefixes) that mean `hook NAME EVENT`: (prefix, event).
    pub argv0: &'static [(&'static str, &'static str)],
    /// The product keeps only stdout in its job log (Bacula): send stderr there too.
    pub stderr_to_stdout: bool,
    /// Defaults for PGBH_START_TIMEOUT and PGBH_ARCHIVE_TIMEOUT, below the product's own
    /// time limit for a script, used when the environment file sets none.
    pub timeouts: Option<(u64, u64)>,
    /// The product keeps stderr for errors only (Amanda fails a dump on it): progress lines
    /// go to stdout, and only the error line to stderr.
    pub progress_to_stdout: bool,
    /// The environment file named in the product's own arguments (Amanda's `env-file`
    /// property), read instead of PGBH_ENV_FILE's.
    pub env_file_arg: Option<EnvFileArg>,
    /// Events answered with a fixed text on stdout and exit 0, before the environment file
    /// and the run directory (Amanda's `support` query comes without the `env-file` property).
    pub fixed_answers: &'static [(&'static str, &'static str)],
    pub run: fn(&Ctx, &str, &[String]) -> Result<i32>,
}

pub const PRODUCTS: &[&Product] = &[
    &bacula::PRODUCT,
    &commvault::PRODUCT,
    &netbackup::PRODUCT,
    &veeam::PRODUCT,
    &generic::PRODUCT,
    &amanda::PRODUCT,
    &borgmatic::PRODUCT,
];

/// The PRODUCT argument's values, each with its summary (shown by --help and in man pages).
pub fn product_values() -> clap::builder::PossibleValuesParser {
    clap::builder::PossibleValuesParser::new(
        PRODUCTS.iter().map(|p| clap::builder::PossibleValue::new(p.name).help(p.summary)),
    )
}

/// The whole command line, with the PRODUCT argument's values: cli.rs defines every flag but
/// cannot name the products, which live here, above it (imports point down). Order is kept.
pub fn command() -> clap::Command {
    use clap::CommandFactory;
    let product = |a: clap::Arg| if a.get_id() == "product" { a.value_parser(product_values()) } else { a };
    Cli::command().mut_subcommands(|s| if s.get_name() == "hook" { s.mut_args(product) } else { s })
}

fn product(name: &str) -> Result<&'static Product> {
    PRODUCTS.iter().copied().find(|p| p.name == name).ok_or_else(|| {
        let names: Vec<&str> = PRODUCTS.iter().map(|p| p.name).collect();
        Error::usage(format!("unknown product {:?}: use one of {}", name, names.join(", ")))
    })
}

/// A program started under a product's script name (a link named bpstart_notify.POLICY to
/// the binary) runs as `hook PRODUCT EVENT ARGS...`.
pub fn rewrite_argv0(args: Vec<OsString>) -> Vec<OsString> {
    let Some(first) = args.first() else { return args };
    let name = std::path::Path::new(first).file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    for p in PRODUCTS {
        if let Some((_, event)) = p.argv0.iter().find(|(prefix, _)| name.starts_with(prefix)) {
            let mut out: Vec<OsString> = vec![first.clone(), "hook".into(), p.name.into(), (*event).into()];
            out.extend(args.into_iter().skip(1));
            return out;
        }
    }
    args
}

/// The `hook` subcommand.
pub fn run(a: HookArgs) -> Result<i32> {
    let p = product(&a.product)?;
    if let Some((_, text)) = p.fixed_answers.iter().find(|(event, _)| *event == a.event) {
        print!("{}", text);
        return Ok(exit::OK);
    }
    if p.stderr_to_stdout {
        let _ = nix::unistd::dup2(1, 2);
    }
    let result = (|| {
        if let Some(path) = p.env_file_arg.and_then(|f| f(&a.args)) {
            std::env::set_var("PGBH_ENV_FILE", path);
        }
        envfile::load_default(&known_keys())?;
        if let Some((start, archive)) = p.timeouts {
            default_setting("PGBH_START_TIMEOUT", start);
            default_setting("PGBH_ARCHIVE_TIMEOUT", archive);
        }
        let run = RunDir::open(setting("PGBH_RUN_DIR").map(Into::into), true)?;
        let ctx = Ctx { product: p.name, run, progress_to_stdout: p.progress_to_stdout, non_full: Default::default() };
        (p.run)(&ctx, &a.event, &a.args)
    })();
    match result {
        Ok(code) => Ok(code),
        Err(e) => {
            say(p.name, &e.msg);
            Ok(e.code)
        }
    }
}

/// Every key an environment file may set: each command's flag variables, each product's
/// settings, PGBH_BIN (read by the hooks/ shims) and libpq's connection variables.
fn known_keys() -> Vec<String> {
    use clap::CommandFactory;
    let cmd = Cli::command();
    let mut keys: Vec<String> = cmd
        .get_subcommands()
        .flat_map(|s| s.get_arguments())
        .filter_map(|a| a.get_env().map(|e| e.to_string_lossy().into_owned()))
        .collect();
    keys.extend(PRODUCTS.iter().flat_map(|p| p.keys.iter()).map(|k| k.to_string()));
    keys.push("PGBH_BIN".into());
    keys.extend(patroni_gate::KEYS.iter().chain(crate::pg::patroni::ENV_KEYS).map(|k| k.to_string()));
    keys.extend(envfile::LIBPQ_KEYS.iter().map(|k| k.to_string()));
    keys.sort();
    keys.dedup();
    keys
}

/// A setting from the environment (after the environment file was applied); empty = unset.
pub fn setting(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.trim().is_empty())
}

fn default_setting(name: &str, value: u64) {
    if setting(name).is_none() {
        std::env::set_var(name, value.to_string());
    }
}

/// A yes/no setting: 1/0, yes/no, on/off, true/false (clap's boolish words).
pub fn setting_bool(name: &str, default: bool) -> Result<bool> {
    let Some(v) = setting(name) else { return Ok(default) };
    match v.trim().to_ascii_lowercase().as_str() {
        "1" | "y" | "yes" | "on" | "t" | "true" => Ok(true),
        "0" | "n" | "no" | "off" | "f" | "false" => Ok(false),
        _ => Err(Error::usage(format!("{}={:?}: use yes or no (also 1/0, on/off, true/false)", name, v))),
    }
}

/// What a product's job level means for the copy it makes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LevelKind {
    /// Every file is copied (Bacula Full, Amanda 0, Commvault 1, NetBackup FULL/UBAK).
    Full,
    /// Only files changed since an earlier copy (Bacula Incremental/Differential, Amanda 1+,
    /// Commvault 2, NetBackup INCR/CINC): restorable when restore-prep proves the restored
    /// chain against the inventory pre and post record.
    Incremental,
    /// A level this adapter does not know (Bacula VirtualFull, Base, a new Commvault value).
    Other,
}

/// How pre runs for a level that was taken.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Take {
    /// A full level: pre as always.
    Full,
    /// A non-full level: pre with --require-inventory.
    NeedsInventory { level: String },
}

/// Which levels are taken. Full levels always (PGBH_ALLOW_LEVELS is not consulted for them).
/// A non-full level needs an inventory of every node, so pre runs with --require-inventory:
/// restore-prep can prove the restored chain (no level skipped, no change missed) only
/// against it. PGBH_ALLOW_LEVELS, when set, restricts: only the levels it names (a comma
/// list, case-insensitive, e.g. `Incremental` or `1,2`; `Full` alone takes full levels only)
/// are taken. A level of [`LevelKind::Other`] is taken only when PGBH_ALLOW_LEVELS names it.
pub fn decide_level(level: &str, kind: LevelKind, allowed: Option<&str>, how_to_fix: &str) -> Result<Take> {
    let named = |list: &str| list.split(',').any(|l| l.trim().eq_ignore_ascii_case(level));
    match (kind, allowed) {
        (LevelKind::Full, _) => Ok(Take::Full),
        (LevelKind::Incremental, None) => Ok(Take::NeedsInventory { level: level.to_string() }),
        (_, Some(list)) if named(list) => Ok(Take::NeedsInventory { level: level.to_string() }),
        (LevelKind::Incremental, Some(list)) => Err(Error::usage(format!(
            "job level {} refused: PGBH_ALLOW_LEVELS={} does not name it. {}, or add {} to PGBH_ALLOW_LEVELS in the environment file",
            level, list, how_to_fix, level
        ))),
        (LevelKind::Other, _) => Err(Error::usage(format!(
            "job level {} refused: this adapter does not know what a {} copy holds, so it cannot say that restore-prep's proof covers it. {}, or name it in PGBH_ALLOW_LEVELS in the environment file if a {} copy holds every file changed since the level it builds on (pre then requires an inventory)",
            level, level, how_to_fix, level
        ))),
    }
}

/// One line in the job log, naming the product.
fn say(product: &str, msg: &str) {
    eprintln!("pg-backup-hooks {}: {}", product, msg);
}

/// What a product's adapter works with.
pub struct Ctx {
    pub product: &'static str,
    run: RunDir,
    progress_to_stdout: bool,
    /// The non-full level this job was taken at, with what to do instead: pre then requires
    /// an inventory.
    non_full: std::cell::RefCell<Option<(String, String)>>,
}

impl Ctx {
    pub fn say(&self, msg: &str) {
        if self.progress_to_stdout {
            println!("pg-backup-hooks {}: {}", self.product, msg);
        } else {
            say(self.product, msg)
        }
    }

    /// The run directory (opened and checked: ours, not writable by group or others).
    pub fn run_dir(&self) -> &RunDir {
        &self.run
    }

    /// Takes the job's level or refuses it ([`decide_level`] with PGBH_ALLOW_LEVELS); a
    /// non-full level makes the next [`Ctx::pre`] require an inventory.
    pub fn take_level(&self, level: &str, kind: LevelKind, how_to_fix: &str) -> Result<()> {
        let allowed = setting("PGBH_ALLOW_LEVELS");
        match decide_level(level, kind, allowed.as_deref(), how_to_fix)? {
            Take::Full => *self.non_full.borrow_mut() = None,
            Take::NeedsInventory { level } => {
                self.say(&format!(
                    "job level {}: pre records an inventory of every node and requires it (--require-inventory), so that restore-prep can prove the restored chain",
                    level
                ));
                *self.non_full.borrow_mut() = Some((level, how_to_fix.to_string()));
            }
        }
        Ok(())
    }

    /// pre; at a non-full level with --require-inventory, and a failure says why it matters.
    pub fn pre(&self, id: &str) -> i32 {
        let non_full = self.non_full.borrow().clone();
        let Some((level, how_to_fix)) = non_full else {
            return self.command("pre", &["--backup-id", id]);
        };
        let rc = self.command("pre", &["--backup-id", id, "--require-inventory"]);
        if rc != exit::OK {
            self.say(&format!(
                "job level {} refused: the copy of a non-full level can only be restored if restore-prep can prove it against the inventory pre records. If pre's line above says a node has no inventory source, run the hooks on the database host (the data directory is then read from the file system) or grant the SQL functions docs/security.md lists; or: {}",
                level, how_to_fix
            ));
        }
        rc
    }

    pub fn post(&self, id: &str) -> i32 {
        self.command("post", &["--backup-id", id])
    }

    pub fn abort(&self, id: &str) -> i32 {
        self.command("abort", &["--backup-id", id])
    }

    pub fn status(&self) -> i32 {
        self.command("status", &[])
    }

    /// Run a command in this process, with its flags' settings from the environment, and
    /// say how it ended.
    fn command(&self, name: &str, args: &[&str]) -> i32 {
        if let Some(code) = self.patroni_gate(name, args) {
            return code;
        }
        if name != "status" {
            self.say(&format!("running: {} {}", name, args.join(" ")));
        }
        let argv = std::iter::once("pg-backup-hooks").chain(std::iter::once(name)).chain(args.iter().copied());
        let result = match Cli::try_parse_from(argv) {
            Ok(cli) => match cli.command {
                Command::Pre(a) => crate::commands::pre::run(a),
                Command::Post(a) => crate::commands::post::run(a),
                Command::Abort(a) => crate::commands::abort::run(a),
                Command::Status(a) => crate::commands::status::run(a),
                _ => Err(Error::usage(format!("{} is not a hook command", name))),
            },
            Err(e) => {
                Err(Error::usage(format!("{} (check the environment file)", crate::error::one_line(&e.to_string()))))
            }
        };
        let code = crate::error::report(result);
        if name == "status" {
            return code;
        }
        match code {
            exit::OK => self.say(&format!("{} succeeded", name)),
            exit::NOT_RESTORABLE_YET | exit::NO_BACKUP => {
                self.say(&format!("{}: exit {}: {}", name, code, exit::meaning(code)))
            }
            _ => self.say(&format!("{} failed with exit code {}", name, code)),
        }
        code
    }

    /// PGBH_PATRONI_ONLY_ON: Some(exit code) when this host does not take (or did not take)
    /// this backup, or cannot tell; None to run the command.
    fn patroni_gate(&self, name: &str, args: &[&str]) -> Option<i32> {
        let id = args.iter().position(|a| *a == "--backup-id").and_then(|i| args.get(i + 1))?;
        match name {
            "pre" => match patroni_gate::at_pre(&self.run, id) {
                Ok(None) => None,
                Ok(Some(patroni_gate::Gate::Run(why))) => {
                    self.say(&why);
                    None
                }
                Ok(Some(patroni_gate::Gate::Skip(why))) => {
                    self.say(&why);
                    Some(exit::OK)
                }
                Err(e) => {
                    self.say(&format!("pre failed: {}", e.msg));
                    Some(e.code)
                }
            },
            "post" | "abort" => patroni_gate::at_finish(&self.run, id, name == "post").map(|why| {
                self.say(&format!("{}: nothing to do ({})", name, why));
                exit::OK
            }),
            _ => None,
        }
    }

    /// pre under a new id kept under `key` for post; a kept id whose post never came is
    /// aborted first (the products that need this run one job per key at a time).
    pub fn pre_invented(&self, key: &str, prefix: &str) -> Result<i32> {
        let run = self.run_dir();
        let _lock = state::lock(run, key)?;
        if let Some(old) = state::kept_id(run, key)? {
            self.say(&format!("backup {} never got its post: aborting it first", old));
            self.abort(&old);
            state::forget_id(run, key);
        }
        let id = state::new_id(prefix)?;
        state::keep_id(run, key, &id)?;
        let rc = self.pre(&id);
        if rc != exit::OK {
            state::forget_id(run, key);
        }
        Ok(rc)
    }

    /// post or abort of the id kept under `key`, forgetting it once the backup is over.
    pub fn finish_kept(&self, key: &str, id: &str, post: bool) -> i32 {
        let rc = if post { self.post(id) } else { self.abort(id) };
        if rc == exit::OK || rc == exit::NO_BACKUP {
            state::forget_id(self.run_dir(), key);
        }
        rc
    }
}

#[cfg(test)]
mod tests {
    use super::{decide_level, LevelKind, Take};

    fn needs(level: &str) -> Take {
        Take::NeedsInventory { level: level.to_string() }
    }

    #[test]
    fn full_levels_are_taken_as_always_whatever_pgbh_allow_levels_says() {
        for allowed in [None, Some("Incremental"), Some("Full"), Some("1")] {
            assert_eq!(decide_level("Full", LevelKind::Full, allowed, "fix").unwrap(), Take::Full);
        }
    }

    #[test]
    fn incrementals_need_an_inventory_and_pgbh_allow_levels_restricts_them() {
        assert_eq!(decide_level("Incremental", LevelKind::Incremental, None, "fix").unwrap(), needs("Incremental"));
        let only_inc = Some("incremental, 1");
        assert_eq!(decide_level("Incremental", LevelKind::Incremental, only_inc, "fix").unwrap(), needs("Incremental"));
        assert_eq!(decide_level("1", LevelKind::Incremental, only_inc, "fix").unwrap(), needs("1"));
        let e = decide_level("Differential", LevelKind::Incremental, only_inc, "Set Level = Full").unwrap_err();
        assert!(
            e.msg.contains("PGBH_ALLOW_LEVELS=incremental, 1 does not name it") && e.msg.contains("Set Level = Full"),
            "{}",
            e.msg
        );
        assert!(decide_level("Incremental", LevelKind::Incremental, Some("Full"), "fix").is_err());
    }

    #[test]
    fn unknown_levels_are_taken_only_when_named_and_then_need_an_inventory() {
        let e = decide_level("VirtualFull", LevelKind::Other, None, "Set Level = Full").unwrap_err();
        assert!(
            e.msg.contains("does not know what a VirtualFull copy holds") && e.msg.contains("PGBH_ALLOW_LEVELS"),
            "{}",
            e.msg
        );
        assert!(decide_level("4", LevelKind::Other, Some("2"), "fix").is_err());
        assert_eq!(decide_level("4", LevelKind::Other, Some("2,4"), "fix").unwrap(), needs("4"));
    }
}

#[cfg(test)]
mod command_tests {
    use super::*;

    /// hook::command is cli's command with the PRODUCT values added, nothing moved: the same
    /// subcommands in the same order, hook's arguments in the same order, an unknown product
    /// refused as a usage error.
    #[test]
    fn the_command_adds_the_product_values_and_keeps_the_order() {
        use clap::CommandFactory;
        let names = |c: &clap::Command| c.get_subcommands().map(|s| s.get_name().to_string()).collect::<Vec<_>>();
        let (plain, full) = (Cli::command(), command());
        assert_eq!(names(&plain), names(&full));
        let hook = full.find_subcommand("hook").expect("hook");
        let args: Vec<&str> = hook.get_positionals().map(|a| a.get_id().as_str()).collect();
        assert_eq!(args, ["product", "event", "args"]);
        let values: Vec<String> = hook
            .get_positionals()
            .next()
            .expect("product")
            .get_possible_values()
            .iter()
            .map(|v| v.get_name().to_string())
            .collect();
        assert_eq!(values, PRODUCTS.iter().map(|p| p.name.to_string()).collect::<Vec<_>>());
        let e = command().try_get_matches_from(["pg-backup-hooks", "hook", "nosuch", "pre"]).unwrap_err();
        assert_eq!(e.kind(), clap::error::ErrorKind::InvalidValue);
    }
}
