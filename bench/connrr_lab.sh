#!/usr/bin/env bash
# Connection-open latency (issue 7: connect + first request/response p50 <= RTT + 2 ms) with
# enough samples to tell builds apart on a jittery profile: the bench's 30 connections on
# `bad` (+/-10 ms each way) leave its median about 2 ms uncertain. Per build and round: a
# fresh lab (round r draws its losses and jitter from seed CONNRR_SEED + r - 1, the same for
# every build in the round: the lab's default seed alone would replay one draw), ttool.py
# server in ns srv, kcptun-rs server (srv) and client (cli) with their defaults, then
# `connrr` (connect, 64 B request, 64 B reply, close; COUNT times) and `rr` (COUNT round
# trips on one connection). Builds alternate round by round. Holds the lab lock, always takes
# the lab down.
#
#   bench/connrr_lab.sh                                   # target/release/kcptun-rs
#   bench/connrr_lab.sh /tmp/new/kcptun-rs /tmp/old/kcptun-rs   # before/after
#
# Environment: CONNRR_PROFILE (bad), CONNRR_COUNT (300), CONNRR_ROUNDS (2), CONNRR_SEED (1),
# CONNRR_OUT (/tmp/connrr-lab-DATE), and lab_common.sh's.
set -euo pipefail
source "$(dirname "$0")/lab_common.sh"
PROFILE=${CONNRR_PROFILE:-bad}
COUNT=${CONNRR_COUNT:-300}
ROUNDS=${CONNRR_ROUNDS:-2}
SEED=${CONNRR_SEED:-1}
TTOOL=$NETLAB_DIR/ttool.py
TPORT=5201

if [ -z "${LAB_LOCKED:-}" ]; then
  [ $# -gt 0 ] || { lab_build; set -- "$KCPTUN_BIN"; }
  export CONNRR_OUT=${CONNRR_OUT:-/tmp/connrr-lab-$(date +%Y%m%d-%H%M%S)}
  mkdir -p "$CONNRR_OUT"
  bins=()
  for i in $(seq $#); do
    # Private copies: a concurrent build cannot swap them mid-run.
    cp "${!i}" "$CONNRR_OUT/kcptun-rs.$i"
    bins+=("$CONNRR_OUT/kcptun-rs.$i")
  done
  set -- "${bins[@]}"
fi
lab_lock "$@"

OUT=$CONNRR_OUT
host=${LISTEN%:*} port=${LISTEN##*:}
echo "connrr_lab: profile $PROFILE, $COUNT samples per phase, $ROUNDS rounds, run directory $OUT"
summary=()
for round in $(seq "$ROUNDS"); do
  for i in $(seq $#); do
    bin=${!i}
    d=$OUT/build$i.round$round
    mkdir -p "$d"
    lab_up "$PROFILE" --seed $((SEED + round - 1))
    lab_configs "$d" "127.0.0.1:$TPORT" "" 3
    lab_start TT srv "$d/ttool-server.log" python3 "$TTOOL" server --bind 127.0.0.1 \
      --port "$TPORT" --preload 1048576
    lab_tunnel "$d" "$bin"
    ip netns exec cli python3 "$TTOOL" connrr --host "$host" --port "$port" --count "$COUNT" \
      --duration $((COUNT * 2)) >"$d/connrr.json"
    ip netns exec cli python3 "$TTOOL" rr --host "$host" --port "$port" --count "$COUNT" \
      --duration $((COUNT * 2)) --samples >"$d/rr.json"
    lab_cleanup
    summary+=("$(python3 - "$d" "$(basename "$bin")" "$round" $((SEED + round - 1)) <<'EOF'
import json, sys
d, name, rnd, seed = sys.argv[1:5]
def lat(f):
    j = json.load(open(f"{d}/{f}"))
    l = j["lat"]
    bad = j.get("failed") or j.get("error")
    return f"p50 {l.get('p50_ms')} p90 {l.get('p90_ms')} (n {l['n']}{', ERROR ' + str(bad) if bad else ''})"
print(f"{name} round {rnd} (seed {seed}): connect+RR {lat('connrr.json')}; RR {lat('rr.json')}")
EOF
)")
    echo "${summary[-1]}"
  done
done
echo
echo "=== connrr_lab summary: profile $PROFILE, ms"
printf '%s\n' "${summary[@]}"
