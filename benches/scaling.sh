#!/usr/bin/env bash
# Scaling: the backfill as 1, 2 and 4 processes (`--shard I/N`, as the Indexed Job runs
# it: each process its own checkpoint through ${JOB_COMPLETION_INDEX}) against the same
# two stores; records/s in total and per process, peak RSS per process. The figures
# behind the capacity model in PERFORMANCE.md.
#   benches/scaling.sh [--records N] [--processes "1 2 4"] [--concurrency C] [--pairs "pg os"] [--runs R]
#   defaults: 100000 records, processes "1 2 4", concurrency 2 per process, pairs "pg os", 1 run
#   VISMIG_BENCH_BIN=path times that binary instead of a release build of the working tree
# On this machine the servers share its two cores with vismig: see PERFORMANCE.md for
# where the scaling stops being linear.
set -euo pipefail
cd "$(dirname "$0")/.."
records=100000 processes="1 2 4" concurrency=2 pairs="pg os" runs=1
while [ $# -gt 0 ]; do
  case $1 in
    --records) records=$2; shift 2 ;;
    --processes) processes=$2; shift 2 ;;
    --concurrency) concurrency=$2; shift 2 ;;
    --pairs) pairs=$2; shift 2 ;;
    --runs) runs=$2; shift 2 ;;
    *) echo "usage: benches/scaling.sh [--records N] [--processes \"1 2 4\"] [--concurrency C] [--pairs \"pg os\"] [--runs R]" >&2; exit 2 ;;
  esac
done
bash tests/services/up.sh postgres opensearch >/dev/null
# shellcheck disable=SC1091
source tests/services/env.sh
# shellcheck source=benches/lib.sh
. benches/lib.sh
bench_binary
work=$(mktemp -d)
url=$VISMIG_TEST_OPENSEARCH_URL
pg_src=bench_scale_src pg_dst=bench_scale_dst
os_src=temporal_visibility_v1_bench_scale_src os_dst=temporal_visibility_v1_bench_scale_dst
cleanup() {
  psql_db postgres -c "DROP DATABASE IF EXISTS $pg_src" -c "DROP DATABASE IF EXISTS $pg_dst" >/dev/null 2>&1 || true
  curl -s -X DELETE "$url/$os_src,$os_dst" >/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT
target_rows() {
  case $1 in
    pg) pg_rows $pg_dst ;;
    os) os_rows $os_dst ;;
  esac
}

# run_processes PAIR N: N processes, each `--shard I/N` with its own checkpoint.
run_processes() {
  local pair=$1 n=$2 i t0 secs pids=() total=0
  case $pair in
    pg) bash tests/services/reset-db.sh postgres $pg_dst advanced >/dev/null
        vismig_config "$work/run.yaml" "$(pg_store $pg_src)" "$(pg_store $pg_dst)" "$concurrency" 1000 ;;
    os) os_fresh $os_dst
        vismig_config "$work/run.yaml" "$(es_store "$url" $os_src $os_dst)" same "$concurrency" 2000 ;;
  esac
  sed -i 's|path: \(.*\)/checkpoint.json|path: "\1/checkpoint-${JOB_COMPLETION_INDEX}.json"|; s|path: \(.*\)/dead-letter.jsonl|path: "\1/dead-letter-${JOB_COMPLETION_INDEX}.jsonl"|' "$work/run.yaml"
  rm -f "$work"/checkpoint-*.json "$work"/dead-letter-*.jsonl
  t0=$(now)
  for ((i = 0; i < n; i++)); do
    JOB_COMPLETION_INDEX=$i /usr/bin/time -f "%e %M" -o "$work/time-$i" "$bin" backfill --config "$work/run.yaml" --shard "$i/$n" \
      >"$work/out-$i" 2>"$work/log-$i" &
    pids+=($!)
  done
  for ((i = 0; i < n; i++)); do
    wait "${pids[$i]}" || { echo "process $i/$n failed:" >&2; tail -n 20 "$work/log-$i" >&2; return 1; }
  done
  secs=$(calc "$(now) - $t0" 2)
  total=$(target_rows "$pair")
  [ "$total" = "$records" ] || { echo "$pair with $n processes: the target holds $total records, not $records" >&2; return 1; }
  local per=() rss=()
  for ((i = 0; i < n; i++)); do
    read -r s r <"$work/time-$i"
    per+=("$(calc "$records / $n / $s")")
    rss+=("$((r / 1024))")
  done
  printf '  %-3s %d process(es) x concurrency %d: %8d records in %7.2f s = %7.0f records/s in total; per process %s records/s; peak RSS %s MiB\n' \
    "$pair" "$n" "$concurrency" "$records" "$secs" "$(calc "$records / $secs")" "${per[*]}" "${rss[*]}"
}

echo "scaling $(date -u +%FT%TZ): $records records, processes $processes, concurrency $concurrency per process, pairs $pairs"
echo "machine: $(nproc) cores, $(awk '/MemTotal/ { printf "%.0f GiB", $2 / 1048576 }' /proc/meminfo)"
for pair in $pairs; do
  case $pair in
    pg) pg_load_source $pg_src "$records" ;;
    os) os_load_source $os_src "$records" ;;
    *) echo "unknown pair '$pair'" >&2; exit 2 ;;
  esac
  for run in $(seq "$runs"); do
    for n in $processes; do
      run_processes "$pair" "$n"
    done
  done
done
