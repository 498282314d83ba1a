#!/usr/bin/env bash
# Verify speed on PostgreSQL -> PostgreSQL: counts-only verify and deep verify over N
# records held by two databases with Temporal's v12 schema, then the anchor: reladiff
# (PyPI, the maintained fork of data-diff) beside vismig's deep verify on the same two
# tables with seeded differences (runs missing from the secondary, extra runs in it, runs
# with one field changed at the same version); both must find exactly the same runs.
#   benches/verify_pg.sh [--pk-only] [RECORDS] [CONCURRENCY...]   defaults: 1000000, "1 2 4"
#   --pk-only  the tables keep only their primary key (what both verifiers read by),
#              not Temporal's 73 other indexes: ~2.5 GB instead of ~13 GB per million
# VISMIG_BENCH_BASELINE=/path/to/an/older/vismig also times that binary's deep verify
# in the same invocation (before/after figures for a change).
# Needs tests/services/up.sh postgres. Disk: ~13 GB per million records per database
# (indexes built after the load); both databases are dropped at the end.
set -euo pipefail
cd "$(dirname "$0")/.."
pk_only=0
if [ "${1:-}" = --pk-only ]; then pk_only=1; shift; fi
records=${1:-1000000}
shift || true
concurrencies=("$@")
[ ${#concurrencies[@]} -gt 0 ] || concurrencies=(1 2 4)

bash tests/services/up.sh postgres >/dev/null
# shellcheck disable=SC1091
source tests/services/env.sh
# shellcheck source=benches/lib.sh
. benches/lib.sh
# VISMIG_BENCH_BIN=path times that binary instead of a release build of the working tree.
bench_binary
work=$(mktemp -d)
src=bench_verify_src dst=bench_verify_dst
cleanup() {
  rm -rf "$work"
  psql_db postgres -c "DROP DATABASE IF EXISTS $src" -c "DROP DATABASE IF EXISTS $dst" || true
}
trap cleanup EXIT

echo "loading $records records into $src ..."
if [ "$pk_only" = 1 ]; then export VISMIG_BENCH_PK_ONLY=1; fi
pg_load_source $src "$records"
t0=$(now)
psql_db postgres -c "DROP DATABASE IF EXISTS $dst" -c "CREATE DATABASE $dst TEMPLATE $src"
echo "  copied to $dst in $(calc "$(now) - $t0" 1) s"
df -h / | tail -1
verify_config() { # concurrency [recheckAfter]
  vismig_config "$work/run.yaml" "$(pg_store $src)" "$(pg_store $dst)" "$1" 1000 "  verify: { cutoff: 0s, recheckAfter: ${2:-1s} }"
}

timed() { # label binary args... (the exit code must be $expect, 0 unless set)
  local label=$1 b=$2 rc=0
  shift 2
  t0=$(now)
  /usr/bin/time -f "%M %U %S" -o "$work/time" "$b" verify --config "$work/run.yaml" "$@" >"$work/out" 2>"$work/log" || rc=$?
  [ "$rc" = "${expect:-0}" ] || { echo "$label exited $rc, not ${expect:-0}:"; cat "$work/out" "$work/log"; exit 1; }
  local secs rss cpu
  secs=$(calc "$(now) - $t0" 2)
  last_secs=$secs
  read -r rss u s < <(tail -n 1 "$work/time") # GNU time adds a line for a non-zero exit
  cpu=$(calc "$u + $s" 1)
  printf '%-44s %ss = %s records/s, peak RSS %s MiB, CPU %ss\n' "$label:" "$secs" "$(calc "$records / $secs")" "$((rss / 1024))" "$cpu"
}

# verdict MODE RESULT: the JSON report of the last run says RESULT.
verdict() {
  python3 - "$work/out" "$1" "$2" <<'PY' || { cat "$work/out"; exit 1; }
import json, sys
report = json.load(open(sys.argv[1]))
if (report["mode"], report["result"]) != (sys.argv[2], sys.argv[3]):
    sys.exit(f"expected a {sys.argv[2]} verify to say {sys.argv[3]}, it says {report['result']}")
PY
}

verify_config 1
timed "counts-only verify" "$bin" --output json
verdict counts equal
if [ -n "${VISMIG_BENCH_BASELINE:-}" ]; then
  verify_config 1
  timed "deep verify, baseline binary" "$VISMIG_BENCH_BASELINE" --deep --output json
fi
for c in "${concurrencies[@]}"; do
  verify_config "$c"
  timed "deep verify, concurrency $c" "$bin" --deep --output json
  verdict deep equal
done

# --- the anchor: reladiff on the same tables, with seeded differences --------------
reladiff=$(bench_venv reladiff "reladiff[postgresql]==0.6.0")/bin/reladiff
# Five runs lost, five runs the primary never had, five runs with one field changed at
# the same _version (what a hand edit or a bad restore leaves).
psql_db $dst -c "UPDATE executions_visibility SET task_queue = task_queue || '-edited' WHERE run_id IN (SELECT run_id FROM executions_visibility ORDER BY md5(run_id || 'changed') LIMIT 5)" \
  -c "DELETE FROM executions_visibility WHERE run_id IN (SELECT run_id FROM executions_visibility ORDER BY md5(run_id || 'changed') OFFSET 5 LIMIT 5)" \
  -c "INSERT INTO executions_visibility (namespace_id, run_id, workflow_type_name, workflow_id, start_time, execution_time, status, close_time, history_length, history_size_bytes, execution_duration, state_transition_count, memo, encoding, task_queue, search_attributes, parent_workflow_id, parent_run_id, root_workflow_id, root_run_id, _version)
      SELECT namespace_id, gen_random_uuid()::text, workflow_type_name, workflow_id, start_time, execution_time, status, close_time, history_length, history_size_bytes, execution_duration, state_transition_count, memo, encoding, task_queue, search_attributes, parent_workflow_id, parent_run_id, root_workflow_id, root_run_id, _version
      FROM executions_visibility ORDER BY md5(run_id || 'extra') LIMIT 5" >/dev/null
top=${concurrencies[-1]}
url() { printf 'postgresql://%s:%s@%s:%s/%s' "$VISMIG_TEST_PG_USER" "$VISMIG_TEST_PG_PASSWORD" "$VISMIG_TEST_PG_HOST" "$VISMIG_TEST_PG_PORT" "$1"; }
t0=$(now)
# Every column compared (-c %), keyed like Temporal's primary key; a wide terminal keeps
# each JSON line on one line.
COLUMNS=1000000 /usr/bin/time -f "%M %U %S" -o "$work/time" "$reladiff" "$(url $src)" executions_visibility \
  "$(url $dst)" executions_visibility -k namespace_id -k run_id -c '%' -j "$top" --json >"$work/reladiff.jsonl" 2>"$work/reladiff.log" ||
  { echo "reladiff failed:"; tail -n 20 "$work/reladiff.log"; exit 1; }
reladiff_secs=$(calc "$(now) - $t0" 2)
read -r rss u s < "$work/time"
printf '%-44s %ss = %s records/s, peak RSS %s MiB, CPU %ss\n' "reladiff, $top threads per database:" "$reladiff_secs" \
  "$(calc "$records / $reladiff_secs")" "$((rss / 1024))" "$(calc "$u + $s" 1)"
# No writes are in flight here, so no pause before re-checking what differs (reladiff has none).
verify_config "$top" 0s
expect=3 timed "deep verify, concurrency $top, differences" "$bin" --deep --output json
vismig_secs=$last_secs
python3 - "$work/reladiff.jsonl" "$work/out" "$reladiff_secs" "$vismig_secs" <<'PY'
import json, sys
signs = {}
for line in open(sys.argv[1]):
    sign, row = json.loads(line)
    signs.setdefault((row[0], row[1]), set()).add(sign)
# reladiff: "-" only = only in the primary, "+" only = only in the secondary, both = changed.
theirs = {key: {"-": "missing", "+": "extra"}[next(iter(s))] if len(s) == 1 else "different" for key, s in signs.items()}
report = json.load(open(sys.argv[2]))
ours = {(d["namespaceId"], d["runId"]): d["kind"] for ns in report["namespaces"] for d in ns["differences"]}
if ours != theirs:
    sys.exit(f"the verifiers disagree: only reladiff {sorted(set(theirs.items()) - set(ours.items()))}, only vismig {sorted(set(ours.items()) - set(theirs.items()))}")
kinds = sorted(set(ours.values()))
print(f"both found the same {len(ours)} runs ({', '.join(f'{list(ours.values()).count(k)} {k}' for k in kinds)}); "
      f"vismig {float(sys.argv[3]) / float(sys.argv[4]):.2f}x reladiff's speed")
PY
