#!/bin/sh
# Soak test (issue 8), not in CI: 50 concurrent connections through the netlab "lossy"
# impairment (2% loss each way, 50 ms one-way delay) via the test harness's relay, each
# transferring a random size both ways with every byte checked, for SOAK_SECS (default one
# hour). Prints a line a minute (connections, bytes, failures, RSS of client and server) and
# a summary; exits non-zero on any failed connection.
#   bench/soak.sh                 # one hour
#   SOAK_SECS=600 bench/soak.sh   # ten minutes
#   bench/soak.sh --lab [CONFIG]  # through the real netlab emulator instead: bench/soak_lab.sh
set -eu
cd "$(dirname "$0")/.."
if [ "${1:-}" = --lab ]; then
  shift
  exec bench/soak_lab.sh "$@"
fi
export SOAK_SECS=${SOAK_SECS:-3600} SOAK_WORKERS=${SOAK_WORKERS:-50}
exec nice -n 10 cargo test --release --test faults_soak -- --ignored --nocapture
