#!/usr/bin/env bash
# End-to-end tests: a real Temporal server reads what vismig migrated.
#
#   tests/e2e/run.sh                      the default scenarios (DEFAULT_SCENARIOS), in this order:
#   tests/e2e/run.sh sql                  PostgreSQL -> PostgreSQL on the current Temporal
#   tests/e2e/run.sh cassandra            Cassandra -> PostgreSQL on Temporal v1.23
#   tests/e2e/run.sh opensearch           OpenSearch index -> index on the current Temporal, on
#                                         the secured node (HTTPS, basic auth, verified CA);
#                                         then a wrong CA in the file: server and vismig refuse
#   tests/e2e/run.sh os2pg                OpenSearch -> PostgreSQL on the current Temporal (a
#                                         static-config switch; Double, Datetime, KeywordList)
#   tests/e2e/run.sh oldest               PostgreSQL schema 1.3 -> 1.3 on the oldest Temporal
#                                         with dual visibility (v1.21)
#
# Each scenario does what an operator does: Temporal's schema tools create the stores,
# a Temporal server (built from the Go module proxy, tests/e2e/build.sh) runs a workload
# with the primary visibility store only, then the secondary store is added to its config
# and dual writes are turned on in its dynamic config, the server restarts, a second
# workload runs, `vismig run` (flip auto) copies, verifies and flips reads, and after the
# server's dynamic-config poll the temporal CLI must list and count exactly what the server
# returned before. Every database, keyspace and index is created under a vt_e2e_ /
# temporal_visibility_v1_e2e_ name and dropped at the end (VISMIG_E2E_KEEP=1 keeps them
# and the files under $VISMIG_E2E_DIR/<scenario>).
#
# Needs the services of tests/services (started here with up.sh when they are not up),
# Go, jq and python3. VISMIG_BIN: the vismig binary to test (default: cargo build).
set -euo pipefail
# shellcheck source=tests/e2e/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
# shellcheck source=tests/e2e/common.sh
. "$E2E_HOME/common.sh"

ALL_SCENARIOS="sql cassandra opensearch os2pg oldest"
DEFAULT_SCENARIOS="sql cassandra opensearch os2pg oldest"
scenarios=${*:-$DEFAULT_SCENARIOS}
for s in $scenarios; do
  case " $ALL_SCENARIOS " in *" $s "*) ;; *) echo "usage: tests/e2e/run.sh [sql] [cassandra] [opensearch] [os2pg] [oldest]" >&2; exit 2 ;; esac
done
command -v jq >/dev/null || { mkdir -p "$LOG_DIR"; ensure_debian_packages jq; }
for tool in jq python3 go curl; do
  command -v "$tool" >/dev/null || e2e_fail "$tool is required"
done

T_ALL=$SECONDS
mkdir -p "$VISMIG_E2E_DIR" "$E2E_LOG_DIR"

# --- services ---------------------------------------------------------------------------
needed="postgres"
case " $scenarios " in *" cassandra "*) needed="$needed cassandra" ;; esac
case " $scenarios " in *" opensearch "*) needed="$needed opensearch_secure" ;; esac
case " $scenarios " in *" os2pg "*) needed="$needed opensearch" ;; esac
# shellcheck disable=SC1091
source "$REPO_ROOT/tests/services/env.sh" 2>/dev/null || true
to_start=""
for svc in $needed; do
  case " ${VISMIG_TEST_SERVICES:-} " in *" $svc "*) ;; *) to_start="$to_start $svc" ;; esac
done
if [ -n "$to_start" ]; then
  printf '[e2e] starting services:%s (tests/services/up.sh)\n' "$to_start"
  # shellcheck disable=SC2086
  bash "$REPO_ROOT/tests/services/up.sh" $to_start
  # shellcheck disable=SC1091
  source "$REPO_ROOT/tests/services/env.sh"
fi

# --- binaries ---------------------------------------------------------------------------
t=$SECONDS
if [ -z "${VISMIG_BIN:-}" ]; then
  printf '[e2e] cargo build --bin vismig\n'
  (cd "$REPO_ROOT" && cargo build --quiet --bin vismig) || e2e_fail "cargo build --bin vismig failed"
  VISMIG_BIN="$REPO_ROOT/target/debug/vismig"
fi
[ -x "$VISMIG_BIN" ] || e2e_fail "vismig binary $VISMIG_BIN does not exist"
CLI_BIN=$("$E2E_HOME/build.sh" cli "$E2E_CLI_VERSION") || exit 1
WORKLOAD_BIN=$("$E2E_HOME/build.sh" workload) || exit 1
printf '[e2e] vismig %s, temporal CLI %s, workload %s (%ss)\n' "$VISMIG_BIN" "$E2E_CLI_VERSION" "$WORKLOAD_BIN" "$((SECONDS - t))"

# --- per scenario ---------------------------------------------------------------------------
S_SERVER_PID=""
cleanup_scenario() {
  server_stop
  if [ "${VISMIG_E2E_KEEP:-}" != 1 ] && [ -n "${S_CLEANUP:-}" ]; then
    "$S_CLEANUP" >>"$S_DIR/cleanup.log" 2>&1 || printf 'e2e %s: cleanup failed (see %s)\n' "$S_NAME" "$S_DIR/cleanup.log" >&2
  fi
  S_CLEANUP=""
}
trap cleanup_scenario EXIT

