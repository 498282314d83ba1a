# shellcheck shell=bash
# shellcheck disable=SC2034 # variables are used by the scripts that source this file
# MariaDB standing in for MySQL 8: Debian's mariadb-server binaries, our own datadir
# (mariadb-install-db) and our own mariadbd process, which drops to the mysql user.
# Beside it, a second, secured mariadbd (require_secure_transport, the test CA's
# certificate) on MYSQL_TLS_PORT: that setting is server-wide, and the plain server must
# keep serving every other test.
# Sourced by up.sh, down.sh and reset-db.sh after lib.sh.

MARIADB_HOME="$VISMIG_SERVICES_DIR/mariadb"
MARIADB_DATA="$MARIADB_HOME/data"
MARIADB_CNF="$MARIADB_HOME/my.cnf"
MARIADB_SOCKET_DIR="$RUN_DIR/mariadb"
MARIADB_SOCKET="$MARIADB_SOCKET_DIR/mariadb.sock"
# mariadbd writes its own pid file here (the server may be wrapped by setsid).
MARIADB_PIDFILE="$MARIADB_SOCKET_DIR/mariadb.pid"
MARIADB_LOG="$LOG_DIR/mariadb.log"
# The secured instance: its own datadir, socket, pid file and log.
MARIADB_TLS_HOME="$MARIADB_HOME/tls-instance"
MARIADB_TLS_DATA="$MARIADB_TLS_HOME/data"
MARIADB_TLS_CNF="$MARIADB_TLS_HOME/my.cnf"
MARIADB_TLS_SOCKET="$MARIADB_SOCKET_DIR/mariadb-tls.sock"
MARIADB_TLS_PIDFILE="$MARIADB_SOCKET_DIR/mariadb-tls.pid"
MARIADB_TLS_LOG="$LOG_DIR/mariadb-tls.log"
MARIADB_DBS="temporal_visibility temporal_visibility_secondary"
# MySQL 5.7's standard schema (Temporal <= v1.23), which MariaDB runs as written.
MARIADB_STANDARD_DBS="temporal_visibility_standard"
# The derived schema (see mariadb-schema.py), regenerated from the module on every up.sh.
MARIADB_SCHEMA_DIR="$VISMIG_SERVICES_CACHE/derived/mariadb-visibility-$TEMPORAL_ADVANCED_VERSION/versioned"
# temporal-sql-tool's mysql plugins set `transaction_isolation` on connect, a variable
# MariaDB 10.11 does not know; naming the legacy `tx_isolation` (same meaning) instead is
# a connect attribute the plugin supports for exactly this.
MARIADB_TOOL_ATTRS="tx_isolation=READ-COMMITTED"

mariadb_root() { mariadb --no-defaults --protocol=socket -S "$MARIADB_SOCKET" -u root "$@"; }
mariadb_tls_root() { mariadb --no-defaults --protocol=socket -S "$MARIADB_TLS_SOCKET" -u root "$@"; }
# The test user over verified TLS, as the tests connect to the secured instance.
mariadb_tls_user() {
  MYSQL_PWD="$DB_PASSWORD" mariadb --no-defaults --protocol=tcp -h "$SERVICES_HOST" -P "$MYSQL_TLS_PORT" \
    -u "$DB_USER" --connect-timeout=5 --ssl --ssl-ca="$TLS_DIR/ca.crt" --ssl-verify-server-cert "$@"
}
mariadb_user() {
  MYSQL_PWD="$DB_PASSWORD" mariadb --no-defaults --protocol=tcp -h "$SERVICES_HOST" -P "$MYSQL_PORT" \
    -u "$DB_USER" --connect-timeout=5 "$@"
}

mariadb_prepare() {
  command -v mariadbd >/dev/null || [ -x /usr/sbin/mariadbd ] ||
    ensure_debian_packages mariadb-server mariadb-client
  command -v mariadb >/dev/null || ensure_debian_packages mariadb-client
  [ -x /usr/sbin/mariadbd ] || fail mariadb "/usr/sbin/mariadbd not found after installing mariadb-server"
  command -v python3 >/dev/null || ensure_debian_packages python3
}

mariadb_running() { live_pid "$MARIADB_PIDFILE" >/dev/null; }

mariadb_healthy() {
  mariadb_running && mariadb_user -N -e 'SELECT 1' >/dev/null 2>&1
}

# A dedicated server of this size, and MySQL 8's defaults where MariaDB's differ
# (sql_mode, utf8mb4, explicit_defaults_for_timestamp). Listed in README.md.
mariadb_write_config() {
  mariadb_cnf "$MARIADB_DATA" "$MARIADB_SOCKET" "$MARIADB_PIDFILE" "$MARIADB_LOG" "$MYSQL_PORT" 1G 1G >"$MARIADB_CNF"
}

