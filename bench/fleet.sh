#!/usr/bin/env bash
# Benchmark of the organisation's journal (PostgreSQL), in one run on a private cluster with
# fsync on (tests/src/bin/fleet-bench.rs says exactly what is measured):
#   - sync throughput of one workstation journal (`Fleet::sync`, what `custody sync` runs)
#     next to a raw COPY of the same rows into the same table, and the ratio (goal >= 50 %);
#   - 1,000 agents x 1,000 events loaded, then `custody fleet verify` (rate) and
#     `custody fleet form` (time);
#   - the idle cost `[fleet]` adds to `custody watch`.
# Options are passed on to fleet-bench: --events N (100000) --rounds N (3) --agents N (1000)
# --per-agent N (1000) --idle SECS (60) --sync-interval SECS (10).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
"$root/softhsm-fixtures/ensure-packages.sh"
cd "$root"
start=$(date +%s)
echo "building custody and fleet-bench (release)..." >&2
cargo build --release -p custody-agent --bin custody -p custody-tests --bin fleet-bench
"$root/target/release/fleet-bench" --custody "$root/target/release/custody" \
  --dir "$root/target/bench/fleet" "$@"
rm -rf "$root/target/bench/fleet"
echo "bench/fleet.sh took $(( $(date +%s) - start )) s" >&2