# Starts a scenario: its directory, its server binary and ports.
#   begin_scenario NAME TEMPORAL_VERSION
begin_scenario() {
  S_NAME=$1 S_T0=$SECONDS S_DIR="$VISMIG_E2E_DIR/$1"
  rm -rf "$S_DIR"
  mkdir -p "$S_DIR/config" "$S_DIR/vismig"
  S_SERVER_LOG="$S_DIR/temporal-server.log"
  step "building or reusing Temporal server $2"
  SERVER_BIN=$("$E2E_HOME/build.sh" server "$2") || e2e_fail "no Temporal server $2 (see above)"
  pick_ports
  DYNAMIC_CONFIG="$S_DIR/config/dynamicconfig.yaml"
  cat >"$DYNAMIC_CONFIG" <<'EOF'
# Temporal's dynamic config for the e2e test (run.sh writes it, vismig flips it).
# The test lists and counts a lot in a short time: lift the per-namespace visibility
# API limit (10 requests/s by default). Burst: a ratio from v1.25, a number before.
frontend.namespaceRPS.visibility:
  - value: 1000
frontend.namespaceBurstRatio.visibility:
  - value: 2
frontend.namespaceBurst.visibility:
  - value: 2000
# Persist the shards' queue progress within a second (default: after 5 minutes or 1000
# tasks), so that the restart that turns on dual writes does not replay the first
# workload's visibility tasks into the secondary store: those runs must reach it
# through vismig alone, as in a cluster that ran for longer than that.
history.shardUpdateMinInterval:
  - value: 1s
history.shardFirstUpdateInterval:
  - value: 1s
history.visibilityProcessorUpdateAckInterval:
  - value: 1s
EOF
  # shellcheck disable=SC2034 # used by the config templates (@PG_ADDR@, @TLS_CA_FILE@)
  PG_ADDR="$SERVICES_HOST:$PG_PORT" TLS_CA_FILE="$TLS_DIR/ca.crt"
}

# Turns on dual writes, as the runbook's step 1 says: the secondary store goes into the
# static config, `system.secondaryVisibilityWritingMode: "dual"` into the dynamic config,
# then the server restarts. The read flag goes in too, still false: Temporal v1.23 and
# older look the key up once at startup and, when it is absent then, never read it.
enable_dual() {
  local persistence=$1
  cat >>"$DYNAMIC_CONFIG" <<'EOF'
system.secondaryVisibilityWritingMode:
  - value: "dual"
    constraints: {}
system.enableReadFromSecondaryVisibility:
  - value: false
    constraints: {}
EOF
  render_config "$persistence" dual "$S_DIR/config/e2e.yaml"
  sleep 5 # the visibility queue's progress is persisted (see the dynamic config)
  server_restart
}

# Before vismig runs, the secondary must hold none of the first workload's runs: they
# closed (or last changed) before dual writes began, so only vismig can bring them.
#   secondary_lacks_first_workload COUNT_FUNCTION
secondary_lacks_first_workload() {
  local n
  n=$("$1") || e2e_fail "cannot count the first workload's runs in the secondary store"
  [ "$n" = 0 ] || e2e_fail "the secondary store already holds $n runs of the first workload before vismig ran (Temporal replayed their visibility tasks after the restart)"
  step "the secondary store holds none of the first workload's runs before vismig"
}

# Appends vismig's block to the server's own config file and runs `vismig run`; the flip
# (auto) edits the dynamic-config file named by the server's dynamicConfigClient.filepath.
run_vismig() {
  cat >>"$S_DIR/config/e2e.yaml" <<EOF

# vismig's settings; Temporal ignores this block.
migration:
  batchSize: 25
  concurrency: 2
  rate: { recordsPerSecond: 0 }
  checkpoint: { type: file, path: "$S_DIR/vismig/checkpoint.json" }
  deadLetter: { path: "$S_DIR/vismig/dead-letter.jsonl" }
  metrics: { listen: "127.0.0.1:$VISMIG_METRICS_PORT" }
  verify: { cutoff: 2s, recheckAfter: 2s, deep: ${VERIFY_DEEP:-true} }
  flip: { mode: auto, maxVerifyAge: 1h }
EOF
  sleep 3 # the verify cut-off: every run of the workloads is older than it
  local rc=0
  "$VISMIG_BIN" run --config "$S_DIR/config/e2e.yaml" --log-format json \
    >"$S_DIR/vismig/run.out" 2>"$S_DIR/vismig/run.log" || rc=$?
  [ "$rc" = 0 ] || e2e_fail "vismig run exited $rc: $(tail -n 5 "$S_DIR/vismig/run.log"; tail -n 20 "$S_DIR/vismig/run.out")"
  grep -q 'backfill complete' "$S_DIR/vismig/run.out" || e2e_fail "vismig run: no completed backfill in $S_DIR/vismig/run.out"
  if [ -s "$S_DIR/vismig/dead-letter.jsonl" ]; then
    e2e_fail "vismig dead-lettered records: $(head -c 600 "$S_DIR/vismig/dead-letter.jsonl")"
  fi
  grep -A1 'system.enableReadFromSecondaryVisibility:' "$DYNAMIC_CONFIG" | grep -q 'value: true' ||
    e2e_fail "vismig run did not flip reads in $DYNAMIC_CONFIG"
  step "vismig: $(grep -m1 'backfill complete' "$S_DIR/vismig/run.out" | cut -c1-160)"
  # Temporal sees a changed file at its next poll (pollInterval 5s).
  sleep 12
}

