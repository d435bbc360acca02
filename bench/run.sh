#!/bin/sh
# Issue #7 benchmark: kcptun-rs (default, fast3-like, and default plus "ack_copies": 2) against
# plain TCP and the Go kcptun from Debian, on the netlab link emulator (../shared/netlab, root
# needed), one table.
# Numbers compare only within one run on one machine.
#
#   bench/run.sh                       # all six profiles, full plan (~40-60 min on 2 cores)
#   bench/run.sh --plan quick -p lossy # one profile, small transfers (smoke test)
#   BASE_BIN=/path/to/old/kcptun-rs bench/run.sh -p wan   # also an older build, for before/after
#
# Environment: NETLAB (default ../shared/netlab), LINKEMU (built into /tmp/linkemu if unset),
# OUT (default /tmp/netlab-results), NETLAB_LOCK (a file to flock around the lab, for shared
# machines), FWD (override the forwarder list, space-separated). Extra arguments go to
# `bench.py run`; without -p all six profiles run. The JSON and table are copied to
# bench/results/ (small files only).
set -eu
here=$(cd "$(dirname "$0")" && pwd)
root=$(dirname "$here")
NETLAB=${NETLAB:-$root/../shared/netlab}
OUT=${OUT:-/tmp/netlab-results}
tag=${TAG:-issue7-$(date -u +%Y%m%dT%H%M)}

cd "$root"
nice -n 10 cargo build --release --quiet
# A private copy: the shared target dir may be rebuilt while the lab runs.
bin=${TMPDIR:-/tmp}/kcptun-rs-bench-$tag
cp "$root/target/release/kcptun-rs" "$bin"

if [ -z "${LINKEMU:-}" ]; then
    cargo build --release --quiet --manifest-path "$NETLAB/linkemu/Cargo.toml" --target-dir /tmp/linkemu
    LINKEMU=/tmp/linkemu/release/linkemu
fi
export LINKEMU
command -v kcptun-server >/dev/null || apt-get install -y kcptun >/dev/null

case " $* " in *" -p "*) profiles= ;; *)
    profiles="-p clean -p wan -p lossy -p bad -p bursty -p reorder" ;; esac

fwd=${FWD:-"plain-tcp kcptun-fast3-none $here/forwarders/kcptun-rs-default.json $here/forwarders/kcptun-rs-fast3.json $here/forwarders/kcptun-rs-ackx2.json"}
set --  "$@" $profiles
for f in $fwd; do set -- "$@" -f "$f"; done
if [ -n "${BASE_BIN:-}" ]; then
    # The same definitions pointed at another build, under new names (bench.py keys runs by
    # name); the path is written into the commands since --var bin applies to every file.
    for d in default fast3; do
        sed "s/\"name\": \"kcptun-rs-$d\"/\"name\": \"kcptun-rs-$d-base\"/; s#{bin}#$BASE_BIN#g" \
            "$here/forwarders/kcptun-rs-$d.json" > "/tmp/kcptun-rs-$d-base.json"
        set -- "$@" -f "/tmp/kcptun-rs-$d-base.json"
    done
fi

lock=
[ -n "${NETLAB_LOCK:-}" ] && lock="flock $NETLAB_LOCK"
echo "machine: $(uname -n), $(nproc) cores, $(uname -r); date: $(date -u +%FT%TZ)"
echo "command: bench.py run --tag $tag --out $OUT --var bin=$bin $*"
$lock python3 "$NETLAB/bench.py" run --tag "$tag" --out "$OUT" --var "bin=$bin" "$@"
mkdir -p "$here/results"
cp "$OUT/$tag.json" "$OUT/$tag.md" "$here/results/"
cat "$OUT/$tag.md"
