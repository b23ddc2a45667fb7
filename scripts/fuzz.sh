#!/usr/bin/env bash
# Run each fuzz target for a bounded time (default 60 s each): the socket message decoder,
# the backup_label parser and the postgresql.auto.conf editor.
#
#   scripts/fuzz.sh [SECONDS] [TARGET...]
#
# Needs cargo-fuzz (`cargo install cargo-fuzz`). libFuzzer needs nightly compiler flags;
# with a stable toolchain RUSTC_BOOTSTRAP=1 allows them. A crash leaves its input in
# fuzz/artifacts/TARGET/: turn it into a unit test next to the code it broke.
set -euo pipefail
cd "$(dirname "$0")/../fuzz"
secs=${1:-60}
shift || true
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(protocol_decode label_parse autoconf_set)
export RUSTC_BOOTSTRAP=1
for t in "${targets[@]}"; do
    mkdir -p "corpus/$t"
    echo "fuzz: $t for ${secs}s"
    cargo fuzz run "$t" "corpus/$t" -- -max_total_time="$secs" -rss_limit_mb=2048 2>&1 | tail -n 3
done
