//! restore-prep on production layouts, run as root over a tree the data directory's owner
//! (or whoever can write the sidecar) controls: links out of the data directory, planted
//! links, an edited sidecar, control characters. Each test restores a real backup.

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::common;
use crate::common::roundtrip::{
    install_bin, restore_copy, start_and_wait_promoted, switch_and_wait, tar_create, tar_extract,
};
use crate::common::tool::{Ran, Tool};
use crate::common::{Cluster, ClusterOpts, TestDir};
use sha2::{Digest, Sha256};

fn s(p: &Path) -> &str {
    p.to_str().expect("utf-8 path")
}

/// A backup `b1` of `pg` taken with pre/post around a tar of the data directory (and of
/// `extra` directories, e.g. a tablespace); returns post's output and the tar files.
struct Backup {
    post: Ran,
    tars: Vec<PathBuf>,
}

fn back_up(dir: &TestDir, tool: &Tool, pg: &Cluster, extra: &[&Path]) -> Backup {
    tool.pre("b1", &[("default", pg.conninfo())], &[]).ok();
    let mut tars = Vec::new();
    for (i, d) in std::iter::once(pg.datadir.as_path()).chain(extra.iter().copied()).enumerate() {
        let t = dir.path().join(format!("copy{i}.tar"));
        tar_create(d, &t);
        tars.push(t);
    }
    let post = tool.post("b1").ok();
    pg.execute("insert into t select generate_series(101, 150)");
    switch_and_wait(pg);
    Backup { post, tars }
}

/// restore-prep run the way an admin runs it, through a copy of our binary the server user
/// can execute (restore_command calls it).
fn prep(exe: &Path, tool: &Tool, pgdata: &Path, archive: &Path, extra: &[&str]) -> Ran {
    let mut c = Command::new(exe);
    c.args(["restore-prep", "--backup-id", "b1", "--sidecar-dir", s(&tool.sidecar), "--pgdata", s(pgdata)]);
    c.args(["--archive-dir", s(archive), "--archive-mode", "off"]).args(extra);
    for (k, _) in std::env::vars() {
        if k.starts_with("PGBH_") {
            c.env_remove(k);
        }
    }
    c.output().expect("running restore-prep").into()
}

fn refused(r: Ran, needles: &[&str]) -> Ran {
    assert_ne!(r.code, 0, "restore-prep should have refused\nstdout: {}\nstderr: {}", r.stdout, r.stderr);
    for n in needles {
        assert!(r.stderr.contains(n), "the refusal should mention {n:?}:\n{}", r.stderr);
    }
    assert_eq!(r.stderr.trim().lines().count(), 1, "the refusal must be one line:\n{}", r.stderr);
    r
}

/// Name -> sha256 of every regular file directly in `dir`.
fn files(dir: &Path) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    for e in fs::read_dir(dir).expect("read_dir") {
        let e = e.expect("entry");
        if e.file_type().expect("type").is_file() {
            let data = fs::read(e.path()).expect("read");
            out.insert(e.file_name().to_string_lossy().into_owned(), format!("{:x}", Sha256::digest(data)));
        }
    }
    out
}

/// A running server's WAL directory is unchanged since `before`: every file is still there,
/// and every one the server was not writing to (older than `current`) has the same bytes.
fn assert_wal_untouched(waldir: &Path, before: &BTreeMap<String, String>, current: &str) {
    let now = files(waldir);
    for (name, hash) in before {
        let after = now.get(name).unwrap_or_else(|| panic!("production WAL file {name} was deleted"));
        if name.as_str() < current {
            assert_eq!(after, hash, "production WAL file {name} was changed");
        }
    }
}

/// A restored copy started on its own port next to the original server.
fn second_server(root: &Path, like: &Cluster) -> Cluster {
    let sock = root.join("sock");
    fs::create_dir_all(&sock).expect("mkdir sock");
    let port = common::free_port();
    let conf = root.join("data/postgresql.conf");
    let mut text = fs::read_to_string(&conf).expect("read conf");
    text.push_str(&format!("port = {port}\nunix_socket_directories = '{}'\n", sock.display()));
    fs::write(&conf, text).expect("write conf");
    common::chown_to_server_user(root);
    Cluster {
        name: "restored".into(),
        root: root.to_path_buf(),
        datadir: root.join("data"),
        archive_dir: like.archive_dir.clone(),
        port,
        socket_dir: sock,
        log_file: root.join("server.log"),
        opts: like.opts.clone(),
    }
}

