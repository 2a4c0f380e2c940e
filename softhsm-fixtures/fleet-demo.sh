#!/usr/bin/env bash
# The organisation's journal with two workstations: a private PostgreSQL cluster (Debian's
# `postgresql`, in a temporary directory, listening on a unix socket only, run as `nobody`
# when started as root: PostgreSQL refuses root), `custody fleet init`, two agents enrolled,
# each workstation's own journal (a paper journal imported) synced into it, then the
# organisation's view: `fleet status`, `fleet verify` and `fleet form` with both workstations.
# The cluster is stopped and removed at the end. CUSTODY_BIN=PATH uses that binary instead of
# building one; FLEET_DEMO_DIR=DIR keeps the workstations' files there (default ./demo/fleet).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
"$root/softhsm-fixtures/ensure-packages.sh"
start=$SECONDS
if [ -n "${CUSTODY_BIN:-}" ]; then
  custody=$CUSTODY_BIN
else
  echo "custody: building custody (the first build compiles the dependencies: a few minutes)" >&2
  # The same build as the demo's (custody with the fixture builder), so that after the demo
  # nothing is compiled again: a build of custody alone would have other features.
  (cd "$root" && cargo build -p custody-agent --bin custody -p custody-tests --bin custody-fixtures)
  custody="$root/target/debug/custody"
fi
demo=${FLEET_DEMO_DIR:-$root/demo/fleet}
rm -rf "$demo"
mkdir -p "$demo"
demo=$(cd "$demo" && pwd)

# The database server: a private cluster, as the tests start it.
pgbin=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -n 1)
pg=$(mktemp -d /tmp/custody-fleet-demo.XXXXXX)
chmod 755 "$pg"
as=()
if [ "$(id -u)" -eq 0 ]; then
  chown nobody "$pg"
  as=(runuser -u nobody --)
fi
pgrun() { (cd "$pg" && "${as[@]}" "$@"); }
stop() {
  pgrun "$pgbin/pg_ctl" -D "$pg/data" -m fast -w stop >/dev/null 2>&1 || true
  rm -rf "$pg"
}
trap stop EXIT
pgrun "$pgbin/initdb" -D "$pg/data" -U postgres -A trust -E UTF8 --no-locale --no-sync >/dev/null
cat >> "$pg/data/postgresql.conf" <<CONF
unix_socket_directories = '$pg'
listen_addresses = ''
password_encryption = 'scram-sha-256'
CONF
printf 'local all postgres trust\nlocal all all scram-sha-256\n' > "$pg/data/pg_hba.conf"
pgrun "$pgbin/pg_ctl" -D "$pg/data" -l "$pg/server.log" -w start >/dev/null
"$pgbin/createdb" -h "$pg" -U postgres -E UTF8 -T template0 fleet
url="postgresql://postgres@$(printf %s "$pg" | sed 's|/|%2F|g')/fleet"
export CUSTODY_CONFIG=/dev/null
say() { echo; echo "# $*"; }
run() { echo "\$ custody $*" | sed "s|$demo/||g"; "$custody" "$@"; }

say "The organisation's database: schema and roles, then one login role per workstation."
run fleet init --database "$url"
for ws in ws-01 ws-02; do
  run fleet enroll-agent "$ws" --database "$url" --output "$demo/$ws.toml"
done

say "Each workstation keeps its own journal; here each brings its paper journal in."
header='№ п/п,Дата і час генерації ключів,Тип носія ключової інформації та серійний номер,"Дата, П.І.Б. та підпис особи, яка отримала КЕП","Дата знищення КЕП, П.І.Б. та підпис особи, відповідальної за знищення",Примітки'
cat > "$demo/ws-01.csv" <<CSV
$header
1,03.02.2025 10:00,"Алмаз-1К, сер. № 00001017","03.02.2025, Петренко Петро Петрович",,
2,11.03.2025 09:30,"Алмаз-1К, сер. № 00001018","11.03.2025, Коваленко Ольга Петрівна","20.10.2025, Сидоренко Марія Іванівна",
CSV
cat > "$demo/ws-02.csv" <<CSV
$header
1,14.04.2025 14:15,"SecureToken-337, сер. № 2A7F0031","14.04.2025, Іваненко Іван Іванович",,
CSV
for ws in ws-01 ws-02; do
  run --config "$demo/$ws.toml" --journal "$demo/$ws.db" journal import --csv "$demo/$ws.csv"
done

say "Each workstation syncs (custody watch does it every [fleet] interval)."
for ws in ws-01 ws-02; do
  run --config "$demo/$ws.toml" --journal "$demo/$ws.db" sync
done
say "Synced again: nothing new to send."
run --config "$demo/ws-01.toml" --journal "$demo/ws-01.db" sync
run --config "$demo/ws-01.toml" --journal "$demo/ws-01.db" journal verify --against-fleet

say "The organisation's side (as the auditor would run it)."
run fleet status --database "$url"
run fleet verify --database "$url"
say "The organisation's journal in the mandated form: rows AGENT/ROW, both workstations."
run fleet form --database "$url" --format csv
echo "custody: the fleet demo took $(( SECONDS - start )) s" >&2
