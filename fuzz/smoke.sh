#!/usr/bin/env bash
# Runs every fuzz target for SECONDS seconds each (default 20: the CI smoke run), starting
# from the committed seeds (fuzz/seeds/TARGET) and the local corpus (fuzz/corpus/TARGET,
# not committed). Fails on any crash, timeout or out-of-memory; the input that did it is
# left in fuzz/artifacts/TARGET/. Installs cargo-fuzz when it is missing.
#   fuzz/smoke.sh [SECONDS] [TARGET...]
set -euo pipefail
cd "$(dirname "$0")"
secs=${1:-20}
shift || true
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
  targets=(cert order order_check allowed_signers journal_open csv_import)
fi
if ! cargo fuzz --version >/dev/null 2>&1; then
  cargo install --locked cargo-fuzz
fi
# The journals the targets write live in a directory of this run (in memory when possible),
# removed at the end.
shm=/dev/shm
[ -d "$shm" ] && [ -w "$shm" ] || shm=${TMPDIR:-/tmp}
CUSTODY_FUZZ_DIR=$(mktemp -d "$shm/custody-fuzz.XXXXXX")
export CUSTODY_FUZZ_DIR
trap 'rm -rf "$CUSTODY_FUZZ_DIR"' EXIT
# Stable Rust: no sanitizer (-s none); coverage instrumentation still guides libFuzzer.
# 16 codegen units: a smoke run pays for its build far more than for slightly slower
# inputs (CUSTODY_FUZZ_CODEGEN_UNITS=1 for cargo-fuzz's default).
units=${CUSTODY_FUZZ_CODEGEN_UNITS:-16}
cargo fuzz build -s none --codegen-units "$units"
mkdir -p logs
for t in "${targets[@]}"; do
  mkdir -p "corpus/$t"
  log="logs/$t.log"
  # -timeout: an input taking more than 2 s fails the run (the hostile allowed_signers
  # inputs of an earlier, backtracking matcher took minutes).
  if ! cargo fuzz run -s none --codegen-units "$units" "$t" "corpus/$t" "seeds/$t" -- \
    -max_total_time="$secs" -timeout=2 -rss_limit_mb=2048 -print_final_stats=1 >"$log" 2>&1; then
    tail -n 40 "$log"
    echo "fuzz: $t FAILED (input in fuzz/artifacts/$t/, log in fuzz/$log)" >&2
    exit 1
  fi
  runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log")
  echo "fuzz: $t: ${runs:-?} inputs in ${secs} s, no crash, no timeout"
done
