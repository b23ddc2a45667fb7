//! The real thing: Debian's Bacula (director, storage daemon, file daemon, bconsole), set up
//! privately on 127.0.0.1 under a temp directory, backs up a live cluster with hooks/bacula
//! as the job's client run-before/after scripts and a second job for the sidecar; then the
//! cluster is destroyed, both jobs are restored with bconsole, restore-prep puts the copy
//! back together and the server recovers with every committed row.
//!
//! Skips (and passes) when the Bacula programs are missing, unless PGBH_REQUIRE_BACULA is
//! set (CI sets it; .ci/install-bacula.sh installs them).

use std::fs;
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::common;
use crate::common::tool::Tool;
use crate::common::{roundtrip, Cluster, ClusterOpts, TestDir};
use crate::label_archive::{amcheck_clean, pgbench, tpcb_sums, tree};
use crate::products;
use crate::products::Inserter;

const PASSWORD: &str = "pgbh-test-secret";
const DIR_NAME: &str = "pgbh-dir";
const FD_NAME: &str = "pgbh-fd";
const MAKE_TABLES: &str = "/usr/share/bacula-director/make_sqlite3_tables";
const PROGRAMS: &[&str] = &[
    "/usr/sbin/bacula-dir",
    "/usr/sbin/bacula-sd",
    "/usr/sbin/bacula-fd",
    "/usr/sbin/bconsole",
    "/usr/bin/sqlite3",
    MAKE_TABLES,
];

fn bacula_available() -> bool {
    products::available("Bacula", PROGRAMS, "PGBH_REQUIRE_BACULA", ".ci/install-bacula.sh")
}

fn hooks_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("hooks")
}

/// A private Bacula installation: three daemons on their own ports and a sqlite catalog.
struct Bacula {
    root: PathBuf,
    bconsole_conf: PathBuf,
    catalog: PathBuf,
    daemons: Vec<(String, Child)>,
    dir_port: u16,
}

impl Drop for Bacula {
    fn drop(&mut self) {
        for (_, child) in self.daemons.iter_mut() {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(child.id() as i32),
                nix::sys::signal::Signal::SIGTERM,
            );
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        for (_, child) in self.daemons.iter_mut() {
            while Instant::now() < deadline {
                if let Ok(Some(_)) = child.try_wait() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Bacula {
    /// Writes the configuration (`resources` are extra director resources: file sets and
    /// jobs), creates the catalog, starts the daemons and waits until they listen.
    fn start(base: &Path, resources: &str) -> Bacula {
        let root = base.join("bacula");
        for d in ["dir", "sd", "fd", "volumes"] {
            fs::create_dir_all(root.join(d)).expect("mkdir bacula");
        }
        let (dport, sport, fport) = (common::free_port(), common::free_port(), common::free_port());
        let w = |d: &str| root.join(d).display().to_string();

        // The catalog: Debian's make_sqlite3_tables is a template that does `cd /var/lib/bacula` and
        // creates XXX_DBNAME_XXX.db there (the package fills the name in): rewrite both.
        let script = fs::read_to_string(MAKE_TABLES).expect("reading make_sqlite3_tables");
        let script =
            script.replace("cd /var/lib/bacula", &format!("cd '{}'", w("dir"))).replace("XXX_DBNAME_XXX", "bacula");
        let script_path = root.join("make_tables.sh");
        fs::write(&script_path, script).expect("writing make_tables.sh");
        common::run_checked(Command::new("sh").arg(&script_path));
        let catalog = root.join("dir/bacula.db");
        assert!(catalog.exists(), "the catalog was not created");

        let dir_conf = format!(
            r#"
Director {{
  Name = {DIR_NAME}
  DIRport = {dport}
  DirAddress = 127.0.0.1
  QueryFile = "/etc/bacula/scripts/query.sql"
  WorkingDirectory = "{wd}"
  PidDirectory = "{wd}"
  Maximum Concurrent Jobs = 5
  Password = "{PASSWORD}"
  Messages = Daemon
}}
Catalog {{
  Name = MyCatalog
  dbname = "bacula"; dbuser = ""; dbpassword = ""
}}
Storage {{
  Name = File
  Address = 127.0.0.1
  SDPort = {sport}
  Password = "{PASSWORD}"
  Device = FileStorage
  Media Type = File
}}
Client {{
  Name = {FD_NAME}
  Address = 127.0.0.1
  FDPort = {fport}
  Catalog = MyCatalog
  Password = "{PASSWORD}"
  File Retention = 30 days
  Job Retention = 6 months
  AutoPrune = no
}}
Pool {{
  Name = Default
  Pool Type = Backup
  Label Format = "pgbh-"
  Maximum Volume Jobs = 1
  Recycle = no
  AutoPrune = no
  Volume Retention = 365 days
}}
Messages {{
  Name = Standard
  catalog = all, !skipped, !saved
  append = "{wd}/log" = all, !skipped
}}
Messages {{
  Name = Daemon
  append = "{wd}/log" = all, !skipped
}}
FileSet {{
  Name = "RestoreDummy"
  Include {{ File = /nonexistent }}
}}
Job {{
  Name = "RestoreFiles"
  Type = Restore
  Client = {FD_NAME}
  FileSet = "RestoreDummy"
  Storage = File
  Pool = Default
  Messages = Standard
  Where = "{root}/restore-default"
}}
{resources}
"#,
            wd = w("dir"),
            root = root.display()
        );
        let sd_conf = format!(
            r#"
Storage {{
  Name = pgbh-sd
  SDPort = {sport}
  SDAddress = 127.0.0.1
  WorkingDirectory = "{wd}"
  PidDirectory = "{wd}"
}}
Director {{
  Name = {DIR_NAME}
  Password = "{PASSWORD}"
}}
Device {{
  Name = FileStorage
  Media Type = File
  Archive Device = "{vol}"
  LabelMedia = yes
  Random Access = yes
  AutomaticMount = yes
  RemovableMedia = no
  AlwaysOpen = no
}}
Messages {{
  Name = Standard
  director = {DIR_NAME} = all
}}
"#,
            wd = w("sd"),
            vol = w("volumes")
        );
        let fd_conf = format!(
            r#"
FileDaemon {{
  Name = {FD_NAME}
  FDport = {fport}
  FDAddress = 127.0.0.1
  WorkingDirectory = "{wd}"
  Pid Directory = "{wd}"
}}
Director {{
  Name = {DIR_NAME}
  Password = "{PASSWORD}"
}}
Messages {{
  Name = Standard
  director = {DIR_NAME} = all, !skipped, !restored
}}
"#,
            wd = w("fd")
        );
        let con_conf = format!("Director {{\n  Name = {DIR_NAME}\n  DIRport = {dport}\n  address = 127.0.0.1\n  Password = \"{PASSWORD}\"\n}}\n");
        let files = [
            ("bacula-dir.conf", dir_conf),
            ("bacula-sd.conf", sd_conf),
            ("bacula-fd.conf", fd_conf),
            ("bconsole.conf", con_conf),
        ];
        for (name, text) in &files {
            fs::write(root.join(name), text).expect("writing a bacula config");
        }
        let mut b = Bacula {
            bconsole_conf: root.join("bconsole.conf"),
            catalog,
            root: root.clone(),
            daemons: Vec::new(),
            dir_port: dport,
        };
        for (prog, conf, port) in [
            ("bacula-sd", "bacula-sd.conf", sport),
            ("bacula-fd", "bacula-fd.conf", fport),
            ("bacula-dir", "bacula-dir.conf", dport),
        ] {
            let conf = root.join(conf);
            let (code, out) = products::run_limited(
                Command::new(format!("/usr/sbin/{}", prog)).arg("-t").arg("-c").arg(&conf),
                Duration::from_secs(30),
            );
            assert_eq!(code, 0, "{} -t rejects {}:\n{}", prog, conf.display(), out);
            let log = fs::File::create(root.join(format!("{}.out", prog))).expect("daemon log");
            let child = Command::new(format!("/usr/sbin/{}", prog))
                .arg("-f")
                .arg("-c")
                .arg(&conf)
                .stdin(Stdio::null())
                .stdout(log.try_clone().expect("dup"))
                .stderr(log)
                .spawn()
                .unwrap_or_else(|e| panic!("starting {}: {}", prog, e));
            b.daemons.push((prog.to_string(), child));
            common::wait_until(Duration::from_secs(30), &format!("{} to listen on port {}", prog, port), || {
                TcpStream::connect(("127.0.0.1", port)).is_ok()
            });
        }
        b
    }

    /// Stops the director and starts it again, under `faketime -f OFFSET` when given (its
    /// clock then runs that far ahead of the file daemon's).
    fn restart_director(&mut self, faketime: Option<&str>) {
        let at = self.daemons.iter().position(|(n, _)| n == "bacula-dir").expect("the director runs");
        let (_, mut child) = self.daemons.remove(at);
        // faketime runs the director as its child: stop the director by the pid it wrote.
        let mut pids = vec![child.id() as i32];
        for e in fs::read_dir(self.root.join("dir")).expect("the director's directory").flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if name.starts_with("bacula-dir.") && name.ends_with(".pid") {
                pids.extend(fs::read_to_string(e.path()).ok().and_then(|p| p.trim().parse::<i32>().ok()));
            }
        }
        for pid in pids {
            let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGTERM);
        }
        let _ = child.wait();
        let port = self.dir_port;
        common::wait_until(Duration::from_secs(30), "the director to stop listening", || {
            TcpStream::connect(("127.0.0.1", port)).is_err()
        });
        let mut cmd = match faketime {
            Some(offset) => {
                let mut c = Command::new("faketime");
                c.arg("-f").arg(offset).arg("/usr/sbin/bacula-dir");
                c
            }
            None => Command::new("/usr/sbin/bacula-dir"),
        };
        let log = fs::File::create(self.root.join("bacula-dir.restarted.out")).expect("daemon log");
        let child = cmd
            .arg("-f")
            .arg("-c")
            .arg(self.root.join("bacula-dir.conf"))
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("dup"))
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("starting bacula-dir (faketime {:?}): {}", faketime, e));
        self.daemons.push(("bacula-dir".to_string(), child));
        common::wait_until(Duration::from_secs(30), "the director to listen again", || {
            TcpStream::connect(("127.0.0.1", port)).is_ok()
        });
    }

