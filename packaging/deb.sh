#!/usr/bin/env bash
# Builds the Debian package of custody: target/debian/custody_<version>_<arch>.deb.
#
#   ./packaging/deb.sh                  # the `dist` build (what to install; slower to build)
#   ./packaging/deb.sh --profile dev    # any other cargo profile, e.g. for a quick test
#
# Installs cargo-deb (cargo install) when missing. The man pages and shell completions are
# generated from the command line's own definition (custody-assets) into target/assets.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
profile=dist
if [ "${1:-}" = --profile ] && [ -n "${2:-}" ]; then profile=$2; fi
if ! cargo deb --version >/dev/null 2>&1; then
  echo "custody: installing cargo-deb (cargo install cargo-deb --locked)" >&2
  cargo install cargo-deb --locked
fi
start=$SECONDS
echo "custody: building the $profile binary" >&2
cargo build --profile "$profile" -p custody-agent --bins
outdir=$profile; [ "$profile" = dev ] && outdir=debug
rm -rf target/assets
"target/$outdir/custody-assets" target/assets
gzip -9n target/assets/man/*.1
cargo deb -p custody-agent --no-build --profile "$profile" "${@:3}" >&2
ls -t target/debian/custody_*.deb | head -n 1
echo "custody: package built in $((SECONDS - start)) s" >&2
