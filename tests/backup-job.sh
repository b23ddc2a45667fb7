#!/usr/bin/env bash
# What a backup program does, then what a DBA does at 3 a.m., on a throwaway cluster:
#   pre -> copy the data directory with tar while a client keeps writing -> post
#   -> lose the cluster -> untar -> restore-prep -> start -> restore-check -> compare the data.
# It narrates each step. Exit status 0 means the restored cluster has every committed row.
#
# Environment: PGBH_BIN (our binary; built with cargo when unset), PGBH_HOOKS_DIR (run pre
# and post through DIR/generic, e.g. the package's /usr/lib/pg-backup-hooks/hooks, instead of
# calling the binary), PGBH_PG_BINDIR (PostgreSQL binaries, default Debian's 15),
# PGBH_TEST_USER (server user when run as root, default postgres), KEEP=1 keeps the work
# directory.
set -euo pipefail

here=$(cd "$(dirname "$0")/.." && pwd)
pgbin=${PGBH_PG_BINDIR:-/usr/lib/postgresql/15/bin}
pguser=${PGBH_TEST_USER:-postgres}
id="demo-$(date +%Y%m%d-%H%M%S)"

step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
say() { printf '   %s\n' "$*"; }

if [ -z "${PGBH_BIN:-}" ]; then
    step "build pg-backup-hooks"
    say "cargo build: the first build compiles every dependency and takes a minute or two; set PGBH_BIN to skip it"
    (cd "$here" && cargo build --quiet)
    PGBH_BIN="$here/target/debug/pg-backup-hooks"
fi

work=$(mktemp -d /tmp/pgbh-demo.XXXXXX)
chmod 0755 "$work"; [ "$(id -u)" = 0 ] && chown "$pguser" "$work"
as_server() { if [ "$(id -u)" = 0 ]; then runuser -u "$pguser" -- "$@"; else "$@"; fi; }
psql_() { "$pgbin/psql" -X -q -At -h "$work/sock" -U postgres -d postgres "$@" 2>/dev/null || /usr/bin/psql -X -q -At -h "$work/sock" -U postgres -d postgres "$@"; }
cleanup() {
    [ -n "${writer:-}" ] && kill "$writer" 2>/dev/null || true
    as_server "$pgbin/pg_ctl" -D "$work/data" -m immediate stop >/dev/null 2>&1 || true
    if [ "${KEEP:-0}" = 1 ]; then echo "kept $work"; else rm -rf "$work"; fi
}
trap cleanup EXIT

