//! The real thing, twice: Debian's borgmatic 1.7.7 (hooks `before_backup` / `after_backup` /
//! `on_error`) and borgmatic 2.x from PyPI (`commands:` with `before: action` / `after: action`,
//! `when: [create]`, `states: [finish]` / `[fail]`), both with Debian's borg 1.2. A
//! configuration directory holds the data configuration (the cluster's data directory, our
//! hooks, the exclude list) and, sorted after it, the sidecar configuration; one
//! `borgmatic -c DIR create` backs up a live cluster and then the sidecar. The cluster is
//! destroyed, `borg extract` brings both archives back, restore-prep puts the copy together and
//! the server recovers with every committed row. Failures: a failing pre fails the run and
//! leaves nothing held; a create that fails after pre runs the abort hook.
//!
//! borgmatic passes no run id: the hook invents one at pre and recalls it at post/abort, keyed
//! by configuration file and repository (see docs/hooks/borgmatic.md).
//!
//! Skips (and passes) when borgmatic is missing, unless PGBH_REQUIRE_BORGMATIC is set (CI sets
//! it; .ci/install-borgmatic.sh installs both generations).

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::common;
use crate::common::tool::Tool;
use crate::common::{roundtrip, Cluster, ClusterOpts, TestDir};
use crate::products;
use crate::products::Inserter;

const BORG: &str = "/usr/bin/borg";

#[derive(Clone, Copy, PartialEq, Debug)]
enum Generation {
    /// Debian 12's borgmatic 1.7.7: sectioned configuration, `hooks:` before_backup etc.
    Debian17,
    /// borgmatic 2.x in its own virtualenv: flat configuration, `commands:`.
    V2,
}

impl Generation {
    fn program(self) -> PathBuf {
        match self {
            Generation::Debian17 => PathBuf::from("/usr/bin/borgmatic"),
            Generation::V2 => {
                let venv = std::env::var_os("PGBH_BORGMATIC2").unwrap_or_else(|| "/opt/pgbh-borgmatic2".into());
                PathBuf::from(venv).join("bin/borgmatic")
            }
        }
    }

    fn available(self) -> bool {
        let program = self.program();
        let programs = [program.to_str().expect("utf-8 path"), BORG];
        products::available(
            &format!("borgmatic ({:?})", self),
            &programs,
            "PGBH_REQUIRE_BORGMATIC",
            ".ci/install-borgmatic.sh",
        )
    }
}

/// What the configurations call: `pg-backup-hooks hook borgmatic EVENT CONFIG REPOSITORY`
/// (docs/hooks/borgmatic.md), through a one-line script that names the test's environment
/// file (an admin's hook reads /etc/pg-backup-hooks/env without it).
fn hook_script(env_file: &Path) -> String {
    format!(
        "#!/bin/sh\nPGBH_ENV_FILE='{}' exec '{}' hook borgmatic \"$@\"\n",
        env_file.display(),
        common::bin().display()
    )
}

/// What one configuration file backs up: `sources`, as archives named `prefix-<time>`, without
/// `excludes`, with our `hook` around `create`; with `read_special`, borg reads FIFOs (and
/// blocks on one nobody writes to).
#[derive(Default)]
struct Config<'a> {
    sources: Vec<&'a Path>,
    prefix: &'a str,
    excludes: Vec<PathBuf>,
    hook: Option<&'a Path>,
    read_special: bool,
}

/// A private borgmatic setup: the configuration directory, one borg repository, and a HOME of
/// its own so that borg's and borgmatic's caches and state stay in the test's directory.
struct Borgmatic {
    generation: Generation,
    root: PathBuf,
    confdir: PathBuf,
    repo: PathBuf,
    hook: PathBuf,
}

