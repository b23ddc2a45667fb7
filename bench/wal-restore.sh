#!/usr/bin/env bash
# wal-restore against plain `cp`, per 16 MiB segment, side by side on the same archive.
#
#   bench/wal-restore.sh                 # 40 segments, 5 rounds, release build
#   SEGMENTS=80 ROUNDS=9 BIN=target/debug/pg-backup-hooks-wal-restore bench/wal-restore.sh
#
# BIN is the program restore-prep writes into restore_command: pg-backup-hooks-wal-restore
# (default, release build), or the main binary's `wal-restore` subcommand when BIN is
# pg-backup-hooks itself.
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
    bin="$here/target/release/pg-backup-hooks-wal-restore"
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

median() { sort -n | awk '{a[NR]=$1} END {if (NR%2) print a[(NR+1)/2]; else print (a[NR/2]+a[NR/2+1])/2}'; }
sub=""
[ "$(basename "$bin")" = pg-backup-hooks ] && sub=wal-restore
export work bin sub dest="$work/pg_wal/RECOVERYXLOG"
names=$(ls "$work/archive")
export names
run_cp() { for f in $names; do rm -f "$dest"; cp "$work/archive/$f" "$dest"; done; }
run_ours() {
    for f in $names; do
        rm -f "$dest"
        "$bin" $sub --archive-dir "$work/archive" --system-identifier 7000000000000000001 "$f" "$dest"
    done
}
export -f run_cp run_ours
# Wall time and CPU time (user + system of every process, rm included on both sides) per
# segment, in ms. CPU time is what a loaded machine does not blur.
timed() {
    /usr/bin/time -f "%e %U %S" -o "$work/t" bash -c "$1"
    awk -v n="$SEGMENTS" '{printf "%.3f %.3f\n", $1 * 1000 / n, ($2 + $3) * 1000 / n}' "$work/t"
}

run_cp; run_ours # warm-up
: >"$work/cp"; : >"$work/ours"
for r in $(seq 1 "$ROUNDS"); do
    if [ $((r % 2)) = 1 ]; then
        timed run_cp >>"$work/cp"; timed run_ours >>"$work/ours"
    else
        timed run_ours >>"$work/ours"; timed run_cp >>"$work/cp"
    fi
done
col() { awk -v c="$1" '{print $c}' "$2" | median; }
cp_ms=$(col 1 "$work/cp"); ours_ms=$(col 1 "$work/ours")
cp_cpu=$(col 2 "$work/cp"); ours_cpu=$(col 2 "$work/ours")
ratio=$(awk -v a="$ours_ms" -v b="$cp_ms" 'BEGIN {printf "%.2f", a / b}')
cpu_ratio=$(awk -v a="$ours_cpu" -v b="$cp_cpu" 'BEGIN {printf "%.2f", a / b}')
echo "wal-restore vs cp, $SEGMENTS segments of 16 MiB, median of $ROUNDS rounds"
echo "wall: cp $cp_ms ms/segment, wal-restore $ours_ms ms/segment, ratio $ratio (goal <= 1.10)"
echo "CPU:  cp $cp_cpu ms/segment, wal-restore $ours_cpu ms/segment, ratio $cpu_ratio"
[ -n "$out_md" ] || exit 0
{
    echo "# wal-restore benchmark"
    echo
    echo "Measured by \`bench/wal-restore.sh\` on $(date -u +%Y-%m-%d), $(nproc) cores, load average"
    echo "$(cut -d' ' -f1 /proc/loadavg) at the end (the machine is shared: read the ratio, not the times)."
    echo "$SEGMENTS synthetic 16 MiB segments with valid headers, restored into a pg_wal-like directory on"
    echo "the same file system, page cache warm; median of $ROUNDS rounds, cp and wal-restore alternating."
    echo
    echo "| per 16 MiB segment, median | cp | wal-restore | ratio | goal |"
    echo "|---|---|---|---|---|"
    echo "| wall time | $cp_ms ms | $ours_ms ms | $ratio | <= 1.10 |"
    echo "| CPU time (user + system, all processes) | $cp_cpu ms | $ours_cpu ms | $cpu_ratio | |"
    echo
    echo "wal-restore checks the name and the segment header, opens the archived file with"
    echo "O_NOFOLLOW, copies it (copy_file_range, as cp) into a new 0600 file with a random name and"
    echo "renames it to %p. It does not fsync (the file or pg_wal): the server reads what"
    echo "restore_command wrote under a scratch name and deletes it, and when it keeps a restored file"
    echo "it moves it with durable_rename(), which fsyncs file and directory (xlogarchive.c,"
    echo "PostgreSQL 10-18). The copy itself is the same single copy_file_range as cp's."
    echo
    echo "What used to be left over cp was starting the binary (2026-11-23, valgrind"
    echo "--tool=callgrind, which counts instructions and is not disturbed by load):"
    echo "\`pg-backup-hooks --version\` runs 4.0 M instructions, \`cp --version\` 0.66 M; about 60% of"
    echo "ours is the dynamic loader resolving the symbols of libssl and libcrypto (ratio 1.22 on a"
    echo "quiet machine). restore_command therefore runs pg-backup-hooks-wal-restore, the same code in"
    echo "a binary that links no OpenSSL (the linker's --as-needed leaves libssl out): its"
    echo "\`--version\` runs 0.34 M instructions. A static"
    echo "OpenSSL was measured too (start-up 1.16 M instructions) and not adopted: it would not get"
    echo "Debian's security updates. Measured here: $(basename "$bin")${sub:+ $sub}. On a loaded"
    echo "machine the wall-time ratio swings from run to run (each exec waits for a CPU)."
} >"$out_md"
echo "wrote $out_md"
