#!/usr/bin/env bash
# Resident memory of `kefu serve` after ingest, at several knowledge sizes.
#
#   scripts/measure-rss.sh [SIZES...]        (default: 1000 10000 100000 FAQ entries)
#
# For each size it writes a synthetic FAQ file (a question, an answer and two alternates
# an entry, words drawn from a 20,000-word made-up vocabulary plus Chinese phrases, so the
# index's vocabulary grows as a real help centre's does), starts `kefu serve` on it with a
# fresh data directory and the built-in embedder, waits for /healthz, and prints the
# resident set (VmRSS) and its peak (VmHWM; the ingest itself runs in a child process
# before the server opens the database, see README "Memory"). KEFU_BIN picks the binary
# (default: target/release/kefu, built if missing); EXTRA_TOML is appended to the config
# (e.g. a `[providers.embedding]` table to measure a sentence model).
set -euo pipefail
cd "$(dirname "$0")/.."

sizes=("$@")
[ ${#sizes[@]} -gt 0 ] || sizes=(1000 10000 100000)
bin=${KEFU_BIN:-target/release/kefu}
[ -x "$bin" ] || cargo build --release --bin kefu
work=$(mktemp -d)
pid=""
cleanup() {
  [ -n "$pid" ] && kill "$pid" 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

printf '%-8s %-12s %-12s %s\n' entries rss_mb peak_mb ready_s
for n in "${sizes[@]}"; do
  rm -rf "$work/kb" "$work/data"
  mkdir -p "$work/kb/faq"
  python3 - "$n" "$work/kb/faq/synthetic.jsonl" <<'EOF'
import json, random, sys
n, path = int(sys.argv[1]), sys.argv[2]
rng = random.Random(7)
syll = ["ka", "lo", "mi", "ru", "te", "sa", "po", "ne", "vi", "da", "gu", "be", "zo", "fi", "ha"]
vocab = ["".join(rng.choice(syll) for _ in range(rng.randint(2, 4))) for _ in range(20000)]
zh = ["退款", "发货", "运费", "会员", "积分", "发票", "保修", "礼盒", "优惠券", "快递", "订单", "地址"]
def words(k):
    return " ".join(rng.choice(vocab) for _ in range(k))
with open(path, "w", encoding="utf-8") as f:
    for i in range(n):
        entry = {
            "id": f"e{i}",
            "question": f"How do I {words(5)}?",
            "answer": f"{words(25)}. {rng.choice(zh)}{rng.choice(zh)}请联系客服 {i}.",
            "alternates": [words(4), f"{rng.choice(zh)}怎么{rng.choice(zh)}"],
        }
        f.write(json.dumps(entry, ensure_ascii=False) + "\n")
EOF
  port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
  cat > "$work/kefu.toml" <<EOF
[server]
listen = "127.0.0.1:$port"
data_dir = "$work/data"

[knowledge]
paths = ["$work/kb"]
${EXTRA_TOML:-}
EOF
  start=$(date +%s%N)
  KEFU_LOG=warn "$bin" serve --config "$work/kefu.toml" >"$work/serve.log" 2>&1 &
  pid=$!
  until curl -fs "http://127.0.0.1:$port/healthz" >/dev/null 2>&1; do
    if ! kill -0 "$pid" 2>/dev/null; then
      echo "kefu serve exited:" >&2
      cat "$work/serve.log" >&2
      exit 1
    fi
    sleep 0.2
  done
  ready_ms=$((($(date +%s%N) - start) / 1000000))
  sleep 1
  rss=$(awk '/^VmRSS/ {printf "%.0f", $2 / 1024}' "/proc/$pid/status")
  peak=$(awk '/^VmHWM/ {printf "%.0f", $2 / 1024}' "/proc/$pid/status")
  printf '%-8s %-12s %-12s %d.%d\n' "$n" "$rss" "$peak" $((ready_ms / 1000)) $((ready_ms % 1000 / 100))
  kill "$pid"
  wait "$pid" 2>/dev/null || true
  pid=""
done
