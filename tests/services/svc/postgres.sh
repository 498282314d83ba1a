# shellcheck shell=bash
# shellcheck disable=SC2034 # variables are used by the scripts that source this file
# PostgreSQL: Debian's server binaries, our own cluster (initdb into VISMIG_SERVICES_DIR),
# run as the postgres user because PostgreSQL refuses to run as root. Sourced by up.sh,
# down.sh and reset-db.sh after lib.sh.

PG_DATA="$VISMIG_SERVICES_DIR/postgres/data"
PG_SOCKET_DIR="$RUN_DIR/postgres"
PG_LOG="$LOG_DIR/postgres.log"
PG_PIDFILE="$RUN_DIR/postgres.pid"
# The secured side of the same server (tests/services/README.md, "Secured servers"):
# TLS_USER (lib.sh) is allowed over TLS only, TLS_CLIENT_CN logs in by client certificate.
PG_TLS_USER=$TLS_USER
PG_TLS_PASSWORD=$TLS_PASSWORD
PG_CERT_USER=$TLS_CLIENT_CN
PG_TLS_DIR="$VISMIG_SERVICES_DIR/postgres/tls"
# Databases and the schema each gets.
# A streaming replica of the server above, for the health throttle's replica-lag tests
# (tests/health.rs pauses its replay with pg_wal_replay_pause()).
PG_REPLICA_DATA="$VISMIG_SERVICES_DIR/postgres/replica"
PG_REPLICA_LOG="$LOG_DIR/postgres-replica.log"
PG_ADVANCED_DBS="temporal_visibility temporal_visibility_secondary"
PG_STANDARD_DBS="temporal_visibility_standard"

pg_as_postgres() { runuser -u postgres -- "$@"; }

# psql as the test user over TCP, the way the tests connect.
pg_psql() {
  PGPASSWORD="$DB_PASSWORD" PGCONNECT_TIMEOUT=5 "$PG_BIN/psql" -X -q -v ON_ERROR_STOP=1 \
    -h "$SERVICES_HOST" -p "$PG_PORT" -U "$DB_USER" "$@"
}

postgres_prepare() {
  [ -x "$PG_BIN/postgres" ] || ensure_debian_packages "postgresql-$PG_MAJOR"
  [ -x "$PG_BIN/postgres" ] || fail postgres "$PG_BIN/postgres not found after installing postgresql-$PG_MAJOR"
}

postgres_running() {
  # postmaster.pid's first line is the postmaster's pid.
  local pid
  pid=$(live_pid "$PG_DATA/postmaster.pid") || return 1
  echo "$pid" >"$PG_PIDFILE"
}

postgres_healthy() {
  postgres_running && pg_psql -d postgres -Atc 'SELECT 1' >/dev/null 2>&1
}