    /// Sends commands to the director with bconsole; returns what it printed.
    fn console(&self, commands: &str) -> String {
        let input = self.root.join("bconsole.in");
        fs::write(&input, format!("{}\nquit\n", commands)).expect("writing bconsole input");
        let (code, out) = products::run_limited(
            Command::new("sh").arg("-c").arg(format!(
                "/usr/sbin/bconsole -n -c '{}' < '{}'",
                self.bconsole_conf.display(),
                input.display()
            )),
            Duration::from_secs(60),
        );
        assert_eq!(code, 0, "bconsole failed:\n{}", out);
        out
    }

    /// One value from the catalog (sqlite3, read-only); empty when there is no row.
    fn sql(&self, query: &str) -> String {
        let (code, out) = products::run_limited(
            Command::new("/usr/bin/sqlite3")
                .arg("-readonly")
                .arg("-cmd")
                .arg(".timeout 5000")
                .arg(&self.catalog)
                .arg(query),
            Duration::from_secs(30),
        );
        assert_eq!(code, 0, "sqlite3 {}: {}", query, out);
        out.trim().to_string()
    }

    /// Starts a job with bconsole and returns its JobId.
    fn run_job(&self, job: &str) -> u32 {
        self.run_job_with(job, "")
    }

    /// Starts a job at a level (Full, Incremental, Differential) and waits until it ended
    /// successfully; returns its JobId.
    fn run_level(&self, job: &str, level: &str) -> u32 {
        let jobid = self.run_job_with(job, &format!(" level={}", level));
        let status = self.wait_job(jobid, Duration::from_secs(180));
        let log = self.job_log(jobid);
        assert_eq!(status, "T", "{} job {} failed:\n{}\n--- director log ---\n{}", level, job, log, self.dir_log());
        let level_code = self.sql(&format!("select Level from Job where JobId = {}", jobid));
        assert_eq!(level_code, &level[..1], "Bacula ran job {} at another level:\n{}", jobid, log);
        jobid
    }

