#!/usr/bin/env bash
# Journal benchmark: custody's event path vs a raw rusqlite insert loop (same pragmas),
# `journal verify` on one million events (the hash chain next to its floor, a bare rusqlite
# read + SHA-256 of the same rows; the state re-derivation measured
# apart, on the imported rows), and the journal form of 100,000 rows (import, then export as
# CSV, JSON and HTML through the real binary).
# Usage: bench/journal.sh [--events N] [--rows N]
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
events=1000000 rows=100000
while [ $# -gt 0 ]; do
  case "$1" in
    --events) events=$2; shift 2 ;;
    --rows) rows=$2; shift 2 ;;
    *) echo "unknown option $1" >&2; exit 2 ;;
  esac
done
cd "$root"
cargo build -q --release -p custody-agent --bin custody
cargo bench -q -p custody-core --bench journal -- --events "$events" --rows "$rows" 2>/dev/null
custody="$root/target/release/custody"
dir="$root/target/bench/journal-form"
rm -rf "$dir"; mkdir -p "$dir"
# A paper journal of $rows rows, as an office would bring it in.
awk -v n="$rows" 'BEGIN {
  print "№ п/п,Дата і час генерації ключів,Тип носія ключової інформації та серійний номер,\"Дата, П.І.Б. та підпис особи, яка отримала КЕП\",\"Дата знищення КЕП, П.І.Б. та підпис особи, відповідальної за знищення\",Примітки"
  for (i = 1; i <= n; i++)
    printf "%d,%02d.%02d.2024 10:00,\"Алмаз-1К, сер. № %08d\",\"%02d.%02d.2024, Петренко Петро Петрович %d\",,\n", i, (i % 28) + 1, (i % 12) + 1, i, (i % 28) + 1, (i % 12) + 1, i
}' > "$dir/paper.csv"
t() { local s e; s=$(date +%s%N); "$@" > /dev/null; e=$(date +%s%N); echo $(( (e - s) / 1000000 )); }
export CUSTODY_CONFIG=/dev/null
ms=$(t "$custody" --journal "$dir/j.db" journal import --csv "$dir/paper.csv")
echo "journal form: import of $rows rows: $ms ms"
for format in csv json html; do
  ms=$(t "$custody" --journal "$dir/j.db" journal export --format "$format" --out "$dir/form.$format")
  size=$(stat -c %s "$dir/form.$format")
  echo "journal form: export of $rows rows as $format: $ms ms ($(( size / 1024 )) KiB)"
done
ms=$(t "$custody" --journal "$dir/j.db" journal verify)
echo "journal verify after the import: $ms ms (whole process)"
