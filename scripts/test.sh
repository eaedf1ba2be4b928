#!/usr/bin/env bash
# The whole test suite, as README.md tells a new user to run it: installs what the tests
# need (Debian's chromium for the widget browser test) when it is missing, then runs every
# test of the workspace.
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
cargo test --workspace --locked
