#!/usr/bin/env bash
# Benchmark of `custody watch` against SoftHSM2, in one run:
#   - insertion -> committed journal row latency, p50 and p99 over N insertions (default 20):
#     a prepared token directory is moved into the watched token directory at a random phase
#     of the poll timer; the time of the service's "recorded carrier_enrolled" log line (written
#     after the commit) minus the time just before the move;
#   - idle CPU time (exact: /proc/PID/task/*/schedstat) and peak RSS (VmHWM) of the service
#     over 60 s with 1 and 10 tokens present, next to the floor measured at the same time:
#     `custody-floor --poll`, a minimal cryptoki loop doing what the module itself needs per
#     interval (C_Finalize + C_Initialize, C_GetSlotList).
# Options are passed on to `watch-bench run`: --interval MS --idle SECS --insertions N
# --dir DIR --keep 1 (keep the directory with the journals and logs).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
"$root/softhsm-fixtures/ensure-packages.sh"
cd "$root"
# custody as installed (the `dist` profile, see Cargo.toml); the tools in release.
cargo build -q --profile dist -p custody-agent --bin custody
cargo build -q --release -p custody-tests --bin watch-bench --bin custody-floor
exec "$root/target/release/watch-bench" run --custody "$root/target/dist/custody" \
  --module "$("$root/softhsm-fixtures/module-path.sh")" "$@"
