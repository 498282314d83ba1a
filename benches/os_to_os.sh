#!/usr/bin/env bash
# OpenSearch -> OpenSearch in one cluster: vismig beside `_reindex` (with external
# versions, as vismig writes) and beside elasticdump (npm), on the same source index and
# server, in one invocation. Each target index is made by Temporal's template with the
# seed's search attributes mapped, and dropped after its run.
#   benches/os_to_os.sh [RECORDS] [CONCURRENCY...]     defaults: 100000, "2 4"
#   VISMIG_BENCH_BATCH=N sets vismig's batch size (default 1000, like the anchors' pages)
# Needs tests/services/up.sh opensearch. Prints records/s of each, and vismig's ratio to
# both anchors and its peak RSS.
set -euo pipefail
cd "$(dirname "$0")/.."
records=${1:-100000}
shift || true
concurrencies=("$@")
[ ${#concurrencies[@]} -gt 0 ] || concurrencies=(2 4)

bash tests/services/up.sh opensearch >/dev/null
# shellcheck disable=SC1091
source tests/services/env.sh
url=$VISMIG_TEST_OPENSEARCH_URL
cargo build --release --quiet
bin=$PWD/target/release/vismig
tools=${VISMIG_BENCH_CACHE:-/var/cache/vismig-bench}
if [ ! -x "$tools/node_modules/.bin/elasticdump" ]; then
  mkdir -p "$tools"
  (cd "$tools" && npm install --silent --no-audit --no-fund elasticdump@6.125.1 >/dev/null)
fi
elasticdump=$tools/node_modules/.bin/elasticdump
work=$(mktemp -d)
src=temporal_visibility_v1_bench_src
cleanup() { for i in $src ${dst:-}; do curl -s -X DELETE "$url/$i" >/dev/null; done; rm -rf "$work"; }
trap cleanup EXIT
now() { date +%s.%N; }
calc() { awk "BEGIN { printf \"%.${2:-0}f\", $1 }"; }
mapping='{"properties":{"CustomerId":{"type":"keyword"},"Amount":{"type":"long"},"Score":{"type":"scaled_float","scaling_factor":10000},"Priority":{"type":"boolean"},"DueTime":{"type":"date_nanos"},"Note":{"type":"text"},"Tags":{"type":"keyword"}}}'
fresh() { # index: made by Temporal's template, with the seed's attributes
  curl -s -X DELETE "$url/$1" >/dev/null
  curl -fsS -X PUT "$url/$1" >/dev/null
  curl -fsS -X PUT "$url/$1/_mapping" -H 'content-type: application/json' -d "$mapping" >/dev/null
}
count() { curl -fsS -X POST "$url/$1/_refresh" >/dev/null; curl -fsS "$url/$1/_count" | sed 's/.*"count":\([0-9]*\).*/\1/'; }
config() { # secondary-index concurrency file
  cat >"$3" <<YAML
persistence:
  visibilityStore: es
  datastores:
    es:
      elasticsearch:
        url: { scheme: http, host: "${url#http://}" }
        indices: { visibility: $src, secondary_visibility: $1 }
migration:
  batchSize: ${VISMIG_BENCH_BATCH:-1000}
  concurrency: $2
  rate: { recordsPerSecond: 0 }
  checkpoint: { type: file, path: $work/checkpoint-$1-$2.json }
  deadLetter: { path: $work/dead-letter.jsonl }
  metrics: { listen: "" }
YAML
}

fresh $src
config unused 1 "$work/seed.yaml"
echo "seeding $records records into $src ..."
t0=$(now)
$bin seed --config "$work/seed.yaml" --records "$records" >/dev/null 2>&1
echo "  seeded in $(calc "$(now) - $t0" 1) s"

dst=temporal_visibility_v1_bench_reindex
fresh $dst
t0=$(now)
curl -fsS -X POST "$url/_reindex?wait_for_completion=true&refresh=true" -H 'content-type: application/json' \
  -d "{\"source\":{\"index\":\"$src\",\"size\":1000},\"dest\":{\"index\":\"$dst\",\"version_type\":\"external\"}}" >/dev/null
secs=$(calc "$(now) - $t0" 2)
[ "$(count $dst)" = "$records" ] || { echo "_reindex copied $(count $dst) of $records" >&2; exit 1; }
reindex_rate=$(calc "$records / $secs")
printf '%-36s %s records in %ss = %s records/s\n' "_reindex (external versions):" "$records" "$secs" "$reindex_rate"
curl -s -X DELETE "$url/$dst" >/dev/null

dst=temporal_visibility_v1_bench_dump
fresh $dst
t0=$(now)
"$elasticdump" --input="$url/$src" --output="$url/$dst" --type=data --limit=1000 >"$work/dump.log" 2>&1 ||
  { cat "$work/dump.log"; exit 1; }
secs=$(calc "$(now) - $t0" 2)
[ "$(count $dst)" = "$records" ] || { echo "elasticdump copied $(count $dst) of $records" >&2; exit 1; }
dump_rate=$(calc "$records / $secs")
printf '%-36s %s records in %ss = %s records/s\n' "elasticdump (--limit 1000):" "$records" "$secs" "$dump_rate"
curl -s -X DELETE "$url/$dst" >/dev/null

dst=temporal_visibility_v1_bench_vismig
for c in "${concurrencies[@]}"; do
  fresh $dst
  config $dst "$c" "$work/run.yaml"
  t0=$(now)
  /usr/bin/time -f "%M %U %S" -o "$work/rss" $bin backfill --config "$work/run.yaml" >/dev/null 2>"$work/log" ||
    { cat "$work/log"; exit 1; }
  secs=$(calc "$(now) - $t0" 2)
  [ "$(count $dst)" = "$records" ] || { echo "vismig copied $(count $dst) of $records" >&2; exit 1; }
  rate=$(calc "$records / $secs")
  read -r rss user sys <"$work/rss"
  printf '%-36s %s records in %ss = %s records/s, %sx _reindex, %sx elasticdump, peak RSS %s MiB, CPU %ss\n' \
    "vismig concurrency $c:" "$records" "$secs" "$rate" "$(calc "$rate / $reindex_rate" 2)" \
    "$(calc "$rate / $dump_rate" 2)" "$((rss / 1024))" "$(calc "$user + $sys" 1)"
  curl -s -X DELETE "$url/$dst" >/dev/null
done