impl Borgmatic {
    /// `10-pgdata.yaml`: `datadir` with the exclude list and our hooks (`hook` is the script;
    /// `repo` the data repository, which may not exist to make create fail); `20-pgsidecar.yaml`:
    /// the sidecar directory into the same repository.
    fn new(dir: &TestDir, generation: Generation, t: &Tool, nodes: &str, datadir: &Path) -> Borgmatic {
        let root = dir.path().join("borgmatic");
        let confdir = root.join("borgmatic.d");
        for d in [&root, &confdir, &root.join("home"), &root.join("state")] {
            fs::create_dir_all(d).expect("mkdir");
        }
        let env_file = root.join("pgbh.env");
        products::write_env(&env_file, &t.sidecar, &t.run_dir, nodes);
        let hook = root.join("pgbh-hook");
        fs::write(&hook, hook_script(&env_file)).expect("writing the hook script");
        fs::set_permissions(&hook, fs::Permissions::from_mode(0o755)).expect("chmod hook");
        let b = Borgmatic { generation, confdir, repo: root.join("repo"), hook: hook.clone(), root };
        let excludes = products::exclude_list("plain", None).iter().map(|p| datadir.join(p)).collect::<Vec<_>>();
        let data = b.config(&Config {
            sources: vec![datadir],
            prefix: "pgdata",
            excludes,
            hook: Some(&hook),
            ..Config::default()
        });
        let side = b.config(&Config { sources: vec![&t.sidecar], prefix: "pgsidecar", ..Config::default() });
        fs::write(b.confdir.join("10-pgdata.yaml"), data).expect("writing config");
        fs::write(b.confdir.join("20-pgsidecar.yaml"), side).expect("writing config");
        let (code, out) = b.run(&[
            "-c",
            &b.confdir.join("10-pgdata.yaml").display().to_string(),
            b.init_action(),
            "--encryption",
            "none",
        ]);
        assert_eq!(code, 0, "creating the repository failed:\n{}", out);
        b
    }

