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
# The demo configuration: the organisation, and where the PINs of the demo carrier
# "Іваненко І.І." are (files of the token set, mode 0600), so its private key is read too.
field() { # field TOKEN-LABEL KEY: a value of one token in manifest.json
  awk -v label="\"label\": \"$1\"," -v key="\"$2\": " '
    index($0, label) { found = 1 }
    found && index($0, key) { sub(/^[^:]*: "/, ""); sub(/",?$/, ""); print; exit }' "$demo/tokens/manifest.json"
}
cat > "$demo/custody.toml" <<TOML
[organisation]
name = "Прилуцька міська рада"

[[pin]]
serial = "$(field "Іваненко І.І." serial)"
user_pin_file = "$(field "Іваненко І.І." user_pin_file)"
so_pin_file = "$(field "Іваненко І.І." so_pin_file)"
TOML
export CUSTODY_CONFIG="$demo/custody.toml"
run() { echo; echo "\$ custody $*"; "$custody" --journal "$demo/journal.db" --module "$module" "$@"; }

run scan
run scan
run journal list
run journal verify

# Hand Іваненко's carrier to him: name and tax number come from its certificate; he signs the
# journal entry with the key on the carrier (PIN from the demo set's PIN file, as if typed).
# Then print the journal in its mandated form.
serial=$("$custody" --journal "$demo/journal.db" journal list --json \
  | awk -F'"' '/^ *\{/ { s = ""; l = 0 } /"serial":/ { s = $4 } /"label": "Іваненко І.І."/ { l = 1 }
               l && s != "" { print s; exit }')
run issue --carrier "$serial" --position "головний спеціаліст" --ack-sign --pin-stdin \
  < "$(field "Іваненко І.І." user_pin_file)"
run journal export --format html --out "$demo/journal.html"
run journal export --format csv
run journal checkpoint --export --out "$demo/checkpoint.json"
run journal verify --checkpoint "$demo/checkpoint.json"
if command -v chromium >/dev/null 2>&1; then
  chromium --headless --no-sandbox --disable-gpu --no-first-run --disable-background-networking \
    --disable-component-update --disable-sync --user-data-dir="$(mktemp -d)" --no-pdf-header-footer \
    --print-to-pdf="$demo/journal.pdf" "file://$demo/journal.html" 2>/dev/null
  echo; echo "The form: $demo/journal.html, printed to $demo/journal.pdf (A4 landscape)."
else
  echo; echo "The form: $demo/journal.html (open it in a browser and print it, A4 landscape)."
fi
