#!/usr/bin/env bash
# Soak test (issue 8) through the real netlab link emulator instead of the test harness's relay:
# the `lossy` profile (50 ms one way, 2% loss each way, 50 Mbit/s, 100 ms queue). An echo target
# (bench/echo.py) and the kcptun-rs server run in ns srv, the client and the 50 checking workers
# of tests/faults_soak.rs (external mode: SOAK_LISTEN, SOAK_{CLIENT,SERVER}_PID) in ns cli. Holds
# the lab lock for the whole run and always takes the lab down. Prints a line a minute and a
# summary: connections, bytes checked, failures, CPU seconds and RSS of client and server over
# time, linkemu's counters, both ends' /metrics. Exits non-zero on any failed connection, a
# tunnel process that died, or a test that did not finish.
#
#   bench/soak_lab.sh                                          # one hour, kcptun-rs defaults
#   SOAK_SECS=120 bench/soak_lab.sh                            # two minutes
#   bench/soak_lab.sh bench/forwarders/kcptun-rs-fast3.json    # those KCP settings
#   bench/soak_lab.sh cfg.json                                 # {"kcp": {...}} merged into both
#
# Environment: SOAK_SECS (3600), SOAK_WORKERS (50), SOAK_PROFILE (lossy), SOAK_OUT (run directory,
# default /tmp/soak-lab-DATE: configs, logs, usage.tsv, link.jsonl, metrics), SOAK_LOGLEVEL (6: debug, one
# line per conversation event, to explain a failure), KCPTUN_BIN and SOAK_TEST_BIN
# (prebuilt binaries: nothing is compiled), and lab_common.sh's.
set -euo pipefail
source "$(dirname "$0")/lab_common.sh"
CONF=${1:-}
[ -z "$CONF" ] || CONF=$(realpath "$CONF")
export SOAK_SECS=${SOAK_SECS:-3600} SOAK_WORKERS=${SOAK_WORKERS:-50}
PROFILE=${SOAK_PROFILE:-lossy}
ECHO_PORT=7007