fn manifest_sha(out: &str, prefix: &str) -> String {
    out.lines()
        .find_map(|l| l.strip_prefix(prefix))
        .and_then(|r| r.split_whitespace().next())
        .unwrap_or_else(|| panic!("no {prefix:?} line in:\n{out}"))
        .to_string()
}

// ---------------------------------------------------------------- item 1: pg_wal link

/// The reported bug: a primary made with `initdb -X`, copied with tar (the pg_wal link is
/// kept), restored into another directory while the primary keeps running.
#[test]
fn wal_link_to_a_running_primary_is_refused_and_wal_dir_re_points_it() {
    let dir = TestDir::new();
    let waldir = dir.mkdir("prod_wal");
    let opts = ClusterOpts { initdb_args: vec!["-X".into(), s(&waldir).into()], ..ClusterOpts::default() };
    let pg = Cluster::with_opts(dir.path(), "prod", opts);
    pg.execute("create table t (id int primary key); insert into t select generate_series(1, 100);");
    let tool = Tool::new(&dir);
    let exe = install_bin(&dir);
    let b = back_up(&dir, &tool, &pg, &[]);
    let restored = dir.mkdir("restored");
    tar_extract(&b.tars[0], &restored);
    let copy = restored.join("data");
    assert_eq!(fs::read_link(copy.join("pg_wal")).expect("pg_wal is a link"), waldir);

    let current = pg.query_scalar("select pg_walfile_name(pg_current_wal_lsn())");
    let before = files(&waldir);
    assert!(before.len() > 1, "production has WAL: {before:?}");
    refused(prep(&exe, &tool, &copy, &pg.archive_dir, &[]), &["pg_wal", s(&waldir), "--wal-dir", "running on"]);
    // The explicit "original server is gone" flag is refused too: it is running.
    refused(prep(&exe, &tool, &copy, &pg.archive_dir, &["--reuse-original-dirs"]), &[s(&waldir), "running on"]);
    assert!(!copy.join("backup_label").exists());
    assert_wal_untouched(&waldir, &before, &current);

    let new_wal = dir.path().join("restored_wal");
    let out = prep(&exe, &tool, &copy, &pg.archive_dir, &["--wal-dir", s(&new_wal)]).ok();
    assert_eq!(fs::read_link(copy.join("pg_wal")).expect("still a link"), new_wal);
    let m = fs::metadata(&new_wal).expect("wal dir created");
    assert_eq!((m.uid(), m.mode() & 0o777), (fs::metadata(&copy).expect("stat").uid(), 0o700));
    assert!(new_wal.join("archive_status").is_dir());
    assert_wal_untouched(&waldir, &before, &current);
    // Item 3: the manifest's sha256 restore-prep reports is the one post printed.
    assert_eq!(
        manifest_sha(&out.stdout, "sidecar manifest sha256: "),
        manifest_sha(&b.post.stdout, "manifest sha256: ")
    );

    let copy_server = second_server(&restored, &pg);
    start_and_wait_promoted(&copy_server);
    assert_eq!(copy_server.query_scalar("select count(*) from t"), "150");
    assert!(files(&new_wal).keys().any(|n| n.len() == 24), "the restored server writes its WAL into --wal-dir");
    assert_eq!(pg.query_scalar("select count(*) from t"), "150", "production still runs");
    assert_wal_untouched(&waldir, &before, &current);

    // Disaster restore on the original host: the original server is gone. The link is still
    // refused by default, and reused only when the user says so.
    drop(copy_server);
    pg.stop("immediate");
    let again = dir.mkdir("again");
    tar_extract(&b.tars[0], &again);
    let copy2 = again.join("data");
    refused(
        prep(&exe, &tool, &copy2, &pg.archive_dir, &[]),
        &["pg_wal", s(&waldir), "--wal-dir", "--reuse-original-dirs"],
    );
    assert!(!files(&waldir).is_empty());
    let out = prep(&exe, &tool, &copy2, &pg.archive_dir, &["--reuse-original-dirs"]).ok();
    assert!(out.stdout.contains("reused (--reuse-original-dirs)"), "{}", out.stdout);
    assert_eq!(fs::read_link(copy2.join("pg_wal")).expect("link"), waldir);
    assert!(files(&waldir).keys().all(|n| n.ends_with(".history")), "the reused WAL directory is emptied");
}

// ---------------------------------------------------------------- item 1: tablespace link