# The secured instance: the same server settings with less memory (it holds a few test
# databases), TLS with the test CA, and no connection without it.
mariadb_tls_write_config() {
  {
    mariadb_cnf "$MARIADB_TLS_DATA" "$MARIADB_TLS_SOCKET" "$MARIADB_TLS_PIDFILE" "$MARIADB_TLS_LOG" "$MYSQL_TLS_PORT" 128M 64M
    cat <<EOF
ssl_cert = $TLS_DIR/server.crt
ssl_key = $TLS_DIR/server.key
ssl_ca = $TLS_DIR/ca.crt
require_secure_transport = ON
EOF
  } >"$MARIADB_TLS_CNF"
}

# One instance's my.cnf: DATADIR SOCKET PIDFILE LOG PORT BUFFER_POOL LOG_FILE_SIZE, then
# the settings both instances share.
mariadb_cnf() {
  cat <<EOF
# Written by vismig tests/services/up.sh on every start; edit svc/mariadb.sh instead.
[mariadbd]
user = mysql
datadir = $1
socket = $2
pid-file = $3
log-error = $4
bind-address = $SERVICES_HOST
port = $5
innodb_buffer_pool_size = $6
innodb_log_file_size = $7
EOF
  mariadb_settings
}

# What both instances share: MySQL 8's defaults where MariaDB's differ.
mariadb_settings() {
  cat <<EOF
skip-name-resolve
max_connections = 300
character-set-server = utf8mb4
collation-server = utf8mb4_unicode_ci
sql_mode = ONLY_FULL_GROUP_BY,STRICT_TRANS_TABLES,NO_ZERO_IN_DATE,NO_ZERO_DATE,ERROR_FOR_DIVISION_BY_ZERO,NO_ENGINE_SUBSTITUTION
explicit_defaults_for_timestamp = ON
default-time-zone = '+00:00'
innodb_log_buffer_size = 64M
innodb_flush_log_at_trx_commit = 1
innodb_flush_method = O_DIRECT
innodb_io_capacity = 2000
max_allowed_packet = 64M
performance_schema = OFF
EOF
}

mariadb_start() {
  mariadb_tls_start
  if mariadb_healthy; then
    set_state mariadb reused
    return 0
  fi
  if mariadb_running; then
    fail mariadb "a mariadbd process from an earlier run is alive but not answering on $SERVICES_HOST:$MYSQL_PORT" "$MARIADB_LOG"
  fi
  port_open "$SERVICES_HOST" "$MYSQL_PORT" &&
    fail mariadb "port $SERVICES_HOST:$MYSQL_PORT is taken by a process up.sh did not start"
  mariadb_launch mariadb_write_config "$MARIADB_HOME" "$MARIADB_DATA" "$MARIADB_CNF" "$MARIADB_LOG"
  set_state mariadb started
}

# Writes one instance's my.cnf (with WRITER), makes its datadir on the first start, and
# starts its mariadbd in the background: HOME DATA CNF LOG.
mariadb_launch() {
  local writer=$1 home=$2 data=$3 cnf=$4 log=$5
  mkdir -p "$home" "$MARIADB_SOCKET_DIR"
  chown mysql: "$MARIADB_SOCKET_DIR"
  touch "$log" && chown mysql: "$log"
  "$writer"
  if [ ! -d "$data/mysql" ]; then
    rm -rf "$data"
    mariadb-install-db --defaults-file="$cnf" --auth-root-authentication-method=socket \
      --skip-test-db >>"$log" 2>&1 || fail mariadb "mariadb-install-db ($cnf) failed" "$log"
  fi
  setsid /usr/sbin/mariadbd --defaults-file="$cnf" </dev/null >>"$log" 2>&1 &
}

mariadb_tls_running() { live_pid "$MARIADB_TLS_PIDFILE" >/dev/null; }
mariadb_tls_healthy() { mariadb_tls_running && mariadb_tls_user -N -e 'SELECT 1' >/dev/null 2>&1; }

mariadb_tls_start() {
  mariadb_tls_healthy && return 0
  mariadb_tls_running &&
    fail mariadb "the secured mariadbd from an earlier run is alive but not answering on $SERVICES_HOST:$MYSQL_TLS_PORT" "$MARIADB_TLS_LOG"
  port_open "$SERVICES_HOST" "$MYSQL_TLS_PORT" &&
    fail mariadb "port $SERVICES_HOST:$MYSQL_TLS_PORT is taken by a process up.sh did not start"
  mariadb_launch mariadb_tls_write_config "$MARIADB_TLS_HOME" "$MARIADB_TLS_DATA" "$MARIADB_TLS_CNF" "$MARIADB_TLS_LOG"
}

