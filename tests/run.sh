#!/usr/bin/env bash
# The whole test suite: installs what it needs when missing, then runs every test of the
# workspace (unit tests, CLI tests and the end-to-end tests against SoftHSM2).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
"$root/softhsm-fixtures/ensure-packages.sh" chromium poppler-utils
cd "$root"
cargo test --workspace --all-targets "$@"