    fn init_action(&self) -> &'static str {
        match self.generation {
            Generation::Debian17 => "rcreate",
            Generation::V2 => "repo-create",
        }
    }

    /// `config` in this generation's format, into this setup's repository: borgmatic 2 takes
    /// flat keys and `commands:`, 1.7 the same keys one level down in `location:`, the archive
    /// name in `storage:` and `hooks:`.
    fn config(&self, config: &Config) -> String {
        let list = |items: &[&Path], indent: &str| {
            items.iter().map(|i| format!("{indent}- '{}'\n", i.display())).collect::<String>()
        };
        let (section, key, item) = match self.generation {
            Generation::V2 => ("", "", "  "),
            Generation::Debian17 => ("location:\n", "  ", "    "),
        };
        let (repo, prefix) = (self.repo.display(), config.prefix);
        let name = format!("archive_name_format: '{prefix}-{{now:%Y-%m-%dT%H:%M:%S.%f}}'\n");
        let mut s = format!("{section}{key}source_directories:\n{}", list(&config.sources, item));
        match self.generation {
            Generation::V2 => s += &format!("repositories:\n  - path: '{repo}'\n    label: {prefix}\n{name}"),
            Generation::Debian17 => s += &format!("  repositories:\n    - '{repo}'\n"),
        }
        if !config.excludes.is_empty() {
            let excludes: Vec<&Path> = config.excludes.iter().map(PathBuf::as_path).collect();
            s += &format!("{key}exclude_patterns:\n{}", list(&excludes, item));
        }
        if config.read_special {
            s += &format!("{key}read_special: true\n");
        }
        if self.generation == Generation::Debian17 {
            s += &format!("storage:\n  {name}");
        }
        if let Some(hook) = config.hook {
            s += &self.hooks(hook);
        }
        s
    }

    /// Our hook around `create`: pre before it, post after it, abort when it failed.
    fn hooks(&self, hook: &Path) -> String {
        let h = hook.display();
        match self.generation {
            // borgmatic 2 shell-quotes what it puts in for {variables}.
            Generation::V2 => format!(
                "commands:\n  - before: action\n    when: [create]\n    run: [\"{h} pre {{configuration_filename}} {{repository}}\"]\n  - after: action\n    when: [create]\n    states: [finish]\n    run: [\"{h} post {{configuration_filename}} {{repository}}\"]\n  - after: action\n    when: [create]\n    states: [fail]\n    run: [\"{h} abort {{configuration_filename}} {{repository}}\"]\n"
            ),
            // borgmatic 1.7 puts {variables} in as they are: quote them here.
            Generation::Debian17 => format!(
                "hooks:\n  before_backup:\n    - \"{h} pre '{{configuration_filename}}' '{{repository}}'\"\n  after_backup:\n    - \"{h} post '{{configuration_filename}}' '{{repository}}'\"\n  on_error:\n    - \"{h} abort '{{configuration_filename}}' '{{repository}}'\"\n"
            ),
        }
    }

    /// Points the data configuration at another repository (one that does not exist makes
    /// borg create fail after pre).
    fn set_data_repo(&self, repo: &Path) {
        let p = self.confdir.join("10-pgdata.yaml");
        let text = fs::read_to_string(&p).expect("config");
        fs::write(&p, text.replace(&format!("'{}'", self.repo.display()), &format!("'{}'", repo.display())))
            .expect("config");
    }

    fn borg_env(&self, cmd: &mut Command) {
        cmd.env("HOME", self.root.join("home"))
            .env_remove("XDG_RUNTIME_DIR")
            .env_remove("XDG_STATE_HOME")
            .env_remove("XDG_CONFIG_HOME")
            .env_remove("XDG_CACHE_HOME")
            .env_remove("BORG_REPO")
            .env_remove("BORG_PASSPHRASE")
            .env("BORG_UNKNOWN_UNENCRYPTED_REPO_ACCESS_IS_OK", "yes")
            .current_dir(&self.root);
    }

    /// borgmatic with `args`: (exit code, output).
    fn run(&self, args: &[&str]) -> (i32, String) {
        let mut cmd = Command::new(self.generation.program());
        cmd.args(args);
        self.borg_env(&mut cmd);
        products::run_limited(&mut cmd, Duration::from_secs(300))
    }

    /// `borgmatic -c CONFDIR create`: every configuration, in order.
    fn create(&self) -> (i32, String) {
        self.run(&["-c", &self.confdir.display().to_string(), "create"])
    }

    /// The names of the archives whose names start with `prefix`, oldest first.
    fn archives(&self, prefix: &str) -> Vec<String> {
        let mut cmd = Command::new(BORG);
        cmd.args(["list", "--short", "--glob-archives", &format!("{prefix}-*")]).arg(&self.repo);
        self.borg_env(&mut cmd);
        let (code, out) = products::run_limited(&mut cmd, Duration::from_secs(60));
        assert_eq!(code, 0, "borg list failed:\n{}", out);
        out.lines().filter(|l| l.starts_with(prefix)).map(str::to_string).collect()
    }

    /// `borg extract REPO::ARCHIVE` into `dest` (paths come back below it without the leading /).
    fn extract(&self, archive: &str, dest: &Path) {
        fs::create_dir_all(dest).expect("mkdir restore dir");
        let mut cmd = Command::new(BORG);
        cmd.arg("extract").arg(format!("{}::{}", self.repo.display(), archive));
        self.borg_env(&mut cmd);
        cmd.current_dir(dest);
        let (code, out) = products::run_limited(&mut cmd, Duration::from_secs(300));
        assert_eq!(code, 0, "borg extract {} failed:\n{}", archive, out);
    }
}

fn stored_ids(t: &Tool) -> Vec<String> {
    let mut ids: Vec<String> = fs::read_dir(&t.sidecar)
        .expect("sidecar")
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    ids.retain(|n| n.starts_with("borgmatic."));
    ids.sort();
    ids
}