#[test]
fn tablespace_link_to_a_running_primary_is_refused_unless_remapped() {
    let dir = TestDir::new();
    let ts = dir.mkdir("prod_ts");
    let pg = Cluster::new(dir.path(), "prod");
    pg.execute(&format!("create tablespace ts location '{}'", ts.display()));
    pg.execute("create table t (id int primary key) tablespace ts; insert into t select generate_series(1, 100);");
    let oid = pg.query_scalar("select oid from pg_tablespace where spcname = 'ts'");
    let tool = Tool::new(&dir);
    let exe = install_bin(&dir);
    let b = back_up(&dir, &tool, &pg, &[&ts]);
    let restored = dir.mkdir("restored");
    tar_extract(&b.tars[0], &restored);
    let copy = restored.join("data");
    // A temporary file of production's: restore-prep cleans *.tmp in the tablespaces it restores.
    let victim = ts.join("production.tmp");
    fs::write(&victim, b"production's").expect("write victim");

    let link = format!("pg_tblspc/{oid}");
    refused(prep(&exe, &tool, &copy, &pg.archive_dir, &[]), &[s(&ts), "running on", "--tablespace-map"]);
    refused(prep(&exe, &tool, &copy, &pg.archive_dir, &["--reuse-original-dirs"]), &[&link, s(&ts), "running on"]);
    assert_eq!(fs::read(&victim).expect("victim survives"), b"production's");
    assert!(!copy.join("backup_label").exists());

    let moved = dir.mkdir("moved");
    tar_extract(&b.tars[1], &moved);
    common::chown_to_server_user(&moved);
    let map = format!("{}={}", ts.display(), moved.join("prod_ts").display());
    let out = prep(&exe, &tool, &copy, &pg.archive_dir, &["--tablespace-map", &map]).ok();
    assert!(out.stdout.contains("wrote tablespace_map"), "{}", out.stdout);
    assert_eq!(fs::read(&victim).expect("victim survives"), b"production's");
    assert_eq!(pg.query_scalar("select count(*) from t"), "150");
}

// ---------------------------------------------------------------- item 1: planted links

/// A standard backup restored in place (the original server stopped).
fn in_place(dir: &TestDir) -> (Cluster, Tool, PathBuf) {
    let pg = Cluster::new(dir.path(), "pg");
    pg.execute("create table t (id int primary key); insert into t select generate_series(1, 100);");
    let tool = Tool::new(dir);
    let exe = install_bin(dir);
    let b = back_up(dir, &tool, &pg, &[]);
    restore_copy(&pg, &b.tars[0]);
    (pg, tool, exe)
}

/// A root-owned directory with one file in it.
fn victim_dir(dir: &TestDir, name: &str) -> PathBuf {
    let v = dir.path().join(name);
    fs::create_dir(&v).expect("mkdir victim");
    fs::write(v.join("keep"), b"precious").expect("write victim");
    v
}

fn relink(link: &Path, to: &Path) {
    if fs::symlink_metadata(link).is_ok_and(|m| m.is_dir()) {
        fs::remove_dir_all(link).expect("rm dir");
    } else {
        let _ = fs::remove_file(link);
    }
    std::os::unix::fs::symlink(to, link).expect("symlink");
}

fn make_dir_again(p: &Path) {
    fs::remove_file(p).expect("rm link");
    fs::create_dir(p).expect("mkdir");
    fs::set_permissions(p, fs::Permissions::from_mode(0o700)).expect("chmod");
    common::chown_to_server_user(p);
}

#[test]
fn planted_links_in_emptied_directories_are_never_followed() {
    let dir = TestDir::new();
    let (pg, tool, exe) = in_place(&dir);
    let d = &pg.datadir;

    let a = victim_dir(&dir, "victim_a");
    relink(&d.join("pg_stat_tmp"), &a);
    refused(prep(&exe, &tool, d, &pg.archive_dir, &[]), &["pg_stat_tmp", "symbolic link", s(&a)]);
    assert_eq!(fs::read(a.join("keep")).expect("victim a survives"), b"precious");
    make_dir_again(&d.join("pg_stat_tmp"));

    let b = victim_dir(&dir, "victim_b");
    relink(&d.join("pg_wal/archive_status"), &b);
    // A link in pg_wal is removed itself (the server re-creates archive_status).
    prep(&exe, &tool, d, &pg.archive_dir, &[]).ok();
    assert!(fs::symlink_metadata(d.join("pg_wal/archive_status")).is_err());
    assert_eq!(fs::read(b.join("keep")).expect("victim b survives"), b"precious");

    // Links planted inside the emptied directories are removed themselves.
    let c = victim_dir(&dir, "victim_c");
    std::os::unix::fs::symlink(&c, d.join("pg_replslot/slot")).expect("symlink");
    std::os::unix::fs::symlink(c.join("keep"), d.join("pg_stat_tmp/global.stat")).expect("symlink");
    std::os::unix::fs::symlink(&c, d.join("base/pgsql_tmp")).expect("symlink");
    prep(&exe, &tool, d, &pg.archive_dir, &[]).ok();
    assert!(fs::symlink_metadata(d.join("pg_replslot/slot")).is_err());
    assert!(fs::symlink_metadata(d.join("pg_stat_tmp/global.stat")).is_err());
    assert!(fs::symlink_metadata(d.join("base/pgsql_tmp")).is_err());
    assert_eq!(fs::read(c.join("keep")).expect("victim c survives"), b"precious");
    for v in [&a, &b, &c] {
        assert_eq!(fs::read_dir(v).expect("victim").count(), 1, "{} lost files", v.display());
    }
    start_and_wait_promoted(&pg);
    assert_eq!(pg.query_scalar("select count(*) from t"), "150");
}

