#!/usr/bin/env bash
# Anti-entropy between two real Bayou servers: P (the primary) takes WRITES
# writes from redis-benchmark while A is not syncing, then one BAYOU.SYNC
# brings A up to date. Prints writes per second of that session, and the peer
# protocol bytes sent (both directions) per write against the size of the
# writes themselves (key + value bytes).
#
# Usage: bench/anti-entropy.sh [WRITES] [VALUE_BYTES]   (defaults 100000, 16)
# Needs: redis-benchmark, redis-cli (Debian: redis-tools).
set -euo pipefail

W=${1:-100000}
D=${2:-16}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
if [[ -z "${BAYOU_BIN:-}" ]]; then
  (cd "$ROOT" && cargo build --release -q -p bayou-cli)
  BAYOU_BIN="${CARGO_TARGET_DIR:-$ROOT/target}/release/bayou"
fi
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
WORK=$(mktemp -d)
PP=$(free_port); PA=$(free_port)
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$WORK"; }
trap cleanup EXIT
start() { # id port peer-id peer-port
  RUST_LOG=warn "$BAYOU_BIN" serve --id "$1" --primary P --listen "127.0.0.1:$2" \
    --peer "$3=127.0.0.1:$4" --data-dir "$WORK/$1" --sync-interval-ms 0 2>"$WORK/$1.log" &
  PIDS+=($!)
  for _ in $(seq 100); do redis-cli -p "$2" PING >/dev/null 2>&1 && break; sleep 0.1; done
}
start P "$PP" A "$PA"
start A "$PA" P "$PP"
status() { redis-cli -p "$1" BAYOU.STATUS | awk -v f="$2" 'prev == f { print; exit } { prev = $0 }'; }

# Keys are "key:" + 12 digits (16 bytes) with -r.
redis-benchmark -p "$PP" -t set -n "$W" -r 1000000000 -d "$D" -P 16 -q >/dev/null 2>&1
csn=$(status "$PP" csn)
[[ "$csn" == "$W" ]] || { echo "P holds $csn writes, expected $W" >&2; exit 1; }
p0=$(status "$PP" peer_bytes_sent); a0=$(status "$PA" peer_bytes_sent)
t0=$(date +%s%N)
redis-cli -p "$PA" BAYOU.SYNC P >/dev/null
t1=$(date +%s%N)
acsn=$(status "$PA" csn)
[[ "$acsn" == "$W" ]] || { echo "A holds $acsn writes after the session, expected $W" >&2; exit 1; }
p1=$(status "$PP" peer_bytes_sent); a1=$(status "$PA" peer_bytes_sent)
awk -v w="$W" -v d="$D" -v ns=$((t1 - t0)) -v bytes=$(((p1 - p0) + (a1 - a0))) 'BEGIN {
  s = ns / 1e9
  printf "anti-entropy: %d committed writes in %.2f s = %.0f writes/s (durable at A)\n", w, s, w / s
  printf "peer bytes sent: %d = %.1f bytes/write; the writes themselves: %d bytes (16-byte key + %d-byte value) = ratio %.2f\n", bytes, bytes / w, 16 + d, d, (bytes / w) / (16 + d)
}'
