#!/usr/bin/env bash
# WeCom callback throughput of a real `kefu serve`, measured with wrk: loopback, 32
# connections, every callback signed, encrypted and with its own MsgId, each acknowledged
# only once its inbox entry is flushed (group commit). kefu answers the messages in the
# background meanwhile, replying to a fake WeCom API, on the same cores.
#
#   scripts/bench-wecom-wrk.sh                  # builds release kefu + the load example
#   KEFU_BIN=/path/to/other/kefu scripts/bench-wecom-wrk.sh   # compare another build
#
# Knobs (env): CONNECTIONS (32), THREADS (2), DURATION (10s), COUNT (400000 callbacks),
# USERS (20000 customers), PORT (18080). Needs wrk (Debian: apt-get install wrk).
# A benchmark, not a test: it prints figures and never fails on them.
set -euo pipefail
cd "$(dirname "$0")/.."
CONNECTIONS=${CONNECTIONS:-32}
THREADS=${THREADS:-2}
DURATION=${DURATION:-10s}
COUNT=${COUNT:-400000}
USERS=${USERS:-20000}
PORT=${PORT:-18080}
command -v wrk >/dev/null || { echo "wrk is not installed (apt-get install wrk)" >&2; exit 2; }

cargo build --release --quiet --bin kefu --example wecom_load
KEFU_BIN=${KEFU_BIN:-target/release/kefu}
work=$(mktemp -d)
pids=()
cleanup() { kill "${pids[@]}" 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT

target/release/examples/wecom_load "$work" "$PORT" "$COUNT" "$USERS" >"$work/load.log" 2>&1 &
pids+=($!)
until grep -q ready "$work/load.log" 2>/dev/null; do sleep 0.2; done

KEFU_LOG=${KEFU_LOG:-warn} "$KEFU_BIN" serve --config "$work/kefu.toml" >"$work/kefu.log" 2>&1 &
pids+=($!)
for _ in $(seq 1 600); do
  curl -sf "http://127.0.0.1:$PORT/healthz" >/dev/null && break
  sleep 0.2
done
curl -sf "http://127.0.0.1:$PORT/healthz" >/dev/null || { cat "$work/kefu.log" >&2; exit 1; }

echo "kefu: $KEFU_BIN; $CONNECTIONS connections, $THREADS threads, $DURATION, $COUNT callbacks over $USERS customers"
CALLBACKS="$work/callbacks.tsv" WRK_THREADS="$THREADS" \
  wrk -t"$THREADS" -c"$CONNECTIONS" -d"$DURATION" --latency \
  -s scripts/bench/wecom_callbacks.lua "http://127.0.0.1:$PORT"
metrics=$(curl -s "http://127.0.0.1:$PORT/metrics" || true)
waits=$(echo "$metrics" | awk '$1=="kefu_store_durable_waits_total"{print $2}')
flushes=$(echo "$metrics" | awk '$1=="kefu_store_flushes_total"{print $2}')
if [ -n "$waits" ] && [ -n "$flushes" ]; then
  echo "group commit: $waits acknowledgements, $flushes flushes"
fi
