#!/usr/bin/env bash
# A live write load beside the backfill: what the backfill does to Temporal's own writes
# into the secondary, and what the load does to the backfill. benches/liveload.py writes
# Temporal-shaped upserts (new runs, closes of open runs) at a fixed rate into the
# secondary the backfill writes to; its latency is measured from when each write was due.
#   benches/live.sh [--records N] [--rate R] [--seconds S] [--pairs "pg os"] [--backfill-rate "0 ..."] [--health]
#   defaults: 100000 records (500000 for os), load 200 writes/s, 30 s alone, pairs "pg os",
#   backfill rates "0" (unlimited; add e.g. 1000 to time a rate-limited backfill too)
#   --health: also a backfill at the unlimited rate under the health throttle, with the
#   pair's migration.health block below (or VISMIG_BENCH_HEALTH_PG / _OS, flow YAML)
#   VISMIG_BENCH_BIN=path times that binary instead of a release build of the working tree
# For each pair: the load alone (S seconds), then the load beside each backfill (as long
# as the backfill runs), with the backfill's records/s. Not a timed test: the figures go
# to PERFORMANCE.md.
set -euo pipefail
cd "$(dirname "$0")/.."
records="" rate=200 seconds=30 pairs="pg os" backfill_rates="0" health=0
# The health throttle's bounds per pair: vismig's own write p95 against its baseline
# (both), and OpenSearch's write queue on the node (the load's bulks queue behind vismig's).
health_pg=${VISMIG_BENCH_HEALTH_PG:-"{ interval: 1s, window: 10, secondaryWriteP95: { max: 2x } }"}
health_os=${VISMIG_BENCH_HEALTH_OS:-"{ interval: 1s, window: 10, secondaryWriteP95: { max: 2x }, writeQueue: { max: 2 } }"}
while [ $# -gt 0 ]; do
  case $1 in
    --records) records=$2; shift 2 ;;
    --rate) rate=$2; shift 2 ;;
    --seconds) seconds=$2; shift 2 ;;
    --pairs) pairs=$2; shift 2 ;;
    --backfill-rate) backfill_rates=$2; shift 2 ;;
    --health) health=1; shift ;;
    *) echo "usage: benches/live.sh [--records N] [--rate R] [--seconds S] [--pairs \"pg os\"] [--backfill-rate \"0 ...\"] [--health]" >&2; exit 2 ;;
  esac
done
bash tests/services/up.sh postgres opensearch >/dev/null
# shellcheck disable=SC1091
source tests/services/env.sh
# shellcheck source=benches/lib.sh
. benches/lib.sh
bench_binary
work=$(mktemp -d)
py=$(bench_venv liveload psycopg2-binary==2.9.13)/bin/python
url=$VISMIG_TEST_OPENSEARCH_URL
pg_src=bench_live_src pg_dst=bench_live_dst
os_src=temporal_visibility_v1_bench_live_src os_dst=temporal_visibility_v1_bench_live_dst
cleanup() {
  psql_db postgres -c "DROP DATABASE IF EXISTS $pg_src" -c "DROP DATABASE IF EXISTS $pg_dst" >/dev/null 2>&1 || true
  curl -s -X DELETE "$url/$os_src,$os_dst" >/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT
pg_dsn() { printf 'host=%s port=%s dbname=%s user=%s password=%s' "$VISMIG_TEST_PG_HOST" "$VISMIG_TEST_PG_PORT" "$1" "$VISMIG_TEST_PG_USER" "$VISMIG_TEST_PG_PASSWORD"; }
load_args() { # sets target_args to the load's target options for the pair
  case $1 in pg) target_args=(--pg "$(pg_dsn $pg_dst)") ;; os) target_args=(--os "$url/$os_dst") ;; esac
}
fresh_target() {
  case $1 in
    pg) bash tests/services/reset-db.sh postgres $pg_dst advanced >/dev/null ;;
    os) os_fresh $os_dst ;;
  esac
}
report() { # label json
  python3 -c 'import json, sys
r = json.loads(sys.argv[2])
print("  {:<44} load: {writes} writes at {ratePerSecond}/s, p50 {p50Ms} ms, p99 {p99Ms} ms, max {maxMs} ms, errors {errors}".format(sys.argv[1], **r))' "$1" "$2"
}

echo "live load $(date -u +%FT%TZ): load $rate writes/s, pairs $pairs, backfill rates $backfill_rates"
for pair in $pairs; do
  n=${records:-$([ "$pair" = os ] && echo 500000 || echo 100000)}
  case $pair in
    pg) pg_load_source $pg_src "$n" ;;
    os) os_load_source $os_src "$n" ;;
    *) echo "unknown pair '$pair'" >&2; exit 2 ;;
  esac
  fresh_target "$pair"
  load_args "$pair"
  report "$pair: alone, $seconds s" "$("$py" benches/liveload.py "${target_args[@]}" --rate "$rate" --seconds "$seconds" --seed 1)"
  runs=$backfill_rates
  [ "$health" = 0 ] || runs="$runs health"
  for brate in $runs; do
    fresh_target "$pair"
    extra="" label="--rate $brate"
    if [ "$brate" = health ]; then
      block=$health_pg
      [ "$pair" = os ] && block=$health_os
      extra="  health: $block" label="health-throttled: $block" brate=0
    fi
    case $pair in
      pg) vismig_config "$work/run.yaml" "$(pg_store $pg_src)" "$(pg_store $pg_dst)" 4 1000 "$extra" ;;
      os) vismig_config "$work/run.yaml" "$(es_store "$url" $os_src $os_dst)" same 4 2000 "$extra" ;;
    esac
    t0=$(now)
    "$bin" backfill --config "$work/run.yaml" --rate "$brate" >"$work/out" 2>"$work/log" &
    pid=$!
    result=$("$py" benches/liveload.py "${target_args[@]}" --rate "$rate" --while-pid $pid --seed 2) ||
      { echo "the load failed; vismig's log:" >&2; tail -n 20 "$work/log" >&2; exit 1; }
    wait $pid || { echo "backfill failed:" >&2; tail -n 20 "$work/log" >&2; exit 1; }
    secs=$(calc "$(now) - $t0" 2)
    report "$pair: beside a backfill ($label)" "$result"
    [ "$extra" = "" ] || echo "  $(printf '%-44s' "") health throttle: $(grep -c '"health throttle"' "$work/log") changes of reason; last: $(grep '"health throttle' "$work/log" | tail -n1 | python3 -c 'import json,sys; l=sys.stdin.read().strip(); print(json.loads(l).get("reason","-") if l else "-")')"
    echo "  $(printf '%-44s' "") vismig: $n records in $secs s = $(calc "$n / $secs") records/s"
  done
done
