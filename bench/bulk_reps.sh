#!/usr/bin/env bash
# Repeated single-connection bulk transfers through kcptun-rs (default config) on one netlab
# profile, for before/after comparisons finer than bench/run.sh's median of three: every
# repetition is a fresh connection, the first one on a path the tunnel has not measured yet.
# Prints Mbit/s, elapsed s and time to first byte per repetition (the limit is link rate x
# (1 - loss) x 1308/1400), then the sender's retransmissions (its /stats `kcp:` line) and the
# emulated link's counters for the data direction: retransmissions well above the link's
# losses plus queue drops were needless. Holds the lab lock, always takes the lab down.
#
#   bench/bulk_reps.sh bad get 6                  # 6 x 8 MiB downloads on `bad`
#   KCPTUN_BIN=/tmp/old/kcptun-rs bench/bulk_reps.sh bad put 6 8388608
#   CAPTURE=1 bench/bulk_reps.sh bad get 3        # also pcaps of both ends (OUT/{cli,srv}.pcap)
#   FWD_DEF=bench/forwarders/kcptun-rs-fast3.json LOGLEVEL=4 bench/bulk_reps.sh reorder put 6
#
# Arguments: PROFILE DIR(get|put) REPS [BYTES, default 8 MiB]. Environment: OUT (run
# directory, default /tmp/bulk-reps-DATE), KCPTUN_BIN, CAPTURE, FWD_DEF (a netlab forwarder
# definition or partial config instead of the defaults), LOGLEVEL (3), and lab_common.sh's.
set -euo pipefail
source "$(dirname "$0")/lab_common.sh"
if [ -z "${LAB_LOCKED:-}" ]; then
  lab_build
  export OUT=${OUT:-/tmp/bulk-reps-$(date +%Y%m%d-%H%M%S)}
  mkdir -p "$OUT"
  cp "$KCPTUN_BIN" "$OUT/kcptun-rs"
  export KCPTUN_BIN=$OUT/kcptun-rs
fi
lab_lock "$@"
PROFILE=$1 DIR=$2 REPS=$3 BYTES=${4:-$((8 << 20))}
TTOOL=$NETLAB_DIR/ttool.py
lab_up "$PROFILE"
lab_start TT srv "$OUT/ttool.log" python3 "$TTOOL" server --port 5201 --preload "$BYTES"
lab_configs "$OUT" 127.0.0.1:5201 "${FWD_DEF:-}" "${LOGLEVEL:-3}"
lab_start S srv "$OUT/server.log" "$KCPTUN_BIN" -c "$OUT/server.json"
sleep 0.3
lab_start C cli "$OUT/client.log" "$KCPTUN_BIN" -c "$OUT/client.json"
ip netns exec cli python3 "$TTOOL" probe --host 127.0.0.1 --port 12948 --timeout 60 \
  >"$OUT/probe.json"
if [ -n "${CAPTURE:-}" ]; then
  lab_start PC cli "$OUT/tcpdump-cli.log" tcpdump -Z root -i lemu0 -s 0 -U -w "$OUT/cli.pcap" udp
  lab_start PS srv "$OUT/tcpdump-srv.log" tcpdump -Z root -i lemu0 -s 0 -U -w "$OUT/srv.pcap" udp
  sleep 1
fi
ip netns exec cli python3 "$TTOOL" bulk --host 127.0.0.1 --port 12948 --dir "$DIR" \
  --bytes "$BYTES" --reps "$REPS" --timeout 20 --id reps >"$OUT/bulk.json"
echo "bulk_reps: $PROFILE $DIR x $REPS, $BYTES B, binary $("$KCPTUN_BIN" -V 2>&1 | head -1), $OUT"
python3 - "$OUT/bulk.json" <<'PY'
import json, sys
for i, r in enumerate(json.load(open(sys.argv[1]))["reps"]):
    print(f"  rep {i}: {r.get('mbps')} Mbit/s, {r.get('elapsed_s')} s, ttfb {r.get('ttfb_ms')} ms,"
          f" complete {r.get('complete')}, sha_ok {r.get('sha_ok')}")
PY
# The sender's retransmission counters (server for get, client for put), from its /stats.
if [ "$DIR" = get ]; then SENDER=(srv "$SRV_HTTP"); else SENDER=(cli "$CLI_HTTP"); fi
ip netns exec "${SENDER[0]}" curl -s --max-time 5 "http://${SENDER[1]}/stats" | grep '^kcp:' \
  | sed 's/^/  sender /' || true
# What the emulated link did in the data direction (refreshed every second).
sleep 1.2
python3 - "${NETLAB_STATE:-/run/netlab-bench}/linkemu.stats.json" "$DIR" <<'PY' || true
import json, sys
d = json.load(open(sys.argv[1]))["b2a" if sys.argv[2] == "get" else "a2b"]
n = max(d["rx_pkts"], 1)
print(f"  link: {d['rx_pkts']} data-direction packets, {d['loss_drops']} lost,"
      f" {d['queue_drops']} queue drops ({100 * d['queue_drops'] / n:.2f}%),"
      f" {d['dups']} duplicated, {d['reordered']} reordered")
PY
