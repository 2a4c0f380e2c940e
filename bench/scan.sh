#!/usr/bin/env bash
# Scan benchmark: custody vs the PKCS#11 floor vs pkcs11-tool, N tokens × K key pairs.
# Usage: bench/scan.sh [--sizes 1x1,10x5,100x5,100x20] [--runs 5] [--tool-runs 3]
# Token sets are built once and kept in target/bench (delete it to rebuild).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
"$root/softhsm-fixtures/ensure-packages.sh" time
cd "$root"
cargo build -q --release -p custody-agent -p custody-tests --bins
exec "$root/target/release/custody-bench" \
  --custody "$root/target/release/custody" \
  --floor "$root/target/release/custody-floor" \
  --fixtures "$root/target/release/custody-fixtures" \
  --dir "$root/target/bench" "$@"