# The assertions after the flip. `before` = reads from the primary after the first
# workload, `dual` = reads from the primary after the second one (just before vismig),
# `after` = reads from the secondary. PRECISION: fraction digits of times compared for
# runs of the second workload (Cassandra keeps milliseconds, SQL microseconds);
# BEFORE_PRECISION: for the runs of the first one, which only vismig copied (9 = as
# returned; 6 when the secondary keeps microseconds and the primary nanoseconds).
check_after_flip() {
  local precision=${1:-9} counted_before=${2:-count} before_precision=${3:-9} ns s
  snapshot after
  local b="$S_DIR/snapshots/before" d="$S_DIR/snapshots/dual" a="$S_DIR/snapshots/after" k="$S_DIR/snapshots/keys"
  mkdir -p "$k"
  for ns in $NAMESPACES; do
    # Every run listed before the migration is listed after it, exactly (times as returned).
    keys "$b/$ns.list" "$before_precision" >"$k/$ns.before"
    keys "$a/$ns.list" "$before_precision" | grep -F -x -f "$k/$ns.before" >"$k/$ns.after-of-before" || true
    same_keys "$ns: runs listed before the migration (from the primary) vs. after the flip (from the secondary)" \
      "$k/$ns.before" "$k/$ns.after-of-before"
    # Everything listed just before vismig ran (both workloads) is what is listed after.
    keys "$d/$ns.list" "$precision" >"$k/$ns.dual"
    keys "$a/$ns.list" "$precision" >"$k/$ns.after"
    same_keys "$ns: runs listed before vismig ran vs. after the flip" "$k/$ns.dual" "$k/$ns.after"
    for s in $STATUSES; do
      keys "$d/$ns.list.$s" "$precision" >"$k/$ns.dual.$s"
      keys "$a/$ns.list.$s" "$precision" >"$k/$ns.after.$s"
      same_keys "$ns: list -q ExecutionStatus=\"$s\"" "$k/$ns.dual.$s" "$k/$ns.after.$s"
      # The count agrees with the listing and, where the primary could count, with it.
      [ "$(cat "$a/$ns.count.$s")" = "$(wc -l <"$a/$ns.list.$s")" ] ||
        e2e_fail "$ns: count -q ExecutionStatus=\"$s\" after the flip is $(cat "$a/$ns.count.$s"), the listing has $(wc -l <"$a/$ns.list.$s")"
      if [ "$counted_before" = count ]; then
        [ "$(cat "$a/$ns.count.$s")" = "$(cat "$d/$ns.count.$s")" ] ||
          e2e_fail "$ns: count -q ExecutionStatus=\"$s\": $(cat "$d/$ns.count.$s") before vismig, $(cat "$a/$ns.count.$s") after the flip"
      fi
    done
    [ "$(cat "$a/$ns.count")" = "$(wc -l <"$a/$ns.list")" ] ||
      e2e_fail "$ns: count after the flip is $(cat "$a/$ns.count"), the listing has $(wc -l <"$a/$ns.list")"
    if [ "$counted_before" = count ]; then
      [ "$(cat "$a/$ns.count")" = "$(cat "$d/$ns.count")" ] ||
        e2e_fail "$ns: count: $(cat "$d/$ns.count") before vismig, $(cat "$a/$ns.count") after the flip"
    fi
    step "$ns: after the flip the server lists and counts the same $(wc -l <"$a/$ns.list") runs ($(list_status_counts "$a/$ns.list")); $(wc -l <"$b/$ns.list") of them were closed or running before dual writes"
  done
}

# Proves that the server really reads the secondary now: a run deleted from the
# secondary store alone disappears from the server's listing.
#   prove_reads_from_secondary DELETE_FUNCTION
prove_reads_from_secondary() {
  local delete=$1 ns=${NAMESPACES%% *} victim wid rid deadline
  victim=$(grep -m1 '"status":"COMPLETED"' "$S_DIR/snapshots/after/$ns.list")
  wid=$(jq -r .workflowId <<<"$victim") rid=$(jq -r .runId <<<"$victim")
  "$delete" "$wid" "$rid" || e2e_fail "deleting $wid/$rid from the secondary store failed"
  deadline=$((SECONDS + 30))
  while list_runs "$ns" | grep -q "\"runId\":\"$rid\""; do
    ((SECONDS < deadline)) || e2e_fail "$ns: run $wid/$rid, deleted from the secondary store only, is still listed: the server does not read the secondary"
    sleep 1
  done
  step "$ns: a run deleted from the secondary store only is gone from the server's listing: reads come from the secondary"
}

# --- scenario 3: SQL -> SQL on the current Temporal -------------------------------------------

sql_cleanup() {
  local db
  for db in "${DB}_default" "${DB}_visibility" "${DB}_secondary"; do
    PGPASSWORD="$DB_PASSWORD" "$PG_BIN/psql" -X -q -h "$SERVICES_HOST" -p "$PG_PORT" -U "$DB_USER" -d postgres \
      -c "DROP DATABASE IF EXISTS $db WITH (FORCE)"
  done
}

pg_exec() {
  PGPASSWORD="$DB_PASSWORD" "$PG_BIN/psql" -X -q -v ON_ERROR_STOP=1 -h "$SERVICES_HOST" -p "$PG_PORT" -U "$DB_USER" "$@"
}

# Creates one PostgreSQL database with temporal-sql-tool, as an operator does.
#   pg_create TOOL MODULE_DIR DB SCHEMA(temporal|visibility)
pg_create() {
  local tool=$1 module=$2 db=$3 schema=$4 log="$S_DIR/schema.log"
  pg_exec -d postgres -c "DROP DATABASE IF EXISTS $db WITH (FORCE)" >>"$log" 2>&1
  {
    "$tool" --ep "$SERVICES_HOST" -p "$PG_PORT" -u "$DB_USER" --pw "$DB_PASSWORD" --pl postgres12 --db "$db" create-database &&
      "$tool" --ep "$SERVICES_HOST" -p "$PG_PORT" -u "$DB_USER" --pw "$DB_PASSWORD" --pl postgres12 --db "$db" setup-schema -v 0.0 &&
      "$tool" --ep "$SERVICES_HOST" -p "$PG_PORT" -u "$DB_USER" --pw "$DB_PASSWORD" --pl postgres12 --db "$db" \
        update-schema -d "$module/schema/postgresql/v12/$schema/versioned"
  } >>"$log" 2>&1 || e2e_fail "temporal-sql-tool could not create $db ($schema schema; log $log)"
}

count_w1_in_pg_secondary() {
  pg_exec -At -d "${DB}_secondary" -c "SELECT count(*) FROM executions_visibility WHERE workflow_id LIKE 'w1-%'"
}

delete_from_pg_secondary() {
  pg_exec -d "${DB}_secondary" -c "DELETE FROM executions_visibility WHERE workflow_id = '$1' AND run_id = '$2'"
}

