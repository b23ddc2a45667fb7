#!/usr/bin/env bash
# `check` on 8 nodes with an archive of 10,000 segments, side by side with a shell script
# that makes the same queries with psql (issue 23: goal <= 1 s).
#
#   bench/check.sh            # NODES=8 SEGMENTS=10000 ROUNDS=10, release build
#   SEPARATE=1 bench/check.sh # each node its own copy of the archive (--archive-dir nI=DIR):
#                             # NODES x SEGMENTS headers read instead of SEGMENTS
#
# One PostgreSQL 15 server given NODES times under different names (n1..n8): one backup of
# all of them (pre + post, 8 sessions), archived by pg-backup-hooks-wal-archive. The archive
# is then filled up to SEGMENTS segment files after the backup's WAL: synthetic files holding
# a valid long page header with the server's system identifier (all check reads of a segment),
# so check reads SEGMENTS headers from the backup's start to the newest segment.
# The shell script connects to each node once with psql and runs the statements check runs
# (version, settings, pg_control_system, pg_stat_archiver, current WAL file) and lists the
# archive; it judges nothing. Must run as root (the server runs as user postgres).
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
NODES=${NODES:-8}
SEGMENTS=${SEGMENTS:-10000}
ROUNDS=${ROUNDS:-10}
pgbin=${PGBH_PG_BINDIR:-/usr/lib/postgresql/15/bin}
psql=/usr/lib/postgresql/15/bin/psql
(cd "$here" && cargo build --release --quiet)
bin="$here/target/release/pg-backup-hooks"

