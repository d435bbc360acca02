#!/usr/bin/env bash
# The demo from the README: build kcptun-rs, start a small web server as the target, run
# `kcptun-rs -c server.json` and `kcptun-rs -c peer.json` from the repo root, fetch a file
# through the tunnel and compare it byte for byte. Everything stays on 127.0.0.1.
set -euo pipefail
cd "$(dirname "$0")/.."

cargo build --release --locked
bin=target/release/kcptun-rs
work=$(mktemp -d)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

head -c 4194304 /dev/urandom >"$work/file.bin"
python3 -m http.server 8080 --bind 127.0.0.1 --directory "$work" >/dev/null 2>&1 &
pids+=($!)
"$bin" -c server.json & pids+=($!)
"$bin" -c peer.json & pids+=($!)

for _ in $(seq 50); do
  python3 -c 'import socket; socket.create_connection(("127.0.0.1", 8080), 1).close()' 2>/dev/null && break
  sleep 0.1
done
sleep 0.3

python3 - "$work/file.bin" <<'PY'
import hashlib, sys, time, urllib.request
want = open(sys.argv[1], "rb").read()
t = time.monotonic()
got = urllib.request.urlopen("http://127.0.0.1:12345/file.bin", timeout=30).read()
dt = time.monotonic() - t
ok = got == want
print(f"fetched {len(got)} bytes through the tunnel in {dt:.3f} s: "
      f"{'identical' if ok else 'DIFFERENT'} (sha256 {hashlib.sha256(got).hexdigest()[:16]}...)")
sys.exit(0 if ok else 1)
PY