fn round_trip(generation: Generation) {
    let dir = TestDir::new();
    let pg = Cluster::new(dir.path(), "pg");
    let t = Tool::new(&dir);
    let bm = Borgmatic::new(&dir, generation, &t, &format!("default={}", pg.conninfo()), &pg.datadir);

    let inserter = Inserter::start(&pg);
    let (code, out) = bm.create();
    let committed = inserter.finish();
    assert_eq!(code, 0, "borgmatic create failed:\n{}", out);
    let ids = stored_ids(&t);
    assert_eq!(ids.len(), 1, "one backup should be stored: {:?}\n{}", ids, out);
    let id = ids[0].clone();
    assert!(id.starts_with("borgmatic.10-pgdata."), "{}", id);
    assert_eq!(t.manifest(&id)["status"], "complete");
    pg.wait_no_backup_sessions(&id);
    assert_eq!(t.with_run("status", &id, &[]).code, 4, "post should have ended backup {}", id);

    let data = bm.archives("pgdata");
    let side = bm.archives("pgsidecar");
    assert_eq!((data.len(), side.len()), (1, 1), "one data and one sidecar archive: {:?} {:?}", data, side);

    let expected = products::archive_all_and_destroy(&pg, &committed);
    fs::remove_dir_all(t.backup_dir(&id)).expect("removing the stored sidecar");
    let restored = dir.path().join("restored");
    let restored_side = dir.path().join("restored-sidecar");
    bm.extract(&data[0], &restored);
    bm.extract(&side[0], &restored_side);
    let rel = |p: &Path| p.strip_prefix("/").expect("absolute").to_path_buf();
    fs::rename(restored.join(rel(&pg.datadir)), &pg.datadir).expect("moving the restored data directory into place");
    let restored_sidecar = restored_side.join(rel(&t.sidecar));
    assert!(
        restored_sidecar.join(&id).join("manifest.json").exists(),
        "the sidecar archive (made after the data archive) should hold backup {}",
        id
    );
    products::prepare_start_and_check(&t, &pg, &id, &restored_sidecar, &expected);
}

fn failures(generation: Generation) {
    let dir = TestDir::new();
    let a = Cluster::new(dir.path(), "a");
    let b = Cluster::new(dir.path(), "b");
    let t = Tool::new(&dir);
    let bm = Borgmatic::new(&dir, generation, &t, &format!("a={};b={}", a.conninfo(), b.conninfo()), &a.datadir);

    // Node b is down: pre fails, so does the run; no data archive, nothing held or stored.
    b.stop("fast");
    let (code, out) = bm.create();
    assert_ne!(code, 0, "borgmatic must fail when pre fails:\n{}", out);
    assert!(out.contains("node b"), "borgmatic's output should carry pre's error:\n{}", out);
    assert!(bm.archives("pgdata").is_empty(), "no data archive after a failed pre:\n{}", out);
    assert!(stored_ids(&t).is_empty(), "a failed pre must store nothing");
    assert_eq!(
        a.query_scalar("select count(*) from pg_stat_activity where application_name like 'pg-backup-hooks %'"),
        "0"
    );
    assert!(t.run_dir_files().iter().all(|f| !f.ends_with(".sock")), "no helper may be left: {:?}", t.run_dir_files());

    // pre succeeds, then borg create fails (the repository is missing): the abort hook ends
    // the backup; nothing is stored.
    b.start().expect("starting b again");
    bm.set_data_repo(&dir.path().join("no-such-repo"));
    let (code, out) = bm.create();
    assert_ne!(code, 0, "create into a missing repository must fail:\n{}", out);
    assert!(out.contains("does not exist"), "{}", out);
    let run_files = t.run_dir_files();
    let id = run_files
        .iter()
        .find_map(|f| f.strip_suffix(".aborted"))
        .unwrap_or_else(|| panic!("the abort hook should have aborted the backup: run dir {:?}\n{}", run_files, out))
        .to_string();
    let st = t.with_run("status", &id, &[]);
    assert!(st.code == 4 && st.stdout.contains("aborted on request"), "{}\n{}", st.stdout, st.stderr);
    for pg in [&a, &b] {
        pg.wait_no_backup_sessions(&id);
    }
    assert!(stored_ids(&t).is_empty(), "a failed create must store nothing: {:?}", stored_ids(&t));

    // borgmatic is stopped (SIGTERM, as systemd stops it) while borg create is blocked on a
    // FIFO, after pre. 2.x runs the `fail` after-hook: abort. 1.7.7 runs nothing more (its
    // on_error only runs for errors it catches), so the backup stays held until the next run
    // of the same configuration aborts it before its own pre.
    stopped_by_sigterm(&dir, &bm, &t, &a);
}

