#!/usr/bin/env bash
# Drops the databases and search indices integration tests create (named vt_*, one set per test process),
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
  done
  # The secured instance (reset-db.sh mariadb-tls): the same user, over verified TLS.
  my_tls() {
    mariadb -N -h "$VISMIG_TEST_MYSQL_HOST" -P "$VISMIG_TEST_MYSQL_TLS_PORT" -u "$VISMIG_TEST_MYSQL_USER" \
      -p"$VISMIG_TEST_MYSQL_PASSWORD" --ssl-ca="$VISMIG_TEST_TLS_DIR/ca.crt" --ssl-verify-server-cert "$@"
  }
  for db in $(my_tls -e "SELECT schema_name FROM information_schema.schemata WHERE schema_name LIKE '${prefix}%'"); do
    my_tls -e "DROP DATABASE \`$db\`"
  done ;;
esac
# Indices the search tests create: temporal_visibility_v1_<prefix>* (the name must match
# Temporal's template). Listed first: a wildcard DELETE may be refused by the cluster.
for svc in opensearch elasticsearch opensearch_secure; do
  case " ${VISMIG_TEST_SERVICES:-} " in *" $svc "*)
    auth=()
    case $svc in
      opensearch) url=$VISMIG_TEST_OPENSEARCH_URL ;;
      elasticsearch) url=$VISMIG_TEST_ELASTICSEARCH_URL ;;
      opensearch_secure)
        url=$VISMIG_TEST_OPENSEARCH_SECURE_URL
        auth=(--cacert "$VISMIG_TEST_TLS_DIR/ca.crt" -u "$VISMIG_TEST_OPENSEARCH_SECURE_ADMIN") ;;
    esac
    for index in $(curl "${auth[@]}" -fsS -m 10 "$url/_cat/indices/temporal_visibility_v1_${prefix}*?h=index" 2>/dev/null); do
      curl "${auth[@]}" -fsS -m 30 -X DELETE "$url/$index" >/dev/null
    done ;;
  esac
done
