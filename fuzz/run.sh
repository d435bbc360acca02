#!/bin/sh
# Runs one fuzz target (default: each in turn) for RUNS executions or SECS seconds, whichever
# comes first, one job at a time and niced (the build machine is shared). The corpus starts
# from fuzz/seeds/<target> and grows in fuzz/corpus/<target> (not committed).
#   fuzz/run.sh [target...]        RUNS=10000000 SECS=1800 by default
set -eu
cd "$(dirname "$0")"
RUNS=${RUNS:-10000000}
SECS=${SECS:-1800}
TARGETS=${*:-"tlv_stream session0 config datagram_open kcp_input kcp_model kcp_shared"}
nice -n 10 cargo +nightly fuzz build -s none >/dev/null
for t in $TARGETS; do
    mkdir -p "corpus/$t"
    start=$(date +%s)
    nice -n 10 cargo +nightly fuzz run -s none "$t" "corpus/$t" "seeds/$t" -- \
        -runs="$RUNS" -max_total_time="$SECS" -print_final_stats=1 \
        >"corpus/$t.log" 2>&1 || { echo "$t: FAILED (see fuzz/corpus/$t.log)"; tail -40 "corpus/$t.log"; exit 1; }
    execs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "corpus/$t.log" | grep -o '[0-9]*$')
    echo "$t: $execs executions in $(( $(date +%s) - start )) s, corpus $(ls "corpus/$t" | wc -l) files"
done
