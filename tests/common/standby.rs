//! Standby backups under write load (issue 12): a streaming standby made on every major, pgbench's
//! TPC-B load on its primary, a copy that takes global/pg_control first and the rest seconds
//! later, and what a user checks on the restored copy (pgbench's invariants, amcheck).

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use super::{bin, run_checked, wait_until, Cluster, ClusterOpts};

/// Debian's PostgreSQL 15 client programs (the matrix builds have only the server).
pub const CLIENT_BINDIR: &str = "/usr/lib/postgresql/15/bin";

/// A primary with data checksums (initdb -k), archiving into its archive directory.
pub fn checksummed_primary(base: &Path, name: &str) -> Cluster {
    let opts = ClusterOpts { initdb_args: vec!["--data-checksums".into()], ..ClusterOpts::default() };
    Cluster::with_opts(base, name, opts)
}

/// A streaming standby of `primary` made from a copy of its data directory taken while the
/// primary is cleanly stopped: works on every major with only initdb/pg_ctl/postgres (Debian's
/// pg_basebackup 15 refuses servers newer than 15). 10 and 11 get recovery.conf with
/// standby_mode, 12+ standby.signal and primary_conninfo.
/// The primary gets a new port if another process took its own while it was stopped.
pub fn standby_by_copy(primary: &mut Cluster, base: &Path, name: &str) -> Cluster {
    let mut standby = Cluster::layout(base, name, primary.opts.clone());
    primary.stop("fast");
    run_checked(Command::new("cp").arg("-a").arg(&primary.datadir).arg(&standby.datadir));
    match primary.start() {
        Ok(()) => {}
        Err(e) if e.contains("could not bind") => {
            let conf_path = primary.datadir.join("postgresql.conf");
            let conf =
                fs::read_to_string(&conf_path).unwrap_or_else(|e| panic!("reading {}: {e}", conf_path.display()));
            primary.start_on_free_port(&conf);
        }
        Err(e) => panic!("restarting primary {}: {e}", primary.name),
    }
    let major = major_of(&standby.datadir);
    let conninfo = format!("host=127.0.0.1 port={} user=postgres application_name={}", primary.port, standby.name);
    let conf_path = standby.datadir.join("postgresql.conf");
    let mut conf = fs::read_to_string(&conf_path).unwrap_or_else(|e| panic!("reading {}: {e}", conf_path.display()));
    if major >= 12 {
        fs::write(standby.datadir.join("standby.signal"), "").expect("standby.signal");
        conf.push_str(&format!("\nprimary_conninfo = '{conninfo}'\n"));
    } else {
        let rc = format!("standby_mode = 'on'\nprimary_conninfo = '{conninfo}'\n");
        fs::write(standby.datadir.join("recovery.conf"), rc).expect("recovery.conf");
    }
    super::chown_to_server_user(&standby.datadir);
    standby.start_on_free_port(&conf);
    drop(standby.client());
    standby
}

/// PG_VERSION's major.
pub fn major_of(datadir: &Path) -> u32 {
    let v = fs::read_to_string(datadir.join("PG_VERSION")).expect("PG_VERSION");
    v.trim().parse().expect("PG_VERSION is a major number")
}

/// Wait until the standby has replayed everything the primary wrote so far.
pub fn wait_caught_up(primary: &Cluster, standby: &Cluster) {
    let target = primary.query_scalar("select pg_current_wal_lsn()");
    wait_until(Duration::from_secs(60), "the standby to catch up", || {
        standby.query_scalar(&format!("select pg_last_wal_replay_lsn() >= '{target}'::pg_lsn")) == "t"
    });
}

fn pgbench(pg: &Cluster) -> Command {
    let mut c = Command::new(Path::new(CLIENT_BINDIR).join("pgbench"));
    c.args(["-h", "127.0.0.1", "-U", "postgres", "-p"]).arg(pg.port.to_string());
    for v in ["PGHOST", "PGPORT", "PGUSER", "PGDATABASE", "PGPASSWORD", "PGSERVICE", "PGOPTIONS"] {
        c.env_remove(v);
    }
    c
}

/// `pgbench -i -s SCALE postgres`.
pub fn pgbench_init(pg: &Cluster, scale: u32) {
    run_checked(pgbench(pg).args(["-i", "-q", "-s"]).arg(scale.to_string()).arg("postgres"));
}

/// pgbench's TPC-B-like load in the background (killed on drop).
pub struct Load(Child);

