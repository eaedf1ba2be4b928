#!/usr/bin/env bash
# The whole test suite, as README.md tells a new user to run it: installs what the tests
# need (Debian's chromium for the widget browser test) when it is missing, then runs every
# test of the workspace and closes with one total line, `N passed, N failed`.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v chromium >/dev/null 2>&1; then
  echo "scripts/test.sh: installing Debian's chromium for the browser test" >&2
  SUDO=""
  [ "$(id -u)" = 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq chromium >/dev/null
fi

cargo fmt --all -- --check

log=$(mktemp)
trap 'rm -f "$log"' EXIT
status=0
cargo test --workspace --locked --lib --bins --tests 2>&1 | tee "$log" || status=$?
# One total over every test binary (each prints its own "test result:" line).
awk '/^test result:/ { for (i = 1; i <= NF; i++) { if ($(i) ~ /^passed;?$/) p += $(i-1); if ($(i) ~ /^failed;?$/) f += $(i-1) } }
     END { printf "%d passed, %d failed\n", p, f }' "$log"
exit "$status"
