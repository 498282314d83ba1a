#!/usr/bin/env bash
# Drops the databases integration tests create (named vt_*, one set per test process),
# so repeated runs on one machine do not fill its disk. Run after up.sh.
set -euo pipefail
# shellcheck disable=SC1091
source "$(dirname "$0")/env.sh"
prefix=${1:-vt_}
case " ${VISMIG_TEST_SERVICES:-} " in *" postgres "*)
  export PGPASSWORD="$VISMIG_TEST_PG_PASSWORD"
  psql_pg() { psql -qAt -h "$VISMIG_TEST_PG_HOST" -p "$VISMIG_TEST_PG_PORT" -U "$VISMIG_TEST_PG_USER" -d postgres "$@"; }
  for db in $(psql_pg -c "SELECT datname FROM pg_database WHERE datname LIKE '${prefix}%'"); do
    psql_pg -c "DROP DATABASE \"$db\" WITH (FORCE)"
  done ;;
esac
case " ${VISMIG_TEST_SERVICES:-} " in *" mariadb "*)
  my() { mariadb -N -h "$VISMIG_TEST_MYSQL_HOST" -P "$VISMIG_TEST_MYSQL_PORT" -u "$VISMIG_TEST_MYSQL_USER" -p"$VISMIG_TEST_MYSQL_PASSWORD" "$@"; }
  for db in $(my -e "SELECT schema_name FROM information_schema.schemata WHERE schema_name LIKE '${prefix}%'"); do
    my -e "DROP DATABASE \`$db\`"
  done ;;
esac
