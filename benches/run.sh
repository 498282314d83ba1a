#!/usr/bin/env bash
# The benchmark harness: each store pair beside its anchor, on the same data and server,
# in one invocation, every measurement repeated and the median reported.
#
#   benches/run.sh [--records "N ..."] [--runs R] [--pairs "PAIR ..."] [--concurrency "C ..."]
#   defaults: --records 1000000 --runs 3 --pairs "pg sqlite os pg2os os2pg mariadb cassandra" --concurrency "1 2 4"
#   VISMIG_BENCH_BIN=path times that vismig binary instead of a release build of the working tree
#   VISMIG_BENCH_BASELINE=path also times that (older) binary beside it, PostgreSQL and OpenSearch pairs
#
# Pairs and anchors:
#   pg         PostgreSQL -> PostgreSQL   beside the raw COPY pipe (psql \copy to stdout | \copy from stdin),
#                                         and at each concurrency N > 1: N parallel COPY streams over run-id
#                                         ranges into the indexed table; the same into the table without its
#                                         indexes, then N CREATE INDEX at a time; pgcopydb with N jobs
#                                         (benches/anchors/pg_parallel.sh, pgcopydb.sh);
#                                         also vismig with migration.bulkLoad.deferIndexes at the top concurrency
#   sqlite     SQLite -> SQLite           beside ATTACH + INSERT ... SELECT in one SQLite process
#   os         OpenSearch -> OpenSearch   beside _reindex (external versions; also slices=auto, and slices=auto
#                                         with refresh and replicas off as deferRefresh does) and elasticdump (npm);
#                                         also vismig with migration.bulkLoad.deferRefresh at the top concurrency
#   pg2os      PostgreSQL -> OpenSearch   on its own (search-attribute aliases: Keyword01 -> CustomerId, ...)
#   os2pg      OpenSearch -> PostgreSQL   on its own (the same aliases, back)
#   mariadb    MariaDB -> PostgreSQL      beside pgloader (Debian)
#   cassandra  Cassandra -> PostgreSQL    on its own (nothing else reads Temporal's Cassandra visibility)
# Every target is Temporal's own schema (indexes and all), emptied before each run, and
# each run must leave every record in it. Release build; no rate limit.
#
# Output: one line per run, then a Markdown table of medians (records/s, ratio to the
# pair's first anchor, peak RSS, CPU seconds), also written to target/bench/.
# Disk: PostgreSQL takes ~20 GB per million records per database with its indexes
# (about 13 GB built after the load): size --records to `df -h`.
set -euo pipefail
cd "$(dirname "$0")/.."

sizes="1000000" runs=3 pairs="pg sqlite os pg2os os2pg mariadb cassandra" concurrencies="1 2 4"
while [ $# -gt 0 ]; do
  case $1 in
    --records) sizes=$2; shift 2 ;;
    --runs) runs=$2; shift 2 ;;
    --pairs) pairs=$2; shift 2 ;;
    --concurrency) concurrencies=$2; shift 2 ;;
    *) echo "usage: benches/run.sh [--records \"N ...\"] [--runs R] [--pairs \"pg sqlite os pg2os os2pg mariadb cassandra\"] [--concurrency \"1 2 4\"]" >&2; exit 2 ;;
  esac
done
services=""
for p in $pairs; do
  case $p in
    pg) services+=" postgres" ;;
    pg2os | os2pg) services+=" postgres opensearch" ;;
    sqlite) ;;
    os) services+=" opensearch" ;;
    mariadb) services+=" mariadb postgres" ;;
    cassandra) services+=" cassandra postgres" ;;
    *) echo "unknown pair '$p'" >&2; exit 2 ;;
  esac
