#!/usr/bin/env bash
# Verify speed on PostgreSQL -> PostgreSQL: counts-only verify and deep verify over N
# records held by two databases with Temporal's full v12 schema (all indexes).
#   benches/verify_pg.sh [RECORDS] [CONCURRENCY...]     defaults: 1000000, "1 2 4"
# VISMIG_BENCH_BASELINE=/path/to/an/older/vismig also times that binary's deep verify
# in the same invocation (before/after figures for a change).
# Needs tests/services/up.sh postgres. Disk: ~13 GB per million records per database
# (indexes built after the load); both databases are dropped at the end.
set -euo pipefail
cd "$(dirname "$0")/.."
records=${1:-1000000}
shift || true
concurrencies=("$@")
[ ${#concurrencies[@]} -gt 0 ] || concurrencies=(1 2 4)

bash tests/services/up.sh postgres >/dev/null
# shellcheck disable=SC1091
source tests/services/env.sh
export PGPASSWORD="$VISMIG_TEST_PG_PASSWORD"
psql_db() { psql -qAt -h "$VISMIG_TEST_PG_HOST" -p "$VISMIG_TEST_PG_PORT" -U "$VISMIG_TEST_PG_USER" -d "$1" "${@:2}"; }
cargo build --release --quiet
bin=target/release/vismig
work=$(mktemp -d)
src=bench_verify_src dst=bench_verify_dst
cleanup() {
  rm -rf "$work"
  psql_db postgres -c "DROP DATABASE IF EXISTS $src" -c "DROP DATABASE IF EXISTS $dst" || true
}
trap cleanup EXIT
now() { date +%s.%N; }
calc() { awk "BEGIN { printf \"%.${2:-0}f\", $1 }"; }

store() { printf '{ pluginName: postgres12, databaseName: %s, connectAddr: "%s:%s", user: %s, password: "%s", maxConns: 16 }' \
  "$1" "$VISMIG_TEST_PG_HOST" "$VISMIG_TEST_PG_PORT" "$VISMIG_TEST_PG_USER" "$VISMIG_TEST_PG_PASSWORD"; }
config() { # primary-db secondary-db concurrency file
  cat > "$4" <<YAML
persistence:
  visibilityStore: primary
  secondaryVisibilityStore: secondary
  datastores:
    primary: { sql: $(store "$1") }
    secondary: { sql: $(store "$2") }
migration:
  batchSize: 1000
  concurrency: $3
  rate: { recordsPerSecond: 0 }
  verify: { cutoff: 0s, recheckAfter: 1s }
  checkpoint: { type: file, path: $work/checkpoint.json }
  deadLetter: { path: $work/dead-letter.jsonl }
  metrics: { listen: "" }
YAML
}

# Load: the secondary indexes are built after the rows (an order of magnitude faster
# than keeping 73 indexes up to date row by row); the result is the same schema.
bash tests/services/reset-db.sh postgres "$src" advanced >/dev/null
psql_db "$src" -c "SELECT indexdef FROM pg_indexes WHERE tablename = 'executions_visibility' AND indexname NOT LIKE '%pkey'" > "$work/indexes.sql"
psql_db "$src" -c "SELECT 'DROP INDEX ' || indexname || ';' FROM pg_indexes WHERE tablename = 'executions_visibility' AND indexname NOT LIKE '%pkey'" | psql_db "$src" >/dev/null
config "$src" unused 1 "$work/seed.yaml"
echo "seeding $records records into $src (indexes built after the load) ..."
t0=$(now)
$bin seed --config "$work/seed.yaml" --records "$records" >/dev/null 2>&1
echo "  rows in $(calc "$(now) - $t0" 1) s"
t0=$(now)
split -n l/2 "$work/indexes.sql" "$work/indexes-part-"
for part in "$work"/indexes-part-*; do sed 's/$/;/' "$part" | psql_db "$src" >/dev/null & done
wait
psql_db "$src" -c "VACUUM ANALYZE executions_visibility"
echo "  $(wc -l < "$work/indexes.sql") indexes in $(calc "$(now) - $t0" 1) s; size $(psql_db "$src" -c "SELECT pg_size_pretty(pg_database_size('$src'))")"
t0=$(now)
psql_db postgres -c "DROP DATABASE IF EXISTS $dst" -c "CREATE DATABASE $dst TEMPLATE $src"
echo "  copied to $dst in $(calc "$(now) - $t0" 1) s"
df -h / | tail -1

timed() { # label binary args...
  local label=$1 b=$2
  shift 2
  t0=$(now)
  /usr/bin/time -f "%M %U %S" -o "$work/time" "$b" verify --config "$work/run.yaml" "$@" >"$work/out" 2>"$work/log" || {
    echo "$label failed:"; cat "$work/out" "$work/log"; exit 1; }
  local secs rss cpu
  secs=$(calc "$(now) - $t0" 2)
  read -r rss u s < "$work/time"
  cpu=$(calc "$u + $s" 1)
  printf '%-44s %ss = %s records/s, peak RSS %s MiB, CPU %ss\n' "$label:" "$secs" "$(calc "$records / $secs")" "$((rss / 1024))" "$cpu"
}

config "$src" "$dst" 1 "$work/run.yaml"
timed "counts-only verify" "$bin"
grep -q '^verify (counts): equal' "$work/out" || { cat "$work/out"; exit 1; }
if [ -n "${VISMIG_BENCH_BASELINE:-}" ]; then
  config "$src" "$dst" 1 "$work/run.yaml"
  timed "deep verify, baseline binary" "$VISMIG_BENCH_BASELINE" --deep
fi
for c in "${concurrencies[@]}"; do
  config "$src" "$dst" "$c" "$work/run.yaml"
  timed "deep verify, concurrency $c" "$bin" --deep
  grep -q '^verify (deep): equal' "$work/out" || { cat "$work/out"; exit 1; }
done
