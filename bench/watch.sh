#!/usr/bin/env bash
# Benchmark of `custody watch`, in one run (about 9 minutes with the defaults):
#   - idle CPU time (exact: /proc/PID/task/*/schedstat) and peak RSS (VmHWM) of the service
#     over 60 s with 1, 10 and 100 SoftHSM2 tokens present (--sizes), then over 30 s
#     (--impl-idle) with one carrier on each other implementation the test suite sets up
#     (--impls kryoptic,tpm2-pkcs11,p11-kit-remote,opensc: kryoptic, tpm2-pkcs11 over swtpm, p11-kit's remote
#     module, OpenSC over pcscd where the service blocks in C_WaitForSlotEvent), each next to
#     the floor measured at the same time (goals: CPU per poll <= 1.15 x the floor, RSS <= the
#     floor's + 3 MiB): `custody-floor --poll [--reinit]`, a minimal cryptoki loop doing what
#     the module itself needs per interval (the slot list, after C_Finalize + C_Initialize
#     where the service re-initialises the module);
#   - `[fleet]` configured with nothing to send (a private PostgreSQL cluster): the service's
#     CPU next to the same service without it (goal: <= 5 % added); --fleet 0 leaves it out;
#   - insertion -> committed journal row latency, p50 and p99 over N insertions (default 20):
#     a prepared token directory is moved into the watched token directory at a random phase
#     of the poll timer; the time of the service's "recorded carrier_enrolled" log line (written
#     after the commit) minus the time just before the move.
# Options are passed on to `watch-bench run`: --interval MS --idle SECS --impl-idle SECS
# --insertions N --sizes 1,10,100 --impls LIST --fleet 0 --dir DIR --keep 1 (keep the
# directory with the journals and logs).
#
# Then the same service on a module with slot events, OpenSC over a private pcscd with a
# virtual card in vsmartcard's reader (`slot-event-bench`, options from SLOT_BENCH_OPTS,
# e.g. "--cycles 30 --idle 60"): removal and insertion -> committed journal row, measured
# from the instant pcscd sees the card change, and the idle CPU of the service blocked in
# C_WaitForSlotEvent next to the polling floor and pcscd. Before the service starts, the same
# cycles against the floor of an event (`custody-floor --events`: C_WaitForSlotEvent,
# C_GetSlotInfo, the token's read, one durable single-row SQLite commit with the journal's
# pragmas; --floor-cycles N, 0 to leave it out); the service is reported against it.
# WATCH_BENCH=softhsm (watch-bench only) or WATCH_BENCH=opensc (slot-event-bench only).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
"$root/softhsm-fixtures/ensure-packages.sh"
cd "$root"
# custody as installed (the `dist` profile, see Cargo.toml); the tools in the dev profile
# the test suite builds anyway (the floor's own code is a loop around the module's calls).
cargo build -q --profile dist -p custody-agent --bin custody
cargo build -q -p custody-tests --bin watch-bench --bin custody-floor \
  --bin slot-event-bench --bin custody-fixtures
export CUSTODY_FIXTURES_BIN="$root/target/debug/custody-fixtures"
which=${WATCH_BENCH:-all}
if [ "$which" != opensc ]; then
  "$root/target/debug/watch-bench" run --custody "$root/target/dist/custody" \
    --module "$("$root/softhsm-fixtures/module-path.sh")" "$@"
  echo
fi
if [ "$which" != softhsm ]; then
  # shellcheck disable=SC2086 # options are words
  "$root/target/debug/slot-event-bench" --custody "$root/target/dist/custody" \
    ${SLOT_BENCH_OPTS:-}
fi
