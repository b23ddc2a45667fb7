#!/usr/bin/env bash
# wal-restore against plain `cp`, per 16 MiB segment, side by side on the same archive.
#
#   bench/wal-restore.sh                 # 40 segments, 5 rounds, release build
#   SEGMENTS=80 ROUNDS=9 BIN=target/debug/pg-backup-hooks bench/wal-restore.sh
#
# The archive holds synthetic segments with a valid long page header (magic, flags, system
# identifier, segment size), so wal-restore runs its full header check. Each round restores
# every segment once with `cp ARCHIVE/F DEST` and once with `wal-restore`, into a pg_wal-like
# directory on the same file system, alternating which goes first; after a warm-up round
# (page cache filled for both). It prints the median per-segment time of each and the ratio.
set -euo pipefail

here=$(cd "$(dirname "$0")/.." && pwd)
SEGMENTS=${SEGMENTS:-40}
ROUNDS=${ROUNDS:-5}
bin=${BIN:-}
if [ -z "$bin" ]; then
    (cd "$here" && cargo build --release --quiet)
    bin="$here/target/release/pg-backup-hooks"
fi

work=$(mktemp -d /tmp/pgbh-walbench.XXXXXX)
trap 'rm -rf "$work"' EXIT
mkdir -p "$work/archive" "$work/pg_wal"

/usr/bin/python3 - "$work/archive" "$SEGMENTS" <<'PY'
import os, struct, sys
archive, n = sys.argv[1], int(sys.argv[2])
size = 16 << 20
body = os.urandom(size - 40)
for i in range(1, n + 1):
    # XLogLongPageHeaderData: magic, info (XLP_LONG_HEADER | XLP_BKP_REMOVABLE), tli,
    # pageaddr, rem_len, padding, sysid, seg_size, blcksz
    head = struct.pack("=HHIQI4xQII", 0xD110, 0x0006, 1, (i << 24), 0, 7000000000000000001, size, 8192)
    with open(os.path.join(archive, "%08X%08X%08X" % (1, 0, i)), "wb") as f:
        f.write(head + body)
PY

now() { date +%s%N; }
median() { sort -n | awk '{a[NR]=$1} END {if (NR%2) print a[(NR+1)/2]; else print (a[NR/2]+a[NR/2+1])/2}'; }
names=$(ls "$work/archive")
dest="$work/pg_wal/RECOVERYXLOG"
run_cp() { for f in $names; do rm -f "$dest"; cp "$work/archive/$f" "$dest"; done; }
run_ours() {
    for f in $names; do
        rm -f "$dest"
        "$bin" wal-restore --archive-dir "$work/archive" --system-identifier 7000000000000000001 "$f" "$dest"
    done
}
timed() { local t0; t0=$(now); "$@"; echo $(( ($(now) - t0) / SEGMENTS )); }

run_cp; run_ours # warm-up
: >"$work/cp.ns"; : >"$work/ours.ns"
for r in $(seq 1 "$ROUNDS"); do
    if [ $((r % 2)) = 1 ]; then
        timed run_cp >>"$work/cp.ns"; timed run_ours >>"$work/ours.ns"
    else
        timed run_ours >>"$work/ours.ns"; timed run_cp >>"$work/cp.ns"
    fi
done
cp_ns=$(median <"$work/cp.ns")
ours_ns=$(median <"$work/ours.ns")
awk -v c="$cp_ns" -v o="$ours_ns" -v n="$SEGMENTS" -v r="$ROUNDS" 'BEGIN {
    printf "wal-restore vs cp, %d segments of 16 MiB, median of %d rounds\n", n, r
    printf "cp:          %.2f ms/segment\n", c / 1e6
    printf "wal-restore: %.2f ms/segment\n", o / 1e6
    printf "ratio:       %.2f (goal <= 1.10)\n", o / c
}'