# The secured instance's users: the test user (all privileges, for the schema tool) over
# TLS; TLS_USER with a password and only the data privileges vismig needs; TLS_CLIENT_CN
# with no password, authenticated by a client certificate of the test CA (REQUIRE X509).
mariadb_tls_wait() {
  wait_for 60 mariadb_tls_root -N -e 'SELECT 1' || fail mariadb "the secured instance did not start within 60s" "$MARIADB_TLS_LOG"
  mariadb_tls_root -e "CREATE USER IF NOT EXISTS '$DB_USER'@'%' IDENTIFIED BY '$DB_PASSWORD' REQUIRE SSL;
    GRANT ALL PRIVILEGES ON *.* TO '$DB_USER'@'%' WITH GRANT OPTION;
    CREATE USER IF NOT EXISTS '$TLS_USER'@'%' IDENTIFIED BY '$TLS_PASSWORD' REQUIRE SSL;
    GRANT SELECT, INSERT, UPDATE, DELETE ON *.* TO '$TLS_USER'@'%';
    CREATE USER IF NOT EXISTS '$TLS_CLIENT_CN'@'%' REQUIRE X509;
    GRANT SELECT, INSERT, UPDATE, DELETE ON *.* TO '$TLS_CLIENT_CN'@'%';" >>"$MARIADB_TLS_LOG" 2>&1 ||
    fail mariadb "creating the secured instance's users failed" "$MARIADB_TLS_LOG"
  wait_for 30 mariadb_tls_healthy || fail mariadb "$DB_USER cannot log in over TLS on $SERVICES_HOST:$MYSQL_TLS_PORT" "$MARIADB_TLS_LOG"
}

mariadb_wait() {
  wait_for 60 mariadb_root -N -e 'SELECT 1' || fail mariadb "server did not start within 60s" "$MARIADB_LOG"
  # The test user: all privileges, so the schema tool can create and drop databases.
  mariadb_root -e "CREATE USER IF NOT EXISTS '$DB_USER'@'%' IDENTIFIED BY '$DB_PASSWORD';
    GRANT ALL PRIVILEGES ON *.* TO '$DB_USER'@'%' WITH GRANT OPTION;" >>"$MARIADB_LOG" 2>&1 ||
    fail mariadb "creating user $DB_USER failed" "$MARIADB_LOG"
  wait_for 30 mariadb_healthy || fail mariadb "$DB_USER cannot log in on $SERVICES_HOST:$MYSQL_PORT" "$MARIADB_LOG"
  mariadb_tls_wait
}

mariadb_version() {
  printf 'MariaDB %s' "$(mariadb_user -N -e 'SELECT VERSION()' 2>/dev/null)"
}

# Regenerates the MariaDB variant of the MySQL 8 schema from Temporal's own files.
mariadb_derive_schema() {
  local src log="$LOG_DIR/schema-mariadb-derive.log"
  src="$(temporal_module_dir "$TEMPORAL_ADVANCED_VERSION")/schema/mysql/v8/visibility/versioned"
  mkdir -p "$(dirname "$MARIADB_SCHEMA_DIR")"
  python3 "$SERVICES_HOME/mariadb-schema.py" "$src" "$MARIADB_SCHEMA_DIR" >"$log" 2>&1 ||
    fail mariadb "deriving the MariaDB schema from $src failed" "$log"
  cp "$log" "$(dirname "$MARIADB_SCHEMA_DIR")/changes.txt"
}

