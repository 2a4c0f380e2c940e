#!/usr/bin/env bash
# Benchmark of the organisation's journal (PostgreSQL), in one run on a private cluster with
# fsync on (tests/src/bin/fleet-bench/ says exactly what is measured):
#   - sync throughput of one workstation journal (`Fleet::sync`, what `custody sync` runs)
#     next to a raw COPY of the same rows into the same table, and the ratio (goal >= 50 %);
#   - 1,000 agents x 1,000 events loaded (each journal with 10 carriers enrolled, issued and
#     destroyed: real rows of the form), then `custody fleet verify` (rate), `custody fleet
#     form` (HTML and CSV) and `custody fleet status` (time);
#   - the idle cost `[fleet]` adds to `custody watch`.
# Options are passed on to fleet-bench: --events N (100000) --rounds N (3) --agents N (1000)
# --per-agent N (1000) --carriers N (10) --workers N (2) --idle SECS (60) --sync-interval SECS
# (10); `--rounds 0`, `--agents 0` or `--idle 0` leaves that part out. A quick run:
#   ./bench/fleet.sh --rounds 1 --events 10000 --agents 50 --idle 10
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
"$root/softhsm-fixtures/ensure-packages.sh"
cd "$root"
start=$(date +%s)
echo "building custody, custody-fixtures and fleet-bench (release)..." >&2
cargo build --release -p custody-agent --bin custody -p custody-tests --bin fleet-bench \
  --bin custody-fixtures
"$root/target/release/fleet-bench" --custody "$root/target/release/custody" \
  --fixtures "$root/target/release/custody-fixtures" --dir "$root/target/bench/fleet" "$@"
rm -rf "$root/target/bench/fleet"
echo "bench/fleet.sh took $(( $(date +%s) - start )) s" >&2
