#!/usr/bin/env bash
# The custody demo: builds a SoftHSM2 demo token set in ./demo (never the system's tokens),
# then runs custody on it with a fresh journal in ./demo/journal.db. It ends with a dismissal:
# a signed destruction order, a verified wipe, and the journal.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
"$root/softhsm-fixtures/ensure-packages.sh"
cd "$root"
cargo build -q --release -p custody-agent --bin custody
custody="$root/target/release/custody"
demo="$root/demo"
rm -rf "$demo"
if [ -x "$root/softhsm-fixtures/build.sh" ]; then
  "$root/softhsm-fixtures/build.sh" --set demo "$demo/tokens" >/dev/null
else
  mkdir -p "$demo/tokens"
  printf 'directories.tokendir = %s\nobjectstore.backend = file\nlog.level = ERROR\n' \
    "$demo/tokens" > "$demo/tokens/softhsm2.conf"
fi
export SOFTHSM2_CONF="$demo/tokens/softhsm2.conf"
module=$("$root/softhsm-fixtures/module-path.sh")
run() { echo; echo "\$ custody $*"; "$custody" --journal "$demo/journal.db" --module "$module" "$@"; }

# The carrier of a signer who will be dismissed: an EC key generated on the token and its
# certificate. Demo PINs are random and live only in ./demo (mode 0600).
so_pin=$(openssl rand -hex 8)
user_pin=$(openssl rand -hex 8)
( umask 077; printf '%s\n' "$so_pin" > "$demo/so.pin" )
softhsm2-util --init-token --free --label "Shevchenko T.H." --so-pin "$so_pin" --pin "$user_pin" >/dev/null
pkcs11-tool --module "$module" --token-label "Shevchenko T.H." --login --pin "$user_pin" \
  --keypairgen --key-type EC:prime256v1 --id 01 --label "signing key" >/dev/null
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 365 \
  -subj "/CN=Шевченко Тарас Григорович/O=Demo City Council" -utf8 \
  -keyout "$demo/cert.key" -outform DER -out "$demo/cert.der" 2>/dev/null
pkcs11-tool --module "$module" --token-label "Shevchenko T.H." --login --pin "$user_pin" \
  --write-object "$demo/cert.der" --type cert --id 01 --label "signing certificate" >/dev/null
serial=$(softhsm2-util --show-slots | awk '/Serial number:/ {s=$3} /Label: +Shevchenko T.H./ {print s; exit}')
cert_sha256=$(sha256sum "$demo/cert.der" | cut -d' ' -f1)

run scan
run scan
run journal list
run journal verify

echo
echo "# HR dismisses the holder; the head of HR signs a destruction order (OpenSSH SSHSIG)."
ssh-keygen -q -t ed25519 -N '' -C "hr-director@demo" -f "$demo/hr_ed25519"
echo "hr-director@demo namespaces=\"custody-order\" $(cat "$demo/hr_ed25519.pub")" > "$demo/allowed_signers"
printf '[orders]\nallowed_signers = "%s"\nrequired_signers = 1\n' "$demo/allowed_signers" > "$demo/custody.toml"
export CUSTODY_CONFIG="$demo/custody.toml"
order="$demo/order.json"
echo
echo "\$ custody order create --carrier $serial --holder ... --dismissed $(date +%F) --method reinit --responsible ... --cert ${cert_sha256:0:16}... > order.json"
"$custody" --journal "$demo/journal.db" order create --carrier "$serial" \
  --holder "Шевченко Тарас Григорович" --dismissed "$(date +%F)" --method reinit \
  --responsible "Коваленко Ольга Петрівна" --cert "$cert_sha256" --reason "Наказ № 17-к" > "$order"
cat "$order"
echo
echo "\$ ssh-keygen -Y sign -f hr_ed25519 -n custody-order order.json"
ssh-keygen -Y sign -f "$demo/hr_ed25519" -n custody-order "$order" 2>&1 | sed 's/^/  /'
run order verify "$order"
run wipe --order "$order" --so-pin-file "$demo/so.pin"
echo
echo "# The same order again is a replay: refused, nothing touched, journaled."
run wipe --order "$order" --so-pin-file "$demo/so.pin" || true
run status
run journal show "$serial"
if "$custody" journal export --help >/dev/null 2>&1; then
  run journal export --format csv --lang en
fi
run journal verify
