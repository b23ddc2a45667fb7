#!/usr/bin/env bash
# Run tests/versions.rs, tests/label_archive.rs, tests/standby.rs and tests/restore_check.rs (their
# modules in the integration-test crate), and the SQL inventory with the documented grants from
# tests/inventory.rs, against every supported PostgreSQL major (10 to 18).
#
#   scripts/test-matrix.sh [MAJOR...]        (default: 10 11 12 13 14 15 16 17 18)
#
# Installs the servers (scripts/install-pg-versions.sh; no network when present), builds the
# tests once, then runs those tests once per major with PGBH_PG_BINDIR set.
# Prints "PASS <major>" or "FAIL <major>" per version; exits 1 naming the failed versions.
# Each version's output is kept in ${PGBH_MATRIX_LOGS:-$CARGO_TARGET_DIR or target}/matrix/<major>.log.
set -uo pipefail

# The integration tests are one binary: select those modules (and the one test) by their path prefix.
filters=(versions:: label_archive:: standby:: restore_check:: inventory::a_remote_inventory_over_sql)

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/.." && pwd)
cd "$repo" || exit 1

majors=("$@")
[ ${#majors[@]} -gt 0 ] || majors=(10 11 12 13 14 15 16 17 18)

"$here/install-pg-versions.sh" "${majors[@]}" >/dev/null || { echo "test-matrix: installing PostgreSQL failed" >&2; exit 1; }

logs=${PGBH_MATRIX_LOGS:-${CARGO_TARGET_DIR:-$repo/target}/matrix}
mkdir -p "$logs"

echo "test-matrix: building" >&2
if ! cargo test --test integration --no-run >"$logs/build.log" 2>&1; then
    tail -n 30 "$logs/build.log" >&2
    echo "test-matrix: build failed (see $logs/build.log)" >&2
    exit 1
fi

failed=()
for m in "${majors[@]}"; do
    bindir=$("$here/pg-bindir.sh" "$m") || { echo "FAIL $m (not installed)"; failed+=("$m"); continue; }
    t0=$(date +%s.%N)
    PGBH_PG_BINDIR=$bindir PGBH_PG_EXPECT_MAJOR=$m cargo test --test integration -- "${filters[@]}" >"$logs/$m.log" 2>&1
    rc=$?
    secs=$(awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }')
    if [ $rc = 0 ]; then
        echo "PASS $m (${secs}s)"
    else
        echo "FAIL $m (${secs}s, log: $logs/$m.log)"
        grep -E "panicked at|^---- |FAILED" "$logs/$m.log" | head -n 10 | sed 's/^/    /'
        failed+=("$m")
    fi
done

echo "matrix: $(( ${#majors[@]} - ${#failed[@]} )) passed, ${#failed[@]} failed"
if [ ${#failed[@]} -gt 0 ]; then
    echo "test-matrix: FAILED on PostgreSQL ${failed[*]}" >&2
    exit 1
fi
echo "test-matrix: all passed (${majors[*]})" >&2
