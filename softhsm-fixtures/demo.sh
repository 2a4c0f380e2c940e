#!/usr/bin/env bash
# The custody demo: builds a SoftHSM2 demo token set in ./demo (never the system's tokens),
# then runs custody on it with a fresh journal in ./demo/journal.db. It ends with a dismissal:
# a signed destruction order, a verified wipe, and the journal.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
"$root/softhsm-fixtures/ensure-packages.sh"
cd "$root"
start=$SECONDS
echo "custody: building custody (the first build compiles the dependencies: a few minutes)" >&2
# custody and the fixture builder in one build, exactly as build.sh asks for it: their shared
# dependencies are compiled once, with one set of features, and build.sh's build is a no-op.
cargo build -p custody-agent --bin custody -p custody-tests --bin custody-fixtures
custody="$root/target/debug/custody"
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
timezone = "Europe/Kyiv"

[[pin]]
manufacturer = "$(field "Іваненко І.І." manufacturer)"
model = "$(field "Іваненко І.І." model)"
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
serial=$(field "Іваненко І.І." serial)
run issue --carrier "$serial" --position "головний спеціаліст" --ack-sign --pin-stdin \
  < "$(field "Іваненко І.І." user_pin_file)"
echo
echo "# Іваненко І.І. is dismissed; the head of HR signs a destruction order (OpenSSH SSHSIG)."
cert_sha256=$(field "Іваненко І.І." cert_sha256)
ssh-keygen -q -t ed25519 -N '' -C "hr-director@demo" -f "$demo/hr_ed25519"
echo "hr-director@demo namespaces=\"custody-order\" $(cat "$demo/hr_ed25519.pub")" > "$demo/allowed_signers"
printf '\n[orders]\nallowed_signers = "%s"\nrequired_signers = 1\n' "$demo/allowed_signers" >> "$demo/custody.toml"
order="$demo/order.json"
echo
echo "\$ custody order create --carrier $serial --holder ... --dismissed $(date +%F) --method reinit --responsible ... --cert ${cert_sha256:0:16}... > order.json"
"$custody" --journal "$demo/journal.db" order create --carrier "$serial" \
  --holder "Іваненко Іван Іванович" --dismissed "$(date +%F)" --method reinit \
  --responsible "Коваленко Ольга Петрівна" --cert "$cert_sha256" --reason "Наказ № 17-к" > "$order"
cat "$order"
echo
echo "\$ ssh-keygen -Y sign -f hr_ed25519 -n custody-order order.json"
ssh-keygen -Y sign -f "$demo/hr_ed25519" -n custody-order "$order" 2>&1 | sed 's/^/  /'
run order verify "$order"
# The SO PIN comes from the carrier's [[pin]] rule (so_pin_file, mode 0600).
run wipe --order "$order"
echo
echo "# The same order again is a replay: refused, nothing touched, journaled."
run wipe --order "$order" || true
run status
run journal show "$serial"

echo
echo "# The journal in its mandated form: column 4 the handover, column 5 the destruction."
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
echo "custody: the demo took $(( (SECONDS - start) / 60 )) min $(( (SECONDS - start) % 60 )) s" >&2