register_search_attributes() {
  local ns
  for ns in $NAMESPACES; do
    temporal operator search-attribute create -n "$ns" --name E2eKeyword --type Keyword >/dev/null ||
      e2e_fail "temporal operator search-attribute create E2eKeyword in $ns failed"
    temporal operator search-attribute create -n "$ns" --name E2eInt --type Int >/dev/null ||
      e2e_fail "temporal operator search-attribute create E2eInt in $ns failed"
  done
}

# The list queries by custom search attributes that must return the same runs before and
# after the flip (a scenario may add to them), and the fraction digits of close times
# compared in their answers.
SA_QUERIES=('E2eKeyword="w1-completed"' 'E2eKeyword="w2-failed"' 'E2eInt >= 1 AND E2eKeyword = "w1-continued"')
SA_PRECISION=9

# Lists by a custom search attribute before and after the flip must return the same runs.
check_search_attribute_queries() {
  local ns q i=0 deadline=$((SECONDS + 90)) out
  # Temporal caches the search attributes of each index for 60s (searchattribute
  # manager): the ones registered for the secondary index may not be known yet.
  until out=$(temporal workflow list -n "${NAMESPACES%% *}" -q 'E2eKeyword="w1-completed"' --limit 1 2>&1); do
    case $out in *"invalid search attribute"*) ;; *) e2e_fail "list -q 'E2eKeyword=\"w1-completed\"': $out" ;; esac
    ((SECONDS < deadline)) || e2e_fail "the server does not know E2eKeyword for the secondary store after 90s: $out"
    sleep 2
  done
  for ns in $NAMESPACES; do
    for q in "${SA_QUERIES[@]}"; do
      i=$((i + 1))
      keys <(list_runs "$ns" "$q") "$SA_PRECISION" >"$S_DIR/snapshots/keys/sa-after-$i"
      [ -s "$S_DIR/snapshots/keys/sa-after-$i" ] || e2e_fail "$ns: list -q '$q' returns nothing after the flip"
      same_keys "$ns: list -q '$q'" "$S_DIR/snapshots/keys/sa-dual-$i" "$S_DIR/snapshots/keys/sa-after-$i"
    done
  done
  step "list queries by custom search attributes ($i) return the same runs after the flip"
}

snapshot_search_attribute_queries() {
  local ns q i=0
  mkdir -p "$S_DIR/snapshots/keys"
  for ns in $NAMESPACES; do
    for q in "${SA_QUERIES[@]}"; do
      i=$((i + 1))
      keys <(list_runs "$ns" "$q") "$SA_PRECISION" >"$S_DIR/snapshots/keys/sa-dual-$i"
    done
  done
}

# Runs a workload in every namespace and waits until the server lists all of it.
#   run_workload PREFIX COUNT [workload flags]
run_workload() {
  local prefix=$1 count=$2 ns expected
  shift 2
  for ns in $NAMESPACES; do
    expected=$(workload "$ns" "$prefix" "$count" "$@")
    EXPECTED[$ns]=$(add_counts "${EXPECTED[$ns]:-{\}}" "$expected")
    wait_listed "$ns" "${EXPECTED[$ns]}"
  done
  step "workload $prefix done: $(for ns in $NAMESPACES; do printf '%s %s ' "$ns" "${EXPECTED[$ns]}"; done)"
}

# The visibility schema version temporal-sql-tool recorded in a PostgreSQL database.
pg_schema_version() {
  pg_exec -At -d "$1" -c "SELECT curr_version FROM schema_version WHERE version_partition = 0"
}

scenario_sql() {
  sql_to_sql sql "$E2E_TEMPORAL_CURRENT" vt_e2e_sql
}

# --- scenario 5: PostgreSQL schema 1.3 -> 1.3 on the oldest Temporal with dual visibility -----

# Temporal v1.21 was the first release with dual visibility; its PostgreSQL visibility
# schema is 1.3 (no execution_duration, state_transition_count, parent or root columns,
# no _version). Same steps as the sql scenario, with that release's server, schema tool
# and schema files.
scenario_oldest() {
  sql_to_sql oldest "$E2E_TEMPORAL_OLDEST" vt_e2e_old
}

# PostgreSQL -> PostgreSQL with dual visibility on one Temporal release, its own
# temporal-sql-tool and schema files.
#   sql_to_sql SCENARIO TEMPORAL_VERSION DB_PREFIX
sql_to_sql() {
  local version=$2 module tool schema
  begin_scenario "$1" "$version"
  DB=$3 S_CLEANUP=sql_cleanup
  declare -gA EXPECTED=()
  module=$(temporal_module_dir "$version")
  tool="$("$REPO_ROOT/tests/services/build-tools.sh" "$version")/temporal-sql-tool" ||
    e2e_fail "no temporal-sql-tool $version (see above)"
  step "creating ${DB}_default (temporal), ${DB}_visibility and ${DB}_secondary (visibility) with temporal-sql-tool $version"
  pg_create "$tool" "$module" "${DB}_default" temporal
  pg_create "$tool" "$module" "${DB}_visibility" visibility
  pg_create "$tool" "$module" "${DB}_secondary" visibility
  schema=$(pg_schema_version "${DB}_secondary") || e2e_fail "cannot read the schema version of ${DB}_secondary"
  step "visibility schema version $schema (primary and secondary)"

  render_config "$E2E_HOME/config/persistence-sql.yaml" single "$S_DIR/config/e2e.yaml"
  step "starting Temporal $version (visibility: ${DB}_visibility only) on $ADDRESS"
  server_start
  for ns in $NAMESPACES; do create_namespace "$ns"; done
  register_search_attributes
  run_workload w1 4 --search-attributes
  snapshot before

  step "adding ${DB}_secondary as secondaryVisibilityStore, dual writes on, restarting"
  enable_dual "$E2E_HOME/config/persistence-sql.yaml"
  run_workload w2 2 --search-attributes
  snapshot dual
  snapshot_search_attribute_queries

  secondary_lacks_first_workload count_w1_in_pg_secondary
  step "vismig run (flip auto)"
  run_vismig
  check_after_flip 9 count
  check_search_attribute_queries
  prove_reads_from_secondary delete_from_pg_secondary
  cleanup_scenario
  step "PASSED in $((SECONDS - S_T0))s"
  RESULTS+=("$S_NAME (Temporal $version, schema $schema): passed in $((SECONDS - S_T0))s")
}

