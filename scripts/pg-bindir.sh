#!/usr/bin/env bash
# Print the PostgreSQL bin directory for a major version (10..18), as installed by
# scripts/install-pg-versions.sh; exit 1 if it is not installed.
#
#   PGBH_PG_BINDIR=$(scripts/pg-bindir.sh 12) cargo test --test integration versions::
set -euo pipefail
m=${1:?usage: pg-bindir.sh MAJOR (10..18)}
case $m in
    1[0-8]) ;;
    *) echo "pg-bindir: unsupported major $m (want 10..18)" >&2; exit 2 ;;
esac
if [ "$m" = 15 ]; then
    d=/usr/lib/postgresql/15/bin
else
    repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
    d=${PGBH_PG_CACHE:-$repo/.cache/pg}/node_modules/pg$m/native/bin
fi
if [ ! -x "$d/postgres" ]; then
    echo "pg-bindir: PostgreSQL $m is not installed at $d (run scripts/install-pg-versions.sh $m)" >&2
    exit 1
fi
echo "$d"
