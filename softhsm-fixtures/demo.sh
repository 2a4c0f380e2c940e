#!/usr/bin/env bash
# The custody demo: builds a SoftHSM2 demo token set in ./demo (never the system's tokens),
# then runs custody on it with a fresh journal in ./demo/journal.db.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
"$root/softhsm-fixtures/ensure-packages.sh"
cd "$root"
cargo build -q --release -p custody-agent --bin custody
custody="$root/target/release/custody"
demo="$root/demo"
rm -rf "$demo"
"$root/softhsm-fixtures/build.sh" --set demo "$demo/tokens" >/dev/null
export SOFTHSM2_CONF="$demo/tokens/softhsm2.conf"
module=$("$root/softhsm-fixtures/module-path.sh")
run() { echo; echo "\$ custody $*"; "$custody" --journal "$demo/journal.db" --module "$module" "$@"; }

run scan
run scan
run journal list
run journal verify