done
# shellcheck disable=SC2086
[ -z "$services" ] || bash tests/services/up.sh $services >/dev/null
# shellcheck disable=SC1091
source tests/services/env.sh
# shellcheck source=benches/lib.sh
. benches/lib.sh
# VISMIG_BENCH_BASELINE: an older vismig binary, timed beside the current one (PostgreSQL
# and OpenSearch pairs), for before/after figures from one invocation.
baseline=${VISMIG_BENCH_BASELINE:+$(realpath "$VISMIG_BENCH_BASELINE")}
# VISMIG_BENCH_BIN: time this binary instead of building the working tree (a copy keeps a
# long run apart from builds made meanwhile).
bench_binary
work=$(mktemp -d)
mkdir -p target/bench
stamp=$(date -u +%Y%m%dT%H%M%SZ)
results=target/bench/results-$stamp.tsv
printf 'pair\ttool\tconcurrency\trun\trecords\tseconds\trss_kib\tcpu_seconds\n' >"$results"
top=${concurrencies##* }

dropped=()
cleanup() {
  for db in "${dropped[@]}"; do
    case $db in
      pg:*) psql_db postgres -c "DROP DATABASE IF EXISTS ${db#pg:}" 2>/dev/null || true ;;
      mysql:*) mysql_db -e "DROP DATABASE IF EXISTS ${db#mysql:}" || true ;;
      es:*) curl -s -X DELETE "$VISMIG_TEST_OPENSEARCH_URL/${db#es:}" >/dev/null || true ;;
      ks:*) "$VISMIG_TEST_CASSANDRA_TOOL" --ep "$VISMIG_TEST_CASSANDRA_HOSTS" -p "$VISMIG_TEST_CASSANDRA_PORT" drop-keyspace -k "${db#ks:}" -f >/dev/null 2>&1 || true ;;
    esac
  done
  rm -rf "$work"
}
trap cleanup EXIT

# --- PostgreSQL -> PostgreSQL ------------------------------------------------------
pg_cols="namespace_id, run_id, workflow_type_name, workflow_id, start_time, execution_time, status, close_time, history_length, history_size_bytes, execution_duration, state_transition_count, memo, encoding, task_queue, search_attributes, parent_workflow_id, parent_run_id, root_workflow_id, root_run_id, _version"
copy_pipe() {
  psql_db "$1" -c "\\copy (SELECT $pg_cols FROM executions_visibility) TO STDOUT" |
    psql_db "$2" -c "\\copy executions_visibility ($pg_cols) FROM STDIN"
}
pg_target_rows() { pg_rows bench_pg_dst; }
pair_pg() {
  local n=$1 src=bench_pg_src dst=bench_pg_dst run c
  dropped+=("pg:$src" "pg:$dst")
  pg_load_source $src "$n"
  printf 'system.enableReadFromSecondaryVisibility:\n  - value: false\n' >"$work/dynamicconfig.yaml"
  for run in $(seq "$runs"); do
    bash tests/services/reset-db.sh postgres $dst advanced >/dev/null
    measure pg "COPY pipe" - "$run" "$n" pg_target_rows -- bash -c "$(declare -f psql_db copy_pipe); pg_cols='$pg_cols'; copy_pipe $src $dst"
    for c in $concurrencies; do
      [ "$c" -gt 1 ] || continue
      bash tests/services/reset-db.sh postgres $dst advanced >/dev/null
      measure pg "parallel COPY x$c" - "$run" "$n" pg_target_rows -- bash benches/anchors/pg_parallel.sh $src $dst "$c" indexed
      bash tests/services/reset-db.sh postgres $dst advanced >/dev/null
      measure pg "parallel COPY x$c + CREATE INDEX x$c" - "$run" "$n" pg_target_rows -- bash benches/anchors/pg_parallel.sh $src $dst "$c" deferred
      psql_db postgres -c "DROP DATABASE IF EXISTS $dst" -c "CREATE DATABASE $dst"
      measure pg "pgcopydb x$c" - "$run" "$n" pg_target_rows -- bash benches/anchors/pgcopydb.sh $src $dst "$c"
    done
    for c in $concurrencies; do
      bash tests/services/reset-db.sh postgres $dst advanced >/dev/null
      vismig_config "$work/run.yaml" "$(pg_store $src)" "$(pg_store $dst)" "$c" 1000
      measure pg vismig "$c" "$run" "$n" pg_target_rows -- "$bin" backfill --config "$work/run.yaml"
      if [ -n "$baseline" ]; then
        bash tests/services/reset-db.sh postgres $dst advanced >/dev/null
        vismig_config "$work/run.yaml" "$(pg_store $src)" "$(pg_store $dst)" "$c" 1000 # a fresh checkpoint
        measure pg "baseline vismig" "$c" "$run" "$n" pg_target_rows -- "$baseline" backfill --config "$work/run.yaml"
      fi
    done
    bash tests/services/reset-db.sh postgres $dst advanced >/dev/null
    vismig_config "$work/run.yaml" "$(pg_store $src)" "$(pg_store $dst)" "$top" 1000 \
      "  bulkLoad: { deferIndexes: true }
  flip: { dynamicConfigFile: $work/dynamicconfig.yaml }"
    measure pg "vismig deferIndexes" "$top" "$run" "$n" pg_target_rows -- "$bin" backfill --config "$work/run.yaml"
  done
  psql_db postgres -c "DROP DATABASE IF EXISTS $src" -c "DROP DATABASE IF EXISTS $dst"
}

