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
# (page cache filled for both). It prints the median per-segment time of each and the ratio,
# and writes them to docs/benchmarks-wal-restore.md (OUT=file to write elsewhere, OUT= not at all).
set -euo pipefail

here=$(cd "$(dirname "$0")/.." && pwd)
SEGMENTS=${SEGMENTS:-40}
ROUNDS=${ROUNDS:-5}
out_md=${OUT-$here/docs/benchmarks-wal-restore.md}
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
summary=$(awk -v c="$cp_ns" -v o="$ours_ns" 'BEGIN {printf "%.2f %.2f %.2f", c / 1e6, o / 1e6, o / c}')
read -r cp_ms ours_ms ratio <<<"$summary"
echo "wal-restore vs cp, $SEGMENTS segments of 16 MiB, median of $ROUNDS rounds"
echo "cp:          $cp_ms ms/segment"
echo "wal-restore: $ours_ms ms/segment"
echo "ratio:       $ratio (goal <= 1.10)"
[ -n "$out_md" ] || exit 0
{
    echo "# wal-restore benchmark"
    echo
    echo "Measured by \`bench/wal-restore.sh\` on $(date -u +%Y-%m-%d), $(nproc) cores, load average"
    echo "$(cut -d' ' -f1 /proc/loadavg) at the end (the machine is shared: read the ratio, not the times)."
    echo "$SEGMENTS synthetic 16 MiB segments with valid headers, restored into a pg_wal-like directory on"
    echo "the same file system, page cache warm; median of $ROUNDS rounds, cp and wal-restore alternating."
    echo
    echo "| per 16 MiB segment | cp | wal-restore | ratio | goal |"
    echo "|---|---|---|---|---|"
    echo "| median | $cp_ms ms | $ours_ms ms | $ratio | <= 1.10 |"
    echo
    echo "wal-restore checks the name and the segment header, opens the archived file with"
    echo "O_NOFOLLOW, copies it (copy_file_range, as cp) into a new 0600 file with a random name and"
    echo "renames it to %p. It does not fsync (the file or pg_wal): the server reads what"
    echo "restore_command wrote under a scratch name and deletes it, and when it keeps a restored file"
    echo "it moves it with durable_rename(), which fsyncs file and directory (xlogarchive.c,"
    echo "PostgreSQL 10-18). The two fsyncs it used to do made it about 1.2x cp. What is left over cp"
    echo "is mostly starting the binary (it loads OpenSSL's libraries)."
} >"$out_md"
echo "wrote $out_md"
