#!/usr/bin/env bash
# wal-archive and wal-restore per 16 MiB segment, side by side in one run, on real WAL
# segments from a pgbench run (not zeros), against the durable floor and pgBackRest.
#
#   bench/wal-archive.sh            # SEGMENTS=20 ROUNDS=3, release build; OUT=file keeps the table
#
# Archive side:
#   floor        cp F DIR/F && sync F DIR   (cp, then fsync of the file and of the directory)
#   ours         pg-backup-hooks-wal-archive: plain, --compress zstd, --compress lz4
#   pgbackrest   archive-push to a local posix repository: compress-type none, zst, lz4
#                (Debian's pgBackRest, a peer only; stanza created once, repository emptied
#                between rounds so every push is a real one)
# Restore side (into an empty pg_wal-like directory, a new name each time: the server unlinks
# RECOVERYXLOG before it calls restore_command, so nothing is overwritten):
#   cp of the plain file; wal-restore of plain, .zst and .lz4; pgBackRest archive-get of
#   its none, zst and lz4 repositories.
# Every contender runs as the server user (the way archive_command runs), one process per
# segment, in the same loop. Prints medians over the rounds; stored size against plain.
# Must run as root (creates the cluster as user postgres).
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
SEGMENTS=${SEGMENTS:-20}
ROUNDS=${ROUNDS:-3}
pgbin=${PGBH_PG_BINDIR:-/usr/lib/postgresql/15/bin}
(cd "$here" && cargo build --release --quiet --bins)
command -v pgbackrest >/dev/null || { echo "bench/wal-archive.sh: pgbackrest is not installed (apt-get install pgbackrest)" >&2; exit 1; }

work=$(mktemp -d /tmp/pgbh-archbench.XXXXXX)
chmod 755 "$work"
install -m 755 "$here/target/release/pg-backup-hooks-wal-archive" "$here/target/release/pg-backup-hooks-wal-restore" "$work/"
chown postgres "$work"
as_pg() { runuser -u postgres -- "$@"; }
cleanup() { as_pg "$pgbin/pg_ctl" -D "$work/data" -m immediate stop >/dev/null 2>&1 || true; rm -rf "$work"; }
trap cleanup EXIT

# Real segments: pgbench on a throwaway cluster; keep every full segment it wrote.
port=$((20000 + RANDOM % 20000))
as_pg "$pgbin/initdb" -D "$work/data" -U postgres --auth=trust -N >/dev/null
cat >>"$work/data/postgresql.conf" <<CONF
port = $port
listen_addresses = ''
unix_socket_directories = '$work'
max_wal_size = 4GB
wal_keep_size = 4GB
fsync = off
archive_mode = on
archive_command = '/bin/true'
CONF
as_pg "$pgbin/pg_ctl" -D "$work/data" -l "$work/log" -w start >/dev/null
pgb() { as_pg "$pgbin/pgbench" -h "$work" -p "$port" -U postgres "$@" postgres; }
pgb -i -q -s 20 >/dev/null 2>&1
pgb -n -c 4 -t $((SEGMENTS * 400)) >/dev/null 2>&1
as_pg "$pgbin/psql" -h "$work" -p "$port" -U postgres -Atqc "select pg_switch_wal()" >/dev/null
as_pg mkdir "$work/src" "$work/pg_wal" "$work/lock" "$work/spool"
ls "$work/data/pg_wal" | grep -E '^[0-9A-F]{24}$' | sort | tail -n $((SEGMENTS + 1)) | head -n "$SEGMENTS" |
    while read -r f; do as_pg cp "$work/data/pg_wal/$f" "$work/src/$f"; done
n=$(ls "$work/src" | wc -l)

# pgBackRest: one stanza per compression type, each with its own repository.
for c in none zst lz4; do
    cat >"$work/pgbackrest-$c.conf" <<CONF
[global]
repo1-path=$work/repo-$c
lock-path=$work/lock
spool-path=$work/spool
log-path=$work
log-level-console=warn
log-level-file=off
compress-type=$c
archive-async=n
[bench]
pg1-path=$work/data
pg1-port=$port
pg1-socket-path=$work
pg1-user=postgres
CONF
    as_pg pgbackrest --config="$work/pgbackrest-$c.conf" --stanza=bench stanza-create >/dev/null
