#!/usr/bin/env bash
# expire over a large archive, side by side in one run with the shell doing the same removal.
#
#   bench/expire.sh                 # SEGMENTS=100000 ROUNDS=3, release build; OUT=file keeps the table
#   TMPDIR=/dev/shm bench/expire.sh # the same on tmpfs: the tool's own cost, without the disk's unlinks
#
# A real cluster, its WAL moved past segment SEGMENTS with pg_resetwal, archives through
# wal-archive; two real backups are taken with pre/post. The archive is then padded with
# SEGMENTS older segment names (small files: expire reads names, and headers only of backups'
# start segments), which `expire --keep-backups 1` must remove with the older backup's files.
# Measured per round, on a fresh copy of the padded archive:
#   list            list --json over the archive (what check and a DBA run)
#   expire-dry      expire --keep-backups 1 --dry-run (lock, scan, plan)
#   expire          expire --keep-backups 1 (the same, plus every unlink and the sidecar)
#   shell-rm        find DIR -name 'OLDPREFIX*' -delete of the same files (the floor: no plan)
# Must run as root (the cluster runs as user postgres).
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
SEGMENTS=${SEGMENTS:-100000}
ROUNDS=${ROUNDS:-3}
pgbin=${PGBH_PG_BINDIR:-/usr/lib/postgresql/15/bin}
(cd "$here" && cargo build --release --quiet --bins)
tool="$here/target/release/pg-backup-hooks"

work=$(mktemp -d "${TMPDIR:-/tmp}/pgbh-expirebench.XXXXXX")
chmod 755 "$work"
install -m 755 "$here/target/release/pg-backup-hooks-wal-archive" "$work/"
chown postgres "$work"
as_pg() { runuser -u postgres -- "$@"; }
cleanup() { as_pg "$pgbin/pg_ctl" -D "$work/data" -m immediate stop >/dev/null 2>&1 || true; rm -rf "$work"; }
trap cleanup EXIT

# The next WAL segment after the padding: segno SEGMENTS+256, as a file name (16 MiB segments).
next=$(( (SEGMENTS / 256 + 2) * 256 ))
walname() { printf '00000001%08X%08X' $(( $1 / 256 )) $(( $1 % 256 )); }
port=$((20000 + RANDOM % 20000))
as_pg "$pgbin/initdb" -D "$work/data" -U postgres --auth=trust -N >/dev/null
as_pg "$pgbin/pg_resetwal" -l "$(walname "$next")" "$work/data" >/dev/null
as_pg mkdir "$work/archive-base"
cat >>"$work/data/postgresql.conf" <<CONF
port = $port
listen_addresses = ''
unix_socket_directories = '$work'
fsync = off
archive_mode = on
archive_command = '$work/pg-backup-hooks-wal-archive --archive-dir $work/archive-base %p %f'
CONF
as_pg "$pgbin/pg_ctl" -D "$work/data" -l "$work/log" -w start >/dev/null
mkdir -m 700 "$work/sidecar" "$work/run"
node="default=host=$work port=$port user=postgres dbname=postgres"
for id in old new; do
    "$tool" pre --backup-id "$id" --sidecar-dir "$work/sidecar" --run-dir "$work/run" --fast --node "$node" >/dev/null
    "$tool" post --backup-id "$id" --run-dir "$work/run" >/dev/null
    sleep 1.1
done
as_pg "$pgbin/pg_ctl" -D "$work/data" -m fast -w stop >/dev/null
# The padding: SEGMENTS names older than either backup, one small file each.
python3 - "$work/archive-base" "$SEGMENTS" <<'PY'
import os, sys
d, n = sys.argv[1], int(sys.argv[2])
for segno in range(1, n + 1):
    fd = os.open(os.path.join(d, "00000001%08X%08X" % (segno // 256, segno % 256)), os.O_CREAT | os.O_WRONLY | os.O_EXCL, 0o600)
    os.write(fd, b"\0" * 64)
    os.close(fd)
PY
chown -R postgres "$work/archive-base"
total=$(ls "$work/archive-base" | wc -l)

ms() { awk -v s="$1" -v e="$2" 'BEGIN {printf "%.0f", (e - s) / 1e6}'; }
declare -A times
fresh() { rm -rf "$work/archive" "$work/sidecar-r"; cp -a "$work/archive-base" "$work/archive"; cp -a "$work/sidecar" "$work/sidecar-r"; sync; }
run() {
    local k=$1; shift
    fresh
    local s; s=$(date +%s%N)
    "$@" >"$work/out-$k" 2>&1 || { echo "bench/expire.sh: $k failed:" >&2; cat "$work/out-$k" >&2; exit 1; }
    times[$k]+="$(ms "$s" "$(date +%s%N)") "
}
for r in $(seq 1 "$ROUNDS"); do
    run list "$tool" list --json --sidecar-dir "$work/sidecar-r" --archive-dir "$work/archive"
    run expire-dry "$tool" expire --keep-backups 1 --dry-run --sidecar-dir "$work/sidecar-r" --archive-dir "$work/archive"
    run expire "$tool" expire --keep-backups 1 --sidecar-dir "$work/sidecar-r" --archive-dir "$work/archive"
    left=$(ls "$work/archive" | wc -l)
    run shell-rm find "$work/archive" -maxdepth 1 -name '00000001*' -size -100c -delete
done
removed=$((total - left))
median() { tr ' ' '\n' <<<"${times[$1]}" | grep . | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
{
    echo "| $total archived names ($SEGMENTS padding), median of $ROUNDS rounds | ms | vs shell-rm |"
    echo "|---|---|---|"
    for k in list expire-dry expire shell-rm; do
        echo "| $k | $(median "$k") | $(awk -v a="$(median "$k")" -v b="$(median shell-rm)" 'BEGIN {printf "%.2f", a / b}') |"
    done
    echo
    echo "expire removed $removed files, left $left; raw ms per round:"
    for k in list expire-dry expire shell-rm; do echo "  $k: ${times[$k]}"; done
} | tee "${OUT:-/dev/null}"