# --- SQLite -> SQLite --------------------------------------------------------------
sqlite_target_rows() { python3 -c 'import sqlite3,sys; print(sqlite3.connect(sys.argv[1]).execute("SELECT count(*) FROM executions_visibility").fetchone()[0])' "$work/sqlite/dst.db"; }
# The anchor: SQLite itself copying between two attached files in one transaction.
sqlite_attach_insert() {
  python3 - "$1" "$2" <<'PY'
import sqlite3, sys
db = sqlite3.connect(sys.argv[2], isolation_level=None)
db.execute("ATTACH DATABASE ? AS src", (sys.argv[1],))
# Generated columns (hidden 2 or 3) are computed by the target itself.
cols = ", ".join(r[1] for r in db.execute("PRAGMA src.table_xinfo(executions_visibility)") if r[6] == 0)
db.execute("BEGIN")
db.execute(f"INSERT INTO main.executions_visibility ({cols}) SELECT {cols} FROM src.executions_visibility")
db.execute("COMMIT")
PY
}
pair_sqlite() {
  local n=$1 d=$work/sqlite run c
  mkdir -p "$d"
  # An empty database with Temporal's SQLite schema, as vismig's demo creates it.
  "$bin" demo --records 0 --dir "$d/empty" >/dev/null 2>&1
  cp "$d/empty/secondary.db" "$d/src.db"
  local t0
  t0=$(now)
  seed "$(sqlite_store "$d/src.db")" "$n"
  echo "  seeded $n records into SQLite in $(calc "$(now) - $t0" 1) s"
  for run in $(seq "$runs"); do
    rm -f "$d"/dst.db*; cp "$d/empty/secondary.db" "$d/dst.db"
    measure sqlite "ATTACH + INSERT ... SELECT" - "$run" "$n" sqlite_target_rows -- bash -c "$(declare -f sqlite_attach_insert); sqlite_attach_insert '$d/src.db' '$d/dst.db'"
    for c in $concurrencies; do
      rm -f "$d"/dst.db*; cp "$d/empty/secondary.db" "$d/dst.db"
      vismig_config "$work/run.yaml" "$(sqlite_store "$d/src.db")" "$(sqlite_store "$d/dst.db")" "$c" 1000
      measure sqlite vismig "$c" "$run" "$n" sqlite_target_rows -- "$bin" backfill --config "$work/run.yaml"
    done
  done
  rm -rf "$d"
}