done

# The measuring loops, run as postgres; prints milliseconds per segment.
cat >"$work/measure.sh" <<'SH'
set -euo pipefail
work=$1 kind=$2
names=$(ls "$work/src")
n=$(echo "$names" | wc -l)
s=$(date +%s%N)
case $kind in
floor) for f in $names; do cp "$work/src/$f" "$work/a-floor/$f"; sync "$work/a-floor/$f" "$work/a-floor"; done ;;
ours-plain) for f in $names; do "$work/pg-backup-hooks-wal-archive" --archive-dir "$work/a-$kind" "$work/src/$f" "$f"; done ;;
ours-*) for f in $names; do "$work/pg-backup-hooks-wal-archive" --archive-dir "$work/a-$kind" --compress "${kind#ours-}" "$work/src/$f" "$f"; done ;;
pgbr-*) c=${kind#pgbr-}; for f in $names; do pgbackrest --config="$work/pgbackrest-$c.conf" --stanza=bench archive-push "$work/src/$f"; done ;;
get-cp) for f in $names; do cp "$work/a-floor/$f" "$work/pg_wal/RECOVERYXLOG.$f"; done ;;
get-ours-*) c=${kind#get-ours-}; for f in $names; do "$work/pg-backup-hooks-wal-restore" --archive-dir "$work/a-ours-$c" "$f" "$work/pg_wal/RECOVERYXLOG.$f"; done ;;
get-pgbr-*) c=${kind#get-pgbr-}; for f in $names; do pgbackrest --config="$work/pgbackrest-$c.conf" --stanza=bench archive-get "$f" "$work/pg_wal/RECOVERYXLOG.$f"; done ;;
esac
e=$(date +%s%N)
awk -v s="$s" -v e="$e" -v n="$n" 'BEGIN {printf "%.2f\n", (e - s) / 1e6 / n}'
SH
archive_kinds="floor ours-plain ours-zstd ours-lz4 pgbr-none pgbr-zst pgbr-lz4"
restore_kinds="get-cp get-ours-plain get-ours-zstd get-ours-lz4 get-pgbr-none get-pgbr-zst get-pgbr-lz4"
declare -A times
for r in $(seq 1 "$ROUNDS"); do
    for k in $archive_kinds; do
        case $k in
        pgbr-*) c=${k#pgbr-}; rm -rf "$work/repo-$c/archive/bench/"*/0000* ;;
        *) rm -rf "$work/a-$k"; as_pg mkdir "$work/a-$k" ;;
        esac
        times[$k]+="$(as_pg bash "$work/measure.sh" "$work" "$k") "
    done
    for k in $restore_kinds; do
        rm -rf "$work/pg_wal"; as_pg mkdir "$work/pg_wal"
        times[$k]+="$(as_pg bash "$work/measure.sh" "$work" "$k") "
    done
done
median() { tr ' ' '\n' <<<"${times[$1]}" | grep . | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
size() {
    case $1 in
    pgbr-*) du -sb "$work/repo-${1#pgbr-}/archive" | cut -f1 ;;
    *) du -sb "$work/a-$1" | cut -f1 ;;
    esac
}
plain=$(size floor)
ratio() { awk -v a="$1" -v b="$2" 'BEGIN {printf "%.2f", a / b}'; }
{
    echo "| per 16 MiB segment ($n real pgbench segments, median of $ROUNDS rounds) | ms | vs floor / cp | stored size vs plain |"
    echo "|---|---|---|---|"
    for k in $archive_kinds; do
        echo "| archive: $k | $(median "$k") | $(ratio "$(median "$k")" "$(median floor)") | $(awk -v a="$(size "$k")" -v b="$plain" 'BEGIN {printf "%.1f%%", 100 * a / b}') |"
    done
    for k in $restore_kinds; do
        echo "| restore: $k | $(median "$k") | $(ratio "$(median "$k")" "$(median get-cp)") | |"
    done
    echo
    echo "raw (ms per segment, each round): "
    for k in $archive_kinds $restore_kinds; do echo "  $k: ${times[$k]}"; done
} | tee "${OUT:-/dev/null}"
