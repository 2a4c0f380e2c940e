#!/usr/bin/env bash
# Builds a SoftHSM2 token set for custody's demo, tests and benchmarks.
#
#   softhsm-fixtures/build.sh [--set demo|edge|bench:N:K | --spec FILE] [--cache DIR]
#                             [--ua-certs DIR | --no-ua-certs] [--jobs N] [--force] OUTDIR
#
# The set gets its own token directory and softhsm2.conf under OUTDIR; the system's SoftHSM2
# tokens are never touched. See softhsm-fixtures/README.md.
set -euo pipefail

usage() {
    sed -n '4,5p' "$0" | sed 's/^# \{0,3\}//' >&2
    exit 2
}

args=()
out=
while [ $# -gt 0 ]; do
    case "$1" in
        --set | --spec | --cache | --ua-certs | --jobs | --module)
            [ $# -ge 2 ] || usage
            args+=("$1" "$2")
            shift 2
            ;;
        --no-ua-certs | --force)
            args+=("$1")
            shift
            ;;
        -h | --help) usage ;;
        -*) echo "build.sh: unknown option $1" >&2; usage ;;
        *)
            [ -z "$out" ] || usage
            out=$1
            shift
            ;;
    esac
done
[ -n "$out" ] || usage
case " ${args[*]-} " in
    *" --set "* | *" --spec "*) ;;
    *) args=(--set demo "${args[@]}") ;;
esac

missing=()
for tool in softhsm2-util pkcs11-tool; do
    command -v "$tool" >/dev/null 2>&1 || missing+=("$tool")
done
if [ ${#missing[@]} -gt 0 ]; then
    echo "build.sh: ${missing[*]} not found. Install the Debian packages: apt-get install softhsm2 opensc" >&2
    exit 1
fi
command -v cargo >/dev/null 2>&1 || { echo "build.sh: cargo not found (install Rust)" >&2; exit 1; }

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# Built together with custody, as the demo builds them: cargo unifies the features of what one
# build selects, so a build of the fixture builder alone would compile the shared crates
# (custody-core among them) a second time with other features.
(cd "$root" && cargo build -q -p custody-agent --bin custody -p custody-tests --bin custody-fixtures)
target=${CARGO_TARGET_DIR:-target}
case "$target" in
    /*) ;;
    *) target=$root/$target ;;
esac

"$target/debug/custody-fixtures" build "${args[@]}" --out "$out"

out=$(cd "$out" && pwd)
module=$(. "$out/env" && printf '%s' "$PKCS11_MODULE")
cat <<EOF

Token set in $out
  manifest (labels, serials, PINs, fingerprints): $out/manifest.json
  PIN files (mode 0600):                          $out/pins/
Use it:
  export SOFTHSM2_CONF=$out/softhsm2.conf      # or: . $out/env
  pkcs11-tool --module $module -L
EOF