// ---------------------------------------------------------------- item 2: owner's rights

#[test]
fn root_writes_in_the_data_directory_only_with_the_owners_rights() {
    if !nix::unistd::geteuid().is_root() {
        crate::common::skip("needs root (CI runs as root)");
        return;
    }
    let dir = TestDir::new();
    let (pg, tool, exe) = in_place(&dir);
    let d = &pg.datadir;
    // Root's files the data directory's owner must not be able to reach through restore-prep.
    let secret_dir = dir.path().join("root_only");
    fs::create_dir(&secret_dir).expect("mkdir");
    fs::set_permissions(&secret_dir, fs::Permissions::from_mode(0o755)).expect("chmod");
    let secret = secret_dir.join("secret.conf");
    fs::write(&secret, b"root_password = 'hunter2'\n").expect("write");
    fs::set_permissions(&secret, fs::Permissions::from_mode(0o600)).expect("chmod");

    // postgresql.auto.conf -> a root-owned file: refused, never read into the copy.
    let auto = d.join("postgresql.auto.conf");
    let auto_text = fs::read(&auto).expect("auto.conf");
    relink(&auto, &secret);
    refused(prep(&exe, &tool, d, &pg.archive_dir, &[]), &["postgresql.auto.conf", "symbolic link"]);
    assert_eq!(fs::read(&secret).expect("secret"), b"root_password = 'hunter2'\n");
    fs::remove_file(&auto).expect("rm link");
    fs::write(&auto, &auto_text).expect("write");
    common::chown_to_server_user(&auto);

    // global -> a root-owned directory holding a valid pg_control: root could write there,
    // the data directory's owner cannot, so restore-prep must not either.
    let root_global = secret_dir.join("global");
    fs::create_dir(&root_global).expect("mkdir");
    let control = fs::read(d.join("global/pg_control")).expect("pg_control");
    fs::write(root_global.join("pg_control"), &control).expect("write");
    let global = d.join("global");
    fs::rename(&global, d.join("global.real")).expect("move global");
    std::os::unix::fs::symlink(&root_global, &global).expect("symlink");
    // The copy's files are not there (the link is not followed): the proof refuses first.
    let r = prep(&exe, &tool, d, &pg.archive_dir, &[]);
    assert_ne!(r.code, 0, "a global/ that is a link must be refused\n{}\n{}", r.stdout, r.stderr);
    assert!(r.stderr.contains("missing from the copy: global/"), "{}", r.stderr);
    assert_eq!(fs::read(root_global.join("pg_control")).expect("root's pg_control"), control, "root's file changed");
    assert_eq!(fs::read_dir(&root_global).expect("dir").count(), 1, "restore-prep left a file in root's directory");

    fs::remove_file(&global).expect("rm link");
    fs::rename(d.join("global.real"), &global).expect("move back");
    let out = prep(&exe, &tool, d, &pg.archive_dir, &[]).ok();
    assert!(out.stdout.contains("wrote recovery.signal"), "{}", out.stdout);
    let owner = fs::metadata(d).expect("stat").uid();
    for f in ["backup_label", "postgresql.auto.conf", "recovery.signal", "global/pg_control"] {
        assert_eq!(fs::metadata(d.join(f)).expect("written").uid(), owner, "{f} is not the owner's");
    }
    assert!(!fs::read_to_string(d.join("postgresql.auto.conf")).expect("auto").contains("hunter2"));
}

// ---------------------------------------------------------------- item 3: edited sidecar

