#!/bin/sh
# CI smoke check of the fuzz targets: builds all of them (nightly, cargo-fuzz, no sanitizer)
# and runs each for a few seconds from its seeds, plus every saved regression input.
# Exit status 1 on a build failure or a crash. SECS per target, default 5.
set -eu
cd "$(dirname "$0")"
SECS=${SECS:-5}
command -v cargo-fuzz >/dev/null || { echo "cargo-fuzz missing: cargo install cargo-fuzz"; exit 1; }
nice -n 10 cargo +nightly fuzz build -s none
bin=target/x86_64-unknown-linux-gnu/release
for t in $(cargo +nightly fuzz list); do
    dir=$(mktemp -d)
    if [ -d "regressions/$t" ]; then
        # Saved inputs of fixed bugs must pass; ones of open bugs are skipped by the target.
        "$bin/$t" -runs=0 regressions/$t/* >/dev/null 2>&1 || {
            echo "$t: a regression input fails"; exit 1; }
    fi
    nice -n 10 "$bin/$t" -max_total_time="$SECS" -print_final_stats=1 "$dir" "seeds/$t" \
        >"$dir.log" 2>&1 || { echo "$t: crash"; tail -30 "$dir.log"; exit 1; }
    echo "$t: $(grep -o 'number_of_executed_units: *[0-9]*' "$dir.log" | grep -o '[0-9]*$') runs ok"
    rm -rf "$dir" "$dir.log"
done
