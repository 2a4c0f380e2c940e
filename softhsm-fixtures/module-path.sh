#!/usr/bin/env bash
# Prints the path of SoftHSM2's PKCS#11 library ($SOFTHSM2_MODULE wins).
for p in "${SOFTHSM2_MODULE:-}" /usr/lib/softhsm/libsofthsm2.so \
         /usr/lib/x86_64-linux-gnu/softhsm/libsofthsm2.so /usr/lib64/pkcs11/libsofthsm2.so \
         /usr/local/lib/softhsm/libsofthsm2.so; do
  [ -n "$p" ] && [ -e "$p" ] && { echo "$p"; exit 0; }
done
echo "custody: SoftHSM2 is not installed (Debian package softhsm2)" >&2
exit 2
