#!/usr/bin/env bash
# PostgreSQL -> PostgreSQL: vismig beside the raw COPY pipe into the same fully indexed
# Temporal schema (v12), on the same server and data, in one invocation.
#   benches/pg_to_pg.sh [RECORDS] [CONCURRENCY...]     defaults: 200000, "2 4"
# Needs tests/services/up.sh postgres. Prints records/s of each and the ratio to the pipe.
# Disk: Temporal's schema takes about 20 GB of indexes per million records per database.
set -euo pipefail
cd "$(dirname "$0")/.."
records=${1:-200000}
shift || true
concurrencies=("$@")
[ ${#concurrencies[@]} -gt 0 ] || concurrencies=(2 4)

bash tests/services/up.sh postgres >/dev/null
# shellcheck disable=SC1091
source tests/services/env.sh
export PGPASSWORD="$VISMIG_TEST_PG_PASSWORD"
psql_db() { psql -q -h "$VISMIG_TEST_PG_HOST" -p "$VISMIG_TEST_PG_PORT" -U "$VISMIG_TEST_PG_USER" -d "$1" "${@:2}"; }
cargo build --release --quiet
bin=target/release/vismig
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
now() { date +%s.%N; }
calc() { awk "BEGIN { printf \"%.${2:-0}f\", $1 }"; }
cols="namespace_id, run_id, workflow_type_name, workflow_id, start_time, execution_time, status, close_time, history_length, history_size_bytes, execution_duration, state_transition_count, memo, encoding, task_queue, search_attributes, parent_workflow_id, parent_run_id, root_workflow_id, root_run_id, _version"

store() { printf '{ pluginName: postgres12, databaseName: %s, connectAddr: "%s:%s", user: %s, password: "%s", maxConns: 16 }' \
  "$1" "$VISMIG_TEST_PG_HOST" "$VISMIG_TEST_PG_PORT" "$VISMIG_TEST_PG_USER" "$VISMIG_TEST_PG_PASSWORD"; }
config() { # primary-db secondary-db concurrency file [extra migration yaml]
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
  checkpoint: { type: file, path: $work/checkpoint-$2.json }
  deadLetter: { path: $work/dead-letter.jsonl }
  metrics: { listen: "" }
${5:-}
YAML
}

src=bench_pg_src
bash tests/services/reset-db.sh postgres "$src" advanced >/dev/null
config "$src" bench_unused 4 "$work/seed.yaml"
echo "seeding $records records into $src ..."
t0=$(now)
$bin seed --config "$work/seed.yaml" --records "$records" >/dev/null 2>&1
echo "  seeded in $(calc "$(now) - $t0" 1) s"
psql_db "$src" -c "VACUUM ANALYZE executions_visibility"

dst=bench_pg_pipe
bash tests/services/reset-db.sh postgres "$dst" advanced >/dev/null
t0=$(now)
psql_db "$src" -c "\\copy (SELECT $cols FROM executions_visibility) TO STDOUT" | psql_db "$dst" -c "\\copy executions_visibility ($cols) FROM STDIN"
pipe=$(calc "$(now) - $t0" 1)
pipe_rate=$(calc "$records / $pipe")
printf '%-34s %s records in %ss = %s records/s\n' "raw COPY pipe:" "$records" "$pipe" "$pipe_rate"
bash tests/services/reset-db.sh postgres "$dst" advanced >/dev/null  # drop the 20 GB/M of indexes again

run_vismig() { # label concurrency [extra migration yaml]
  local label=$1 c=$2 dst=bench_pg_vismig
  bash tests/services/reset-db.sh postgres "$dst" advanced >/dev/null
  rm -f "$work"/checkpoint-*.json
  config "$src" "$dst" "$c" "$work/run.yaml" "${3:-}"
  t0=$(now)
  /usr/bin/time -f "%M" -o "$work/rss" $bin backfill --config "$work/run.yaml" >/dev/null 2>"$work/log" || { cat "$work/log"; exit 1; }
  secs=$(calc "$(now) - $t0" 1)
  rate=$(calc "$records / $secs")
  printf '%-34s %s records in %ss = %s records/s, %sx the pipe, peak RSS %s MiB\n' \
    "$label:" "$records" "$secs" "$rate" "$(calc "$rate / $pipe_rate" 2)" "$(( $(cat "$work/rss") / 1024 ))"
  bash tests/services/reset-db.sh postgres "$dst" advanced >/dev/null
}

for c in "${concurrencies[@]}"; do
  run_vismig "vismig, concurrency $c" "$c"
done
# Bulk load: indexes dropped before the copy and rebuilt (concurrently) after it;
# the time includes the rebuild.
printf 'system.enableReadFromSecondaryVisibility:\n  - value: false\n' > "$work/dynamicconfig.yaml"
c=${concurrencies[-1]}
run_vismig "vismig, concurrency $c, deferIndexes" "$c" "  bulkLoad: { deferIndexes: true }
  flip: { dynamicConfigFile: $work/dynamicconfig.yaml }"