# Tool, plugin and versioned-schema directory for a schema flavour:
#   advanced  MySQL 8 schema, derived for MariaDB; tool v1.32.0, plugin mysql8
#   standard  MySQL 5.7 standard schema, applied as Temporal wrote it (MariaDB runs it
#             unchanged); tool v1.23.1, plugin mysql
mariadb_flavour() {
  MARIADB_FLAVOUR_TARGET=""
  case $1 in
    advanced@[0-9]*.[0-9]*)
      # As a cluster of an older release has it: the derived files up to X.Y only.
      MARIADB_FLAVOUR_TOOL=$SQL_TOOL MARIADB_FLAVOUR_PLUGIN=mysql8 MARIADB_FLAVOUR_TARGET=${1#advanced@}
      MARIADB_FLAVOUR_DIR=$MARIADB_SCHEMA_DIR
      MARIADB_FLAVOUR_TOOLS_VERSION=$TEMPORAL_ADVANCED_VERSION ;;
    advanced)
      MARIADB_FLAVOUR_TOOL=$SQL_TOOL MARIADB_FLAVOUR_PLUGIN=mysql8
      MARIADB_FLAVOUR_DIR=$MARIADB_SCHEMA_DIR
      MARIADB_FLAVOUR_TOOLS_VERSION=$TEMPORAL_ADVANCED_VERSION ;;
    standard)
      MARIADB_FLAVOUR_TOOL=$SQL_TOOL_STANDARD MARIADB_FLAVOUR_PLUGIN=mysql
      MARIADB_FLAVOUR_DIR="$(temporal_module_dir "$TEMPORAL_STANDARD_VERSION")/schema/mysql/v57/visibility/versioned"
      MARIADB_FLAVOUR_TOOLS_VERSION=$TEMPORAL_STANDARD_VERSION ;;
    *) fail mariadb "unknown schema flavour '$1' (advanced, advanced@X.Y or standard)" ;;
  esac
}

# MARIADB_INSTANCE=tls points the tool at the secured instance, over TLS with the CA
# checked and the host name verified (the tool's default once --tls is on).
mariadb_tool() {
  local db=$1 port=$MYSQL_PORT tls=()
  shift
  if [ "${MARIADB_INSTANCE:-}" = tls ]; then
    port=$MYSQL_TLS_PORT tls=(--tls --tls-ca-file "$TLS_DIR/ca.crt")
  fi
  "$MARIADB_FLAVOUR_TOOL" --ep "$SERVICES_HOST" -p "$port" -u "$DB_USER" --pw "$DB_PASSWORD" "${tls[@]}" \
    --pl "$MARIADB_FLAVOUR_PLUGIN" --ca "$MARIADB_TOOL_ATTRS" --db "$db" "$@"
}

mariadb_schema() {
  local db
  mariadb_derive_schema
  for db in $MARIADB_DBS; do mariadb_ensure_db "$db" advanced; done
  for db in $MARIADB_STANDARD_DBS; do mariadb_ensure_db "$db" standard; done
}

# Brings one database to the latest schema version, keeping its data when the schema
# is already there (warm start); creates it from scratch otherwise.
mariadb_ensure_db() {
  local db=$1 flavour=$2 log="$LOG_DIR/schema-mariadb-$1.log" current target
  mariadb_flavour "$flavour"
  wait_tools "$MARIADB_FLAVOUR_TOOLS_VERSION"
  target=$(latest_schema_version "$MARIADB_FLAVOUR_DIR")
  current=$(mariadb_user -N -D "$db" -e "SELECT curr_version FROM schema_version WHERE db_name = '$db'" 2>/dev/null || true)
  [ "$current" = "$target" ] && return 0
  if [ -n "$current" ]; then
    mariadb_tool "$db" update-schema -d "$MARIADB_FLAVOUR_DIR" >>"$log" 2>&1 ||
      fail mariadb "update-schema of $db ($flavour) failed" "$log"
    return 0
  fi
  mariadb_reset_db "$db" "$flavour"
}

# Drops and recreates one database with its schema, through Temporal's tool.
mariadb_reset_db() {
  local db=$1 flavour=$2 log="$LOG_DIR/schema-mariadb-$1.log"
  case $flavour in advanced*) [ -d "$MARIADB_SCHEMA_DIR" ] || mariadb_derive_schema ;; esac
  mariadb_flavour "$flavour"
  : >"$log"
  {
    mariadb_tool "$db" drop-database --force &&
      mariadb_tool "$db" create-database &&
      mariadb_tool "$db" setup-schema -v 0.0 &&
      mariadb_tool "$db" update-schema -d "$MARIADB_FLAVOUR_DIR" ${MARIADB_FLAVOUR_TARGET:+-v "$MARIADB_FLAVOUR_TARGET"}
  } >>"$log" 2>&1 || fail mariadb "temporal-sql-tool ($MARIADB_FLAVOUR_PLUGIN) could not create $db with the $flavour schema" "$log"
}

mariadb_stop() {
  # SIGTERM is mariadbd's clean shutdown.
  stop_pidfile mariadb "$MARIADB_PIDFILE" 120
  stop_pidfile mariadb-tls "$MARIADB_TLS_PIDFILE" 120
}

mariadb_rss_pid() { live_pid "$MARIADB_PIDFILE"; }
mariadb_address() { echo "$SERVICES_HOST:$MYSQL_PORT"; }