impl Load {
    pub fn start(pg: &Cluster, clients: u32) -> Load {
        let child = pgbench(pg)
            .args(["-n", "-T", "600", "-c"])
            .arg(clients.to_string())
            .arg("postgres")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("starting pgbench");
        Load(child)
    }
}

impl Drop for Load {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// (sum of abalance, bbalance, tbalance, history delta, history rows): pgbench's TPC-B
/// transactions keep the four sums equal.
pub fn tpcb_sums(pg: &Cluster) -> (i64, i64, i64, i64, i64) {
    let row = pg.query_scalar(
        "select concat_ws(' ', (select coalesce(sum(abalance), 0) from pgbench_accounts),
                               (select coalesce(sum(bbalance), 0) from pgbench_branches),
                               (select coalesce(sum(tbalance), 0) from pgbench_tellers),
                               (select coalesce(sum(delta), 0) from pgbench_history),
                               (select count(*) from pgbench_history))",
    );
    let v: Vec<i64> = row.split(' ').map(|x| x.parse().expect("a number")).collect();
    (v[0], v[1], v[2], v[3], v[4])
}

/// Check every heap and B-tree index of the database: pg_amcheck --heapallindexed (14+, the
/// amcheck that has verify_heapam), bt_index_check(index, heapallindexed) through SQL on 11-13
/// and bt_index_check(index) on 10 (no heapallindexed there). Returns what was run and its
/// output; panics on corruption.
pub fn amcheck(pg: &Cluster) -> String {
    let major: u32 = pg.query_scalar("select current_setting('server_version_num')::int / 10000").parse().unwrap();
    pg.execute("create extension if not exists amcheck");
    if major >= 14 {
        let out = Command::new(Path::new(CLIENT_BINDIR).join("pg_amcheck"))
            .args(["-h", "127.0.0.1", "-U", "postgres", "-p"])
            .arg(pg.port.to_string())
            .args(["--heapallindexed", "--rootdescend", "-d", "postgres"])
            .output()
            .expect("running pg_amcheck");
        let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        assert!(out.status.success() && text.trim().is_empty(), "pg_amcheck found problems ({}):\n{text}", out.status);
        return "pg_amcheck --heapallindexed --rootdescend: clean".into();
    }
    let call = if major >= 11 { "bt_index_check(c.oid, true)" } else { "bt_index_check(c.oid)" };
    let n = pg.query_scalar(&format!(
        "select count({call}) from pg_index i join pg_class c on c.oid = i.indexrelid
           join pg_am a on a.oid = c.relam where a.amname = 'btree' and c.relpersistence <> 't'"
    ));
    format!("{n} B-tree indexes checked with {call}")
}

/// The data directory copied the way a backup program may: global/pg_control first, then
/// (after `pause`, while the load goes on) everything else except what `exclude-list` says a
/// copy leaves out. Returns the copy's path (`<dest>/data`).
pub fn copy_control_first(datadir: &Path, dest: &Path, pause: Duration) -> PathBuf {
    let copy = dest.join("data");
    fs::create_dir_all(copy.join("global")).expect("mkdir copy/global");
    fs::copy(datadir.join("global/pg_control"), copy.join("global/pg_control")).expect("copying pg_control");
    std::thread::sleep(pause);
    let excludes = Command::new(bin()).args(["exclude-list", "--format", "tar"]).output().expect("exclude-list");
    assert!(excludes.status.success(), "exclude-list: {}", String::from_utf8_lossy(&excludes.stderr));
    let excludes = String::from_utf8_lossy(&excludes.stdout).into_owned();
    let tar = dest.join("rest.tar");
    let out = Command::new("tar")
        .arg("-C")
        .arg(datadir)
        .args(["--warning=no-file-changed", "--warning=no-file-removed", "--warning=no-file-shrank"])
        .args(excludes.lines())
        .arg("--exclude=global/pg_control")
        .arg("-cf")
        .arg(&tar)
        .arg(".")
        .output()
        .expect("running tar");
    assert!(matches!(out.status.code(), Some(0) | Some(1)), "tar: {}", String::from_utf8_lossy(&out.stderr));
    super::roundtrip::tar_extract(&tar, &copy);
    fs::remove_file(&tar).expect("removing the tar");
    super::chown_to_server_user(&copy);
    fs::set_permissions(&copy, std::os::unix::fs::PermissionsExt::from_mode(0o700)).expect("chmod copy");
    copy
}
