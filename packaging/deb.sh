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
# The version the package layout was made with (asset paths, profiles).
cargo_deb=3.8.0
if ! cargo deb --version 2>/dev/null | grep -q "$cargo_deb"; then
  echo "custody: installing cargo-deb $cargo_deb (cargo install, about 2 minutes)" >&2
  cargo install cargo-deb --version "$cargo_deb" --locked
fi
start=$SECONDS
echo "custody: building the $profile binary" >&2
cargo build --profile "$profile" -p custody-agent --bins
outdir=$profile; [ "$profile" = dev ] && outdir=debug
rm -rf target/assets
"target/$outdir/custody-assets" target/assets
gzip -9n target/assets/man/*.1
rm -f target/debian/custody_*.deb
log=target/assets/cargo-deb.log
if ! cargo deb -p custody-agent --no-build --profile "$profile" "${@:3}" >"$log" 2>&1; then
  cat "$log" >&2
  echo "custody: cargo deb failed" >&2
  exit 2
fi
# cargo-deb warns that the assets generated above are not built by cargo, and about profiles
# other than release; neither matters here.
grep -v -e "dev profile is not supported" -e "debug symbols set" -e "will not be built" "$log" >&2 || true
ls -t target/debian/custody_*.deb | head -n 1
echo "custody: package built in $((SECONDS - start)) s" >&2
