#!/usr/bin/env bash
# The whole test suite: installs what it needs when missing, then runs every test of the
# workspace (unit tests, CLI tests, the end-to-end tests against SoftHSM2, and the behaviour
# tests on every PKCS#11 implementation: SoftHSM2, kryoptic, tpm2-pkcs11 over swtpm, p11-kit's
# remote module), then a 20 s smoke run of every fuzz target (fuzz/smoke.sh).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
start=$SECONDS
"$root/softhsm-fixtures/ensure-packages.sh" chromium poppler-utils man-db \
  swtpm swtpm-tools tpm2-abrmd libtss2-tcti-tabrmd0 libtpm2-pkcs11-1 tpm2-tools \
  p11-kit p11-kit-modules dbus-daemon libssl-dev pkg-config libclang-dev g++
cd "$root"
# The fault-injecting PKCS#11 module the tests put in front of SoftHSM2 (a cdylib: tests also
# build it on demand, this only makes that a no-op).
cargo build -p custody-fault-pkcs11
# kryoptic is built from the crates registry once and kept under target/kryoptic.
"$root/softhsm-fixtures/kryoptic.sh" >/dev/null
# Every test binary runs even when one fails, so one run shows every failure.
cargo test --workspace --all-targets --no-fail-fast "$@"
# Every fuzz target for 20 s from its committed seeds, on stable Rust (fuzz/smoke.sh installs
# cargo-fuzz when missing); any crash, timeout or out-of-memory fails the run.
"$root/fuzz/smoke.sh" 20
# The Debian package: built, installed, used and purged (as root on a machine without custody).
"$root/tests/package.sh"
echo "custody: the test suite took $(( (SECONDS - start) / 60 )) min $(( (SECONDS - start) % 60 )) s" >&2
