#!/usr/bin/env bash
# wal-archive and compressed wal-restore against the durable floor, per 16 MiB segment, side by
# side in one run, on real WAL segments from a pgbench run (not zeros).
#
#   bench/wal-archive.sh            # SEGMENTS=20 ROUNDS=3, release build
#
# Archive side: `cp F DIR/F && sync F DIR` (the durable floor: cp, then fsync of the file and
# of the directory) against pg-backup-hooks-wal-archive plain, --compress zstd, --compress lz4.
# Restore side: `cp` of the plain file against wal-restore of the .zst and .lz4 archives.
# pgBackRest (archive-push/archive-get) is NOT measured by this script yet.
# Must run as root (the cluster runs as user postgres). Prints a table; OUT=file to keep it.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
SEGMENTS=${SEGMENTS:-20}
ROUNDS=${ROUNDS:-3}
pgbin=${PGBH_PG_BINDIR:-/usr/lib/postgresql/15/bin}
(cd "$here" && cargo build --release --quiet)
arch_bin="$here/target/release/pg-backup-hooks-wal-archive"
rest_bin="$here/target/release/pg-backup-hooks-wal-restore"

work=$(mktemp -d /tmp/pgbh-archbench.XXXXXX)
chown postgres "$work"
cleanup() { runuser -u postgres -- "$pgbin/pg_ctl" -D "$work/data" -m immediate stop >/dev/null 2>&1 || true; rm -rf "$work"; }
trap cleanup EXIT
# Real segments: pgbench on a throwaway cluster; keep every full segment it wrote.
port=$((20000 + RANDOM % 20000))
runuser -u postgres -- "$pgbin/initdb" -D "$work/data" -U postgres --auth=trust -N >/dev/null
cat >>"$work/data/postgresql.conf" <<CONF
port = $port
listen_addresses = ''
unix_socket_directories = '$work'
max_wal_size = 4GB
wal_keep_size = 4GB
fsync = off
CONF
runuser -u postgres -- "$pgbin/pg_ctl" -D "$work/data" -l "$work/log" -w start >/dev/null
pgb() { runuser -u postgres -- /usr/lib/postgresql/15/bin/pgbench -h "$work" -p "$port" -U postgres "$@" postgres; }
pgb -i -q -s 20 >/dev/null 2>&1
pgb -n -c 4 -t $((SEGMENTS * 400)) >/dev/null 2>&1
runuser -u postgres -- "$pgbin/psql" -h "$work" -p "$port" -U postgres -Atqc "select pg_switch_wal()" >/dev/null
mkdir -p "$work/src"
ls "$work/data/pg_wal" | grep -E '^[0-9A-F]{24}$' | sort | tail -n $((SEGMENTS + 1)) | head -n "$SEGMENTS" |
    while read -r f; do cp "$work/data/pg_wal/$f" "$work/src/$f"; done
names=$(ls "$work/src")
n=$(echo "$names" | wc -l)

ms() { awk -v s="$1" -v e="$2" -v n="$n" 'BEGIN {printf "%.2f", (e - s) / 1e6 / n}'; }
now() { date +%s%N; }
floor() { for f in $names; do cp "$work/src/$f" "$1/$f"; sync "$1/$f" "$1"; done; }
ours() { for f in $names; do "$arch_bin" --archive-dir "$1" ${2:+--compress "$2"} "$work/src/$f" "$f"; done; }
restore_cp() { for f in $names; do cp "$work/a-plain/$f" "$work/pg_wal/RECOVERYXLOG"; done; }
restore_ours() { for f in $names; do "$rest_bin" --archive-dir "$1" "$f" "$work/pg_wal/RECOVERYXLOG"; done; }
declare -A total
add() { total[$1]=$(awk -v a="${total[$1]:-0}" -v b="$2" 'BEGIN {print a + b}'); }
for r in $(seq 1 "$ROUNDS"); do
    for kind in floor plain zstd lz4; do
        d="$work/a-$kind"; rm -rf "$d"; mkdir "$d"
        s=$(now)
        case $kind in floor) floor "$d" ;; plain) ours "$d" "" ;; *) ours "$d" "$kind" ;; esac
        add "$kind" "$(ms "$s" "$(now)")"
    done
    mkdir -p "$work/pg_wal"
    s=$(now); restore_cp; add restore-cp "$(ms "$s" "$(now)")"
    s=$(now); restore_ours "$work/a-zstd"; add restore-zstd "$(ms "$s" "$(now)")"
    s=$(now); restore_ours "$work/a-lz4"; add restore-lz4 "$(ms "$s" "$(now)")"
done
avg() { awk -v t="${total[$1]}" -v r="$ROUNDS" 'BEGIN {printf "%.2f", t / r}'; }
size() { du -sb "$work/a-$1" | cut -f1; }
plain_size=$(size plain)
{
echo "| per 16 MiB segment ($n real segments, $ROUNDS rounds, mean) | ms | vs floor / cp | stored size |"
echo "|---|---|---|---|"
for k in floor plain zstd lz4; do
    echo "| archive: $k | $(avg $k) | $(awk -v a="$(avg $k)" -v b="$(avg floor)" 'BEGIN {printf "%.2f", a / b}') | $(awk -v a="$(size $k)" -v b="$plain_size" 'BEGIN {printf "%.1f%%", 100 * a / b}') |"
done
for k in restore-cp restore-zstd restore-lz4; do
    echo "| $k | $(avg $k) | $(awk -v a="$(avg $k)" -v b="$(avg restore-cp)" 'BEGIN {printf "%.2f", a / b}') | |"
done
} | tee "${OUT:-/dev/null}"
