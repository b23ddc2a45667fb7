#!/usr/bin/env bash
# restore-test against the same restore by hand, side by side in one run (issue 24's goal:
# restore-test adds at most 10%). One backup of a pgbench database with WAL written during
# the backup; then RUNS times, alternating, on a fresh copy each time (the copy's extraction
# is not timed):
#   by hand:      restore-prep --archive-mode off; pg_ctl -w start (private socket, no TCP);
#                 poll pg_is_in_recovery() until false; pg_ctl -m fast stop
#   restore-test: restore-test (restore-prep, start, replay, restore-check, relations, stop,
#                 pg_checksums --check), timed whole, and the sum of its restore-prep, start,
#                 replay and stop steps (the same work as by hand), from its --json
# Prints medians and the ratios.
#
#   bench/restore-test.sh            # SCALE=20 RUNS=5 LOAD_SECS=10
set -euo pipefail

here=$(cd "$(dirname "$0")/.." && pwd)
pgbin=${PGBH_PG_BINDIR:-/usr/lib/postgresql/15/bin}
pguser=${PGBH_TEST_USER:-postgres}
SCALE=${SCALE:-20}
RUNS=${RUNS:-5}
LOAD_SECS=${LOAD_SECS:-10}

(cd "$here" && cargo build --release --quiet)
work=$(mktemp -d /tmp/pgbh-rtbench.XXXXXX)
chmod 0755 "$work"
as_server() { if [ "$(id -u)" = 0 ]; then runuser -u "$pguser" -- "$@"; else "$@"; fi; }
mkdir -p "$work/bin" "$work/archive" "$work/sock" "$work/sidecar" "$work/run" "$work/prod"
chmod 0700 "$work/prod"
cp "$here/target/release/pg-backup-hooks" "$here/target/release/pg-backup-hooks-wal-restore" "$work/bin/"
chmod 0755 "$work/bin" "$work/bin/"*
chmod 0700 "$work/sidecar" "$work/run"
if [ "$(id -u)" = 0 ]; then chown "$pguser:$(id -gn "$pguser")" "$work/archive" "$work/sock" "$work/prod"; fi
bin="$work/bin/pg-backup-hooks"
cleanup() {
    as_server "$pgbin/pg_ctl" -D "$work/prod" -m immediate stop >/dev/null 2>&1 || true
    as_server "$pgbin/pg_ctl" -D "$work/scratch/prod" -m immediate stop >/dev/null 2>&1 || true
    rm -rf "$work"
}
trap cleanup EXIT

