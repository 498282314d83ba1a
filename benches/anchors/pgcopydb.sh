#!/usr/bin/env bash
# shellcheck disable=SC2153 # the VISMIG_TEST_* variables come from env.sh
# Benchmark anchor "pgcopydb": Debian's pgcopydb (0.10) clones the source database into
# an empty target database: extensions (btree_gin) and schema first, then table data with N COPY jobs (the table
# split into N parts), then every index with N CREATE INDEX jobs, then constraints.
#   benches/anchors/pgcopydb.sh <source_db> <empty_target_db> <N>
# Servers and credentials: the VISMIG_TEST_* variables (tests/services/env.sh).
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
lib="$here/../../tests/services/lib.sh"
# shellcheck source=tests/services/lib.sh
. "$lib"
# shellcheck source=tests/services/env.sh
[ -n "${VISMIG_TEST_PG_HOST:-}" ] || . "$here/../../tests/services/env.sh"

[ $# -eq 3 ] || { echo "usage: benches/anchors/pgcopydb.sh <source_db> <empty_target_db> <N>" >&2; exit 2; }
src=$1 dst=$2 n=$3
for db in "$src" "$dst"; do
  [[ $db =~ ^[A-Za-z_][A-Za-z0-9_]{0,62}$ ]] || fail pgcopydb "invalid database name '$db'"
done

if ! command -v pgcopydb >/dev/null; then
  if [ "$(id -u)" = 0 ]; then
    mkdir -p "$LOG_DIR" && ensure_debian_packages pgcopydb
  else
    fail pgcopydb "pgcopydb is not installed and installing it needs root"
  fi
fi

export PGPASSWORD="$VISMIG_TEST_PG_PASSWORD"
uri() { printf 'postgres://%s@%s:%s/%s' "$VISMIG_TEST_PG_USER" "$VISMIG_TEST_PG_HOST" "$VISMIG_TEST_PG_PORT" "$1"; }
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
# Only Temporal's visibility table; the split size makes N parts of it.
printf '[include-only-table]\npublic.executions_visibility\n' >"$work/filters.ini"
size_mb=$(psql -qAt -h "$VISMIG_TEST_PG_HOST" -p "$VISMIG_TEST_PG_PORT" -U "$VISMIG_TEST_PG_USER" -d "$src" \
  -c "SELECT greatest(1, pg_relation_size('executions_visibility') / 1048576 / $n)")
# pgcopydb 0.10 signals its whole process group (SIGTERM) when it ends: its own group
# keeps that from reaching this script and the harness.
setsid --wait pgcopydb clone --source "$(uri "$src")" --target "$(uri "$dst")" --dir "$work/pgcopydb" \
  --table-jobs "$n" --index-jobs "$n" --split-tables-larger-than "${size_mb}MB" \
  --filters "$work/filters.ini" --no-owner --no-acl --no-comments >"$work/log" 2>&1 ||
  { tail -n 40 "$work/log" >&2; exit 1; }