    fn run_job_with(&self, job: &str, options: &str) -> u32 {
        let out = self.console(&format!("run job={}{} yes", job, options));
        out.split("JobId=")
            .nth(1)
            .and_then(|r| r.split(|c: char| !c.is_ascii_digit()).next())
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("run job={} gave no JobId:\n{}", job, out))
    }

    /// Waits until the job has ended; returns its JobStatus (T ok, f/E failed, ...).
    fn wait_job(&self, jobid: u32, limit: Duration) -> String {
        let mut status = String::new();
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            status = self.sql(&format!("select JobStatus from Job where JobId = {}", jobid));
            if ["T", "E", "e", "f", "A", "W"].contains(&status.as_str()) {
                return status;
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        panic!(
            "job {} did not end within {:?} (status {:?}); log:\n{}\n--- director log ---\n{}",
            jobid,
            limit,
            status,
            self.job_log(jobid),
            self.dir_log()
        );
    }

    /// The job's messages as the catalog keeps them (what `list joblog` shows).
    fn job_log(&self, jobid: u32) -> String {
        self.sql(&format!("select LogText from Log where JobId = {} order by LogId", jobid))
    }

    fn dir_log(&self) -> String {
        fs::read_to_string(self.root.join("dir/log")).unwrap_or_default()
    }

    /// The unique job name (%j) of a job.
    fn unique_name(&self, jobid: u32) -> String {
        self.sql(&format!("select Job from Job where JobId = {}", jobid))
    }

    /// Restores everything job `jobid` saved under `where_`; returns when the restore job
    /// has ended successfully.
    fn restore(&self, jobid: u32, where_: &Path) {
        self.restore_jobs(&[jobid], where_)
    }

    /// Restores what jobs `jobids` (a Full and the levels on it) saved, merged the way Bacula
    /// merges a chain (the newest version of each file; with Accurate, without the files a
    /// later level recorded as deleted).
    fn restore_jobs(&self, jobids: &[u32], where_: &Path) {
        let jobid = jobids.iter().map(|j| j.to_string()).collect::<Vec<_>>().join(",");
        let before = self.sql("select coalesce(max(JobId), 0) from Job");
        let out = self.console(&format!(
            "restore jobid={} client={} where={} all done yes",
            jobid,
            FD_NAME,
            where_.display()
        ));
        let rid: u32 = self
            .sql(&format!("select coalesce(min(JobId), 0) from Job where Type = 'R' and JobId > {}", before))
            .parse()
            .unwrap_or(0);
        assert!(rid > 0, "no restore job started:\n{}", out);
        let status = self.wait_job(rid, Duration::from_secs(120));
        let log = self.job_log(rid);
        if status == "T" {
            return;
        }
        // A file that grew while the backup read it is saved with its size from before the
        // read and its data from the read, and Bacula's restore reports the difference as
        // an error (attribs.c "File size of restored file ... not correct"). The data is
        // what was read, which is all WAL replay needs; any other error fails the test.
        let other: Vec<&str> = log
            .lines()
            .filter(|l| l.contains("Error:"))
            .filter(|l| !(l.contains("File size of restored file") && l.contains("not correct")))
            .filter(|l| !l.contains(": Error: Bacula "))
            .collect();
        assert!(
            status == "E" && other.is_empty() && log.contains("File size of restored file"),
            "restore of job {} failed ({}):\n{}",
            jobid,
            status,
            log
        );
        eprintln!("restore of job {}: Bacula reports size changes of files that grew during the backup (expected for a live cluster):\n{}", jobid, log.lines().filter(|l| l.contains("not correct")).collect::<Vec<_>>().join("\n"));
    }
}

/// The FileSet and jobs for one cluster: `pgdata` (data directory, our hooks, then the
/// sidecar job queued from the director) and `sidecar`.
/// Private Bacula daemons with the data job (file set `datadir`, our wrapper before and
/// after, hook settings for `nodes` in an env file) and the sidecar job it queues.
/// Returns the daemons and the log the queued sidecar job writes.
fn bacula_job(dir: &TestDir, t: &Tool, nodes: &str, datadir: &Path) -> (Bacula, PathBuf) {
    let env_file = dir.path().join("pgbh.env");
    products::write_env(&env_file, &t.sidecar, &t.run_dir, nodes);
    let queue_log = dir.path().join("queue.log");
    let bconsole_conf = dir.path().join("bacula/bconsole.conf");
    let resources = job_resources(
        &hooks_dir(),
        &env_file,
        &bconsole_conf,
        &queue_log,
        datadir,
        &t.sidecar,
        &(products::exclude_list("bacula", Some(datadir)).join("\n") + "\n"),
    );
    (Bacula::start(dir.path(), &resources), queue_log)
}

fn job_resources(
    hooks: &Path,
    env_file: &Path,
    bconsole_conf: &Path,
    queue_log: &Path,
    datadir: &Path,
    sidecar: &Path,
    exclude_block: &str,
) -> String {
    let hook = hooks.join("bacula").display().to_string();
    let env = format!("/usr/bin/env PGBH_ENV_FILE={}", env_file.display());
    format!(
        r#"
FileSet {{
  Name = "pgdata"
  Include {{
{exclude_block}
    Options {{
      signature = MD5
    }}
    File = "{datadir}"
  }}
}}
FileSet {{
  Name = "sidecar"
  Include {{
    Options {{ signature = MD5 }}
    File = "{sidecar}"
  }}
}}
Job {{
  Name = "pgdata"
  Type = Backup
  Level = Full
  Client = {FD_NAME}
  FileSet = "pgdata"
  Storage = File
  Pool = Default
  Messages = Standard
  ClientRunBeforeJob = "{env} {hook} before %j %l"
  ClientRunAfterJob = "{env} {hook} after %j"
  RunScript {{
    RunsWhen = After
    RunsOnSuccess = no
    RunsOnFailure = yes
    RunsOnClient = yes
    Command = "{env} {hook} failed %j"
  }}
  RunScript {{
    RunsWhen = After
    RunsOnClient = no
    Command = "{env} PGBH_BCONSOLE=/usr/sbin/bconsole PGBH_BCONSOLE_CONF={bconsole} PGBH_QUEUE_LOG={queue_log} {hook} queue-job sidecar"
  }}
}}
Job {{
  Name = "sidecar"
  Type = Backup
  Level = Full
  Client = {FD_NAME}
  FileSet = "sidecar"
  Storage = File
  Pool = Default
  Messages = Standard
}}
# The data directory plus a FIFO nobody writes to: the file daemon blocks reading it, so
# the job is still transferring when the test cancels it.
FileSet {{
  Name = "pgdata-fifo"
  Include {{
    Options {{
      signature = MD5
      readfifo = yes
    }}
    File = "{fifo}"
  }}
}}
Job {{
  Name = "pgdata-cancelled"
  Type = Backup
  Level = Full
  Client = {FD_NAME}
  FileSet = "pgdata-fifo"
  Storage = File
  Pool = Default
  Messages = Standard
  ClientRunBeforeJob = "{env} {hook} before %j"
  ClientRunAfterJob = "{env} {hook} after %j"
  RunScript {{
    RunsWhen = After
    RunsOnSuccess = no
    RunsOnFailure = yes
    RunsOnClient = yes
    Command = "{env} {hook} failed %j"
  }}
}}
# The same job whose client work fails after pre succeeded.
Job {{
  Name = "pgdata-fails-late"
  Type = Backup
  Level = Full
  Client = {FD_NAME}
  FileSet = "pgdata"
  Storage = File
  Pool = Default
  Messages = Standard
  ClientRunBeforeJob = "{env} {hook} before %j"
  ClientRunBeforeJob = "/bin/false"
  ClientRunAfterJob = "{env} {hook} after %j"
  RunScript {{
    RunsWhen = After
    RunsOnSuccess = no
    RunsOnFailure = yes
    RunsOnClient = yes
    Command = "{env} {hook} failed %j"
  }}
}}
"#,
        datadir = datadir.display(),
        sidecar = sidecar.display(),
        bconsole = bconsole_conf.display(),
        queue_log = queue_log.display(),
        fifo = env_file.with_file_name("blocking.fifo").display(),
    )
}