# The settings an operator would give a dedicated PostgreSQL server of this size
# (2 cores, 24 GiB, SSD). Listed in tests/services/README.md.
postgres_write_config() {
  cat >"$PG_DATA/vismig.conf" <<EOF
# Written by vismig tests/services/up.sh on every start; edit svc/postgres.sh instead.
listen_addresses = '$SERVICES_HOST'
port = $PG_PORT
unix_socket_directories = '$PG_SOCKET_DIR'
max_connections = 200
password_encryption = scram-sha-256
timezone = 'UTC'
log_timezone = 'UTC'

# memory
shared_buffers = 4GB
huge_pages = try
effective_cache_size = 12GB
maintenance_work_mem = 1GB
work_mem = 16MB
wal_buffers = 64MB

# WAL and checkpoints: few, spread-out checkpoints; full-page images compressed
wal_compression = lz4
max_wal_size = 16GB
min_wal_size = 2GB
checkpoint_timeout = 30min
checkpoint_completion_target = 0.9
synchronous_commit = on

# planner and I/O for SSD storage
random_page_cost = 1.1
effective_io_concurrency = 200
default_statistics_target = 100

# parallelism for 2 cores
max_worker_processes = 4
max_parallel_workers = 2
max_parallel_workers_per_gather = 1
max_parallel_maintenance_workers = 1

# TLS with the test CA (tls.sh); the CA also checks client certificates (hostssl … cert)
ssl = on
ssl_cert_file = '$PG_TLS_DIR/server.crt'
ssl_key_file = '$PG_TLS_DIR/server.key'
ssl_ca_file = '$PG_TLS_DIR/ca.crt'

# logging
log_checkpoints = on
log_line_prefix = '%m [%p] %q%u@%d '
log_min_duration_statement = 5s
log_autovacuum_min_duration = 10s
EOF
  chown postgres: "$PG_DATA/vismig.conf"
  # PostgreSQL refuses a key file that others can read: its own copy, owned by postgres.
  mkdir -p "$PG_TLS_DIR"
  cp "$TLS_DIR/server.crt" "$TLS_DIR/server.key" "$TLS_DIR/ca.crt" "$PG_TLS_DIR/"
  chown -R postgres: "$PG_TLS_DIR"
  chmod 700 "$PG_TLS_DIR"
  chmod 600 "$PG_TLS_DIR/server.key"
  grep -q "^include_if_exists = 'vismig.conf'" "$PG_DATA/postgresql.conf" ||
    echo "include_if_exists = 'vismig.conf'" >>"$PG_DATA/postgresql.conf"
}

postgres_start() {
  if postgres_healthy; then
    set_state postgres reused
    return 0
  fi
  if postgres_running; then
    fail postgres "a postgres process from an earlier run is alive but not answering on $SERVICES_HOST:$PG_PORT" "$PG_LOG"
  fi
  port_open "$SERVICES_HOST" "$PG_PORT" &&
    fail postgres "port $SERVICES_HOST:$PG_PORT is taken by a process up.sh did not start (Debian's own cluster? pg_lsclusters)"
  mkdir -p "$VISMIG_SERVICES_DIR/postgres" "$PG_SOCKET_DIR"
  chown postgres: "$VISMIG_SERVICES_DIR/postgres" "$PG_SOCKET_DIR"
  touch "$PG_LOG" && chown postgres: "$PG_LOG"
  if [ ! -s "$PG_DATA/PG_VERSION" ]; then
    rm -rf "$PG_DATA"
    # Password auth over TCP; peer auth on the private socket for up.sh's own setup.
    pg_as_postgres "$PG_BIN/initdb" -D "$PG_DATA" -U postgres -E UTF8 --locale=C.UTF-8 \
      --auth-local=peer --auth-host=scram-sha-256 >>"$PG_LOG" 2>&1 ||
      fail postgres "initdb failed" "$PG_LOG"
  fi
  postgres_write_config
  # setsid: the server must not share the caller's process group or terminal.
  # shellcheck disable=SC2094 # pg_ctl appends the server's output to the same log
  setsid runuser -u postgres -- "$PG_BIN/pg_ctl" start -D "$PG_DATA" -l "$PG_LOG" -w -t 60 \
    </dev/null >>"$PG_LOG" 2>&1 || fail postgres "pg_ctl start failed" "$PG_LOG"
  set_state postgres started
}

postgres_wait() {
  wait_for 60 postgres_running || fail postgres "server did not start within 60s" "$PG_LOG"
  # The test role: superuser, so the schema tool can create and drop databases.
  local exists
  exists=$(pg_as_postgres "$PG_BIN/psql" -X -h "$PG_SOCKET_DIR" -p "$PG_PORT" -d postgres -Atc \
    "SELECT 1 FROM pg_roles WHERE rolname = '$DB_USER'" 2>>"$PG_LOG") ||
    fail postgres "cannot connect through $PG_SOCKET_DIR" "$PG_LOG"
  if [ "$exists" != 1 ]; then
    pg_as_postgres "$PG_BIN/psql" -X -q -h "$PG_SOCKET_DIR" -p "$PG_PORT" -d postgres -c \
      "CREATE ROLE $DB_USER LOGIN SUPERUSER PASSWORD '$DB_PASSWORD'" >>"$PG_LOG" 2>&1 ||
      fail postgres "creating role $DB_USER failed" "$PG_LOG"
  fi
  wait_for 30 postgres_healthy || fail postgres "$DB_USER cannot log in on $SERVICES_HOST:$PG_PORT" "$PG_LOG"
  postgres_secure
  postgres_replica_start
}

