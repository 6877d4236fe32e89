#!/usr/bin/env bash
# A flame graph of a lone Bayou primary under redis-benchmark: perf samples
# the server's threads while redis-benchmark runs, inferno draws the SVG.
#
# Usage: bench/profile.sh OUT.svg [redis-benchmark flags...]
#   default flags: -t set -n 300000 -c 50 -P 16 -r 100000
# BAYOU_BIN may point to a built `bayou` (e.g. an older build, to compare);
# otherwise it is built in release mode (the release profile keeps debug
# line tables, so frames have names).
# Needs: perf (Debian: linux-perf), redis-benchmark, redis-cli, and
# inferno (cargo install inferno).
set -euo pipefail

OUT=${1:?usage: bench/profile.sh OUT.svg [redis-benchmark flags...]}
shift
FLAGS=("$@")
[[ ${#FLAGS[@]} -gt 0 ]] || FLAGS=(-t set -n 300000 -c 50 -P 16 -r 100000)
ROOT=$(cd "$(dirname "$0")/.." && pwd)
for tool in perf redis-benchmark redis-cli inferno-collapse-perf inferno-flamegraph; do
  command -v "$tool" >/dev/null || { echo "missing $tool" >&2; exit 1; }
done
if [[ -z "${BAYOU_BIN:-}" ]]; then
  (cd "$ROOT" && cargo build --release -q -p bayou-cli)
  BAYOU_BIN="${CARGO_TARGET_DIR:-$ROOT/target}/release/bayou"
fi
WORK=$(mktemp -d)
PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
RUST_LOG=warn "$BAYOU_BIN" serve --id P --primary P --listen "127.0.0.1:$PORT" \
  --data-dir "$WORK/data" --sync-interval-ms 0 2>"$WORK/bayou.log" &
SERVER=$!
trap 'kill $SERVER 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$WORK"' EXIT
for _ in $(seq 100); do redis-cli -p "$PORT" PING >/dev/null 2>&1 && break; sleep 0.1; done
# Warm up: the keys exist, so the profile shows the steady state.
redis-benchmark -p "$PORT" -t set -n 100000 -r 100000 -P 16 -q >/dev/null
perf record -F 499 --call-graph dwarf,16384 -p "$SERVER" -o "$WORK/perf.data" >/dev/null 2>&1 &
PERF=$!
sleep 0.5
redis-benchmark -p "$PORT" "${FLAGS[@]}" --csv | tail -n +2
kill -INT "$PERF"
wait "$PERF" 2>/dev/null || true
perf script -i "$WORK/perf.data" 2>/dev/null | inferno-collapse-perf > "$WORK/folded"
inferno-flamegraph --title "bayou serve under redis-benchmark ${FLAGS[*]}" --width 1400 \
  < "$WORK/folded" > "$OUT"
echo "wrote $OUT"