# --- scenario 1: Cassandra -> PostgreSQL on Temporal v1.23 ------------------------------------

cassandra_cleanup() {
  sql_cleanup
  "$CASSANDRA_TOOL" --ep "$SERVICES_HOST" -p "$CASSANDRA_PORT" drop-keyspace -k "$KEYSPACE" -f
}

scenario_cassandra() {
  begin_scenario cassandra "$E2E_TEMPORAL_LEGACY"
  DB=vt_e2e_cass KEYSPACE=vt_e2e_cass_visibility S_CLEANUP=cassandra_cleanup
  declare -gA EXPECTED=()
  local module log="$S_DIR/schema.log"
  module=$(temporal_module_dir "$E2E_TEMPORAL_LEGACY")
  wait_tools "$E2E_TEMPORAL_LEGACY"
  step "creating ${DB}_default (temporal schema) with temporal-sql-tool and keyspace $KEYSPACE (visibility) with temporal-cassandra-tool $E2E_TEMPORAL_LEGACY"
  pg_create "$SQL_TOOL_STANDARD" "$module" "${DB}_default" temporal
  {
    "$CASSANDRA_TOOL" --ep "$SERVICES_HOST" -p "$CASSANDRA_PORT" drop-keyspace -k "$KEYSPACE" -f &&
      "$CASSANDRA_TOOL" --ep "$SERVICES_HOST" -p "$CASSANDRA_PORT" create-keyspace -k "$KEYSPACE" --rf 1 &&
      "$CASSANDRA_TOOL" --ep "$SERVICES_HOST" -p "$CASSANDRA_PORT" -k "$KEYSPACE" setup-schema -v 0.0 &&
      "$CASSANDRA_TOOL" --ep "$SERVICES_HOST" -p "$CASSANDRA_PORT" -k "$KEYSPACE" update-schema \
        -d "$module/schema/cassandra/visibility/versioned"
  } >>"$log" 2>&1 || e2e_fail "temporal-cassandra-tool could not create keyspace $KEYSPACE (log $log)"

  render_config "$E2E_HOME/config/persistence-cassandra.yaml" single "$S_DIR/config/e2e.yaml"
  step "starting Temporal $E2E_TEMPORAL_LEGACY (visibility: Cassandra keyspace $KEYSPACE only) on $ADDRESS"
  server_start
  for ns in $NAMESPACES; do create_namespace "$ns"; done
  # Standard visibility has no search attributes: the workload sets none.
  run_workload w1 4
  # Cassandra visibility cannot count (CountWorkflowExecutions): only listings here.
  snapshot before nocount

  step "creating ${DB}_secondary (advanced visibility, schema of $E2E_TEMPORAL_LEGACY) with temporal-sql-tool, adding it as secondaryVisibilityStore, dual writes on, restarting"
  pg_create "$SQL_TOOL_STANDARD" "$module" "${DB}_secondary" visibility
  enable_dual "$E2E_HOME/config/persistence-cassandra.yaml"
  run_workload w2 2
  snapshot dual nocount

  secondary_lacks_first_workload count_w1_in_pg_secondary
  step "vismig run (flip auto)"
  VERIFY_DEEP=false run_vismig # Cassandra cannot look a run up by id: verify counts
  # Runs of the second workload were written by Temporal to both stores: Cassandra keeps
  # milliseconds, PostgreSQL microseconds, so those times are compared to the millisecond.
  check_after_flip 3 nocount
  prove_reads_from_secondary delete_from_pg_secondary
  cleanup_scenario
  step "PASSED in $((SECONDS - S_T0))s"
  RESULTS+=("cassandra: passed in $((SECONDS - S_T0))s")
}

# --- scenario 2: OpenSearch index -> index on the current Temporal -----------------------------

# temporal-elasticsearch-tool against the plain OpenSearch node, or with OS_SECURE=1
# against the secured one as its admin (HTTPS with the test CA); os_curl likewise.
es_tool() {
  if [ "${OS_SECURE:-}" = 1 ]; then
    "$ES_TOOL" --ep "https://$SERVICES_HOST:$OPENSEARCH_SECURE_PORT" -u "$OPENSEARCH_SECURE_ADMIN" \
      --pw "$OPENSEARCH_SECURE_ADMIN_PASSWORD" --tls --tls-ca-file "$TLS_DIR/ca.crt" "$@"
  else
    "$ES_TOOL" --ep "http://$SERVICES_HOST:$OPENSEARCH_PORT" "$@"
  fi
}

os_curl() {
  local path=$1
  shift
  if [ "${OS_SECURE:-}" = 1 ]; then
    curl -fsS --cacert "$TLS_DIR/ca.crt" -u "$OPENSEARCH_SECURE_ADMIN:$OPENSEARCH_SECURE_ADMIN_PASSWORD" \
      "$@" "https://$SERVICES_HOST:$OPENSEARCH_SECURE_PORT$path"
  else
    curl -fsS "$@" "http://$SERVICES_HOST:$OPENSEARCH_PORT$path"
  fi
}

opensearch_cleanup() {
  sql_cleanup
  es_tool drop-index --index "$INDEX" || true
  es_tool drop-index --index "${INDEX}_secondary" || true
}

count_w1_in_os_secondary() {
  os_curl "/${INDEX}_secondary/_count?q=WorkflowId:w1-*" | jq -e .count
}

