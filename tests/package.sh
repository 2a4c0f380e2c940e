#!/usr/bin/env bash
# The Debian package, end to end on this machine: build it (packaging/deb.sh), install it with
# dpkg -i, run the installed custody, find its man page, load its bash completion, then
# remove it (dpkg -r) and purge it (dpkg -P): the journal in /var/lib/custody must survive the
# purge unless CUSTODY_PURGE_JOURNAL=yes asks otherwise.
#
# It installs a package system-wide, so it runs only as root, and only on a machine where
# custody is not installed and /var/lib/custody does not exist (a CI machine). Elsewhere it
# says why it does not run; under CI=true that is a failure.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
profile=${1:-dev}
fail() { echo "package test: FAILED: $*" >&2; exit 1; }
skip() {
  if [ "${CI:-}" = true ]; then fail "cannot run under CI: $*"; fi
  echo "package test: not run: $*" >&2
  exit 0
}
[ "$(id -u)" -eq 0 ] || skip "needs root (dpkg -i)"
dpkg -s custody >/dev/null 2>&1 && skip "custody is installed on this machine; not touching it"
[ -e /var/lib/custody ] && skip "/var/lib/custody exists; not touching a real journal"
command -v man >/dev/null 2>&1 || fail "man is missing (package man-db)"

deb=$("$root/packaging/deb.sh" --profile "$profile" | tail -n 1)
[ -f "$deb" ] || fail "no package built"
echo "package test: $deb" >&2
contents=$(dpkg-deb --contents "$deb")
for path in ./usr/bin/custody ./lib/systemd/system/custody.service ./etc/custody/custody.toml \
  ./usr/share/man/man1/custody.1.gz ./usr/share/man/man1/custody-journal-verify.1.gz \
  ./usr/share/bash-completion/completions/custody ./usr/share/zsh/vendor-completions/_custody \
  ./usr/share/fish/vendor_completions.d/custody.fish ./usr/share/doc/custody/README.md \
  ./usr/share/doc/custody/docs/admin-guide.md ./usr/share/doc/custody/docs/reference.md \
  ./usr/share/doc/custody/docs/form-page.png ./usr/share/doc/custody/docs/uk/posibnyk-administratora.md; do
  grep -q " $path\$" <<<"$contents" || fail "$path is not in the package"
done
dpkg-deb --info "$deb" conffiles | grep -qx /etc/custody/custody.toml \
  || fail "/etc/custody/custody.toml is not a conffile"

tmp=$(mktemp -d)
cleanup() {
  dpkg -P custody >/dev/null 2>&1 || true
  rm -rf "$tmp" /var/lib/custody /etc/custody
}
trap cleanup EXIT

dpkg -i "$deb" >/dev/null
/usr/bin/custody --version | grep -q '^custody ' || fail "custody --version"
[ "$(stat -c %a /etc/custody/custody.toml)" = 600 ] || fail "custody.toml is not mode 0600"
[ "$(stat -c %a /var/lib/custody)" = 700 ] || fail "/var/lib/custody is not mode 0700"
# The sample configuration is valid as shipped.
CUSTODY_CONFIG=/etc/custody/custody.toml /usr/bin/custody --journal "$tmp/j.db" journal list >/dev/null 2>"$tmp/err" \
  || grep -q "no journal" "$tmp/err" || fail "the sample configuration does not load: $(cat "$tmp/err")"
man -w custody | grep -q 'custody.1' || fail "man -w custody"
man -w custody-journal-verify >/dev/null || fail "man -w custody-journal-verify"
# The bash completion completes subcommands and options.
completed=$(bash -c '
  source /usr/share/bash-completion/completions/custody
  COMP_WORDS=(custody jou); COMP_CWORD=1; _custody custody jou custody; echo "${COMPREPLY[*]}"
  COMP_WORDS=(custody journal ver); COMP_CWORD=2; _custody custody ver journal; echo "${COMPREPLY[*]}"')
grep -qx journal <<<"$(head -n 1 <<<"$completed")" || fail "bash completion of 'custody jou': $completed"
grep -qx verify <<<"$(tail -n 1 <<<"$completed")" || fail "bash completion of 'custody journal ver': $completed"

# A journal made by the installed binary survives remove and purge.
export SOFTHSM2_CONF="$tmp/softhsm2.conf"
mkdir "$tmp/tokens"
printf 'directories.tokendir = %s\nobjectstore.backend = file\n' "$tmp/tokens" >"$SOFTHSM2_CONF"
module=$("$root/softhsm-fixtures/module-path.sh")
/usr/bin/custody --journal /var/lib/custody/journal.db --module "$module" scan >/dev/null
sum=$(sha256sum /var/lib/custody/journal.db)
dpkg -r custody >/dev/null
[ -x /usr/bin/custody ] && fail "dpkg -r left /usr/bin/custody"
[ -f /etc/custody/custody.toml ] || fail "dpkg -r removed the conffile"
dpkg -P custody >/dev/null 2>"$tmp/purge"
[ "$(sha256sum /var/lib/custody/journal.db)" = "$sum" ] || fail "dpkg -P changed or removed the journal"
grep -q "kept" "$tmp/purge" || fail "dpkg -P did not say the journal was kept"
[ -e /etc/custody/custody.toml ] && fail "dpkg -P left the conffile"
# Asked explicitly, purge removes it.
dpkg -i "$deb" >/dev/null
dpkg -r custody >/dev/null
CUSTODY_PURGE_JOURNAL=yes dpkg -P custody >/dev/null 2>&1
[ -e /var/lib/custody ] && fail "CUSTODY_PURGE_JOURNAL=yes dpkg -P kept /var/lib/custody"
echo "package test: ok (build, install, --version, man, bash completion, remove, purge)" >&2