# The replica: a base backup of the server, streaming from it (pg_basebackup -R), with a
# small memory footprint. Its settings go last in postgresql.auto.conf, over the copied
# vismig.conf. It holds no data of its own, so a broken one is simply made again. Its
# disk is the server's data again, plus the WAL since the server's last checkpoint (a
# standby recycles WAL only at the server's checkpoints).
postgres_replica_start() {
  live_pid "$PG_REPLICA_DATA/postmaster.pid" >/dev/null && return 0
  touch "$PG_REPLICA_LOG" && chown postgres: "$PG_REPLICA_LOG"
  if [ ! -s "$PG_REPLICA_DATA/PG_VERSION" ]; then
    rm -rf "$PG_REPLICA_DATA"
    # A base backup copies every database of the server: on a machine whose server holds
    # benchmark data that is gigabytes. Made only with room for twice that and 2 GiB more;
    # else no replica (env.sh then exports no VISMIG_TEST_PG_REPLICA_PORT, and the
    # replica-lag test says it skipped, or fails under CI).
    local need_kib free_kib
    need_kib=$(pg_psql -d postgres -Atc "SELECT (sum(pg_database_size(datname)) / 1024)::bigint * 2 + 2097152 FROM pg_database") ||
      fail postgres "cannot read the databases' size for the replica"
    free_kib=$(df -Pk "$VISMIG_SERVICES_DIR" | awk 'NR == 2 { print $4 }')
    if [ "$free_kib" -lt "$need_kib" ]; then
      say "postgres: no replica: a base backup needs $((need_kib / 1048576)) GiB free, $((free_kib / 1048576)) GiB are (drop benchmark databases, or free disk)"
      return 0
    fi
    runuser -u postgres -- env PGPASSWORD="$DB_PASSWORD" "$PG_BIN/pg_basebackup" -h "$SERVICES_HOST" -p "$PG_PORT" \
      -U "$DB_USER" -D "$PG_REPLICA_DATA" -R -X stream -c fast >>"$PG_REPLICA_LOG" 2>&1 ||
      fail postgres "pg_basebackup for the replica failed" "$PG_REPLICA_LOG"
    cat >>"$PG_REPLICA_DATA/postgresql.auto.conf" <<EOF
port = $PG_REPLICA_PORT
shared_buffers = 128MB
effective_cache_size = 512MB
maintenance_work_mem = 64MB
wal_buffers = 4MB
min_wal_size = 80MB
max_wal_size = 1GB
hot_standby = on
EOF
  fi
  # shellcheck disable=SC2094 # pg_ctl appends the server's output to the same log
  setsid runuser -u postgres -- "$PG_BIN/pg_ctl" start -D "$PG_REPLICA_DATA" -l "$PG_REPLICA_LOG" -w -t 60 \
    </dev/null >>"$PG_REPLICA_LOG" 2>&1 || fail postgres "pg_ctl start of the replica failed" "$PG_REPLICA_LOG"
}