#[test]
fn bacula_backs_up_a_live_cluster_and_the_restore_recovers_every_committed_row() {
    if !bacula_available() {
        return;
    }
    let started = Instant::now();
    let dir = TestDir::new();
    let pg = Cluster::new(dir.path(), "pg");
    let t = Tool::new(&dir);
    let (bacula, queue_log) = bacula_job(&dir, &t, &format!("default={}", pg.conninfo()), &pg.datadir);
    eprintln!("bacula up after {:?}", started.elapsed());

    // Back up while a client keeps inserting.
    let inserter = Inserter::start(&pg);
    let t_job = Instant::now();
    let jobid = bacula.run_job("pgdata");
    let status = bacula.wait_job(jobid, Duration::from_secs(180));
    let log = bacula.job_log(jobid);
    assert_eq!(status, "T", "the data job failed:\n{}\n--- director log ---\n{}", log, bacula.dir_log());
    eprintln!("data job {} done in {:?}\n--- its log ---\n{}", jobid, t_job.elapsed(), log);
    let committed = inserter.finish();
    let id = bacula.unique_name(jobid);
    assert!(id.starts_with("pgdata."), "{}", id);

    // The hook's output is in the job log, and it said what happened.
    assert!(log.contains("pg-backup-hooks bacula: pre succeeded"), "job log lacks pre's outcome:\n{}", log);
    assert!(log.contains("pg-backup-hooks bacula: post succeeded"), "job log lacks post's outcome:\n{}", log);
    assert!(log.contains("node default: backup started at"), "job log lacks pre's output:\n{}", log);
    // The job passes its level (%l, Full) and the adapter took it.
    assert!(log.contains("running: pre --backup-id"), "pre ran through the adapter:\n{}", log);
    assert!(!log.contains("no job level passed"), "the job passes %l:\n{}", log);
    assert!(!log.contains("abort --backup-id"), "a successful job must not abort:\n{}", log);
    assert!(t.backup_dir(&id).join("manifest.json").exists(), "post stored no sidecar for {}", id);
    assert_eq!(t.manifest(&id)["status"], "complete");
    common::wait_until(Duration::from_secs(15), "the helper's session to end", || pg.backup_sessions(&id) == 0);

    // The sidecar job, queued by the director after the data job, ran after it.
    let mut side_id = 0u32;
    common::wait_until(Duration::from_secs(60), "the sidecar job to be queued", || {
        side_id = bacula
            .sql(&format!("select coalesce(min(JobId), 0) from Job where Name = 'sidecar' and JobId > {}", jobid))
            .parse()
            .unwrap_or(0);
        side_id > 0
    });
    let side_status = bacula.wait_job(side_id, Duration::from_secs(120));
    assert_eq!(
        side_status,
        "T",
        "the sidecar job failed:\n{}\n--- queue log ---\n{}",
        bacula.job_log(side_id),
        fs::read_to_string(&queue_log).unwrap_or_default()
    );
    let ended = bacula.sql(&format!(
        "select EndTime <= (select StartTime from Job where JobId = {}) from Job where JobId = {}",
        side_id, jobid
    ));
    assert_eq!(ended, "1", "the sidecar job must start after the data job ended");

    // Everything committed is archived; then the cluster is gone.
    let expected: i64 = pg.query_scalar("select count(*) from t").parse().expect("count");
    let max_id: i64 = pg.query_scalar("select max(id) from t").parse().expect("max");
    let last_seg = pg.query_scalar("select pg_walfile_name(pg_switch_wal())");
    common::wait_until(Duration::from_secs(30), "the last WAL segment to be archived", || {
        pg.archived_files().contains(&last_seg)
    });
    pg.stop("fast");
    fs::remove_dir_all(&pg.datadir).expect("removing the data directory");
    fs::remove_dir_all(t.backup_dir(&id)).expect("removing the stored sidecar");

    // Restore both jobs with bconsole, then move the copies into place.
    let t_restore = Instant::now();
    let where_data = dir.path().join("restored-data");
    let where_side = dir.path().join("restored-sidecar");
    bacula.restore(jobid, &where_data);
    bacula.restore(side_id, &where_side);
    eprintln!("both restores done in {:?}", t_restore.elapsed());
    let rel = |p: &Path| p.strip_prefix("/").expect("absolute").to_path_buf();
    fs::rename(where_data.join(rel(&pg.datadir)), &pg.datadir).expect("moving the restored data directory into place");
    let restored_sidecar = where_side.join(rel(&t.sidecar));
    assert!(restored_sidecar.join(&id).join("manifest.json").exists(), "the sidecar job did not hold backup {}", id);

    // What the exclude list left out is not in the copy; the directories are.
    assert!(pg.datadir.join("pg_wal").is_dir(), "pg_wal must be restored (empty)");
    assert_eq!(
        fs::read_dir(pg.datadir.join("pg_wal")).expect("pg_wal").count(),
        0,
        "pg_wal's contents must have been left out"
    );
    for gone in ["postmaster.pid", "postmaster.opts", "backup_label", "global/pg_internal.init"] {
        assert!(!pg.datadir.join(gone).exists(), "{} should not be in the copy", gone);
    }
    t.restore_prep_ok(&id, &restored_sidecar, &pg);

    pg.start().unwrap_or_else(|e| panic!("starting the restored cluster: {}", e));
    common::wait_until(Duration::from_secs(120), "the restored cluster to finish recovery", || {
        pg.query_opt("select pg_is_in_recovery()").as_deref() == Some("f")
    });
    t.restore_check_proves(&id, &restored_sidecar, &pg);
    let got: i64 = pg.query_scalar("select count(*) from t").parse().expect("count");
    let got_max: i64 = pg.query_scalar("select max(id) from t").parse().expect("max");
    assert_eq!((got, got_max), (expected, max_id), "rows lost in the restore");
    let last = committed.last().copied().unwrap_or(0);
    assert_eq!(pg.query_scalar(&format!("select count(*) from t where id = {}", last)), "1");
    assert!(pg.log().contains("redo done") || pg.log().contains("archive recovery complete"), "{}", pg.log());
    eprintln!("whole bacula round trip: {:?}", started.elapsed());
}

