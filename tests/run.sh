#!/usr/bin/env bash
# The whole test suite: installs what it needs when missing, then runs every test of the
# workspace (unit tests, CLI tests and the end-to-end tests against SoftHSM2).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
start=$SECONDS
"$root/softhsm-fixtures/ensure-packages.sh" chromium poppler-utils man-db
cd "$root"
# The fault-injecting PKCS#11 module the tests put in front of SoftHSM2 (a cdylib: tests also
# build it on demand, this only makes that a no-op).
cargo build -p custody-fault-pkcs11
cargo test --workspace --all-targets "$@"
# The Debian package: built, installed, used and purged (as root on a machine without custody).
"$root/tests/package.sh"
echo "custody: the test suite took $(( (SECONDS - start) / 60 )) min $(( (SECONDS - start) % 60 )) s" >&2
