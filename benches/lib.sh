# shellcheck shell=bash
# shellcheck disable=SC2154 # work, bin and results are set by the script that sources this
# Shared by the benchmark scripts: store blocks for vismig's config, loading sources,
# and `measure`, which times one command and appends a row to the results file.
# Source after tests/services/env.sh, with $work (a scratch directory) and $bin set.

# Downloaded tools (elasticdump, Python environments) are kept here between runs.
tools=${VISMIG_BENCH_CACHE:-/var/cache/vismig-bench}

now() { date +%s.%N; }
calc() { awk "BEGIN { printf \"%.${2:-0}f\", $1 }"; }
psql_db() { PGPASSWORD="$VISMIG_TEST_PG_PASSWORD" psql -qAt -h "$VISMIG_TEST_PG_HOST" -p "$VISMIG_TEST_PG_PORT" -U "$VISMIG_TEST_PG_USER" -d "$1" "${@:2}"; }
mysql_db() { mariadb -N -B -h "$VISMIG_TEST_MYSQL_HOST" -P "$VISMIG_TEST_MYSQL_PORT" -u "$VISMIG_TEST_MYSQL_USER" -p"$VISMIG_TEST_MYSQL_PASSWORD" "$@"; }

# Store blocks (the `datastores:` entries of Temporal's persistence config).
pg_store() { printf '{ sql: { pluginName: postgres12, databaseName: %s, connectAddr: "%s:%s", user: %s, password: "%s", maxConns: 16 } }' \
  "$1" "$VISMIG_TEST_PG_HOST" "$VISMIG_TEST_PG_PORT" "$VISMIG_TEST_PG_USER" "$VISMIG_TEST_PG_PASSWORD"; }
mysql_store() { printf '{ sql: { pluginName: mysql8, databaseName: %s, connectAddr: "%s:%s", user: %s, password: "%s", maxConns: 16 } }' \
  "$1" "$VISMIG_TEST_MYSQL_HOST" "$VISMIG_TEST_MYSQL_PORT" "$VISMIG_TEST_MYSQL_USER" "$VISMIG_TEST_MYSQL_PASSWORD"; }
sqlite_store() { printf '{ sql: { pluginName: sqlite, databaseName: "%s", connectAddr: localhost } }' "$1"; }
cassandra_store() { printf '{ cassandra: { hosts: "%s", port: %s, keyspace: %s, connectTimeout: 10s } }' \
  "$VISMIG_TEST_CASSANDRA_HOSTS" "$VISMIG_TEST_CASSANDRA_PORT" "$1"; }
es_index_store() { # url index: a store of its own (one cluster, one index)
  printf '{ elasticsearch: { url: { scheme: http, host: "%s" }, indices: { visibility: %s } } }' "${1#http://}" "$2"; }
# seed_aliases DB: migration.searchAttributeAliases for the seed's namespaces found in a
# PostgreSQL database (the names the seed's attributes have in Elasticsearch).
seed_aliases() {
  echo "  searchAttributeAliases:"
  psql_db "$1" -c "SELECT DISTINCT namespace_id FROM executions_visibility" | while read -r ns; do
    echo "    \"$ns\": { Keyword01: CustomerId, Int01: Amount, Double01: Score, Bool01: Priority, Datetime01: DueTime, Text01: Note, KeywordList01: Tags }"
  done
}
es_store() { # url source-index target-index: one cluster, Temporal's two index keys
  printf '{ elasticsearch: { url: { scheme: http, host: "%s" }, indices: { visibility: %s, secondary_visibility: %s } } }' "${1#http://}" "$2" "$3"; }

# vismig_config FILE PRIMARY_BLOCK SECONDARY_BLOCK CONCURRENCY BATCH [EXTRA_MIGRATION_YAML]
# No rate limit, no metrics listener; a fresh checkpoint each time (the file is removed).
vismig_config() {
  local secondary="    secondary: $3" secondary_key="  secondaryVisibilityStore: secondary"
  if [ "$3" = same ]; then secondary="" secondary_key=""; fi
  rm -f "$work/checkpoint.json" "$work/dead-letter.jsonl"
  cat >"$1" <<YAML
persistence:
  visibilityStore: primary
$secondary_key
  datastores:
    primary: $2
$secondary
migration:
  batchSize: $5
  concurrency: $4
  rate: { recordsPerSecond: 0 }
  checkpoint: { type: file, path: $work/checkpoint.json }
  deadLetter: { path: $work/dead-letter.jsonl }
  metrics: { listen: "" }
${6:-}
YAML
}

# seed STORE_BLOCK RECORDS [SECONDARY_BLOCK]: vismig's synthetic records written into a
# store (the secondary is not opened; `same` for an Elasticsearch index pair).
seed() {
  vismig_config "$work/seed.yaml" "$1" "${3:-$(sqlite_store "$work/unused.db")}" 1 1000
  "$bin" seed --config "$work/seed.yaml" --records "$2" >/dev/null 2>"$work/seed.log" || { cat "$work/seed.log"; return 1; }
}