work=$(mktemp -d /tmp/pgbh-checkbench.XXXXXX)
chmod 755 "$work"
mkdir "$work/data"; chown postgres "$work/data"; chmod 700 "$work/data"
cleanup() { runuser -u postgres -- "$pgbin/pg_ctl" -D "$work/data" -m immediate stop >/dev/null 2>&1 || true; rm -rf "$work"; }
if [ -n "${KEEP:-}" ]; then echo "keeping $work" >&2; else trap cleanup EXIT; fi
mkdir -p "$work/archive" "$work/bin" "$work/sidecar" "$work/run" "$work/sock"
chmod 700 "$work/sidecar" "$work/run"
cp "$here/target/release/pg-backup-hooks-wal-archive" "$work/bin/"
chown postgres "$work/archive" "$work/sock"
port=$((20000 + RANDOM % 20000))
runuser -u postgres -- "$pgbin/initdb" -D "$work/data" -U postgres --auth=trust -N >/dev/null
cat >>"$work/data/postgresql.conf" <<CONF
port = $port
listen_addresses = ''
unix_socket_directories = '$work/sock'
fsync = off
archive_mode = on
archive_command = '$work/bin/pg-backup-hooks-wal-archive --archive-dir $work/archive %p %f'
CONF
runuser -u postgres -- "$pgbin/pg_ctl" -D "$work/data" -l "$work/sock/log" -w start >/dev/null
ci="host=$work/sock port=$port user=postgres dbname=postgres"
node_args=()
for i in $(seq 1 "$NODES"); do node_args+=(--node "n$i=$ci"); done
"$bin" pre --backup-id bench --sidecar-dir "$work/sidecar" --run-dir "$work/run" --fast "${node_args[@]}" >/dev/null
"$bin" post --backup-id bench --run-dir "$work/run" >/dev/null
sysid=$($psql -h "$work/sock" -p "$port" -U postgres -Atc "select system_identifier from pg_control_system()" postgres)
segments() { find "$work/archive" -maxdepth 1 -type f -printf '%f\n' | grep -E '^[0-9A-F]{24}$'; }
have=$(segments | wc -l)
newest=$(segments | sort | tail -1)
/usr/bin/python3 - "$work/archive" "$sysid" "$newest" "$((SEGMENTS - have))" <<'PY'
import os, struct, sys
d, sysid, newest, n = sys.argv[1], int(sys.argv[2]), sys.argv[3], int(sys.argv[4])
seg = 16 << 20
tli, segno = int(newest[:8], 16), int(newest[8:16], 16) * 256 + int(newest[16:], 16)
for i in range(1, n + 1):
    s = segno + i
    name = "%08X%08X%08X" % (tli, s // 256, s % 256)
    # XLogLongPageHeaderData: magic, info (XLP_LONG_HEADER), tli, pageaddr, rem_len, pad, sysid, seg size, page size
    head = struct.pack("<HHIQII", 0xD110, 0x0002, tli, s * seg, 0, 0) + struct.pack("<QII", sysid, seg, 8192)
    with open(os.path.join(d, name), "wb") as f:
        f.write(head)
PY
chown -R postgres "$work/archive"
total=$(segments | wc -l)
archive_args=(--archive-dir "$work/archive")
if [ -n "${SEPARATE:-}" ]; then
    archive_args=()
    for i in $(seq 1 "$NODES"); do
        cp -a "$work/archive" "$work/archive-n$i"
        archive_args+=(--archive-dir "n$i=$work/archive-n$i")
    done
fi

cat >"$work/by-psql.sh" <<SH
#!/bin/sh
# The same statements as check, one psql session per node, then the archive's listing.
for i in \$(seq 1 $NODES); do
  $psql -h "$work/sock" -p $port -U postgres -Atq postgres <<'SQL' >/dev/null
SELECT current_setting('server_version_num')::int4, current_setting('server_version');
SELECT current_setting('server_version'), (SELECT system_identifier::text FROM pg_control_system()),
       (SELECT timeline_id FROM pg_control_checkpoint()), pg_is_in_recovery(), current_setting('archive_mode'),
       current_setting('archive_command'),
       (SELECT setting::int8 * CASE unit WHEN '8kB' THEN 8192 WHEN 'MB' THEN 1048576 ELSE 1 END FROM pg_settings WHERE name = 'wal_segment_size');
SELECT current_setting('archive_library');
SELECT current_setting('data_directory');
SELECT last_archived_wal, last_archived_time::text, last_failed_wal, last_failed_time::text, failed_count,
       coalesce(last_failed_time > coalesce(last_archived_time, '-infinity'), false) FROM pg_stat_archiver;
SELECT CASE WHEN pg_is_in_recovery() THEN NULL ELSE pg_walfile_name(pg_current_wal_lsn()) END,
       (SELECT extract(epoch FROM now() - last_archived_time)::float8 FROM pg_stat_archiver);
SQL
done
ls "$work/archive" | wc -l >/dev/null
SH
chmod +x "$work/by-psql.sh"

now() { date +%s%N; }
run_check() { "$bin" check --sidecar-dir "$work/sidecar" --run-dir "$work/run" "${archive_args[@]}" \
    --format nagios "${node_args[@]}" >"$work/out" || true; }
"$work/by-psql.sh"; run_check   # warm the caches
line=$(cat "$work/out")
# SEPARATE: each node is judged against a copy, not the directory its archive_command writes:
# a WARNING saying so is expected.
case "$line" in "PGBH CHECK OK - "*) ;; "PGBH CHECK WARNING - "*) [ -n "${SEPARATE:-}" ] || { echo "$line" >&2; exit 1; } ;;
    *) echo "check did not say OK: $line" >&2; exit 1 ;; esac
declare -A t
for _ in $(seq 1 "$ROUNDS"); do
    s=$(now); run_check; e=$(now); t[check]="${t[check]:-} $(( (e - s) / 1000 ))"
    s=$(now); "$work/by-psql.sh"; e=$(now); t[psql]="${t[psql]:-} $(( (e - s) / 1000 ))"
done
stat() { echo "$1" | tr ' ' '\n' | grep . | sort -n | awk '{a[NR]=$1; s+=$1} END {printf "%.0f | %.0f | %.0f", s/NR/1000, a[1]/1000, a[NR]/1000}'; }
{
echo "$NODES nodes (one server), $total segments in ${SEPARATE:+each of $NODES copies of }the archive, $ROUNDS rounds, wall clock in ms:"
echo
echo "| | mean | min | max |"
echo "|---|---|---|---|"
echo "| pg-backup-hooks check --format nagios | $(stat "${t[check]}") |"
echo "| shell script, same statements with psql (no judging, no header reads) | $(stat "${t[psql]}") |"
echo
echo "check said: ${line%%|*}"
} | tee "${OUT:-/dev/null}"