/// Replace a sidecar file and fix its checksum in the manifest, as someone who can write
/// the sidecar storage can.
fn edit_sidecar(tool: &Tool, file: &str, text: &str, manifest_edit: impl FnOnce(&mut serde_json::Value)) {
    let bdir = tool.backup_dir("b1");
    fs::write(bdir.join("default").join(file), text).expect("write sidecar file");
    let mp = bdir.join("manifest.json");
    let mut m: serde_json::Value = serde_json::from_slice(&fs::read(&mp).expect("manifest")).expect("json");
    let entry = &mut m["nodes"][0]["files"][file];
    entry["sha256"] = format!("{:x}", Sha256::digest(text.as_bytes())).into();
    entry["size"] = text.len().into();
    manifest_edit(&mut m);
    fs::write(&mp, serde_json::to_vec_pretty(&m).expect("encode")).expect("write manifest");
}

#[test]
fn edited_sidecar_cannot_steer_deletions_or_the_label() {
    let dir = TestDir::new();
    let (pg, tool, exe) = in_place(&dir);
    let d = &pg.datadir;
    let victim = victim_dir(&dir, "victim");
    fs::write(victim.join("work.tmp"), b"someone's").expect("write");
    fs::create_dir(victim.join("pgsql_tmp")).expect("mkdir");

    for (path, why) in [
        (victim.display().to_string(), "has no link"),
        ("relative/ts".to_string(), "not an absolute path"),
        (d.join("base").display().to_string(), "inside the data directory"),
        ("/".to_string(), "root directory"),
    ] {
        edit_sidecar(&tool, "tablespace_map", &format!("16384 {path}\n"), |_| {});
        refused(prep(&exe, &tool, d, &pg.archive_dir, &[]), &[why]);
        assert!(victim.join("work.tmp").exists() && victim.join("pgsql_tmp").exists(), "{path}: victim cleaned");
    }
    edit_sidecar(&tool, "tablespace_map", "", |_| {});

    // An earlier START WAL LOCATION (manifest edited to match): recovery would start elsewhere.
    let label = tool.label("b1", "default");
    let start = common::tool::label_field(&label, "START WAL LOCATION");
    let lsn = start.split_whitespace().next().expect("lsn").to_string();
    let (hi, lo) = lsn.split_once('/').expect("lsn form");
    let earlier = format!("{}/{:X}", hi, u64::from_str_radix(lo, 16).expect("hex") - 0x100);
    let edited = label.replacen(&format!("START WAL LOCATION: {lsn}"), &format!("START WAL LOCATION: {earlier}"), 1);
    edit_sidecar(&tool, "backup_label", &edited, |m| m["nodes"][0]["start_lsn"] = earlier.clone().into());
    refused(prep(&exe, &tool, d, &pg.archive_dir, &[]), &["does not fit the copy", &earlier]);
    assert!(!d.join("backup_label").exists());
}

// ---------------------------------------------------------------- item 7: control characters

#[test]
fn control_characters_are_never_written_into_the_configuration() {
    let dir = TestDir::new();
    let (pg, tool, exe) = in_place(&dir);
    let d = &pg.datadir;
    let auto = fs::read(d.join("postgresql.auto.conf")).expect("auto.conf");

    let odd = dir.path().join("arch\nrecovery_target_action = 'promote'");
    fs::create_dir(&odd).expect("mkdir");
    let r = refused(prep(&exe, &tool, d, &odd, &[]), &["--archive-dir", "control character"]);
    assert_eq!(r.code, 2);

    let mp = tool.backup_dir("b1").join("manifest.json");
    let mut m: serde_json::Value = serde_json::from_slice(&fs::read(&mp).expect("manifest")).expect("json");
    m["restore_point"] = serde_json::json!({
        "name": "rp\nrecovery_target_action = 'shutdown'",
        "scope": "per-node",
        "lsns": {"default": m["nodes"][0]["stop_lsn"].clone()},
    });
    fs::write(&mp, serde_json::to_vec_pretty(&m).expect("encode")).expect("write");
    refused(prep(&exe, &tool, d, &pg.archive_dir, &["--target", "restore-point"]), &["recovery_target_name", "\\n"]);

    for t in ["time:2030-01-01\u{7f}", "name:a\u{1}b"] {
        refused(prep(&exe, &tool, d, &pg.archive_dir, &["--target", t]), &["control character"]);
    }
    assert_eq!(fs::read(d.join("postgresql.auto.conf")).expect("auto.conf"), auto, "postgresql.auto.conf changed");
    assert!(!d.join("recovery.signal").exists());
}