#[test]
fn a_failing_pre_fails_the_job_and_a_failed_job_leaves_no_backup_running() {
    if !bacula_available() {
        return;
    }
    let dir = TestDir::new();
    let a = Cluster::new(dir.path(), "a");
    let b = Cluster::new(dir.path(), "b");
    let t = Tool::new(&dir);
    // Two nodes; node b is stopped for the first run.
    let (bacula, _) = bacula_job(&dir, &t, &format!("a={};b={}", a.conninfo(), b.conninfo()), &a.datadir);

    b.stop("fast");
    let jobid = bacula.run_job("pgdata");
    let status = bacula.wait_job(jobid, Duration::from_secs(120));
    let log = bacula.job_log(jobid);
    let id = bacula.unique_name(jobid);
    assert_ne!(status, "T", "a job whose pre failed must fail:\n{}", log);
    assert!(log.contains("pre failed with exit code 1"), "the job log should carry the hook's exit code:\n{}", log);
    assert!(log.contains("node b"), "the job log should name the node that failed:\n{}", log);
    common::wait_until(Duration::from_secs(15), "no backup session on node a", || a.backup_sessions(&id) == 0);
    assert!(!t.backup_dir(&id).exists(), "a failed job must store no sidecar");
    // No sidecar job is queued for a failed data job.
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(bacula.sql("select count(*) from Job where Name = 'sidecar'"), "0");

    // pre succeeds, then the client's next run-before script fails: the job fails, and
    // Bacula 9.6 runs no client-side failure script for a job that failed in its
    // run-before stage, so the backup stays in progress...
    b.start().expect("starting b again");
    let first = bacula.run_job("pgdata-fails-late");
    let status = bacula.wait_job(first, Duration::from_secs(120));
    let log = bacula.job_log(first);
    let first_id = bacula.unique_name(first);
    assert_ne!(status, "T", "the job should have failed:\n{}", log);
    assert!(log.contains("pg-backup-hooks bacula: pre succeeded"), "{}", log);
    let ran_failure_script = log.contains("pg-backup-hooks bacula: abort succeeded");
    eprintln!("failed in the run-before stage; client failure script ran: {}", ran_failure_script);
    assert!(!t.backup_dir(&first_id).exists(), "a failed job must store no sidecar");
    // ...until the next run of the same job discards it before it starts its own.
    let second = bacula.run_job("pgdata-fails-late");
    bacula.wait_job(second, Duration::from_secs(120));
    let log2 = bacula.job_log(second);
    let second_id = bacula.unique_name(second);
    if !ran_failure_script {
        assert!(
            log2.contains(&format!("aborting leftover backup {}", first_id)),
            "the next run should discard the leftover:\n{}",
            log2
        );
    }
    for pg in [&a, &b] {
        common::wait_until(Duration::from_secs(15), "no session of the first run left", || {
            pg.backup_sessions(&first_id) == 0
        });
    }
    assert_eq!(t.with_run("status", &first_id, &[]).code, 4, "the first run's backup must be gone");
    t.abort(&second_id).ok();

    // A job cancelled while the file daemon is transferring.
    let fifo = dir.path().join("blocking.fifo");
    nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).expect("mkfifo");
    let jobid = bacula.run_job("pgdata-cancelled");
    let id = bacula.unique_name(jobid);
    common::wait_until(Duration::from_secs(60), "pre to have run in the cancelled job", || {
        bacula.job_log(jobid).contains("pre succeeded")
    });
    std::thread::sleep(Duration::from_secs(1));
    bacula.console(&format!("cancel jobid={} yes", jobid));
    let status = bacula.wait_job(jobid, Duration::from_secs(120));
    let log = bacula.job_log(jobid);
    assert_eq!(status, "A", "the job should have been cancelled:\n{}", log);
    // The client's failure script does run for a cancelled job, but what it prints after
    // the cancel no longer reaches the job log: judge by the helper's own record.
    common::wait_until(Duration::from_secs(30), "the cancelled job's failure script to abort the backup", || {
        let st = t.with_run("status", &id, &[]);
        st.code == 4 && st.stdout.contains("aborted on request")
    });
    for pg in [&a, &b] {
        common::wait_until(Duration::from_secs(15), "no session left after the cancelled job", || {
            pg.backup_sessions(&id) == 0
        });
    }
    assert!(!t.backup_dir(&id).exists(), "a cancelled job must store no sidecar");
}

// ---------------------------------------------------------------- levels (issue 21)

/// Two jobs of one file set: `chain` (not Accurate) and `chain-acc` (Accurate = yes), with
/// the hooks before (%j %l) and after; the sidecar stays where post wrote it.
fn chain_resources(env_file: &Path, datadir: &Path) -> String {
    let hook = hooks_dir().join("bacula").display().to_string();
    let env = format!("/usr/bin/env PGBH_ENV_FILE={}", env_file.display());
    let exclude_block = products::exclude_list("bacula", Some(datadir)).join("\n");
    let job = |name: &str, accurate: &str| {
        format!(
            r#"
Job {{
  Name = "{name}"
  Type = Backup
  Level = Full
  Accurate = {accurate}
  Client = {FD_NAME}
  FileSet = "pgdata"
  Storage = File
  Pool = Default
  Messages = Standard
  ClientRunBeforeJob = "{env} {hook} before %j %l"
  ClientRunAfterJob = "{env} {hook} after %j"
  RunScript {{
    RunsWhen = After
    RunsOnSuccess = no
    RunsOnFailure = yes
    RunsOnClient = yes
    Command = "{env} {hook} failed %j"
  }}
}}
"#
        )
    };
    format!(
        "FileSet {{\n  Name = \"pgdata\"\n  Include {{\n{exclude_block}\n    Options {{\n      signature = MD5\n    }}\n    File = \"{}\"\n  }}\n}}\n{}{}",
        datadir.display(),
        job("chain", "no"),
        job("chain-acc", "yes")
    )
}