now() { date +%s.%N; }
median() { sort -n | awk '{a[NR]=$1} END {if (NR%2) print a[(NR+1)/2]; else print (a[NR/2]+a[NR/2+1])/2}'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN {printf "%.3f", a/b}'; }

echo "production cluster, pgbench scale $SCALE, $LOAD_SECS s of load during the backup ..."
as_server "$pgbin/initdb" -D "$work/prod" -U postgres --auth=trust -N -k >/dev/null
cat >> "$work/prod/postgresql.conf" <<CONF
listen_addresses = ''
unix_socket_directories = '$work/sock'
port = 5499
archive_mode = on
archive_command = 'test ! -f $work/archive/%f && cp %p $work/archive/%f'
CONF
as_server "$pgbin/pg_ctl" -D "$work/prod" -l "$work/prod/prod.log" -w start >/dev/null
conn="host=$work/sock port=5499 user=postgres dbname=postgres"
as_server "$pgbin/pgbench" -q -i -s "$SCALE" "$conn" >/dev/null 2>&1
env -u PGHOST -u PGPORT "$bin" pre --backup-id rtb --sidecar-dir "$work/sidecar" --run-dir "$work/run" \
    --node "default=$conn" --fast >/dev/null
as_server "$pgbin/pgbench" -T "$LOAD_SECS" -c 2 "$conn" >/dev/null 2>&1
tar -C "$work" --warning=no-file-changed --warning=no-file-removed -cf "$work/copy.tar" prod || [ $? = 1 ]
"$bin" post --backup-id rtb --run-dir "$work/run" >/dev/null
as_server "$pgbin/psql" -qAt -d "$conn" -c "select pg_switch_wal()" >/dev/null
sleep 2
echo "archive: $(ls "$work/archive" | wc -l) files"

fresh() {
    rm -rf "$work/scratch"
    mkdir -p "$work/scratch"
    tar -C "$work/scratch" --same-owner -xpf "$work/copy.tar"
    rm -rf "$work/hsock"; mkdir -p "$work/hsock"; chmod 0700 "$work/hsock"
    if [ "$(id -u)" = 0 ]; then chown "$pguser" "$work/hsock"; fi
}

by_hand() {
    local d="$work/scratch/prod" t0
    t0=$(now)
    "$bin" restore-prep --backup-id rtb --sidecar-dir "$work/sidecar" --pgdata "$d" \
        --archive-dir "$work/archive" --archive-mode off >/dev/null || { echo "restore-prep failed" >&2; exit 1; }
    as_server "$pgbin/pg_ctl" -D "$d" -l "$d/hand.log" -w -t 600 \
        -o "-c listen_addresses='' -c port=5498 -c unix_socket_directories=$work/hsock" start >/dev/null || true
    local n=0
    until [ "$(as_server "$pgbin/psql" -qAt -d "host=$work/hsock port=5498 user=postgres dbname=postgres" \
        -c 'select pg_is_in_recovery()' 2>/dev/null)" = f ]; do
        n=$((n + 1)); [ "$n" -lt 6000 ] || { echo "recovery did not end: $d/hand.log" >&2; exit 1; }
        sleep 0.1
    done
    as_server "$pgbin/pg_ctl" -D "$d" -m fast -w stop >/dev/null
    awk -v a="$t0" -v b="$(now)" 'BEGIN {printf "%.3f\n", b-a}'
}

with_tool() {
    local d="$work/scratch/prod" t0 out
    t0=$(now)
    out=$("$bin" restore-test --backup-id rtb --sidecar-dir "$work/sidecar" --pgdata "$d" \
        --archive-dir "$work/archive" --json)
    local total
    total=$(awk -v a="$t0" -v b="$(now)" 'BEGIN {printf "%.3f", b-a}')
    local same
    same=$(echo "$out" | jq -r '[.steps[] | select(.name == "restore-prep" or .name == "start" or .name == "replay" or .name == "stop") | .seconds] | add')
    echo "$total $(echo "$out" | jq -r '.rto_seconds') $(echo "$out" | jq -r '.wal_replayed_bytes') $(echo "$out" | jq -r '.passed') $same"
}

: > "$work/hand"; : > "$work/tool"
for i in $(seq 1 "$RUNS"); do
    fresh; h=$(by_hand) || exit 1; echo "$h" >> "$work/hand"
    fresh; t=$(with_tool) || exit 1; echo "$t" >> "$work/tool"
    echo "run $i: by hand ${h}s; restore-test (total rto wal passed same-steps) $t"
done
hand=$(median < "$work/hand")
tool=$(cut -d' ' -f1 "$work/tool" | median)
rto=$(cut -d' ' -f2 "$work/tool" | median)
wal=$(cut -d' ' -f3 "$work/tool" | head -1)
same=$(cut -d' ' -f5 "$work/tool" | median)
echo
echo "pgbench scale $SCALE, WAL replayed $(awk -v b="$wal" 'BEGIN {printf "%.0f", b/1048576}') MiB, median of $RUNS"
echo "by hand (restore-prep, start, wait, stop):         ${hand} s"
echo "restore-test (all steps, pg_checksums included):   ${tool} s   ratio $(ratio "$tool" "$hand")"
echo "restore-test's restore-prep+start+replay+stop:     ${same} s   ratio $(ratio "$same" "$hand")"
echo "restore-test to a recovered server (rto_seconds):  ${rto} s   (no stop)"