# --- OpenSearch -> OpenSearch ------------------------------------------------------
os_target_rows() { os_rows temporal_visibility_v1_bench_dst; }
reindex_refresh_off() { # url source target
  local replicas
  replicas=$(curl -fsS "$1/$3/_settings/index.number_of_replicas?flat_settings=true" | python3 -c 'import json, sys; print(next(iter(json.load(sys.stdin).values()))["settings"]["index.number_of_replicas"])')
  curl -fsS -X PUT "$1/$3/_settings" -H 'content-type: application/json' -d '{"index":{"refresh_interval":"-1","number_of_replicas":0}}' >/dev/null
  curl -fsS -X POST "$1/_reindex?wait_for_completion=true&slices=auto" -H 'content-type: application/json' \
    -d "{\"source\":{\"index\":\"$2\",\"size\":1000},\"dest\":{\"index\":\"$3\",\"version_type\":\"external\"}}" >/dev/null
  curl -fsS -X PUT "$1/$3/_settings" -H 'content-type: application/json' -d "{\"index\":{\"refresh_interval\":null,\"number_of_replicas\":$replicas}}" >/dev/null
  curl -fsS -X POST "$1/$3/_refresh" >/dev/null
}
pair_os() {
  local n=$1 url=$VISMIG_TEST_OPENSEARCH_URL src=temporal_visibility_v1_bench_src dst=temporal_visibility_v1_bench_dst run c
  local batch=${VISMIG_BENCH_ES_BATCH:-2000}
  dropped+=("es:$src" "es:$dst")
  printf 'system.enableReadFromSecondaryVisibility:\n  - value: false\n' >"$work/dynamicconfig.yaml"
  if [ ! -x "$tools/node_modules/.bin/elasticdump" ]; then
    mkdir -p "$tools"
    (cd "$tools" && npm install --silent --no-audit --no-fund elasticdump@6.125.1 >/dev/null)
  fi
  os_load_source $src "$n"
  for run in $(seq "$runs"); do
    os_fresh $dst
    measure os "_reindex (external versions)" - "$run" "$n" os_target_rows -- curl -fsS -X POST \
      "$url/_reindex?wait_for_completion=true&refresh=true" -H 'content-type: application/json' \
      -d "{\"source\":{\"index\":\"$src\",\"size\":1000},\"dest\":{\"index\":\"$dst\",\"version_type\":\"external\"}}"
    os_fresh $dst
    measure os "_reindex (slices=auto)" - "$run" "$n" os_target_rows -- curl -fsS -X POST \
      "$url/_reindex?wait_for_completion=true&refresh=true&slices=auto" -H 'content-type: application/json' \
      -d "{\"source\":{\"index\":\"$src\",\"size\":1000},\"dest\":{\"index\":\"$dst\",\"version_type\":\"external\"}}"
    # The same with the settings vismig's deferRefresh uses: no refresh and no replicas
    # during the copy, restored after it (the time includes that).
    os_fresh $dst
    measure os "_reindex (slices=auto, refresh off)" - "$run" "$n" os_target_rows -- bash -c "$(declare -f reindex_refresh_off); reindex_refresh_off '$url' $src $dst"
    os_fresh $dst
    measure os "elasticdump (--limit 1000)" - "$run" "$n" os_target_rows -- \
      "$tools/node_modules/.bin/elasticdump" --input="$url/$src" --output="$url/$dst" --type=data --limit=1000
    for c in $concurrencies; do
      os_fresh $dst
      vismig_config "$work/run.yaml" "$(es_store "$url" $src $dst)" same "$c" "$batch"
      measure os "vismig (batch $batch)" "$c" "$run" "$n" os_target_rows -- "$bin" backfill --config "$work/run.yaml"
      if [ -n "$baseline" ]; then
        os_fresh $dst
        vismig_config "$work/run.yaml" "$(es_store "$url" $src $dst)" same "$c" "$batch" # a fresh checkpoint
        measure os "baseline vismig (batch $batch)" "$c" "$run" "$n" os_target_rows -- "$baseline" backfill --config "$work/run.yaml"
      fi
    done
    # Bulk load: refresh off during the copy, restored after it (the time includes that).
    os_fresh $dst
    vismig_config "$work/run.yaml" "$(es_store "$url" $src $dst)" same "$top" "$batch" "  bulkLoad: { deferRefresh: true }
  flip: { dynamicConfigFile: $work/dynamicconfig.yaml }"
    measure os "vismig deferRefresh (batch $batch)" "$top" "$run" "$n" os_target_rows -- "$bin" backfill --config "$work/run.yaml"
  done
  curl -s -X DELETE "$url/$src" >/dev/null
  curl -s -X DELETE "$url/$dst" >/dev/null
}