delete_from_os_secondary() {
  os_curl "/${INDEX}_secondary/_doc/$1~$2?refresh=true" -X DELETE >/dev/null
}

scenario_opensearch() {
  begin_scenario opensearch "$E2E_TEMPORAL_CURRENT"
  DB=vt_e2e_os INDEX=temporal_visibility_v1_e2e_os S_CLEANUP=opensearch_cleanup OS_SECURE=1
  declare -gA EXPECTED=()
  local module log="$S_DIR/schema.log"
  module=$(temporal_module_dir "$E2E_TEMPORAL_CURRENT")
  wait_tools "$E2E_TEMPORAL_CURRENT"
  ES_TOOL=$("$E2E_HOME/build.sh" es-tool "$E2E_TEMPORAL_CURRENT") || e2e_fail "no temporal-elasticsearch-tool (see above)"
  step "creating ${DB}_default (temporal schema) with temporal-sql-tool, index $INDEX with temporal-elasticsearch-tool $E2E_TEMPORAL_CURRENT"
  pg_create "$SQL_TOOL" "$module" "${DB}_default" temporal
  {
    es_tool drop-index --index "$INDEX" --fail &&
      es_tool drop-index --index "${INDEX}_secondary" --fail &&
      es_tool setup-schema &&
      es_tool create-index --index "$INDEX"
  } >>"$log" 2>&1 || e2e_fail "temporal-elasticsearch-tool could not create index $INDEX (log $log)"

  render_config "$E2E_HOME/config/persistence-opensearch.yaml" single "$S_DIR/config/e2e.yaml"
  step "starting Temporal $E2E_TEMPORAL_CURRENT (visibility: index $INDEX only, secured OpenSearch $SERVICES_HOST:$OPENSEARCH_SECURE_PORT as $OPENSEARCH_SECURE_TEMPORAL_USER over verified TLS) on $ADDRESS"
  server_start
  for ns in $NAMESPACES; do create_namespace "$ns"; done
  register_search_attributes
  run_workload w1 4 --search-attributes
  snapshot before

  step "creating index ${INDEX}_secondary, adding it as indices.secondary_visibility, dual writes on, restarting"
  es_tool create-index --index "${INDEX}_secondary" >>"$log" 2>&1 ||
    e2e_fail "temporal-elasticsearch-tool could not create index ${INDEX}_secondary (log $log)"
  enable_dual "$E2E_HOME/config/persistence-opensearch.yaml"
  # The custom attributes must exist for the secondary index too (its mapping and the
  # cluster's metadata for it): the same command again adds what that index lacks.
  register_search_attributes
  run_workload w2 2 --search-attributes
  snapshot dual
  snapshot_search_attribute_queries

  os_curl "/${INDEX}_secondary/_refresh" -X POST >/dev/null
  secondary_lacks_first_workload count_w1_in_os_secondary
  step "vismig run (flip auto)"
  run_vismig
  check_after_flip 9 count
  check_search_attribute_queries
  prove_reads_from_secondary delete_from_os_secondary
  refuse_wrong_ca
  cleanup_scenario
  step "PASSED in $((SECONDS - S_T0))s"
  RESULTS+=("opensearch: passed in $((SECONDS - S_T0))s")
}

# The scenario's one config file with another CA as the secured OpenSearch's caFile:
# vismig must exit 1 with a line naming the store and the fix, and the restarted server
# must fail to read visibility (a certificate error) instead of answering.
refuse_wrong_ca() {
  local cfg="$S_DIR/config/e2e.yaml" wrong="$TLS_DIR/other-ca.crt" ns=${NAMESPACES%% *} rc=0 out deadline
  server_stop
  cp "$cfg" "$S_DIR/config/e2e.yaml.right-ca"
  sed -i "s#caFile: \"$TLS_CA_FILE\"#caFile: \"$wrong\"#" "$cfg"
  grep -q "caFile: \"$wrong\"" "$cfg" || e2e_fail "could not put the wrong CA into $cfg"
  step "the same file with caFile: $wrong (a CA that did not sign the node's certificate)"

  "$VISMIG_BIN" run --config "$cfg" >"$S_DIR/vismig/wrong-ca.out" 2>&1 || rc=$?
  [ "$rc" = 1 ] || e2e_fail "vismig run with a wrong CA exited $rc, not 1: $(tail -n 5 "$S_DIR/vismig/wrong-ca.out")"
  out=$(grep -m1 -E '^(primary|secondary): .*\(store es-visibility\).*set elasticsearch\.tls\.caFile' "$S_DIR/vismig/wrong-ca.out") ||
    e2e_fail "vismig run with a wrong CA: no line naming store es-visibility and the caFile fix: $(tail -n 5 "$S_DIR/vismig/wrong-ca.out")"
  ! grep -q -F "$OPENSEARCH_SECURE_TEMPORAL_PASSWORD" "$S_DIR/vismig/wrong-ca.out" || e2e_fail "vismig's output holds the OpenSearch password"
  step "vismig refuses (exit 1): ${out:0:400}"

  printf '\n===== %s: starting %s with a wrong CA\n' "$(date -u +%FT%TZ)" "$SERVER_BIN" >>"$S_SERVER_LOG"
  local mark
  mark=$(wc -l <"$S_SERVER_LOG")
  "$SERVER_BIN" --root "$S_DIR" --config config --env e2e --allow-no-auth start >>"$S_SERVER_LOG" 2>&1 &
  S_SERVER_PID=$!
  # The CLI retries an unavailable visibility until its timeout: a short one, then the
  # server's log says why (grep without -q: under pipefail an early exit fails the pipe).
  deadline=$((SECONDS + 120))
  while :; do
    if [ ! -d "/proc/$S_SERVER_PID" ]; then
      wait "$S_SERVER_PID" 2>/dev/null || true
      S_SERVER_PID=""
      out=$(tail -n +"$mark" "$S_SERVER_LOG" | grep -m1 -o -E '"error":"[^,]*(x509|certificate)[a-z ]*' || true)
      [ -n "$out" ] || e2e_fail "the Temporal server with a wrong CA exited without a certificate error"
      step "the Temporal server refuses: it exits at startup (${out:0:300})"
      break
    fi
    if temporal operator cluster health >/dev/null 2>&1; then
      if out=$("$CLI_BIN" --address "$ADDRESS" --disable-config-file --disable-config-env --command-timeout 10s \
        workflow list -n "$ns" --limit 1 2>&1); then
        e2e_fail "the Temporal server with a wrong CA for OpenSearch listed runs of $ns: $out"
      fi
      local why
      why=$(tail -n +"$mark" "$S_SERVER_LOG" | grep -o -E 'ListWorkflowExecutions failed: [^,]*x509: [a-z ]+' | head -n1 || true)
      if [ -n "$why" ]; then
        step "the Temporal server refuses: temporal workflow list -n $ns fails ($(tr '\n' ' ' <<<"$out" | cut -c1-120)); the server's log: ${why:0:300}"
        break
      fi
    fi
    ((SECONDS < deadline)) || e2e_fail "the Temporal server with a wrong CA gave no certificate error within 120s (last: ${out:-none})"
    sleep 2
  done
}