# The secured users, their pg_hba.conf lines (first, so they win over the plain `host`
# lines initdb wrote) and a reload: `ssl` and pg_hba.conf take effect without a restart,
# so a server that an earlier up.sh started gets them too.
postgres_secure() {
  local hba="$PG_DATA/pg_hba.conf" tmp
  tmp=$(mktemp)
  {
    echo "# vismig secured users (svc/postgres.sh): TLS only; plain text is rejected"
    echo "hostssl all $PG_TLS_USER $SERVICES_HOST/32 scram-sha-256"
    echo "hostssl all $PG_CERT_USER $SERVICES_HOST/32 cert"
    echo "host all $PG_TLS_USER,$PG_CERT_USER $SERVICES_HOST/32 reject"
    echo "# end of vismig secured users"
    sed '/^# vismig secured users/,/^# end of vismig secured users/d' "$hba"
  } >"$tmp"
  cat "$tmp" >"$hba" && rm -f "$tmp"
  postgres_write_config
  pg_as_postgres "$PG_BIN/psql" -X -q -h "$PG_SOCKET_DIR" -p "$PG_PORT" -d postgres -v ON_ERROR_STOP=1 >>"$PG_LOG" 2>&1 <<EOF ||
SELECT format('CREATE ROLE %I LOGIN', u) FROM unnest(ARRAY['$PG_TLS_USER', '$PG_CERT_USER']) AS u
  WHERE NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = u) \gexec
ALTER ROLE $PG_TLS_USER PASSWORD '$PG_TLS_PASSWORD';
-- What vismig needs on every test database: read the primary, write the secondary.
GRANT pg_read_all_data, pg_write_all_data TO $PG_TLS_USER, $PG_CERT_USER;
EOF
    fail postgres "creating the secured users failed" "$PG_LOG"
  runuser -u postgres -- "$PG_BIN/pg_ctl" reload -D "$PG_DATA" >>"$PG_LOG" 2>&1 || fail postgres "pg_ctl reload failed" "$PG_LOG"
  wait_for 10 pg_ssl_on || fail postgres "ssl is not on after the reload (certificate or key refused?)" "$PG_LOG"
}
pg_ssl_on() { [ "$(pg_psql -d postgres -Atc 'SHOW ssl')" = on ]; }

postgres_version() {
  printf 'PostgreSQL %s' "$(pg_psql -d postgres -Atc 'SHOW server_version' 2>/dev/null)"
}

postgres_schema() {
  local db
  for db in $PG_ADVANCED_DBS; do pg_ensure_db "$db" advanced; done
  for db in $PG_STANDARD_DBS; do pg_ensure_db "$db" standard; done
}

# Tool, plugin and versioned-schema directory for a schema flavour.
pg_flavour() {
  PG_FLAVOUR_TARGET=""
  case $1 in
    advanced@[0-9]*.[0-9]*)
      # The advanced schema as an older release left it: the newest files, applied up to
      # version X.Y only (update-schema -v X.Y), as an operator of that release did.
      PG_FLAVOUR_TOOL=$SQL_TOOL PG_FLAVOUR_PLUGIN=postgres12 PG_FLAVOUR_TARGET=${1#advanced@}
      PG_FLAVOUR_DIR="$(temporal_module_dir "$TEMPORAL_ADVANCED_VERSION")/schema/postgresql/v12/visibility/versioned"
      PG_FLAVOUR_TOOLS_VERSION=$TEMPORAL_ADVANCED_VERSION ;;
    advanced)
      PG_FLAVOUR_TOOL=$SQL_TOOL PG_FLAVOUR_PLUGIN=postgres12
      PG_FLAVOUR_DIR="$(temporal_module_dir "$TEMPORAL_ADVANCED_VERSION")/schema/postgresql/v12/visibility/versioned"
      PG_FLAVOUR_TOOLS_VERSION=$TEMPORAL_ADVANCED_VERSION ;;
    advanced-v1.23)
      # The advanced schema as the last release with standard visibility creates it
      # (1.4: no root ids, no _version): the secondary of a Cassandra-visibility cluster.
      PG_FLAVOUR_TOOL=$SQL_TOOL_STANDARD PG_FLAVOUR_PLUGIN=postgres12
      PG_FLAVOUR_DIR="$(temporal_module_dir "$TEMPORAL_STANDARD_VERSION")/schema/postgresql/v12/visibility/versioned"
      PG_FLAVOUR_TOOLS_VERSION=$TEMPORAL_STANDARD_VERSION ;;
    standard)
      PG_FLAVOUR_TOOL=$SQL_TOOL_STANDARD PG_FLAVOUR_PLUGIN=postgres
      PG_FLAVOUR_DIR="$(temporal_module_dir "$TEMPORAL_STANDARD_VERSION")/schema/postgresql/v96/visibility/versioned"
      PG_FLAVOUR_TOOLS_VERSION=$TEMPORAL_STANDARD_VERSION ;;
    *) fail postgres "unknown schema flavour '$1' (advanced, advanced@X.Y, advanced-v1.23 or standard)" ;;
  esac
}

