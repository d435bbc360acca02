# shellcheck shell=bash
# Shared by bench/soak_lab.sh, rr_under_bulk.sh and connrr_lab.sh (source it; bash only): the
# netlab lock, bringing the lab up and always down again, a kcptun-rs server in ns srv and
# client in ns cli, and per-process CPU/RSS readings. Everything started here is stopped by
# its PID.
#
# Environment: NETLAB_DIR (../shared/netlab next to the repository), NETLAB_LOCK
# (/tmp/team/netlab.lock), LINKEMU (/tmp/linkemu/release/linkemu), KCPTUN_BIN (the binary to
# test; default target/release/kcptun-rs, copied into the run directory so that a concurrent
# build cannot swap it mid-run).

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
NETLAB_DIR=${NETLAB_DIR:-$ROOT/../shared/netlab}
NETLAB=$NETLAB_DIR/netlab.sh
LOCK=${NETLAB_LOCK:-/tmp/team/netlab.lock}
export LINKEMU=${LINKEMU:-/tmp/linkemu/release/linkemu}
LISTEN=127.0.0.1:12948     # client TCP listener, ns cli
KCP=10.77.0.2:29900        # server UDP, ns srv
CLI_HTTP=127.0.0.1:12949   # http_listen of the client, ns cli
SRV_HTTP=127.0.0.1:29901   # http_listen of the server, ns srv
LAB_PIDS=()
LAB_UP=

# Builds what is missing; call before lab_lock so that nobody waits on our compiler.
lab_build() {
  if [ ! -x "$LINKEMU" ]; then
    cargo build --release --manifest-path "$NETLAB_DIR/linkemu/Cargo.toml" \
      --target-dir "$(dirname "$(dirname "$LINKEMU")")"
  fi
  if [ -z "${KCPTUN_BIN:-}" ]; then
    (cd "$ROOT" && nice cargo build --release)
    export KCPTUN_BIN=$ROOT/target/release/kcptun-rs
  fi
}

# Re-runs the calling script ($0) under the lab lock, once; returns at once when already held.
lab_lock() {
  [ -n "${LAB_LOCKED:-}" ] && return 0
  mkdir -p "$(dirname "$LOCK")"
  flock -n "$LOCK" true || echo "waiting for the lab lock $LOCK (another run holds it)" >&2
  LAB_LOCKED=1 exec flock "$LOCK" "$0" "$@"
}

lab_cleanup() {
  local pid
  for pid in "${LAB_PIDS[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  for pid in "${LAB_PIDS[@]}"; do
    for _ in $(seq 30); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
  done
  LAB_PIDS=()
  if [ -n "$LAB_UP" ]; then "$NETLAB" down || true; LAB_UP=; fi
}

# lab_up PROFILE [ARGS...]: the lab with this profile (ARGS go to `netlab.sh up`, e.g.
# --seed N), taken down on any exit of the script.
lab_up() {
  trap lab_cleanup EXIT
  trap 'exit 130' INT TERM
  LAB_UP=1
  "$NETLAB" up "$@"
}

# lab_start VAR NS LOG CMD...: runs CMD in namespace NS in the background, PID into $VAR.
lab_start() {
  local var=$1 ns=$2 log=$3
  shift 3
  ip netns exec "$ns" "$@" >"$log" 2>&1 &
  LAB_PIDS+=($!)
  printf -v "$var" %s $!
}

# lab_tunnel DIR BIN: kcptun-rs BIN as server (ns srv) and client (ns cli) with DIR's configs
# (lab_configs), their PIDs in SPID and CPID; returns once one request/response through
# the tunnel worked. A ttool.py server must be starting behind it: it generates its payload
# before it listens, hence the long probe timeout.
lab_tunnel() {
  local d=$1 bin=$2
  lab_start SPID srv "$d/server.log" "$bin" -c "$d/server.json"
  sleep 0.3
  lab_start CPID cli "$d/client.log" "$bin" -c "$d/client.json"
  ip netns exec cli python3 "$NETLAB_DIR/ttool.py" probe --host "${LISTEN%:*}" \
    --port "${LISTEN##*:}" --timeout 60 >"$d/probe.json"
  grep -q '"ok": true' "$d/probe.json" || { echo "probe failed: $(cat "$d/probe.json")"; exit 1; }
}

