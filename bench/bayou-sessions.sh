#!/usr/bin/env bash
# Session guarantees against none: three Bayou replicas (anti-entropy every
# 100 ms), CLIENTS clients of the client library, half GET and half SET over
# 100 keys; before each operation a client moves to a random replica (HOP
# percent of the time). One line per mode: plain GET/SET (no session), a
# session without guarantees, each guarantee alone, all four; operations
# per second, p50 and p99 latency (ms), moves to another replica, and
# operations no replica could serve. See docs/sessions.md.
#
# Usage: bench/bayou-sessions.sh [OPS_PER_CLIENT] [CLIENTS] [HOP]   (defaults 2000, 4, "100 10")
# Needs: redis-cli (Debian: redis-tools).
set -euo pipefail

OPS=${1:-2000}
CLIENTS=${2:-4}
HOPS=${3:-"100 10"}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
TARGET="${CARGO_TARGET_DIR:-$ROOT/target}"
if [[ -z "${BAYOU_BIN:-}" ]]; then
  (cd "$ROOT" && cargo build --release -q -p bayou-cli)
  BAYOU_BIN="$TARGET/release/bayou"
fi
(cd "$ROOT" && cargo build --release -q -p bayou-client --example session_bench)
BENCH="$TARGET/release/examples/session_bench"
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
WORK=$(mktemp -d)
PP=$(free_port); PA=$(free_port); PB=$(free_port)
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$WORK"; }
trap cleanup EXIT
start() { # id port
  local peers=()
  for other in "P=$PP" "A=$PA" "B=$PB"; do
    [[ "${other%%=*}" == "$1" ]] || peers+=(--peer "${other%%=*}=127.0.0.1:${other#*=}")
  done
  RUST_LOG=warn "$BAYOU_BIN" serve --id "$1" --primary P --listen "127.0.0.1:$2" \
    "${peers[@]}" --data-dir "$WORK/$1" --sync-interval-ms 100 2>"$WORK/$1.log" &
  PIDS+=($!)
  for _ in $(seq 100); do redis-cli -p "$2" PING >/dev/null 2>&1 && break; sleep 0.1; done
}
start P "$PP"; start A "$PA"; start B "$PB"
for hop in $HOPS; do
  "$BENCH" --ops "$OPS" --clients "$CLIENTS" --hop "$hop" \
    "127.0.0.1:$PP" "127.0.0.1:$PA" "127.0.0.1:$PB"
  echo
done
