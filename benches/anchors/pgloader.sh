#!/usr/bin/env bash
# shellcheck disable=SC2153 # the VISMIG_TEST_* variables come from env.sh
# Benchmark anchor "MariaDB -> PostgreSQL with pgloader": copies every row of
# executions_visibility from a MariaDB database (Temporal's mysql/v8 schema as
# tests/services/reset-db.sh derives it) into the existing, fully indexed table of a
# PostgreSQL database (postgresql/v12), reading straight from MariaDB.
#   benches/anchors/pgloader.sh <mariadb_db> <postgres_db>
# Servers and credentials: the VISMIG_TEST_* variables (tests/services/env.sh).
# Prints `pgloader: <rows> rows`; exits non-zero if pgloader failed or rejected any row,
# or if the row counts of the two tables differ afterwards.
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
lib="$here/../../tests/services/lib.sh"
# shellcheck source=tests/services/lib.sh
. "$lib"
# shellcheck source=tests/services/env.sh
[ -n "${VISMIG_TEST_PG_HOST:-}" ] || . "$here/../../tests/services/env.sh"

[ $# -eq 2 ] || { echo "usage: benches/anchors/pgloader.sh <mariadb_db> <postgres_db>" >&2; exit 2; }
src=$1 dst=$2
# Both names go into SQL and pgloader's command unquoted.
for db in "$src" "$dst"; do
  [[ $db =~ ^[A-Za-z_][A-Za-z0-9_]{0,62}$ ]] || fail pgloader "invalid database name '$db'"
done

# Debian's package, installed as tests/tools/install.sh installs them.
if ! command -v pgloader >/dev/null; then
  if [ "$(id -u)" = 0 ]; then
    mkdir -p "$LOG_DIR" && ensure_debian_packages pgloader
  elif sudo -n true 2>/dev/null; then
    sudo -n bash -c '. "$1" && mkdir -p "$LOG_DIR" && ensure_debian_packages pgloader' _ "$lib"
  else
    fail pgloader "pgloader is not installed and installing it needs root or passwordless sudo"
  fi
fi

# Passwords travel in the environment (pgloader, mariadb and psql all read these), so
# they need no URI escaping and stay off command lines.
export MYSQL_PWD="$VISMIG_TEST_MYSQL_PASSWORD" PGPASSWORD="$VISMIG_TEST_PG_PASSWORD"
my() { mariadb -N -B -h "$VISMIG_TEST_MYSQL_HOST" -P "$VISMIG_TEST_MYSQL_PORT" -u "$VISMIG_TEST_MYSQL_USER" "$src" -e "$1"; }
pg() { psql -qAtX -v ON_ERROR_STOP=1 -h "$VISMIG_TEST_PG_HOST" -p "$VISMIG_TEST_PG_PORT" -U "$VISMIG_TEST_PG_USER" -d "$dst" -c "$1"; }

# Only Temporal's base columns, and of those the ones stored (not generated) on both
# sides: PostgreSQL refuses values for its generated search-attribute columns, and a
# MySQL 8 source would compute its own.
base="namespace_id run_id workflow_type_name workflow_id start_time execution_time status close_time history_length history_size_bytes execution_duration state_transition_count memo encoding task_queue search_attributes parent_workflow_id parent_run_id root_workflow_id root_run_id _version"
my_cols=$(my "SELECT column_name FROM information_schema.columns WHERE table_schema = DATABASE() AND table_name = 'executions_visibility' AND extra NOT LIKE '%GENERATED%'")
pg_cols=$(pg "SELECT column_name FROM information_schema.columns WHERE table_schema = 'public' AND table_name = 'executions_visibility' AND is_generated = 'NEVER'")
cols=$(tr ' ' '\n' <<<"$base" | grep -Fx "$my_cols" | grep -Fx "$pg_cols" | paste -sd, -) \
  || fail pgloader "executions_visibility has none of the base columns in both $src and $dst"

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
view="vismig_pgloader_$$"
# pgloader cannot pick columns of a MySQL table, so it reads a view over them that it
# creates in MariaDB for the run and drops after (MATERIALIZE VIEWS), and loads it into
# the existing table as is: data only, nothing created, truncated or dropped. Its
# default casts keep the values as they are: BLOB -> bytea, DATETIME(6) text into
# timestamp (microseconds kept), JSON text parsed by jsonb.
cat >"$work/load" <<EOF
LOAD DATABASE
  FROM mysql://$VISMIG_TEST_MYSQL_USER@$VISMIG_TEST_MYSQL_HOST:$VISMIG_TEST_MYSQL_PORT/$src
  INTO postgresql://$VISMIG_TEST_PG_USER@$VISMIG_TEST_PG_HOST:$VISMIG_TEST_PG_PORT/$dst
WITH data only, create no tables, create no indexes, no foreign keys, reset no sequences, no truncate
MATERIALIZE VIEWS $view AS \$\$ SELECT $cols FROM executions_visibility \$\$
INCLUDING ONLY TABLE NAMES MATCHING '$view'
ALTER TABLE NAMES MATCHING '$view' RENAME TO 'executions_visibility'
ALTER SCHEMA '$src' RENAME TO 'public';
EOF

# pgloader exits 0 even when PostgreSQL refused a batch (it logs the error and drops
# the batch), so its CSV summary (name;read;imported;errors;bytes;time) is the verdict.
# Debian's build gives SBCL a 1 GiB heap (strace shows the 1073741824-byte mmap), and
# pgloader's memory grows with the table: it peaked at 1 GiB over 300k of these rows and
# died partway through 1M. With the SBCL runtime option below it loads the million (peak
# RSS 2 GiB). Its default prefetch and batch sizes are kept, so its speed is its own;
# VISMIG_BENCH_PGLOADER_HEAP_MB changes the heap.
if ! pgloader --dynamic-space-size "${VISMIG_BENCH_PGLOADER_HEAP_MB:-12288}" --root-dir "$work/root" --summary "$work/summary.csv" "$work/load" >"$work/log" 2>&1; then
  tail -n 30 "$work/log" >&2
  fail pgloader "pgloader failed"
fi
line=$(grep '^"public.executions_visibility";' "$work/summary.csv") \
  || { tail -n 30 "$work/log" >&2; fail pgloader "no summary line for executions_visibility"; }
IFS=';' read -r _ nread imported errors _ <<<"$line"
if [ "$errors" != 0 ] || [ "$imported" != "$nread" ]; then
  grep -E 'ERROR|FATAL|DETAIL|CONTEXT' "$work/log" | head -n 20 >&2 || true
  fail pgloader "pgloader rejected rows: read $nread, imported $imported, $errors errors"
fi

src_rows=$(my "SELECT count(*) FROM executions_visibility")
dst_rows=$(pg "SELECT count(*) FROM executions_visibility")
[ "$src_rows" = "$dst_rows" ] || fail pgloader "row counts differ after the load: MariaDB $src $src_rows, PostgreSQL $dst $dst_rows"
echo "pgloader: $dst_rows rows"