# --- PostgreSQL -> OpenSearch and OpenSearch -> PostgreSQL ----------------------------
# Across store families, with the seed's search-attribute aliases; no tool but vismig
# does these, so they stand on their own (records/s, peak RSS).
pair_pg2os() {
  local n=$1 src=bench_pgos_src dst=temporal_visibility_v1_bench_pgos run c
  dropped+=("pg:$src" "es:$dst")
  pg_load_source $src "$n"
  for run in $(seq "$runs"); do
    for c in $concurrencies; do
      os_fresh $dst
      vismig_config "$work/run.yaml" "$(pg_store $src)" "$(es_index_store "$VISMIG_TEST_OPENSEARCH_URL" $dst)" "$c" 1000 "$(seed_aliases $src)"
      measure pg2os vismig "$c" "$run" "$n" "os_rows $dst" -- "$bin" backfill --config "$work/run.yaml"
    done
  done
  psql_db postgres -c "DROP DATABASE IF EXISTS $src"
  curl -s -X DELETE "$VISMIG_TEST_OPENSEARCH_URL/$dst" >/dev/null
}
pair_os2pg() {
  local n=$1 src=temporal_visibility_v1_bench_ospg dst=bench_ospg_dst run c aliases
  dropped+=("es:$src" "pg:$dst")
  os_load_source $src "$n"
  # The seed's namespaces, read back from the index.
  aliases=$(curl -fsS "$VISMIG_TEST_OPENSEARCH_URL/$src/_search" -H 'content-type: application/json' \
    -d '{"size":0,"aggs":{"ns":{"terms":{"field":"NamespaceId","size":100}}}}' |
    python3 -c 'import json, sys
print("  searchAttributeAliases:")
for b in json.load(sys.stdin)["aggregations"]["ns"]["buckets"]:
    ns = b["key"]
    print(f"    \"{ns}\": {{ Keyword01: CustomerId, Int01: Amount, Double01: Score, Bool01: Priority, Datetime01: DueTime, Text01: Note, KeywordList01: Tags }}")')
  for run in $(seq "$runs"); do
    for c in $concurrencies; do
      bash tests/services/reset-db.sh postgres $dst advanced >/dev/null
      vismig_config "$work/run.yaml" "$(es_index_store "$VISMIG_TEST_OPENSEARCH_URL" $src)" "$(pg_store $dst)" "$c" 1000 "$aliases"
      measure os2pg vismig "$c" "$run" "$n" "pg_rows $dst" -- "$bin" backfill --config "$work/run.yaml"
    done
  done
  curl -s -X DELETE "$VISMIG_TEST_OPENSEARCH_URL/$src" >/dev/null
  psql_db postgres -c "DROP DATABASE IF EXISTS $dst"
}

# --- MariaDB -> PostgreSQL ---------------------------------------------------------
pair_mariadb() {
  local n=$1 src=bench_my_src dst=bench_mypg_dst run c
  dropped+=("mysql:$src" "pg:$dst")
  bash tests/services/reset-db.sh mariadb $src advanced >/dev/null
  local t0
  t0=$(now)
  seed "$(mysql_store $src)" "$n"
  echo "  seeded $n records into MariaDB in $(calc "$(now) - $t0" 1) s"
  for run in $(seq "$runs"); do
    bash tests/services/reset-db.sh postgres $dst advanced >/dev/null
    measure mariadb "pgloader" - "$run" "$n" "pg_rows $dst" -- bash benches/anchors/pgloader.sh $src $dst
    for c in $concurrencies; do
      bash tests/services/reset-db.sh postgres $dst advanced >/dev/null
      vismig_config "$work/run.yaml" "$(mysql_store $src)" "$(pg_store $dst)" "$c" 1000
      measure mariadb vismig "$c" "$run" "$n" "pg_rows $dst" -- "$bin" backfill --config "$work/run.yaml"
    done
  done
  mysql_db -e "DROP DATABASE IF EXISTS $src"
  psql_db postgres -c "DROP DATABASE IF EXISTS $dst"
}

# --- Cassandra -> PostgreSQL -------------------------------------------------------
pair_cassandra() {
  local n=$1 ks=bench_cass dst=bench_cass_dst run c copyable
  dropped+=("ks:$ks" "pg:$dst")
  # Written as Temporal v1.23 writes them, by the Cassandra tests' own writer.
  VISMIG_BENCH_KEYSPACE=$ks VISMIG_BENCH_RECORDS=$n cargo test --release --quiet --test cassandra_store -- \
    --ignored --exact write_cassandra_benchmark_keyspace --nocapture >"$work/cass.log" 2>&1 || { cat "$work/cass.log"; return 1; }
  grep '^wrote' "$work/cass.log" | sed 's/^/  /'
  # One run has a status Temporal does not know: it goes to the dead letter.
  copyable=$(sed -n 's/^copyable: //p' "$work/cass.log")
  for run in $(seq "$runs"); do
    for c in $concurrencies; do
      bash tests/services/reset-db.sh postgres $dst advanced >/dev/null
      vismig_config "$work/run.yaml" "$(cassandra_store $ks)" "$(pg_store $dst)" "$c" 1000
      measure cassandra vismig "$c" "$run" "$copyable" "pg_rows $dst" -- "$bin" backfill --config "$work/run.yaml"
    done
  done
  "$VISMIG_TEST_CASSANDRA_TOOL" --ep "$VISMIG_TEST_CASSANDRA_HOSTS" -p "$VISMIG_TEST_CASSANDRA_PORT" drop-keyspace -k $ks -f >/dev/null 2>&1
  psql_db postgres -c "DROP DATABASE IF EXISTS $dst"
}

echo "vismig benchmark $stamp: records $sizes, runs $runs, pairs $pairs, concurrency $concurrencies"
echo "machine: $(nproc) cores, $(awk '/MemTotal/ { printf "%.0f GiB", $2 / 1048576 }' /proc/meminfo), $(uname -r); disk free $(df -h --output=avail / | tail -1 | tr -d ' ')"
for n in $sizes; do
  for p in $pairs; do
    echo "$p, $n records:"
    "pair_$p" "$n"
  done
done
python3 benches/summarize.py "$results" | tee "target/bench/results-$stamp.md"
