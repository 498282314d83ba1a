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
# shellcheck source=benches/lib.sh
. benches/lib.sh
cargo build --release --quiet
bin=$PWD/target/release/vismig
work=$(mktemp -d)
src=bench_verify_src dst=bench_verify_dst
cleanup() {
  rm -rf "$work"
  psql_db postgres -c "DROP DATABASE IF EXISTS $src" -c "DROP DATABASE IF EXISTS $dst" || true
}
trap cleanup EXIT

echo "loading $records records into $src ..."
pg_load_source $src "$records"
t0=$(now)
psql_db postgres -c "DROP DATABASE IF EXISTS $dst" -c "CREATE DATABASE $dst TEMPLATE $src"
echo "  copied to $dst in $(calc "$(now) - $t0" 1) s"
df -h / | tail -1
verify_config() { # concurrency
  vismig_config "$work/run.yaml" "$(pg_store $src)" "$(pg_store $dst)" "$1" 1000 "  verify: { cutoff: 0s, recheckAfter: 1s }"
}

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

verify_config 1
timed "counts-only verify" "$bin"
grep -q '^verify (counts): equal' "$work/out" || { cat "$work/out"; exit 1; }
if [ -n "${VISMIG_BENCH_BASELINE:-}" ]; then
  verify_config 1
  timed "deep verify, baseline binary" "$VISMIG_BENCH_BASELINE" --deep
fi
for c in "${concurrencies[@]}"; do
  verify_config "$c"
  timed "deep verify, concurrency $c" "$bin" --deep
  grep -q '^verify (deep): equal' "$work/out" || { cat "$work/out"; exit 1; }
done
