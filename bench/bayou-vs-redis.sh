#!/usr/bin/env bash
# redis-benchmark against a Bayou replica and against redis-server configured
# with the same durability (appendonly yes, appendfsync always: every write
# fsynced before its reply), in one run. Prints requests/s and the ratio
# bayou/redis for SET and GET, without and with pipelining (-P 16).
#
# Usage: bench/bayou-vs-redis.sh [REQUESTS] [CLIENTS] [REPEAT]
#   REQUESTS  per test (default 100000), CLIENTS  parallel connections (default 50),
#   REPEAT    runs of each test, alternating the two servers; the median is shown
#             (default 3)
# Needs: redis-benchmark and redis-server (Debian: redis-tools, redis-server).
# BAYOU_BIN may point to a built `bayou`; otherwise it is built in release mode.
set -euo pipefail

N=${1:-100000}
C=${2:-50}
REPEAT=${3:-3}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
for tool in redis-benchmark redis-server redis-cli; do
  command -v "$tool" >/dev/null || { echo "missing $tool (apt-get install redis-tools redis-server)" >&2; exit 1; }
done
if [[ -z "${BAYOU_BIN:-}" ]]; then
  (cd "$ROOT" && cargo build --release -q -p bayou-cli)
  BAYOU_BIN="${CARGO_TARGET_DIR:-$ROOT/target}/release/bayou"
fi

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
WORK=$(mktemp -d)
BAYOU_PORT=$(free_port)
REDIS_PORT=$(free_port)
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$WORK"; }
trap cleanup EXIT

RUST_LOG=warn "$BAYOU_BIN" serve --id P --primary P --listen "127.0.0.1:$BAYOU_PORT" \
  --data-dir "$WORK/bayou" --sync-interval-ms 0 2>"$WORK/bayou.log" &
PIDS+=($!)
redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --dir "$WORK" --appendonly yes \
  --appendfsync always --save "" --daemonize no >"$WORK/redis.log" 2>&1 &
PIDS+=($!)
for port in "$BAYOU_PORT" "$REDIS_PORT"; do
  for _ in $(seq 100); do redis-cli -p "$port" PING >/dev/null 2>&1 && break; sleep 0.1; done
done

# rps PORT TEST [extra flags]: requests per second reported by redis-benchmark.
rps() {
  local port=$1 test=$2; shift 2
  redis-benchmark -p "$port" -t "$test" -n "$N" -c "$C" -r 100000 --csv "$@" 2>/dev/null |
    awk -F, -v t="\"${test^^}\"" '$1 == t { gsub(/"/, "", $2); print $2 }'
}

median() { sort -g | awk '{ v[NR] = $1 } END { print v[int((NR + 1) / 2)] }'; }

echo "redis-benchmark -n $N -c $C -r 100000, median of $REPEAT; bayou serve vs redis-server $(redis-server --version | awk '{print $3}') appendonly yes appendfsync always"
printf '%-12s %14s %14s %8s\n' test bayou redis ratio
for pipe in 1 16; do
  for test in set get; do
    bs=(); rs=()
    for _ in $(seq "$REPEAT"); do
      bs+=("$(rps "$BAYOU_PORT" "$test" -P "$pipe")")
      rs+=("$(rps "$REDIS_PORT" "$test" -P "$pipe")")
    done
    b=$(printf '%s\n' "${bs[@]}" | median)
    r=$(printf '%s\n' "${rs[@]}" | median)
    printf '%-12s %14s %14s %8s\n' "${test^^} -P $pipe" "$b" "$r" \
      "$(awk -v b="$b" -v r="$r" 'BEGIN { printf "%.2f", b / r }')"
  done
done
