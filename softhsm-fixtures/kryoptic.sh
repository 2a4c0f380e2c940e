#!/usr/bin/env bash
# Prints the path of kryoptic's PKCS#11 module, building it first when it is not built yet:
# kryoptic 1.5.4 from the crates registry, features `minimal` and `kryoptic-lib/dynamic`, no
# default features (against the system's OpenSSL 3.0 through pkg-config; EdDSA would need a
# newer one). The build is kept under target/kryoptic, so only the first run pays (about
# 4 minutes on two cores). Needs libssl-dev, pkg-config and libclang-dev (bindgen), which
# ensure-packages.sh installs.
set -euo pipefail
version=1.5.4
root=$(cd "$(dirname "$0")/.." && pwd)
out="${CARGO_TARGET_DIR:-$root/target}/kryoptic"
so="$out/release/libkryoptic_pkcs11.so"
stamp="$out/built-$version"
if [ -f "$stamp" ] && [ -f "$so" ]; then
  echo "$so"
  exit 0
fi
mkdir -p "$out/fetch"
# A manifest whose only purpose is to have cargo download and unpack the crate.
cat > "$out/fetch/Cargo.toml" <<TOML
[package]
name = "kryoptic-fetch"
version = "0.0.0"
edition = "2021"
publish = false
[lib]
path = "lib.rs"
[dependencies]
kryoptic = { version = "=$version", default-features = false }
[workspace]
TOML
: > "$out/fetch/lib.rs"
manifest=$(cargo metadata --format-version 1 --manifest-path "$out/fetch/Cargo.toml" 2>/dev/null \
  | grep -o "\"manifest_path\":\"[^\"]*/kryoptic-$version/Cargo.toml\"" | head -1 | cut -d'"' -f4)
if [ -z "$manifest" ] || [ ! -f "$manifest" ]; then
  echo "custody: could not get kryoptic $version from the crates registry" >&2
  exit 2
fi
echo "custody: building kryoptic $version into $out (once)" >&2
cargo build --release --locked --manifest-path "$manifest" --target-dir "$out" \
  --no-default-features --features minimal,kryoptic-lib/dynamic >&2
[ -f "$so" ] || { echo "custody: the kryoptic build made no $so" >&2; exit 2; }
touch "$stamp"
echo "$so"
