#!/usr/bin/env bash
# The inventory's cost (issue 21), side by side in one run on one throwaway local cluster:
# pre + post --fast with the inventory (local source: the data directory is on this host)
# against the same without it (the hidden benchmark switch PGBH_NO_INVENTORY=1), on a data
# directory with FILES extra empty files under a directory of its own (1000 per
# subdirectory), and the inventory's size in the sidecar.
#
#   bench/inventory.sh                      # FILES="100000 1000000" RUNS=5
#   FILES=100000 RUNS=9 bench/inventory.sh
#
# Prints a markdown table (also written to $OUT, default /tmp/pgbh-inventory-bench.md).
set -euo pipefail

here=$(cd "$(dirname "$0")/.." && pwd)
pgbin=${PGBH_PG_BINDIR:-/usr/lib/postgresql/15/bin}
pguser=${PGBH_TEST_USER:-postgres}
RUNS=${RUNS:-5}
FILES=${FILES:-"100000 1000000"}
out_md=${OUT:-/tmp/pgbh-inventory-bench.md}

(cd "$here" && cargo build --release --quiet)
bin="$here/target/release/pg-backup-hooks"

work=$(mktemp -d /tmp/pgbh-ibench.XXXXXX)
chmod 0755 "$work"; [ "$(id -u)" = 0 ] && chown "$pguser" "$work"
as_server() { if [ "$(id -u)" = 0 ]; then runuser -u "$pguser" -- "$@"; else "$@"; fi; }
d="$work/n1"
cleanup() { as_server "$pgbin/pg_ctl" -D "$d/data" -m immediate stop >/dev/null 2>&1 || true; rm -rf "$work"; }
trap cleanup EXIT
mkdir -p "$work/run" "$work/sidecar" "$d/archive" "$d/sock"; chmod 0700 "$work/run" "$work/sidecar"
[ "$(id -u)" = 0 ] && chown -R "$pguser" "$d"

now() { date +%s.%N; }
median() { sort -n | awk '{a[NR]=$1} END {if (NR%2) print a[(NR+1)/2]; else print (a[NR/2]+a[NR/2+1])/2}'; }
ms() { awk -v s="$1" 'BEGIN {printf "%.0f", s*1000}'; }

as_server "$pgbin/initdb" -D "$d/data" -U postgres --auth=trust -N >/dev/null
cat >> "$d/data/postgresql.conf" <<CONF
listen_addresses = ''
unix_socket_directories = '$d/sock'
archive_mode = on
archive_command = 'test ! -f $d/archive/%f && cp %p $d/archive/%f'
shared_buffers = 16MB
CONF
as_server "$pgbin/pg_ctl" -D "$d/data" -l "$d/log" -w start >/dev/null
node="--node=n1=host=$d/sock user=postgres dbname=postgres"

# Grow the extra directory to $1 files in all (1000 per subdirectory).
grow_to() {
    as_server python3 - "$d/data/bench_files" "$1" <<'PY'
import os, sys
root, want = sys.argv[1], int(sys.argv[2])
os.makedirs(root, exist_ok=True)
for i in range(want):
    sub = os.path.join(root, "d%04d" % (i // 1000))
    if i % 1000 == 0:
        os.makedirs(sub, exist_ok=True)
    p = os.path.join(sub, "f%04d" % (i % 1000))
    if not os.path.exists(p):
        os.close(os.open(p, os.O_CREAT | os.O_WRONLY, 0o600))
PY
}

seq_id=0
last_id=
one() { # with|without: seconds for pre + post
    seq_id=$((seq_id + 1)); last_id="ib-$1-$seq_id-$(date +%s%N)"
    local off=0 t0 t1; [ "$1" = without ] && off=1
    t0=$(now)
    PGBH_NO_INVENTORY=$off "$bin" pre --backup-id "$last_id" --sidecar-dir "$work/sidecar" --run-dir "$work/run" --fast "$node" >/dev/null 2>&1
    "$bin" post --backup-id "$last_id" --run-dir "$work/run" >/dev/null
    t1=$(now)
    awk -v a="$t0" -v b="$t1" 'BEGIN {print b-a}'
}

rows=()
for n in $FILES; do
    echo "growing the data directory to $n extra files ..." >&2
    grow_to "$n"
    sync
    one with >/dev/null; one without >/dev/null   # warm the caches
    with=(); without=()
    for _ in $(seq 1 "$RUNS"); do
        with+=("$(one with)"); without+=("$(one without)")
    done
    w=$(printf '%s\n' "${with[@]}" | median); wo=$(printf '%s\n' "${without[@]}" | median)
    one with >/dev/null
    sd="$work/sidecar/$last_id/n1"
    entries=$(python3 - "$sd/inventory-start.zst" <<'PY'
import subprocess, sys
out = subprocess.run(["zstd", "-dc", sys.argv[1]], capture_output=True).stdout
print(sum(1 for l in out.splitlines() if l[:2] in (b"f ", b"d ", b"l ")))
PY
)
    start=$(stat -c %s "$sd/inventory-start.zst"); stop=$(stat -c %s "$sd/inventory-stop.zst")
    per100k=$(awk -v s="$((start + stop))" -v e="$entries" 'BEGIN {printf "%.2f", s / 1048576 / e * 100000}')
    added=$(awk -v a="$w" -v b="$wo" 'BEGIN {printf "%.0f", (a-b)*1000}')
    rows+=("| $n | $entries | $(ms "$wo") ms | $(ms "$w") ms | $added ms | $((start / 1024)) KiB + $((stop / 1024)) KiB | $per100k MiB |")
    echo "helper's own timings of the last run:" >&2
    grep -h "inventory:" "$work/run/$last_id.log" >&2 || true
    rm -rf "${work:?}/sidecar/"ib-*
done

{
    echo "| extra files | entries listed | pre + post without inventory | with inventory | added | sidecar (start + stop) | sidecar per 100k entries |"
    echo "|---|---|---|---|---|---|---|"
    printf '%s\n' "${rows[@]}"
    echo
    echo "Median of $RUNS runs each, alternating with and without; $(nproc) cores, $("$pgbin/postgres" --version)."
} | tee "$out_md"
