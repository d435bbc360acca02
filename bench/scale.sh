#!/bin/sh
# Scale (issue 7), not in CI: tests/scale.rs in release, one test at a time.
#   - 10,000 concurrent idle connections through one client/server pair on 127.0.0.1: RSS per
#     connection (<= 25 KiB), CPU of both processes over 30 s of idleness (about 0), every
#     connection echoing again afterwards, conversation counts from /metrics.
#   - 1,000 concurrent downloads: per-connection goodput over a common 20 s window, Jain's
#     fairness index (>= 0.95), aggregate goodput, every byte checked.
# The test process holds ~20,000 sockets (its connections and the echo target's), so the
# descriptor limit is raised first (the test also raises it itself when it runs as root).
# SCALE_KCP, a JSON object, replaces the "kcp" settings of both ends (to compare configs).
#   bench/scale.sh                                   # both
#   bench/scale.sh ten_thousand_idle                 # one (a cargo test filter)
#   SCALE_KCP='{"sndwnd":32}' bench/scale.sh thousand_active
set -eu
cd "$(dirname "$0")/.."
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"
echo "ulimit -n: $(ulimit -n)"
exec nice -n 10 cargo test --release --test scale -- --ignored --nocapture --test-threads=1 "$@"