pg_tool() {
  local db=$1
  shift
  "$PG_FLAVOUR_TOOL" --ep "$SERVICES_HOST" -p "$PG_PORT" -u "$DB_USER" --pw "$DB_PASSWORD" \
    --pl "$PG_FLAVOUR_PLUGIN" --db "$db" "$@"
}

# Brings one database to the latest schema version, keeping its data when the schema
# is already there (warm start); creates it from scratch otherwise.
pg_ensure_db() {
  local db=$1 flavour=$2 log="$LOG_DIR/schema-postgres-$1.log" current target
  pg_flavour "$flavour"
  wait_tools "$PG_FLAVOUR_TOOLS_VERSION"
  target=$(latest_schema_version "$PG_FLAVOUR_DIR")
  current=$(pg_psql -d "$db" -Atc "SELECT curr_version FROM schema_version WHERE db_name = '$db'" 2>/dev/null || true)
  if [ "$current" = "$target" ]; then
    return 0
  fi
  if [ -n "$current" ]; then
    # An older schema: upgrade it as an operator would.
    pg_tool "$db" update-schema -d "$PG_FLAVOUR_DIR" >>"$log" 2>&1 ||
      fail postgres "update-schema of $db ($flavour) failed" "$log"
    return 0
  fi
  pg_reset_db "$db" "$flavour"
}

# Drops and recreates one database with Temporal's schema, through Temporal's tool.
pg_reset_db() {
  local db=$1 flavour=$2 log="$LOG_DIR/schema-postgres-$1.log"
  pg_flavour "$flavour"
  : >"$log"
  # WITH (FORCE) ends sessions a test left open; the tool's drop-database would fail on them.
  pg_psql -d postgres -c "DROP DATABASE IF EXISTS $db WITH (FORCE)" >>"$log" 2>&1 ||
    fail postgres "dropping $db failed" "$log"
  {
    pg_tool "$db" create-database &&
      pg_tool "$db" setup-schema -v 0.0 &&
      pg_tool "$db" update-schema -d "$PG_FLAVOUR_DIR" ${PG_FLAVOUR_TARGET:+-v "$PG_FLAVOUR_TARGET"}
  } >>"$log" 2>&1 || fail postgres "temporal-sql-tool ($PG_FLAVOUR_PLUGIN) could not create $db with the $flavour schema" "$log"
}

postgres_stop() {
  if live_pid "$PG_REPLICA_DATA/postmaster.pid" >/dev/null; then
    runuser -u postgres -- "$PG_BIN/pg_ctl" stop -D "$PG_REPLICA_DATA" -m fast -w -t 60 >>"$PG_REPLICA_LOG" 2>&1 || true
  fi
  if postgres_running; then
    runuser -u postgres -- "$PG_BIN/pg_ctl" stop -D "$PG_DATA" -m fast -w -t 60 >>"$PG_LOG" 2>&1 ||
      stop_pidfile postgres "$PG_PIDFILE" 10
  fi
  rm -f "$PG_PIDFILE"
}

postgres_rss_pid() { postgres_running && cat "$PG_PIDFILE"; }
postgres_address() { echo "$SERVICES_HOST:$PG_PORT"; }