/// A checksummed cluster with pgbench's tables (scale 1), a table `gone` (dropped after
/// the Full), a table `vf` (rewritten by VACUUM FULL after the first Incremental) and
/// `marker` (a row committed after each job); pgbench runs until the returned child is
/// stopped.
fn chain_cluster(dir: &TestDir) -> (Cluster, Child) {
    let opts = ClusterOpts { initdb_args: vec!["--data-checksums".into()], ..Default::default() };
    let pg = Cluster::with_opts(dir.path(), "pg", opts);
    assert_eq!(pg.query_scalar("show data_checksums"), "on");
    common::run_checked(&mut pgbench(&pg, &["-i", "-s", "1", "-q"]));
    pg.execute(
        "create table gone(id int, pad text); insert into gone select g, repeat('g', 200) from generate_series(1, 5000) g;
         create table vf(id int primary key, pad text); insert into vf select g, repeat('v', 200) from generate_series(1, 5000) g;
         create table marker(job text primary key, at timestamptz not null default now())",
    );
    let load = pgbench(&pg, &["-c", "2", "-j", "1", "-T", "900", "-n"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("starting pgbench");
    std::thread::sleep(Duration::from_secs(1));
    (pg, load)
}

fn stop_load(mut load: Child) {
    let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(load.id() as i32), nix::sys::signal::Signal::SIGINT);
    let _ = load.wait();
}

/// What the restored cluster must hold: pgbench's sums and the markers, read after the load
/// stopped; then every WAL segment is archived and the cluster stopped.
struct Final {
    sums: (String, String, String, String, String),
    markers: String,
}

fn final_state(pg: &Cluster) -> Final {
    let f = Final {
        sums: tpcb_sums(pg),
        markers: pg.query_scalar("select coalesce(string_agg(job, ',' order by job), '') from marker"),
    };
    assert_ne!(f.sums.4, "0", "pgbench committed nothing");
    roundtrip::switch_and_wait(pg);
    pg.stop("fast");
    f
}

/// The data directory restored from `jobids` replaces `pg.datadir` (the cluster is stopped);
/// what an earlier restore moved aside is gone too.
fn put_chain_in_place(bacula: &Bacula, dir: &TestDir, pg: &Cluster, jobids: &[u32], name: &str) {
    let _ = fs::remove_dir_all(&pg.datadir);
    let _ = fs::remove_dir_all(stale_dir(pg));
    let where_ = dir.path().join(format!("restored-{}", name));
    let t0 = Instant::now();
    bacula.restore_jobs(jobids, &where_);
    eprintln!("restore of {} ({:?}) in {:?}", name, jobids, t0.elapsed());
    let rel = pg.datadir.strip_prefix("/").expect("absolute");
    fs::rename(where_.join(rel), &pg.datadir).expect("moving the restored data directory into place");
    let _ = fs::remove_dir_all(&where_);
    common::chown_to_server_user(&pg.datadir);
}

fn stale_dir(pg: &Cluster) -> PathBuf {
    let mut s = pg.datadir.clone().into_os_string();
    s.push(".pgbh-stale");
    PathBuf::from(s)
}

/// restore-prep of backup `id` over the copy in place (archiving off).
fn prep(t: &Tool, id: &str, pg: &Cluster) -> common::tool::Ran {
    t.restore_prep(id, &t.sidecar, pg)
}

/// The restored chain recovers to the end of the archive with every committed transaction
/// (TPC-B sums equal to the live cluster's last ones, every marker), heap and indexes clean,
/// and every page's checksum right.
fn recovers_whole(t: &Tool, id: &str, pg: &Cluster, want: &Final) {
    roundtrip::start_and_wait_promoted(pg);
    t.restore_check_proves(id, &t.sidecar, pg);
    let sums = tpcb_sums(pg);
    let (a, b, tl, d, _) = &sums;
    assert!(a == b && b == tl && tl == d, "TPC-B invariant broken after the restore of {}: {:?}", id, sums);
    assert_eq!(sums, want.sums, "the restore of {} lost committed transactions", id);
    assert_eq!(pg.query_scalar("select coalesce(string_agg(job, ',' order by job), '') from marker"), want.markers);
    amcheck_clean(pg);
    pg.stop("fast");
    let out =
        common::pg_command("pg_checksums").arg("--check").arg("-D").arg(&pg.datadir).output().expect("pg_checksums");
    assert!(
        out.status.success(),
        "pg_checksums after the restore of {}: {}{}",
        id,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn bacula_full_incremental_differential_incremental_each_level_restores_and_a_chain_without_a_level_is_refused() {
    if !bacula_available() {
        return;
    }
    let started = Instant::now();
    let dir = TestDir::new();
    let (pg, load) = chain_cluster(&dir);
    let t = Tool::new(&dir);
    let env_file = dir.path().join("pgbh.env");
    products::write_env(&env_file, &t.sidecar, &t.run_dir, &format!("default={}", pg.conninfo()));
    let bacula = Bacula::start(dir.path(), &chain_resources(&env_file, &pg.datadir));
    let gone = pg.query_scalar("select pg_relation_filepath('gone')");
    let vf_before = pg.query_scalar("select pg_relation_filepath('vf')");

    // Full, Incremental, Differential, Incremental of both jobs, pgbench running throughout;
    // `gone` is dropped after the Full, `vf` rewritten after the first Incremental.
    let levels = ["Full", "Incremental", "Differential", "Incremental"];
    let mut chain: Vec<(u32, String)> = Vec::new();
    let mut chain_acc: Vec<(u32, String)> = Vec::new();
    for (i, level) in levels.iter().enumerate() {
        for (job, ids) in [("chain", &mut chain), ("chain-acc", &mut chain_acc)] {
            let t0 = Instant::now();
            let jobid = bacula.run_level(job, level);
            let log = bacula.job_log(jobid);
            assert_eq!(log.contains("--require-inventory"), *level != "Full", "{} {}:\n{}", job, level, log);
            assert!(log.contains("post succeeded"), "{}", log);
            let id = bacula.unique_name(jobid);
            pg.execute(&format!("insert into marker(job) values ('{}')", id));
            eprintln!("{} {} (job {}) in {:?}", job, level, jobid, t0.elapsed());
            ids.push((jobid, id));
        }
        match i {
            0 => pg.execute("drop table gone"),
            1 => pg.execute("vacuum full vf"),
            _ => {}
        }
    }
    let vf_after = pg.query_scalar("select pg_relation_filepath('vf')");
    assert_ne!(vf_before, vf_after);
    stop_load(load);
    let want = final_state(&pg);
    eprintln!("four levels of two jobs after {:?}", started.elapsed());

    // Every level's chain restores; without Accurate the files PostgreSQL deleted come back
    // and restore-prep moves them aside, with Accurate they do not come back.
    for (job, ids, accurate) in [("chain", &chain, false), ("chain-acc", &chain_acc, true)] {
        for k in 1..=ids.len() {
            let t0 = Instant::now();
            let jobids: Vec<u32> = ids[..k].iter().map(|(j, _)| *j).collect();
            let id = &ids[k - 1].1;
            put_chain_in_place(&bacula, &dir, &pg, &jobids, &format!("{}-{}", job, k));
            let r = prep(&t, id, &pg);
            assert_eq!(r.code, 0, "restore-prep of {} levels of {}:\n{}\n{}", k, job, r.stdout, r.stderr);
            let mut deleted = Vec::new();
            if k >= 2 {
                deleted.push(&gone);
            }
            if k >= 3 {
                deleted.push(&vf_before);
            }
            for rel in &deleted {
                assert!(!pg.datadir.join(rel).exists(), "{} (deleted by PostgreSQL) is in the data directory", rel);
                let aside = stale_dir(&pg).join(id).join(rel);
                if accurate {
                    assert!(!aside.exists(), "an Accurate restore brought {} back", rel);
                } else {
                    assert!(aside.exists(), "{} was not moved aside to {}", rel, aside.display());
                    assert!(r.stdout.contains(rel.as_str()), "the report does not list {}:\n{}", rel, r.stdout);
                }
            }
            if accurate {
                assert!(!stale_dir(&pg).join(id).exists(), "stale files after an Accurate restore:\n{}", r.stdout);
            }
            recovers_whole(&t, id, &pg, &want);
            eprintln!("{} with {} level(s) restored and checked in {:?}", job, k, t0.elapsed());
        }
    }

    // The chain without its Differential: the file VACUUM FULL wrote between the first
    // Incremental and the Differential is in neither the Full, the first Incremental nor
    // the last one (it did not change after the Differential started): refused, naming it.
    let skipped: Vec<u32> = [0, 1, 3].iter().map(|i| chain[*i].0).collect();
    put_chain_in_place(&bacula, &dir, &pg, &skipped, "chain-without-differential");
    let before = tree(&pg.datadir);
    let r = prep(&t, &chain[3].1, &pg);
    assert_eq!(r.code, 1, "a chain without its Differential must be refused:\n{}\n{}", r.stdout, r.stderr);
    assert_eq!(r.stderr.trim().lines().count(), 1, "one line:\n{}", r.stderr);
    assert!(r.stderr.contains("missing") && r.stderr.contains("base/"), "the refusal names a file:\n{}", r.stderr);
    assert_eq!(tree(&pg.datadir), before, "a refusal changes nothing");
    eprintln!("bacula chain test: {:?}", started.elapsed());
}

#[test]
fn bacula_an_incremental_that_missed_changes_because_the_director_clock_was_ahead_is_refused() {
    if !bacula_available() {
        return;
    }
    assert!(
        Path::new("/usr/bin/faketime").exists() || std::env::var_os("PGBH_REQUIRE_BACULA").is_none(),
        "faketime is missing: .ci/install-bacula.sh installs it"
    );
    if !Path::new("/usr/bin/faketime").exists() {
        eprintln!("SKIPPED: faketime is not installed");
        return;
    }
    let started = Instant::now();
    let dir = TestDir::new();
    let (pg, load) = chain_cluster(&dir);
    let t = Tool::new(&dir);
    let env_file = dir.path().join("pgbh.env");
    products::write_env(&env_file, &t.sidecar, &t.run_dir, &format!("default={}", pg.conninfo()));
    let mut bacula = Bacula::start(dir.path(), &chain_resources(&env_file, &pg.datadir));

    // The Full runs with the director's clock 30 s ahead: its recorded StartTime is in the
    // future, and the next Incremental (the director's clock right again) saves only files
    // changed after it. `vf` is changed and checkpointed inside that window and never again:
    // the Incremental misses it, while pg_control (the Incremental's own checkpoint) and the
    // files pgbench keeps changing are saved.
    bacula.restart_director(Some("+30s"));
    let full = bacula.run_level("chain", "Full");
    let ahead = bacula
        .sql(&format!("select strftime('%s', StartTime) - strftime('%s', 'now') from Job where JobId = {}", full));
    assert!(
        ahead.parse::<i64>().is_ok_and(|s| s > 10),
        "the Full's StartTime should be ahead of the clock: {} s",
        ahead
    );
    bacula.restart_director(None);
    pg.execute("update vf set pad = 'changed in the window'; checkpoint");
    let ahead: i64 = ahead.parse().unwrap_or(0);
    assert!(
        bacula
            .sql(&format!("select strftime('%s', StartTime) - strftime('%s', 'now') from Job where JobId = {}", full))
            .parse::<i64>()
            .is_ok_and(|s| s > 0),
        "vf was changed after the window"
    );
    std::thread::sleep(Duration::from_secs(ahead as u64 + 2));
    let inc = bacula.run_level("chain", "Incremental");
    let behind =
        bacula.sql(&format!("select strftime('%s', 'now') - strftime('%s', StartTime) from Job where JobId = {}", inc));
    assert!(
        behind.parse::<i64>().is_ok_and(|s| s.abs() < 30),
        "the Incremental ran with the director's clock right: {} s",
        behind
    );
    eprintln!(
        "the Incremental saved {} files:\n{}",
        bacula.sql(&format!("select JobFiles from Job where JobId = {}", inc)),
        bacula.job_log(inc).lines().filter(|l| l.contains("since")).collect::<Vec<_>>().join("\n")
    );
    let id = bacula.unique_name(inc);
    stop_load(load);
    final_state(&pg);

    put_chain_in_place(&bacula, &dir, &pg, &[full, inc], "skewed");
    let before = tree(&pg.datadir);
    let r = prep(&t, &id, &pg);
    assert_eq!(r.code, 1, "an Incremental that missed changes must be refused:\n{}\n{}", r.stdout, r.stderr);
    assert_eq!(r.stderr.trim().lines().count(), 1, "one line:\n{}", r.stderr);
    assert!(r.stderr.contains("older"), "the refusal says the copy holds older files:\n{}", r.stderr);
    assert_eq!(tree(&pg.datadir), before, "a refusal changes nothing");
    eprintln!("bacula clock test: {:?}", started.elapsed());
}

/// Issue 24: a scheduled test restore is a Bacula Restore job with a RunScript After that runs
/// restore-test through the script of docs/restore-test.md (the newest complete `pgdata.`
/// backup of the live sidecar directory); the job log shows restore-test's verdict. The
/// production cluster keeps running beside it.
#[test]
fn bacula_restore_job_runs_restore_test_and_the_job_log_shows_the_verdict() {
    if !bacula_available() {
        return;
    }
    let dir = TestDir::new();
    let exe = roundtrip::install_bin(&dir);
    let opts = ClusterOpts { initdb_args: vec!["--data-checksums".into()], ..ClusterOpts::default() };
    let pg = Cluster::with_opts(dir.path(), "pg", opts);
    let t = Tool::new(&dir);
    let env_file = dir.path().join("pgbh.env");
    products::write_env(&env_file, &t.sidecar, &t.run_dir, &format!("default={}", pg.conninfo()));
    let scratch = dir.path().join("scratch");
    // hooks/restore-test (the script docs/restore-test.md shows), with this test's settings.
    let sbin = products::install_restore_test_scripts(&dir.path().join("sbin"), None);
    let settings = format!(
        "/usr/bin/env PGBH_BIN={} PGBH_SIDECAR_DIR={} PGBH_ARCHIVE_DIR={} PGBH_PGDATA_OWNER={}",
        exe.display(),
        t.sidecar.display(),
        pg.archive_dir.display(),
        common::server_user().unwrap_or_else(|| "postgres".into())
    );
    let damaged_sbin = dir.path().join("sbin-damaged");
    let restored = scratch.join(pg.datadir.strip_prefix("/").unwrap());
    let mut resources = job_resources(
        &hooks_dir(),
        &env_file,
        &dir.path().join("bacula/bconsole.conf"),
        &dir.path().join("queue.log"),
        &pg.datadir,
        &t.sidecar,
        &(products::exclude_list("bacula", Some(&pg.datadir)).join("\n") + "\n"),
    );
    resources.push_str(&format!(
        r#"
Job {{
  Name = "pgdata-restore-test"
  Type = Restore
  Client = {FD_NAME}
  FileSet = "pgdata"
  Storage = File
  Pool = Default
  Messages = Standard
  Where = "{scratch}"
  Replace = always
  RunScript {{
    RunsWhen = Before
    RunsOnClient = yes
    Command = "/bin/rm -rf {scratch}"
  }}
  RunScript {{
    RunsWhen = After
    RunsOnClient = yes
    RunsOnSuccess = yes
    RunsOnFailure = yes
    FailJobOnError = yes
    Command = "{settings} {sbin}/restore-test pgdata. {restored}"
  }}
}}
Job {{
  Name = "pgdata-restore-test-damaged"
  Type = Restore
  Client = {FD_NAME}
  FileSet = "pgdata"
  Storage = File
  Pool = Default
  Messages = Standard
  Where = "{scratch}"
  Replace = always
  RunScript {{
    RunsWhen = Before
    RunsOnClient = yes
    Command = "/bin/rm -rf {scratch}"
  }}
  RunScript {{
    RunsWhen = After
    RunsOnClient = yes
    FailJobOnError = yes
    Command = "{settings} {damaged}/restore-test pgdata. {restored}"
  }}
}}
"#,
        scratch = scratch.display(),
        sbin = sbin.display(),
        damaged = damaged_sbin.display(),
        restored = restored.display()
    ));
    let bacula = Bacula::start(dir.path(), &resources);
    pg.execute("create table t (id int primary key); insert into t select generate_series(1, 1000)");
    let jobid = bacula.run_job("pgdata");
    let status = bacula.wait_job(jobid, Duration::from_secs(180));
    assert_eq!(status, "T", "the data job failed:\n{}", bacula.job_log(jobid));
    let id = bacula.unique_name(jobid);
    roundtrip::switch_and_wait(&pg);
    let before = pg.archived_files();

    // The scheduled restore: the newest pgdata backup, with the restore-test job.
    let last = bacula.sql("select coalesce(max(JobId), 0) from Job");
    let newest = bacula.sql("select max(JobId) from Job where Name = 'pgdata' and Type = 'B' and JobStatus = 'T'");
    let out = bacula.console(&format!(
        "restore jobid={newest} client={FD_NAME} restorejob=pgdata-restore-test where={} all done yes",
        scratch.display()
    ));
    let rid: u32 = bacula
        .sql(&format!("select coalesce(min(JobId), 0) from Job where Type = 'R' and JobId > {}", last))
        .parse()
        .unwrap_or(0);
    assert!(rid > 0, "no restore job started:\n{}", out);
    let status = bacula.wait_job(rid, Duration::from_secs(300));
    let log = bacula.job_log(rid);
    eprintln!("restore job {} ({}):\n{}", rid, status, log);
    assert!(log.contains(&format!("restore-test of backup {}", id)), "the job log names the backup tested:\n{}", log);
    assert!(log.contains("verdict: PASSED: the backup restores"), "the job log shows the verdict:\n{}", log);
    assert!(log.contains("amcheck") && log.contains("checksums"), "{}", log);
    assert!(pg.is_running(), "production keeps running");
    assert_eq!(pg.archived_files(), before, "the production archive got files from the test");

    // A damaged copy (a byte of table t's first page changed after the restore, before the
    // test): the job log says FAILED naming the relation, and the job fails.
    products::install_restore_test_scripts(&damaged_sbin, Some(&pg.query_scalar("select pg_relation_filepath('t')")));
    let last = bacula.sql("select coalesce(max(JobId), 0) from Job");
    let out = bacula.console(&format!(
        "restore jobid={newest} client={FD_NAME} restorejob=pgdata-restore-test-damaged where={} all done yes",
        scratch.display()
    ));
    let rid: u32 = bacula
        .sql(&format!("select coalesce(min(JobId), 0) from Job where Type = 'R' and JobId > {}", last))
        .parse()
        .unwrap_or(0);
    assert!(rid > 0, "no restore job started:\n{}", out);
    let status = bacula.wait_job(rid, Duration::from_secs(300));
    let log = bacula.job_log(rid);
    eprintln!("restore job {} ({}):\n{}", rid, status, log);
    assert!(log.contains("verdict: FAILED"), "the job log shows the verdict:\n{}", log);
    assert!(log.contains("relation postgres.public.t"), "the job log names the damaged relation:\n{}", log);
    assert_ne!(status, "T", "a failed restore-test fails the restore job:\n{}", log);
}
