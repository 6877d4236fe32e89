#!/usr/bin/env bash
# Bayou writes with a dependency check and a merge procedure against plain
# SET, on one replica over RESP, in one run (redis-benchmark).
#
#   plain     SET key:__rand_int__ value
#   check     BAYOU.WRITE whose dependency check passes (a fresh key each time)
#   merge     BAYOU.WRITE whose check fails, so the merge procedure runs: it
#             looks for a free slot among 8 and, all taken, logs the request
#
# Prints requests/s and the ratio to SET, without and with pipelining.
# Usage: bench/bayou-update-functions.sh [REQUESTS] [CLIENTS]
# Needs: redis-benchmark (Debian: redis-tools). BAYOU_BIN may point to a
# built `bayou`; otherwise it is built in release mode.
set -euo pipefail

N=${1:-20000}
C=${2:-50}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
command -v redis-benchmark >/dev/null || { echo "missing redis-benchmark (apt-get install redis-tools)" >&2; exit 1; }
if [[ -z "${BAYOU_BIN:-}" ]]; then
  (cd "$ROOT" && cargo build --release -q -p bayou-cli)
  BAYOU_BIN="${CARGO_TARGET_DIR:-$ROOT/target}/release/bayou"
fi
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
WORK=$(mktemp -d)
PORT=$(free_port)
PID=
cleanup() { [[ -n "$PID" ]] && kill "$PID" 2>/dev/null; wait 2>/dev/null || true; rm -rf "$WORK"; }
trap cleanup EXIT
RUST_LOG=warn "$BAYOU_BIN" serve --id P --primary P --listen "127.0.0.1:$PORT" \
  --data-dir "$WORK/bayou" --sync-interval-ms 0 2>"$WORK/bayou.log" &
PID=$!
for _ in $(seq 100); do redis-cli -p "$PORT" PING >/dev/null 2>&1 && break; sleep 0.1; done

# redis-benchmark replaces __rand_int__ in arguments with a random number.
CHECK='{"update":[{"put":["slot/__rand_int__","m"]}],"check":{"query":"exists(\"slot/__rand_int__\")","expected":"false"},"merge":"put(\"errorlog/x\", \"taken\");","label":"CHECK"}'
MERGE='{"update":[{"put":["room/1","m"]}],"check":{"query":"exists(\"room/1\")","expected":"false"},"merge":"for h in 2..10 { if !exists(`room/${h}`) { put(`room/${h}`, \"m\"); return; } } put(\"errorlog/m\", \"no room\");","label":"MERGE"}'

rps() { # rps PIPELINE command...
  local pipe=$1; shift
  redis-benchmark -p "$PORT" -n "$N" -c "$C" -r 1000000 -P "$pipe" --csv "$@" 2>/dev/null |
    # The test name may hold commas (JSON), so count fields from the end.
    awk -F, 'NR > 1 { v = $(NF - 6); gsub(/"/, "", v); print v }' | tail -1
}

echo "redis-benchmark -n $N -c $C against one bayou replica (primary, every write fsynced before its reply)"
printf '%-8s %-7s %14s %8s\n' pipeline test 'requests/s' 'vs SET'
for pipe in 1 16; do
  plain=$(rps "$pipe" SET 'key:__rand_int__' value)
  printf '%-8s %-7s %14s %8s\n' "$pipe" plain "$plain" 1.000
  for kind in check merge; do
    if [[ $kind == check ]]; then json=$CHECK; else json=$MERGE; fi
    r=$(rps "$pipe" BAYOU.WRITE "$json")
    printf '%-8s %-7s %14s %8.3f\n' "$pipe" "$kind" "$r" "$(echo "$r / $plain" | bc -l)"
  done
done
echo "last writes in the log: $(redis-cli -p "$PORT" BAYOU.LOG | tail -2 | tr '\n' ' ')"
