#!/usr/bin/env bash
# shellcheck disable=SC2153 # the VISMIG_TEST_* variables come from env.sh
# Benchmark anchor "the best hand-made PostgreSQL load": what a PostgreSQL expert does by
# hand to move one big table, without any version guard.
#   benches/anchors/pg_parallel.sh <source_db> <target_db> <N> indexed|deferred
#   indexed   N parallel COPY streams, each over one run-id range, into the target's
#             fully indexed executions_visibility (Temporal's schema, as it is).
#   deferred  the target's indexes other than the primary key dropped first, the same N
#             COPY streams, then every dropped index rebuilt with N CREATE INDEX at a time
#             (plain CREATE INDEX: it blocks writes to the table while it builds).
# The run-id ranges are the N quantiles of the source's run ids (one scan, timed too).
# Servers and credentials: the VISMIG_TEST_* variables (tests/services/env.sh).
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=tests/services/env.sh
[ -n "${VISMIG_TEST_PG_HOST:-}" ] || . "$here/../../tests/services/env.sh"

usage="usage: benches/anchors/pg_parallel.sh <source_db> <target_db> <N> indexed|deferred"
[ $# -eq 4 ] || { echo "$usage" >&2; exit 2; }
src=$1 dst=$2 n=$3 mode=$4
for db in "$src" "$dst"; do
  [[ $db =~ ^[A-Za-z_][A-Za-z0-9_]{0,62}$ ]] || { echo "invalid database name '$db'" >&2; exit 2; }
done
[[ $n =~ ^[1-9][0-9]?$ ]] || { echo "$usage" >&2; exit 2; }
case $mode in indexed | deferred) ;; *) echo "$usage" >&2; exit 2 ;; esac

export PGPASSWORD="$VISMIG_TEST_PG_PASSWORD"
psql_db() { psql -v ON_ERROR_STOP=1 -qAt -h "$VISMIG_TEST_PG_HOST" -p "$VISMIG_TEST_PG_PORT" -U "$VISMIG_TEST_PG_USER" -d "$1" "${@:2}"; }
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# Every column vismig copies (the generated search-attribute columns are computed by the target).
cols=$(psql_db "$dst" -c "SELECT string_agg(quote_ident(column_name), ', ' ORDER BY ordinal_position)
  FROM information_schema.columns WHERE table_name = 'executions_visibility' AND is_generated = 'NEVER'")

if [ "$mode" = deferred ]; then
  psql_db "$dst" -c "SELECT indexdef FROM pg_indexes WHERE tablename = 'executions_visibility' AND indexname NOT LIKE '%pkey'" >"$work/indexes"
  psql_db "$dst" -c "SELECT 'DROP INDEX ' || quote_ident(indexname) || ';' FROM pg_indexes WHERE tablename = 'executions_visibility' AND indexname NOT LIKE '%pkey'" |
    psql_db "$dst" >/dev/null
fi

# N-1 inner bounds: the k/N quantiles of the run ids.
bounds=()
if [ "$n" -gt 1 ]; then
  fractions=$(seq -s, 1 $((n - 1)) | awk -v n="$n" -F, '{ for (i = 1; i <= NF; i++) printf "%s%s", (i > 1 ? "," : ""), $i / n }')
  mapfile -t bounds < <(psql_db "$src" -c "SELECT unnest(percentile_disc(ARRAY[$fractions]) WITHIN GROUP (ORDER BY run_id)) FROM executions_visibility")
fi
for ((i = 0; i < n; i++)); do
  where="TRUE"
  [ "$i" -eq 0 ] || where+=" AND run_id >= '${bounds[i - 1]}'"
  [ "$i" -eq $((n - 1)) ] || where+=" AND run_id < '${bounds[i]}'"
  {
    psql_db "$src" -c "\\copy (SELECT $cols FROM executions_visibility WHERE $where) TO STDOUT" |
      psql_db "$dst" -c "\\copy executions_visibility ($cols) FROM STDIN"
  } &
done
failed=0
for job in $(jobs -p); do wait "$job" || failed=1; done
[ "$failed" -eq 0 ] || { echo "a COPY stream failed" >&2; exit 1; }

if [ "$mode" = deferred ]; then
  # N builders at a time, each one CREATE INDEX.
  tr '\n' '\0' <"$work/indexes" |
    xargs -0 -P "$n" -I{} env PGPASSWORD="$PGPASSWORD" psql -v ON_ERROR_STOP=1 -qAt -h "$VISMIG_TEST_PG_HOST" \
      -p "$VISMIG_TEST_PG_PORT" -U "$VISMIG_TEST_PG_USER" -d "$dst" -c "{}"
fi
