#!/usr/bin/env bash
# Installs the Debian/Ubuntu packages custody's demo and tests use, when they are missing:
# softhsm2 (the PKCS#11 module), opensc (pkcs11-tool, pkcs11-spy, opensc-pkcs11.so), openssh-client
# (ssh-keygen), sqlite3, openssl; for the smart-card tests pcscd, libpcsclite1, vsmartcard-vpcd
# (a virtual reader) and systemd (systemd-socket-activate starts a private pcscd); for the
# fleet tests postgresql (the server: the tests start a private cluster), and libssl-dev and
# pkg-config (the PostgreSQL client's TLS). Extra package names may be given as arguments
# (tests/run.sh adds the other PKCS#11 implementations: swtpm, tpm2-abrmd and tpm2-pkcs11,
# p11-kit's remote module, and what building kryoptic needs).
set -euo pipefail

need=()
command -v softhsm2-util >/dev/null 2>&1 || need+=(softhsm2)
command -v pkcs11-tool   >/dev/null 2>&1 || need+=(opensc)
command -v ssh-keygen    >/dev/null 2>&1 || need+=(openssh-client)
command -v sqlite3       >/dev/null 2>&1 || need+=(sqlite3)
command -v openssl       >/dev/null 2>&1 || need+=(openssl)
# PostgreSQL's server (the organisation's journal: the tests start a private cluster) and
# what the build of its TLS client needs.
ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || need+=(postgresql)
dpkg -s libssl-dev       >/dev/null 2>&1 || need+=(libssl-dev)
command -v pkg-config    >/dev/null 2>&1 || need+=(pkg-config)
[ -x /usr/sbin/pcscd ] || [ -x /sbin/pcscd ] || need+=(pcscd)
dpkg -s libpcsclite1 >/dev/null 2>&1 || need+=(libpcsclite1)
[ -e /usr/lib/pcsc/drivers/serial/libifdvpcd.so ] || need+=(vsmartcard-vpcd)
command -v systemd-socket-activate >/dev/null 2>&1 || need+=(systemd)
for extra in "$@"; do
  case "$extra" in
    chromium) command -v chromium >/dev/null 2>&1 || need+=(chromium) ;;
    *) dpkg -s "$extra" >/dev/null 2>&1 || need+=("$extra") ;;
  esac
done
[ ${#need[@]} -eq 0 ] && exit 0

echo "custody: installing ${need[*]} (apt-get)" >&2
if ! command -v apt-get >/dev/null 2>&1; then
  echo "custody: please install ${need[*]} with your package manager" >&2
  exit 2
fi
sudo=()
if [ "$(id -u)" -ne 0 ]; then
  command -v sudo >/dev/null 2>&1 || { echo "custody: run as root or install sudo to install ${need[*]}" >&2; exit 2; }
  sudo=(sudo)
fi
"${sudo[@]}" apt-get update -qq
DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -qq "${need[@]}" >/dev/null
