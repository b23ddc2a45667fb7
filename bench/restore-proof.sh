#!/bin/sh
# restore-prep's proof of a copy's files (walk of the copy + comparison with two inventories,
# plus decoding one stored inventory) on synthetic data directories; see docs/benchmarks.md.
set -eu
cd "$(dirname "$0")/.."
for n in ${PGBH_BENCH_SIZES:-100000 1000000}; do
    PGBH_BENCH_FILES=$n cargo test -q --release --lib restore::files::bench::proof_bench -- --ignored --nocapture 2>&1 | grep '^BENCH'
done