fn stopped_by_sigterm(dir: &TestDir, bm: &Borgmatic, t: &Tool, a: &Cluster) {
    let fifo_dir = dir.path().join("fifo-source");
    fs::create_dir_all(&fifo_dir).expect("mkdir");
    nix::unistd::mkfifo(&fifo_dir.join("blocks"), nix::sys::stat::Mode::from_bits_truncate(0o600)).expect("mkfifo");
    let conf = bm.root.join("slow.yaml");
    fs::write(
        &conf,
        bm.config(&Config {
            sources: vec![&fifo_dir],
            prefix: "slow",
            hook: Some(&bm.hook),
            read_special: true,
            ..Config::default()
        }),
    )
    .expect("config");
    let held_before: Vec<String> = t.run_dir_files();
    let mut cmd = Command::new(bm.generation.program());
    cmd.arg("-c").arg(&conf).arg("create");
    bm.borg_env(&mut cmd);
    // Its own process group, as under systemd or cron: borgmatic passes a TERM on to its
    // whole process group, which would otherwise be this test.
    cmd.process_group(0);
    let mut child = cmd.stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::null()).spawn().expect("borgmatic");
    let mut id = String::new();
    common::wait_until(Duration::from_secs(60), "pre to have started a backup", || {
        let now = t.run_dir_files();
        if let Some(sock) = now.iter().find(|f| f.ends_with(".sock") && !held_before.contains(f)) {
            id = sock.trim_end_matches(".sock").to_string();
        }
        !id.is_empty()
    });
    // Stop it only once borg create runs (blocked on the FIFO), not while pre still runs.
    common::wait_until(Duration::from_secs(60), "borg create to run", || {
        products::process_running(&format!("{}::slow-", bm.repo.display()))
    });
    std::thread::sleep(Duration::from_millis(500));
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(child.id() as i32), nix::sys::signal::Signal::SIGTERM)
        .expect("SIGTERM");
    common::wait_until(Duration::from_secs(60), "borgmatic to exit", || child.try_wait().ok().flatten().is_some());
    let aborted = || {
        let st = t.with_run("status", &id, &[]);
        st.code == 4 && st.stdout.contains("aborted on request")
    };
    match bm.generation {
        Generation::V2 => {
            common::wait_until(Duration::from_secs(30), "the fail hook to abort the backup", aborted);
        }
        Generation::Debian17 => {
            std::thread::sleep(Duration::from_secs(3));
            assert_eq!(a.backup_sessions(&id), 1, "1.7.7 runs no hook after SIGTERM: the backup should be held");
            fs::remove_file(fifo_dir.join("blocks")).expect("rm fifo");
            let (code, out) = bm.run(&["-c", &conf.display().to_string(), "create"]);
            assert_eq!(code, 0, "the next run should succeed:\n{}", out);
            assert!(aborted(), "the next run's pre should have aborted the leftover {}:\n{}", id, out);
        }
    }
    a.wait_no_backup_sessions(&id);
    assert!(!t.backup_dir(&id).exists(), "a stopped run must store nothing");
}

#[test]
fn borgmatic2_backs_up_a_live_cluster_and_the_restore_recovers_every_committed_row() {
    if Generation::V2.available() {
        round_trip(Generation::V2);
    }
}

#[test]
fn borgmatic17_backs_up_a_live_cluster_and_the_restore_recovers_every_committed_row() {
    if Generation::Debian17.available() {
        round_trip(Generation::Debian17);
    }
}

#[test]
fn borgmatic2_failing_pre_fails_the_run_and_a_failed_create_runs_abort() {
    if Generation::V2.available() {
        failures(Generation::V2);
    }
}

#[test]
fn borgmatic17_failing_pre_fails_the_run_and_a_failed_create_runs_abort() {
    if Generation::Debian17.available() {
        failures(Generation::Debian17);
    }
}

