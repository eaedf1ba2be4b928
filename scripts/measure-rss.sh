#!/usr/bin/env bash
# Resident memory of `kefu serve` after ingest, at several knowledge sizes.
#
#   scripts/measure-rss.sh [SIZES...]        (default: 1000 10000 100000 FAQ entries)
#
# For each size it writes a synthetic FAQ file (a question, an answer of two sentences and
# two alternates an entry, drawn from the bundled knowledge's own FAQ entries and pages, in
# English and Chinese, plus a made-up product name an entry so that the vocabulary grows),
# starts `kefu serve` on it with a fresh data directory and the built-in embedder, waits
# for /healthz, and prints the resident set (VmRSS) and its peak (VmHWM; the ingest itself
# runs in a child process before the server opens the database, see README "Memory").
# KEFU_BIN picks the binary
# (default: target/release/kefu, built if missing); TEXTS takes the texts from another folder
# instead of knowledge/ (its FAQ files, its pages, and the `message` of any case file under it:
# `TEXTS=../shared/data/banking77` measures English customer wording, which fills more of the
# built-in embedder's dimensions than the bundled texts); EXTRA_TOML is appended to the config
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
  python3 - "$n" "$work/kb/faq/synthetic.jsonl" "${TEXTS:-knowledge}" <<'EOF'
import glob, json, random, re, sys
n, path, texts = int(sys.argv[1]), sys.argv[2], sys.argv[3]
rng = random.Random(7)
questions, answers, alternates = [], [], []
for f in sorted(glob.glob(f"{texts}/**/*.jsonl", recursive=True)):
    for line in open(f, encoding="utf-8"):
        e = json.loads(line)
        if "message" in e:  # a case file: customers' own wording
            questions.append(e["message"])
            alternates.append(e["message"])
        if "question" not in e or "answer" not in e:
            continue
        questions.append(e["question"])
        alternates.extend(e.get("alternates", []))
        answers.extend(s for s in re.split(r"(?<=[.。!?！？])\s*", e["answer"]) if s)
for f in sorted(glob.glob(f"{texts}/**/*.md", recursive=True)):
    text = open(f, encoding="utf-8").read()
    answers.extend(s for s in re.split(r"(?<=[.。!?！？])\s*", text) if len(s) > 20 and "|" not in s)
syll = ["ka", "lo", "mi", "ru", "te", "sa", "po", "ne", "vi", "da", "gu", "be", "zo", "fi", "ha"]
with open(path, "w", encoding="utf-8") as out:
    for i in range(n):
        # A made-up product name an entry, so the vocabulary grows with the knowledge.
        name = "".join(rng.choice(syll) for _ in range(3)).capitalize() + f" {i}"
        entry = {
            "id": f"e{i}",
            "question": f"{rng.choice(questions)} ({name})",
            "answer": f"{name}: " + " ".join(rng.sample(answers, 2)),
            "alternates": rng.sample(alternates, 2),
        }
        out.write(json.dumps(entry, ensure_ascii=False) + "\n")
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