# The server user runs restore_command, which calls our binary: if it cannot reach PGBH_BIN
# (say, in root's build tree), give it a copy it can.
mkdir -p "$work/bin" "$work/sock" "$work/archive" "$work/run" "$work/sidecar"
tool=$(command -v "$PGBH_BIN") || { echo "PGBH_BIN=$PGBH_BIN: no such program"; exit 1; }
case $tool in /*) ;; *) tool="$PWD/$tool" ;; esac
if ! as_server test -x "$tool"; then
    cp "$tool" "$work/bin/pg-backup-hooks"
    tool="$work/bin/pg-backup-hooks"
    chmod 0755 "$work/bin" "$tool"
fi
chmod 0700 "$work/run" "$work/sidecar"
[ "$(id -u)" = 0 ] && chown "$pguser" "$work/sock" "$work/archive"

step "1. a throwaway cluster in $work/data, archiving WAL to $work/archive"
as_server "$pgbin/initdb" -D "$work/data" -U postgres --auth=trust -N >/dev/null
cat >> "$work/data/postgresql.conf" <<CONF
listen_addresses = ''
unix_socket_directories = '$work/sock'
archive_mode = on
archive_command = '$tool wal-archive --archive-dir $work/archive %p %f'
CONF
say "archive_command: pg-backup-hooks wal-archive (durable, never overwrites: docs/archive.md)"
as_server "$pgbin/pg_ctl" -D "$work/data" -l "$work/server.log" -w start >/dev/null
psql_ -c "create table orders(id serial primary key, note text, at timestamptz default now())"
say "server $("$pgbin/postgres" --version)"

step "2. a client commits a row every 20 ms, all through the backup"
( while :; do psql_ -c "insert into orders(note) values ('live')" || true; sleep 0.02; done ) &
writer=$!
sleep 0.5

export PGHOST="$work/sock" PGUSER=postgres PGDATABASE=postgres
# pre and post as a backup program's job runs them: the binary, or the generic hook with its
# settings in an environment file.
if [ -n "${PGBH_HOOKS_DIR:-}" ]; then
    printf 'PGBH_BIN=%s\nPGBH_SIDECAR_DIR=%s\nPGBH_RUN_DIR=%s\nPGBH_FAST=true\n' \
        "$tool" "$work/sidecar" "$work/run" >"$work/env"
    job() { PGBH_ENV_FILE="$work/env" "$PGBH_HOOKS_DIR/generic" "$1" "$id" 2>&1; }
    how="$PGBH_HOOKS_DIR/generic"
else
    job() {
        case $1 in
            pre) "$tool" pre --backup-id "$id" --sidecar-dir "$work/sidecar" --run-dir "$work/run" --fast ;;
            post) "$tool" post --backup-id "$id" --run-dir "$work/run" ;;
        esac
    }
    how="pg-backup-hooks"
fi
step "3. the backup program runs the pre script: $how pre"
job pre | sed 's/^/   /'
before_pre_returned=$(psql_ -c "select count(*) from orders")
say "$before_pre_returned rows were committed before pre returned"

step "4. the backup program copies the live data directory (tar), leaving out what exclude-list prints"
mapfile -t excludes < <("$tool" exclude-list --format tar)
say "${#excludes[@]} exclusions from: pg-backup-hooks exclude-list --format tar"
set +e
tar -C "$work/data" "${excludes[@]}" -cf "$work/copy.tar" . 2>"$work/tar.err"
rc=$?
set -e
# GNU tar exits 1 when a file changed while it read it ("file changed as we read it"): for a
# live cluster that is success, WAL replay repairs it.
[ "$rc" -le 1 ] || { cat "$work/tar.err"; exit 1; }
[ "$rc" = 0 ] || say "tar exited 1 (a file changed as it read it): expected on a live cluster, the copy is good"
say "copied $(du -h "$work/copy.tar" | cut -f1) while the client kept writing"

step "5. the backup program runs the post script: $how post"
job post | sed 's/^/   /'
say "sidecar: $(cd "$work/sidecar" && find "$id" -type f | sort | tr '\n' ' ')"

sleep 0.3
kill "$writer"; wait "$writer" 2>/dev/null || true; writer=
psql_ -c "insert into orders(note) values ('after the backup')"
committed=$(psql_ -c "select count(*) from orders")
seg=$(psql_ -c "select pg_walfile_name(pg_switch_wal())")
for _ in $(seq 1 300); do [ -f "$work/archive/$seg" ] && break; sleep 0.1; done
[ -f "$work/archive/$seg" ] || { echo "segment $seg never reached the archive"; exit 1; }
say "$committed rows committed in all; WAL switched and archived up to $seg"
"$tool" list --sidecar-dir "$work/sidecar" --archive-dir "$work/archive" | sed 's/^/   /'

step "6. disaster: the server stops and its data directory is lost"
as_server "$pgbin/pg_ctl" -D "$work/data" -m fast stop >/dev/null
rm -rf "$work/data"

step "7. restore: the backup program puts the copy back"
mkdir -m 0700 "$work/data"
tar -C "$work/data" -xf "$work/copy.tar"
[ "$(id -u)" = 0 ] && chown -R "$pguser" "$work/data"

step "8. pg-backup-hooks restore-prep puts the label back and configures recovery"
"$tool" restore-prep --backup-id "$id" --sidecar-dir "$work/sidecar" --pgdata "$work/data" \
    --archive-dir "$work/archive" --archive-mode off | sed 's/^/   /'

step "9. start the restored cluster and wait for recovery to finish"
as_server "$pgbin/pg_ctl" -D "$work/data" -l "$work/restored.log" -w start >/dev/null || true
for _ in $(seq 1 300); do
    [ "$(psql_ -c "select pg_is_in_recovery()")" = "f" ] && break
    sleep 0.1
done
[ "$(psql_ -c "select pg_is_in_recovery()")" = "f" ] || { echo "recovery did not finish"; tail -20 "$work/restored.log"; exit 1; }
grep -E 'redo done|consistent recovery state|archive recovery complete' "$work/restored.log" | sed 's/^[^]]*] //' | head -3 |
    while IFS= read -r line; do say "server log: $line"; done

step "10. pg-backup-hooks restore-check proves where recovery ended (the last step of every restore)"
"$tool" restore-check --backup-id "$id" --sidecar-dir "$work/sidecar" --timeout 120 | sed 's/^/   /'

step "11. compare"
restored=$(psql_ -c "select count(*) from orders")
say "committed before the disaster: $committed, restored: $restored (pre returned after $before_pre_returned)"
if [ "$restored" = "$committed" ]; then
    printf '\n\033[1mround trip OK: every committed row is back\033[0m\n'
else
    echo "MISMATCH"; exit 1
fi