/// Issue 24: the scheduled restore test of docs/restore-test.md for borgmatic, run as cron runs
/// it (`/bin/sh -c`, cron's environment plus the cron.d file's settings): after a borgmatic
/// create of a live, checksummed cluster, hooks/restore-test-borgmatic extracts the newest data
/// archive with `borg extract` into an emptied scratch directory and runs restore-test on the
/// newest backup: PASSED, exit 0. With a byte of a table's page changed in the extracted copy,
/// FAILED naming the relation, exit 5. Production keeps running, its archive gets nothing.
#[test]
fn borgmatic_scheduled_restore_test_passes_and_a_damaged_copy_fails_naming_the_relation() {
    let generation = Generation::Debian17;
    if !generation.available() {
        return;
    }
    let dir = TestDir::new();
    let exe = roundtrip::install_bin(&dir);
    let opts = ClusterOpts { initdb_args: vec!["--data-checksums".into()], ..ClusterOpts::default() };
    let pg = Cluster::with_opts(dir.path(), "pg", opts);
    let t = Tool::new(&dir);
    let bm = Borgmatic::new(&dir, generation, &t, &format!("default={}", pg.conninfo()), &pg.datadir);
    // Table t: frozen and checkpointed before the backup, so no WAL replayed repairs its page.
    pg.execute("create table t (id int primary key) with (autovacuum_enabled = off); insert into t select generate_series(1, 1000)");
    pg.execute("vacuum freeze t");
    pg.execute("checkpoint");
    let rel = pg.query_scalar("select pg_relation_filepath('t')");
    let (code, out) = bm.create();
    assert_eq!(code, 0, "borgmatic create failed:\n{}", out);
    let (code, out) = bm.create();
    assert_eq!(code, 0, "the second borgmatic create failed:\n{}", out);
    let ids = stored_ids(&t);
    assert_eq!(ids.len(), 2, "{:?}", ids);
    roundtrip::switch_and_wait(&pg);
    let before = pg.archived_files();

    let env_file = bm.root.join("pgbh.env");
    let mut text = fs::read_to_string(&env_file).expect("env file");
    // The archive, and the installed binary instead of the one the hooks ran (the last wins).
    text += &format!("PGBH_ARCHIVE_DIR='{}'\nPGBH_BIN=\"{}\"  # installed\n", pg.archive_dir.display(), exe.display());
    fs::write(&env_file, text).expect("env file");
    let scratch = dir.path().join("scratch");
    let settings = [
        ("HOME", bm.root.join("home").display().to_string()),
        ("BORG_REPO", bm.repo.display().to_string()),
        ("PGBH_BORG_ARCHIVES", "pgdata-*".to_string()),
        ("PGBH_PGDATA_PATH", pg.datadir.display().to_string()),
        ("PGBH_BACKUP_PREFIX", "borgmatic.10-pgdata.".to_string()),
        ("PGBH_SCRATCH", scratch.display().to_string()),
        ("PGBH_PGDATA_OWNER", common::server_user().unwrap_or_else(|| "postgres".into())),
        // PGBH_BIN, PGBH_SIDECAR_DIR and PGBH_ARCHIVE_DIR come from the hooks' environment file.
        ("PGBH_ENV_FILE", env_file.display().to_string()),
    ];
    let newest = bm.archives("pgdata").last().cloned().expect("a data archive");
    let sbin = products::install_restore_test_scripts(&dir.path().join("sbin"), None);
    let started = std::time::Instant::now();
    let (code, out) = products::run_like_cron(&format!("{}/restore-test-borgmatic 2>&1", sbin.display()), &settings);
    eprintln!("borgmatic restore test ({:?}, exit {}):\n{}", started.elapsed(), code, out);
    assert!(out.contains(&format!("borg extract {}::{}", bm.repo.display(), newest)), "the newest archive:\n{}", out);
    assert!(out.contains(&format!("restore-test of backup {}", ids[1])), "the newest backup is tested:\n{}", out);
    assert!(out.contains("verdict: PASSED: the backup restores"), "{}", out);
    assert!(out.contains("amcheck") && out.contains("checksums"), "{}", out);
    assert_eq!(code, 0, "{}", out);
    assert!(pg.is_running(), "production keeps running");
    assert_eq!(pg.archived_files(), before, "the production archive got files from the test");

    let damaged = products::install_restore_test_scripts(&dir.path().join("sbin-damaged"), Some(&rel));
    let (code, out) = products::run_like_cron(&format!("{}/restore-test-borgmatic 2>&1", damaged.display()), &settings);
    eprintln!("borgmatic restore test of a damaged copy (exit {}):\n{}", code, out);
    assert!(out.contains(&format!("restore-test of backup {}", ids[1])), "{}", out);
    assert!(out.contains("verdict: FAILED"), "{}", out);
    assert!(out.contains("relation postgres.public.t"), "the output names the damaged relation:\n{}", out);
    assert_eq!(code, 5, "{}", out);
    assert!(pg.is_running(), "production keeps running");
    assert_eq!(pg.archived_files(), before, "the production archive got files from the test");
}