# lab_stop PID: stops one process started with lab_start (SIGTERM, SIGKILL after 3 s).
lab_stop() {
  kill -TERM "$1" 2>/dev/null || true
  for _ in $(seq 30); do kill -0 "$1" 2>/dev/null || break; sleep 0.1; done
  kill -KILL "$1" 2>/dev/null || true
  wait "$1" 2>/dev/null || true
}

# lab_configs DIR TARGET [FILE] [LOGLEVEL]: writes DIR/server.json and DIR/client.json (server
# kcp_bind $KCP, connect TARGET; client listen $LISTEN; both with http_listen). FILE is either a
# netlab forwarder definition (its server_config/client_config, placeholders filled in, e.g.
# bench/forwarders/kcptun-rs-fast3.json) or a partial kcptun-rs config merged into both (e.g.
# {"kcp": {"sndwnd": 1024}}). Without FILE: kcptun-rs's defaults, xchacha20poly1305 + psk.
lab_configs() {
  python3 - "$@" "$KCP" "$LISTEN" "$SRV_HTTP" "$CLI_HTTP" <<'EOF'
import json, sys
dirn, target, file, loglevel, kcp, listen, srv_http, cli_http = sys.argv[1:9]
psk = "mOOgv0j2mMDWTvXJq/VXQsu0Q1t5SbhW7rE2rRSm1E0="
srv = {"kcp_bind": kcp, "connect": target, "method": "xchacha20poly1305_ietf", "psk": psk}
cli = {"listen": listen, "kcp_connect": kcp, "method": "xchacha20poly1305_ietf", "psk": psk}
if file:
    spec = json.load(open(file))
    if "server_config" in spec:
        subst = {"kcp_listen": kcp, "kcp_connect": kcp, "target": target, "listen": listen,
                 "key": "soak-and-latency-bench-key"}
        def fill(v):
            if isinstance(v, str):
                for k, x in subst.items():
                    v = v.replace("{" + k + "}", x)
                return v
            if isinstance(v, dict):
                return {k: fill(x) for k, x in v.items()}
            return v
        srv, cli = fill(spec["server_config"]), fill(spec["client_config"])
    else:
        srv.update(spec)
        cli.update(spec)
if loglevel:
    srv["loglevel"] = cli["loglevel"] = int(loglevel)
srv["http_listen"], cli["http_listen"] = srv_http, cli_http
for name, cfg in (("server", srv), ("client", cli)):
    with open(f"{dirn}/{name}.json", "w") as f:
        json.dump(cfg, f, indent=1)
EOF
}

# lab_metrics NS ADDR: GET /metrics (empty when the listener does not answer).
lab_metrics() {
  ip netns exec "$1" python3 -c '
import sys, urllib.request
try:
    print(urllib.request.urlopen("http://" + sys.argv[1] + "/metrics", timeout=5).read().decode(), end="")
except OSError as e:
    print("# no /metrics:", e)' "$2"
}

# cpu_s PID: user + system CPU seconds so far; rss_kib PID: VmRSS.
cpu_s() {
  [ -r "/proc/$1/stat" ] || { echo -; return; }
  sed 's/.*) //' "/proc/$1/stat" | awk -v hz="$(getconf CLK_TCK)" '{printf "%.2f", ($12 + $13) / hz}'
}
rss_kib() {
  [ -r "/proc/$1/status" ] || { echo -; return; }
  awk '/^VmRSS:/ {print $2; f = 1} END {if (!f) print "-"}' "/proc/$1/status"
}