# --- scenario 4: OpenSearch -> PostgreSQL on the current Temporal (a static-config switch) ------

# The typed custom search attributes of the workload's --typed-attributes (NAME:TYPE).
TYPED_ATTRIBUTES="E2eDouble:Double E2eDatetime:Datetime E2eKeywordList:KeywordList"

register_typed_search_attributes() {
  local ns a
  for ns in $NAMESPACES; do
    for a in $TYPED_ATTRIBUTES; do
      temporal operator search-attribute create -n "$ns" --name "${a%%:*}" --type "${a#*:}" >/dev/null ||
        e2e_fail "temporal operator search-attribute create ${a%%:*} in $ns failed"
    done
  done
}

# Everything the server returns for each run of a namespace, as compared across a switch
# between store families: ids, status, type, the start, execution and close times cut to
# microseconds (the coarser store), the memo and the search attributes as raw payloads
# (metadata and the exact JSON text of each value, decoded from base64), one JSON object
# per line, sorted. Temporal's own system attributes that only one family keeps are left
# out (SYSTEM_ONLY_IN_ONE_FAMILY).
SYSTEM_ONLY_IN_ONE_FAMILY='["BuildIds", "TemporalNamespaceDivision"]'
snapshot_details() {
  local dir="$S_DIR/snapshots/$1" ns out
  mkdir -p "$dir"
  for ns in $NAMESPACES; do
    out=$(temporal workflow list -n "$ns" -o json --no-json-shorthand-payloads 2>&1) ||
      e2e_fail "temporal workflow list -n $ns --no-json-shorthand-payloads: $out"
    jq -c --argjson skip "$SYSTEM_ONLY_IN_ONE_FAMILY" '
      def micros: if . == null then null else sub("(?<s>\\.[0-9]+)?Z$"; "") as $base
        | ((capture("\\.(?<f>[0-9]+)Z$").f // "") + "000000")[0:6] as $f | $base + "." + $f + "Z" end;
      def payloads: with_entries(.value |= {metadata: ((.metadata // {}) | map_values(@base64d)), data: ((.data // "") | @base64d)});
      .[] | {workflowId: .execution.workflowId, runId: .execution.runId, type: .type.name,
             status, startTime: (.startTime | micros), executionTime: (.executionTime | micros),
             closeTime: (.closeTime | micros),
             memo: ((.memo.fields // {}) | payloads),
             searchAttributes: ((.searchAttributes.indexedFields // {})
               | with_entries(select(.key as $k | $skip | index($k) | not)) | payloads)}' \
      <<<"$out" | sort >"$dir/$ns.details" || e2e_fail "cannot parse the output of temporal workflow list -n $ns: $(head -c 300 <<<"$out")"
  done
}

# The namespace's alias map (field name -> alias) as Temporal keeps it.
namespace_aliases() {
  local out
  out=$(temporal operator namespace describe -n "$1" -o json 2>&1) || e2e_fail "temporal operator namespace describe -n $1: $out"
  jq -r '.config.customSearchAttributeAliases // {} | to_entries | map("\(.key): \(.value)") | "{ " + join(", ") + " }"' <<<"$out"
}

os2pg_cleanup() {
  sql_cleanup
  es_tool drop-index --index "$INDEX" || true
}

count_all_in_pg_secondary() {
  pg_exec -At -d "${DB}_secondary" -c "SELECT count(*) FROM executions_visibility"
}

scenario_os2pg() {
  begin_scenario os2pg "$E2E_TEMPORAL_CURRENT"
  DB=vt_e2e_os2pg INDEX=temporal_visibility_v1_e2e_os2pg S_CLEANUP=os2pg_cleanup OS_SECURE=0
  declare -gA EXPECTED=()
  # Queries on every typed attribute, answered by OpenSearch before and PostgreSQL after.
  local SA_QUERIES=('E2eKeyword="w1-completed"' 'E2eKeywordList="upserted"' 'E2eKeywordList="w1-timedout"'
    'E2eDouble > 1000' 'E2eDouble < 0' 'E2eDatetime >= "2024-05-01T10:00:02Z"' 'E2eInt >= 1 AND E2eKeyword = "w1-continued"')
  local SA_PRECISION=6
  local module log="$S_DIR/schema.log" ns rc=0
  module=$(temporal_module_dir "$E2E_TEMPORAL_CURRENT")
  wait_tools "$E2E_TEMPORAL_CURRENT"
  ES_TOOL=$("$E2E_HOME/build.sh" es-tool "$E2E_TEMPORAL_CURRENT") || e2e_fail "no temporal-elasticsearch-tool (see above)"
  step "creating ${DB}_default (temporal) and ${DB}_secondary (visibility) with temporal-sql-tool, index $INDEX with temporal-elasticsearch-tool $E2E_TEMPORAL_CURRENT"
  pg_create "$SQL_TOOL" "$module" "${DB}_default" temporal
  pg_create "$SQL_TOOL" "$module" "${DB}_secondary" visibility
  {
    es_tool drop-index --index "$INDEX" --fail &&
      es_tool setup-schema &&
      es_tool create-index --index "$INDEX"
  } >>"$log" 2>&1 || e2e_fail "temporal-elasticsearch-tool could not create index $INDEX (log $log)"

  VISIBILITY_STORE=es-visibility
  render_config "$E2E_HOME/config/persistence-os2pg.yaml" single "$S_DIR/config/e2e.yaml"
  step "starting Temporal $E2E_TEMPORAL_CURRENT (visibility: OpenSearch index $INDEX) on $ADDRESS"
  server_start
  for ns in $NAMESPACES; do create_namespace "$ns"; done
  register_search_attributes
  register_typed_search_attributes
  run_workload w1 4 --search-attributes --typed-attributes
  snapshot before
  snapshot_details before
  snapshot_search_attribute_queries
  # No dual writes between store families: what was listed before is what must be listed
  # after (check_after_flip compares "dual" with "after").
  cp -r "$S_DIR/snapshots/before" "$S_DIR/snapshots/dual"

  # The cut-over, as an operator does it for a pair Temporal's dual visibility refuses:
  # the server's static config switches its visibility store, and it restarts on it.
  step "switching the server's static config to visibilityStore: pg-secondary (${DB}_secondary), restarting"
  VISIBILITY_STORE=pg-secondary
  render_config "$E2E_HOME/config/persistence-os2pg.yaml" single "$S_DIR/config/e2e.yaml"
  server_restart
  [ "$(count_all_in_pg_secondary)" = 0 ] || e2e_fail "${DB}_secondary holds runs before vismig ran"
  # SQL keys custom attributes by pre-allocated fields (Double01, ...) and each namespace's
  # alias map; registering the names again gives them fields in the new store.
  register_search_attributes
  register_typed_search_attributes

  for ns in $NAMESPACES; do
    step "$ns: alias map as the server keeps it now: $(namespace_aliases "$ns")"
  done

  # vismig's config: the same persistence block with OpenSearch as the primary and the
  # PostgreSQL database as the secondary. No migration.searchAttributeAliases: vismig
  # reads each namespace's alias map from its record in the default store.
  VISIBILITY_STORE=es-visibility
  render_config "$E2E_HOME/config/persistence-os2pg.yaml" dual "$S_DIR/config/vismig.yaml"
  {
    printf '\nmigration:\n'
    cat <<EOF
  batchSize: 25
  concurrency: 2
  rate: { recordsPerSecond: 0 }
  checkpoint: { type: file, path: "$S_DIR/vismig/checkpoint.json" }
  deadLetter: { path: "$S_DIR/vismig/dead-letter.jsonl" }
  metrics: { listen: "127.0.0.1:$VISMIG_METRICS_PORT" }
  verify: { cutoff: 2s, recheckAfter: 2s }
  flip: { mode: never }
EOF
  } >>"$S_DIR/config/vismig.yaml"

  step "vismig backfill, then verify --deep"
  "$VISMIG_BIN" backfill --config "$S_DIR/config/vismig.yaml" --log-format json \
    >"$S_DIR/vismig/backfill.out" 2>"$S_DIR/vismig/backfill.log" || rc=$?
  [ "$rc" = 0 ] || e2e_fail "vismig backfill exited $rc: $(tail -n 5 "$S_DIR/vismig/backfill.log"; tail -n 20 "$S_DIR/vismig/backfill.out")"
  if [ -s "$S_DIR/vismig/dead-letter.jsonl" ]; then
    e2e_fail "vismig dead-lettered records: $(head -c 600 "$S_DIR/vismig/dead-letter.jsonl")"
  fi
  step "vismig: $(grep -m1 'backfill complete' "$S_DIR/vismig/backfill.out" | cut -c1-160)"
  sleep 3 # the verify cut-off: every run is older than it
  "$VISMIG_BIN" verify --config "$S_DIR/config/vismig.yaml" --deep --output json \
    >"$S_DIR/vismig/verify.json" 2>"$S_DIR/vismig/verify.log" || rc=$?
  [ "$rc" = 0 ] || e2e_fail "vismig verify --deep exited $rc: $(jq -c '[.namespaces[] | {namespace, differences: (.differences[:3])}]' "$S_DIR/vismig/verify.json" 2>/dev/null | head -c 1500; tail -n 3 "$S_DIR/vismig/verify.log")"
  step "vismig verify --deep: $(jq -r .result "$S_DIR/vismig/verify.json")"

  # The server reads the PostgreSQL store now: it lists and counts exactly what it
  # listed from OpenSearch, with the same memos and search attribute values.
  sleep 12 # the namespace cache picks up the new aliases
  check_after_flip 6 count 6
  snapshot_details after
  for ns in $NAMESPACES; do
    same_keys "$ns: runs with their times, memos and search attributes, from OpenSearch before vs. from PostgreSQL after" \
      "$S_DIR/snapshots/before/$ns.details" "$S_DIR/snapshots/after/$ns.details"
  done
  step "every run has the same times (to the microsecond), memo and search attribute values after the switch"
  check_search_attribute_queries
  prove_reads_from_secondary delete_from_pg_secondary
  cleanup_scenario
  step "PASSED in $((SECONDS - S_T0))s"
  RESULTS+=("os2pg: passed in $((SECONDS - S_T0))s")
}

# --- main --------------------------------------------------------------------------------
RESULTS=()
for s in $scenarios; do
  "scenario_$s"
done
printf '\n[e2e] %s\n' "${RESULTS[@]}"
printf '[e2e] all passed in %ss\n' "$((SECONDS - T_ALL))"