# pg_load_source DB RECORDS: Temporal's v12 schema with RECORDS seeded records; the
# secondary indexes are built after the rows (an order of magnitude faster than keeping
# 73 indexes up to date row by row), so the result is the same schema, sooner.
pg_load_source() {
  local db=$1 records=$2 t0
  bash tests/services/reset-db.sh postgres "$db" advanced >/dev/null
  psql_db "$db" -c "SELECT indexdef || ';' FROM pg_indexes WHERE tablename = 'executions_visibility' AND indexname NOT LIKE '%pkey'" >"$work/indexes.sql"
  psql_db "$db" -c "SELECT 'DROP INDEX ' || indexname || ';' FROM pg_indexes WHERE tablename = 'executions_visibility' AND indexname NOT LIKE '%pkey'" | psql_db "$db" >/dev/null
  t0=$(now)
  seed "$(pg_store "$db")" "$records"
  # VISMIG_BENCH_PK_ONLY=1: only the primary key stays (for benchmarks that read by it).
  [ "${VISMIG_BENCH_PK_ONLY:-0}" = 1 ] && : >"$work/indexes.sql"
  split -n l/2 "$work/indexes.sql" "$work/indexes-part-"
  for part in "$work"/indexes-part-*; do psql_db "$db" -f "$part" >/dev/null & done
  wait
  rm -f "$work"/indexes-part-*
  psql_db "$db" -c "VACUUM ANALYZE executions_visibility"
  echo "  loaded $records records into PostgreSQL $db in $(calc "$(now) - $t0" 1) s ($(psql_db "$db" -c "SELECT pg_size_pretty(pg_database_size('$db'))"))"
}

pg_rows() { psql_db "$1" -c "SELECT count(*) FROM executions_visibility"; }

# bench_binary: sets $bin to VISMIG_BENCH_BIN (a given binary, kept apart from builds made
# meanwhile) or to a release build of the working tree.
bench_binary() {
  if [ -n "${VISMIG_BENCH_BIN:-}" ]; then
    bin=$(realpath "$VISMIG_BENCH_BIN")
  else
    cargo build --release --quiet
    bin=$PWD/target/release/vismig
  fi
}

# os_fresh INDEX: an OpenSearch index made by Temporal's template (installed by up.sh),
# with the seed's custom search attributes mapped.
os_mapping='{"properties":{"CustomerId":{"type":"keyword"},"Amount":{"type":"long"},"Score":{"type":"scaled_float","scaling_factor":10000},"Priority":{"type":"boolean"},"DueTime":{"type":"date_nanos"},"Note":{"type":"text"},"Tags":{"type":"keyword"}}}'
os_fresh() {
  local url=$VISMIG_TEST_OPENSEARCH_URL
  curl -s -X DELETE "$url/$1" >/dev/null
  curl -fsS -X PUT "$url/$1" >/dev/null
  curl -fsS -X PUT "$url/$1/_mapping" -H 'content-type: application/json' -d "$os_mapping" >/dev/null
}
# os_load_source INDEX RECORDS: a fresh index (os_fresh) with RECORDS seeded records.
os_load_source() {
  local t0
  os_fresh "$1"
  t0=$(now)
  seed "$(es_store "$VISMIG_TEST_OPENSEARCH_URL" "$1" unused)" "$2" same
  echo "  seeded $2 records into OpenSearch in $(calc "$(now) - $t0" 1) s"
}
# bench_venv NAME REQUIREMENT...: a Python virtual environment under $tools (the bench
# cache) with the requirements installed once; prints its directory.
bench_venv() {
  local dir=$tools/$1
  shift
  if [ ! -x "$dir/bin/python" ]; then
    mkdir -p "$tools"
    python3 -m venv "$dir"
    "$dir/bin/pip" install --quiet "$@" >&2
  fi
  echo "$dir"
}
# os_rows INDEX: the documents the index holds, after a refresh.
os_rows() {
  curl -fsS -X POST "$VISMIG_TEST_OPENSEARCH_URL/$1/_refresh" >/dev/null
  curl -fsS "$VISMIG_TEST_OPENSEARCH_URL/$1/_count" | sed 's/.*"count":\([0-9]*\).*/\1/'
}

# measure PAIR TOOL CONCURRENCY RUN RECORDS CHECK -- COMMAND...
# Times COMMAND (wall clock, peak RSS of the largest process in its tree, CPU seconds
# of the tree), then runs CHECK, which must print the number of records the target
# holds: a run that copied fewer than RECORDS fails the benchmark.
measure() {
  local pair=$1 tool=$2 c=$3 run=$4 records=$5 check=$6
  shift 7
  /usr/bin/time -f "%e %M %U %S" -o "$work/time" "$@" >"$work/out" 2>"$work/log" ||
    { echo "$pair / $tool failed:" >&2; tail -n 30 "$work/out" "$work/log" >&2; return 1; }
  local secs rss user sys got
  read -r secs rss user sys <"$work/time"
  got=$($check)
  [ "$got" = "$records" ] || { echo "$pair / $tool: the target holds $got records, not $records" >&2; return 1; }
  printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$pair" "$tool" "$c" "$run" "$records" "$secs" "$rss" "$(calc "$user + $sys" 2)" >>"$results"
  printf '  %-10s %-34s c=%-2s run %s: %8s records in %7.2f s = %7.0f records/s, peak RSS %4d MiB, CPU %6.1f s\n' \
    "$pair" "$tool" "$c" "$run" "$records" "$secs" "$(calc "$records / $secs")" "$((rss / 1024))" "$(calc "$user + $sys" 1)"
}