if [ -z "${LAB_LOCKED:-}" ]; then
  lab_build
  test_bin=${SOAK_TEST_BIN:-}
  [ -n "$test_bin" ] || test_bin=$(cd "$ROOT" && nice cargo test --release --test faults_soak --no-run \
    --message-format=json | python3 -c '
import json, sys
for line in sys.stdin:
    m = json.loads(line)
    if m.get("reason") == "compiler-artifact" and m.get("executable") \
            and m["target"]["name"] == "faults_soak":
        print(m["executable"])')
  export SOAK_OUT=${SOAK_OUT:-/tmp/soak-lab-$(date +%Y%m%d-%H%M%S)}
  mkdir -p "$SOAK_OUT"
  cp "$KCPTUN_BIN" "$SOAK_OUT/kcptun-rs"
  cp "$test_bin" "$SOAK_OUT/faults_soak"
  export KCPTUN_BIN=$SOAK_OUT/kcptun-rs SOAK_TEST_BIN=$SOAK_OUT/faults_soak
  "$KCPTUN_BIN" -V >"$SOAK_OUT/version.txt" 2>&1 || true
fi
lab_lock "$@"

OUT=$SOAK_OUT
echo "soak_lab: profile $PROFILE, $SOAK_WORKERS workers, $SOAK_SECS s, config ${CONF:-defaults}," \
  "run directory $OUT"
lab_up "$PROFILE"
lab_configs "$OUT" "127.0.0.1:$ECHO_PORT" "$CONF" "${SOAK_LOGLEVEL:-6}"
lab_start ECHO_PID srv "$OUT/echo.log" python3 "$ROOT/bench/echo.py" --port "$ECHO_PORT"
lab_start SPID srv "$OUT/server.log" "$KCPTUN_BIN" -c "$OUT/server.json"
sleep 0.3
lab_start CPID cli "$OUT/client.log" "$KCPTUN_BIN" -c "$OUT/client.json"

# One echo round trip end to end: target, server, link and client are up.
ip netns exec cli python3 - "$LISTEN" <<'EOF'
import socket, sys, time
host, port = sys.argv[1].rsplit(":", 1)
deadline = time.monotonic() + 20
while True:
    try:
        with socket.create_connection((host, int(port)), timeout=3) as s:
            s.settimeout(3)
            s.sendall(b"ping")
            s.shutdown(socket.SHUT_WR)
            got = b""
            while b := s.recv(16):
                got += b
            if got == b"ping":
                break
            raise OSError(f"echo returned {got!r}")
    except OSError as e:
        if time.monotonic() > deadline:
            sys.exit(f"soak_lab: tunnel not working after 20 s: {e}")
        time.sleep(0.2)
EOF

# CPU seconds and RSS of both ends, at the start and once a minute, into usage.tsv; linkemu's
# counters every second into link.jsonl (drops come in bursts of a few seconds: the summary
# shows the worst seconds).
LINK_STATS=${NETLAB_STATE:-/run/netlab-bench}/linkemu.stats.json
sample() {
  printf '%s\t%s\t%s\t%s\t%s\n' "$1" "$(cpu_s "$CPID")" "$(cpu_s "$SPID")" \
    "$(rss_kib "$CPID")" "$(rss_kib "$SPID")"
}
printf 't_s\tcpu_s_client\tcpu_s_server\trss_kib_client\trss_kib_server\n' >"$OUT/usage.tsv"
T0=$(date +%s)
(
  next=0
  while :; do
    now=$(($(date +%s) - T0))
    if [ "$now" -ge "$next" ]; then
      sample "$now" >>"$OUT/usage.tsv"
      next=$((next + 60))
    fi
    [ -r "$LINK_STATS" ] && { tr -d '\n' <"$LINK_STATS"; echo; } >>"$OUT/link.jsonl"
    sleep 1
  done
) &
SAMPLER=$!
LAB_PIDS+=("$SAMPLER")

set +e
ip netns exec cli env SOAK_LISTEN="$LISTEN" SOAK_CLIENT_PID="$CPID" SOAK_SERVER_PID="$SPID" \
  "$SOAK_TEST_BIN" --ignored --nocapture --exact soak_lossy_50_connections 2>&1 |
  tee "$OUT/soak.log"
rc=${PIPESTATUS[0]}
set -e
lab_stop "$SAMPLER"
sample "$(($(date +%s) - T0))" >>"$OUT/usage.tsv"

alive=yes
for p in "$CPID" "$SPID"; do kill -0 "$p" 2>/dev/null || alive=no; done
lab_metrics cli "$CLI_HTTP" >"$OUT/metrics.client.txt"
lab_metrics srv "$SRV_HTTP" >"$OUT/metrics.server.txt"
"$NETLAB" status >"$OUT/linkemu.txt" 2>&1 || true

echo
echo "=== soak_lab summary: profile $PROFILE, $SOAK_WORKERS workers, config ${CONF:-defaults}"
echo "binary: $(head -1 "$OUT/version.txt")"
done_line=$(grep '^soak done:' "$OUT/soak.log" || true)
echo "${done_line:-soak did not finish (test exit code $rc)}"
echo "elapsed $(($(date +%s) - T0)) s (workers stop at SOAK_SECS, then finish their transfers)"
echo "client/server over time (CPU seconds cumulative, RSS KiB):"
column -t "$OUT/usage.tsv" | sed 's/^/  /'
awk -F'\t' 'NR == 2 {t0 = $1; c0 = $2; s0 = $3} NR > 1 {t = $1; c = $2; s = $3}
  END {if (t > t0) printf "  average CPU: client %.1f %%, server %.1f %% of a core\n",
    100 * (c - c0) / (t - t0), 100 * (s - s0) / (t - t0)}' "$OUT/usage.tsv"
echo "linkemu counters (netlab.sh status):"
python3 - "$OUT/linkemu.txt" <<'EOF'
import json, sys
text = open(sys.argv[1]).read()
start = text.find("{")
try:
    stats = json.loads(text[start:]) if start >= 0 else {}
except ValueError:
    stats = {}
def walk(d, path):
    if isinstance(d, dict) and "rx_pkts" in d:
        keys = ["rx_pkts", "tx_pkts", "loss_drops", "queue_drops", "overflow_drops",
                "max_backlog_bytes", "write_errors"]
        loss = d["loss_drops"] / d["rx_pkts"] if d.get("rx_pkts") else 0
        qd = d["queue_drops"] / d["rx_pkts"] if d.get("rx_pkts") else 0
        print(f"  {path or '-'}: " + " ".join(f"{k} {d.get(k)}" for k in keys)
              + f" (loss {100 * loss:.2f} %, queue drops {100 * qd:.2f} %)")
    elif isinstance(d, dict):
        for k, v in d.items():
            walk(v, f"{path}.{k}" if path else k)
walk(stats, "")
if not stats:
    print("  " + text.strip().replace("\n", "\n  "))
EOF
echo "the seconds with the most queue drops (link.jsonl; offered: what reached the emulator):"
python3 - "$OUT/link.jsonl" <<'EOF'
import json, sys
rows, seen = [], set()
try:
    lines = open(sys.argv[1]).readlines()
except OSError:
    lines = []
for line in lines:
    try:
        j = json.loads(line)
    except ValueError:
        continue
    if "uptime_s" in j and j["uptime_s"] not in seen:
        seen.add(j["uptime_s"])
        rows.append(j)
worst = []
for a, b in zip(rows, rows[1:]):
    dt = b["uptime_s"] - a["uptime_s"]
    for d in ("a2b", "b2a") if dt > 0 else ():
        drops = b[d]["queue_drops"] - a[d]["queue_drops"]
        mbit = 8 * (b[d]["rx_bytes"] - a[d]["rx_bytes"]) / dt / 1e6
        worst.append((drops, b["uptime_s"], d, mbit))
worst = sorted(w for w in worst if w[0] > 0)[::-1][:5]
for drops, t, d, mbit in worst:
    print(f"  t {t:7.1f} s {d}: {drops} queue drops, offered {mbit:.1f} Mbit/s")
if not worst:
    print("  none")
EOF
echo "metrics (non-zero counters; full text in $OUT/metrics.*.txt):"
for side in client server; do
  grep -v '^#' "$OUT/metrics.$side.txt" | awk -v s="$side" '$NF != 0 {print "  " s ": " $0}' |
    grep -E 'retrans|dropped|conversations|refused|errors|bytes' | head -40 || true
done
echo "client and server alive at the end: $alive"

failures=$(sed -n 's/.* \([0-9][0-9]*\) failures.*/\1/p' <<<"$done_line")
if [ "$rc" -ne 0 ] || [ "$alive" != yes ] || [ "${failures:-x}" != 0 ]; then
  echo "soak_lab: FAIL (test exit $rc, failures ${failures:-unknown}, processes alive: $alive)"
  exit 1
fi
echo "soak_lab: PASS"
