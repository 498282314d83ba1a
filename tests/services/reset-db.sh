#!/usr/bin/env bash
# Drops and recreates one database with Temporal's visibility schema, applied by
# temporal-sql-tool exactly as up.sh does, so a test starts from a clean database.
# Usage: tests/services/reset-db.sh <postgres|mariadb|mariadb-tls> <dbname> [advanced|standard]
#   mariadb-tls: the secured MariaDB instance, the tool connecting over verified TLS
#   advanced (default): PostgreSQL postgresql/v12 (tool v1.32.0, plugin postgres12);
#                       MariaDB the variant derived from mysql/v8 (plugin mysql8)
#   standard:           PostgreSQL postgresql/v96, MariaDB mysql/v57 (tool v1.23.1)
#   advanced-v1.23:     PostgreSQL only: postgresql/v12 as v1.23.1 has it (schema 1.4)
#   advanced@X.Y:       the advanced schema up to version X.Y only (update-schema -v X.Y),
#                       as a cluster of an older Temporal release has it (1.3 = v1.21)
# The server must be up (tests/services/up.sh). Any database name works, so parallel
# tests can each use their own.
set -euo pipefail
# shellcheck source=tests/services/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

usage() { echo "usage: reset-db.sh <postgres|mariadb|mariadb-tls> <dbname> [advanced|advanced@X.Y|standard|advanced-v1.23]" >&2; exit 2; }
if [ $# -lt 2 ] || [ $# -gt 3 ]; then usage; fi
service=$1 db=$2 flavour=${3:-advanced}
# The name goes into SQL statements unquoted, as in Temporal's tool.
[[ $db =~ ^[A-Za-z_][A-Za-z0-9_]{0,62}$ ]] || fail reset-db.sh "invalid database name '$db'"
case $flavour in advanced | standard | advanced-v1.23) ;; advanced@[0-9]*.[0-9]*) ;; *) usage ;; esac

case $service in
  postgres)
    # shellcheck source=tests/services/svc/postgres.sh
    . "$SERVICES_HOME/svc/postgres.sh"
    pg_flavour "$flavour"
    wait_tools "$PG_FLAVOUR_TOOLS_VERSION"
    postgres_healthy || fail postgres "not reachable on $SERVICES_HOST:$PG_PORT (run tests/services/up.sh postgres)" "$PG_LOG"
    pg_reset_db "$db" "$flavour"
    ;;
  mariadb)
    # shellcheck source=tests/services/svc/mariadb.sh
    . "$SERVICES_HOME/svc/mariadb.sh"
    mariadb_flavour "$flavour"
    wait_tools "$MARIADB_FLAVOUR_TOOLS_VERSION"
    mariadb_healthy || fail mariadb "not reachable on $SERVICES_HOST:$MYSQL_PORT (run tests/services/up.sh mariadb)" "$MARIADB_LOG"
    mariadb_reset_db "$db" "$flavour"
    ;;
  mariadb-tls)
    # shellcheck source=tests/services/svc/mariadb.sh
    . "$SERVICES_HOME/svc/mariadb.sh"
    mariadb_flavour "$flavour"
    wait_tools "$MARIADB_FLAVOUR_TOOLS_VERSION"
    mariadb_tls_healthy || fail mariadb "the secured instance is not reachable on $SERVICES_HOST:$MYSQL_TLS_PORT (run tests/services/up.sh mariadb)" "$MARIADB_TLS_LOG"
    MARIADB_INSTANCE=tls mariadb_reset_db "$db" "$flavour"
    ;;
  *) usage ;;
esac
