# shellcheck shell=bash
# shellcheck disable=SC2034 # variables are used by the scripts that source this file
# Apache Cassandra 5.0, single node, from Maven Central jars (cassandra-all and its runtime
# dependencies: what the binary distribution has in lib/), run by CassandraDaemon with a
# cassandra.yaml and JVM flags written here. Beside it, a second, secured node
# (PasswordAuthenticator, client_encryption_options with TLS and a client certificate
# from the test CA required, the superuser's default password changed) on
# CASSANDRA_TLS_PORT: both settings are node-wide and every other test talks to the
# plain node without a login. Sourced by up.sh and down.sh after lib.sh.

CASSANDRA_LIB="$VISMIG_SERVICES_CACHE/cassandra-$CASSANDRA_VERSION/lib"
CASSANDRA_HOME="$VISMIG_SERVICES_DIR/cassandra"
CASSANDRA_PIDFILE="$RUN_DIR/cassandra.pid"
CASSANDRA_LOG="$LOG_DIR/cassandra.log"          # logback: the server's own log
CASSANDRA_STDOUT="$LOG_DIR/cassandra.stdout.log" # JVM stdout/stderr
CASSANDRA_KEYSPACE=temporal_visibility
# Marker inside the data directory: the schema was applied to this data (purge removes both).
CASSANDRA_SCHEMA_MARKER="$CASSANDRA_HOME/schema-$CASSANDRA_KEYSPACE-$TEMPORAL_STANDARD_VERSION"
# The secured node: its own directory (inside the plain node's, so purge removes it),
# pid file and logs; the superuser (lib.sh) sets up schemas and TLS_USER, which may only
# read.
CASSANDRA_TLS_HOME="$CASSANDRA_HOME/tls-node"
CASSANDRA_TLS_PIDFILE="$RUN_DIR/cassandra-tls.pid"
CASSANDRA_TLS_LOG="$LOG_DIR/cassandra-tls.log"
CASSANDRA_TLS_STDOUT="$LOG_DIR/cassandra-tls.stdout.log"

# maven-dependency-plugin pinned: Maven 3.8's default binding is 2.8, from 2013.
MAVEN_DEPENDENCY_PLUGIN="org.apache.maven.plugins:maven-dependency-plugin:3.8.1"

# Resolves a pom's runtime dependencies into a lib directory of the cache, once.
maven_fetch() {
  local service=$1 pom=$2 dest=$3
  shift 3
  [ -f "$dest/.complete" ] && return 0
  command -v mvn >/dev/null || ensure_debian_packages maven
  local log="$LOG_DIR/maven-$service.log"
  rm -rf "$dest"
  mvn -B -q -Dmaven.repo.local="$VISMIG_SERVICES_CACHE/m2" -f "$pom" "$@" \
    "$MAVEN_DEPENDENCY_PLUGIN:copy-dependencies" -DincludeScope=runtime -DoutputDirectory="$dest" \
    >"$log" 2>&1 || fail "$service" "mvn could not resolve the jars from $(basename "$pom")" "$log"
  touch "$dest/.complete"
}

java_bin() {
  if [ -n "${JAVA_HOME:-}" ] && [ -x "$JAVA_HOME/bin/java" ]; then echo "$JAVA_HOME/bin/java"; else command -v java; fi
}

ensure_java() {
  local service=$1 java major
  java=$(java_bin || true)
  if [ -z "$java" ] || ! command -v javac >/dev/null; then
    ensure_debian_packages openjdk-17-jdk-headless
    java=$(java_bin)
  fi
  major=$("$java" -XshowSettings:properties -version 2>&1 | awk -F' = ' '/java.specification.version/ {print $2}')
  [ "${major%%.*}" -ge 17 ] 2>/dev/null || fail "$service" "needs Java 17 or newer, $java is $major"
}

cassandra_prepare() {
  ensure_java cassandra
  maven_fetch cassandra "$SERVICES_HOME/maven/cassandra-pom.xml" "$CASSANDRA_LIB" -Dcassandra.version="$CASSANDRA_VERSION"
}

cassandra_running() { live_pid "$CASSANDRA_PIDFILE" >/dev/null; }

cassandra_healthy() {
  cassandra_running && port_open "$SERVICES_HOST" "$CASSANDRA_PORT" &&
    { [ ! -x "$CASSANDRA_TOOL" ] || cassandra_tool validate-health >/dev/null 2>&1; }
}

# One node's cassandra.yaml and logback.xml, for the node `cassandra_node` chose, into
# DIR (default: the node's conf directory).
cassandra_write_config() {
  local conf=${1:-$NODE_HOME/conf}
  mkdir -p "$conf"
  # Small caches and memtables: a 1 GiB heap on a test machine shared with three other servers.
  cat >"$conf/cassandra.yaml" <<EOF
# Written by vismig tests/services/up.sh on every start; edit svc/cassandra.sh instead.
cluster_name: $NODE_CLUSTER
num_tokens: 1
initial_token: 0
partitioner: org.apache.cassandra.dht.Murmur3Partitioner
endpoint_snitch: SimpleSnitch
seed_provider:
  - class_name: org.apache.cassandra.locator.SimpleSeedProvider
    parameters:
      - seeds: "$SERVICES_HOST:$NODE_STORAGE_PORT"
listen_address: $SERVICES_HOST
rpc_address: $SERVICES_HOST
storage_port: $NODE_STORAGE_PORT
start_native_transport: true
native_transport_port: $NODE_PORT
$NODE_SECURITY
data_file_directories:
  - $NODE_HOME/data
commitlog_directory: $NODE_HOME/commitlog
saved_caches_directory: $NODE_HOME/saved_caches
hints_directory: $NODE_HOME/hints
cdc_raw_directory: $NODE_HOME/cdc_raw
commitlog_sync: periodic
commitlog_sync_period: 10000ms
storage_compatibility_mode: NONE
memtable_heap_space: 128MiB
memtable_offheap_space: 128MiB
key_cache_size: 16MiB
file_cache_size: 64MiB
concurrent_reads: 16
concurrent_writes: 16
concurrent_compactors: 1
compaction_throughput: 64MiB/s
# Tests drop keyspaces and tables often; snapshots of them would only fill the disk.
auto_snapshot: false
EOF
  cat >"$conf/logback.xml" <<EOF
<configuration scan="false">
  <appender name="FILE" class="ch.qos.logback.core.FileAppender">
    <file>$NODE_LOG</file>
    <encoder><pattern>%-5level [%thread] %date{ISO8601} %F:%L - %msg%n</pattern></encoder>
  </appender>
  <root level="INFO"><appender-ref ref="FILE"/></root>
</configuration>
EOF
}

# Chooses the node the functions below work on: `plain` (the one every test uses) or
# `tls` (the secured one): its directory, ports, files and security settings.
cassandra_node() {
  case $1 in
    plain)
      NODE_NAME=cassandra NODE_HOME=$CASSANDRA_HOME NODE_PIDFILE=$CASSANDRA_PIDFILE NODE_LOG=$CASSANDRA_LOG
      NODE_STDOUT=$CASSANDRA_STDOUT NODE_PORT=$CASSANDRA_PORT NODE_STORAGE_PORT=$CASSANDRA_STORAGE_PORT
      NODE_CLUSTER=vismig-test NODE_HEAP=1G
      NODE_SECURITY="authenticator: AllowAllAuthenticator
authorizer: AllowAllAuthorizer" ;;
    tls)
      NODE_NAME=cassandra-tls NODE_HOME=$CASSANDRA_TLS_HOME NODE_PIDFILE=$CASSANDRA_TLS_PIDFILE NODE_LOG=$CASSANDRA_TLS_LOG
      NODE_STDOUT=$CASSANDRA_TLS_STDOUT NODE_PORT=$CASSANDRA_TLS_PORT NODE_STORAGE_PORT=$CASSANDRA_TLS_STORAGE_PORT
      NODE_CLUSTER=vismig-test-tls NODE_HEAP=768m
      # PEM key and certificate in one file, as PEMBasedSslContextFactory reads them; the
      # truststore (the test CA) checks the client certificate every client must show.
      NODE_SECURITY="authenticator: PasswordAuthenticator
authorizer: CassandraAuthorizer
role_manager: CassandraRoleManager
client_encryption_options:
  enabled: true
  optional: false
  require_client_auth: true
  ssl_context_factory:
    class_name: org.apache.cassandra.security.PEMBasedSslContextFactory
  keystore: $CASSANDRA_TLS_HOME/conf/server-keystore.pem
  truststore: $CASSANDRA_TLS_HOME/conf/truststore.pem" ;;
  esac
}

cassandra_start() {
  cassandra_node tls
  cassandra_converge
  cassandra_launch
  cassandra_node plain
  if cassandra_healthy; then
    set_state cassandra reused
    return 0
  fi
  cassandra_launch
  set_state cassandra started
}

# A running node whose cassandra.yaml is not the one this script writes (an older
# set-up's) is stopped, by its pid, so that cassandra_launch starts it with the new one.
cassandra_converge() {
  live_pid "$NODE_PIDFILE" >/dev/null || return 0
  local tmp
  tmp=$(mktemp -d)
  cassandra_write_config "$tmp"
  if ! cmp -s "$tmp/cassandra.yaml" "$NODE_HOME/conf/cassandra.yaml"; then
    say "$NODE_NAME: cassandra.yaml changed, restarting that node"
    stop_pidfile "$NODE_NAME" "$NODE_PIDFILE" 60
  fi
  rm -rf "$tmp"
}

# Starts the chosen node unless it already runs and answers.
cassandra_launch() {
  if live_pid "$NODE_PIDFILE" >/dev/null && port_open "$SERVICES_HOST" "$NODE_PORT"; then
    return 0
  fi
  if live_pid "$NODE_PIDFILE" >/dev/null; then
    fail "$NODE_NAME" "a Cassandra process from an earlier run is alive but not answering on $SERVICES_HOST:$NODE_PORT" "$NODE_LOG"
  fi
  port_open "$SERVICES_HOST" "$NODE_PORT" &&
    fail "$NODE_NAME" "port $SERVICES_HOST:$NODE_PORT is taken by a process up.sh did not start"
  port_open "$SERVICES_HOST" "$NODE_STORAGE_PORT" &&
    fail "$NODE_NAME" "port $SERVICES_HOST:$NODE_STORAGE_PORT (storage) is taken by a process up.sh did not start"
  mkdir -p "$NODE_HOME"
  cassandra_write_config
  if [ "$NODE_NAME" = cassandra-tls ]; then
    cat "$TLS_DIR/server.key" "$TLS_DIR/server.crt" >"$NODE_HOME/conf/server-keystore.pem"
    cp "$TLS_DIR/ca.crt" "$NODE_HOME/conf/truststore.pem"
  fi
  local java
  java=$(java_bin)
  local opts=(
    # heap: at most 1 GiB (memory budget of the test machine). Cassandra mlockall()s the
    # memory it has at startup when run as root, so a full -Xms would be resident at once.
    -Xms256m -Xmx"$NODE_HEAP" -Xss256k
    # GC settings of Cassandra's conf/jvm17-server.options
    -XX:+UseG1GC -XX:+ParallelRefProcEnabled -XX:MaxTenuringThreshold=1 -XX:G1HeapRegionSize=16m
    -XX:G1RSetUpdatingPauseTimePercent=5 -XX:MaxGCPauseMillis=300 -XX:InitiatingHeapOccupancyPercent=70
    -XX:+HeapDumpOnOutOfMemoryError -XX:HeapDumpPath="$NODE_HOME" -XX:+CrashOnOutOfMemoryError
    -XX:+PerfDisableSharedMem -Djava.net.preferIPv4Stack=true
    # JPMS: the --add-exports/--add-opens of conf/jvm17-server.options (Cassandra 5 on Java 17)
    -Djdk.attach.allowAttachSelf=true
    --add-exports java.base/jdk.internal.misc=ALL-UNNAMED
    --add-exports java.management.rmi/com.sun.jmx.remote.internal.rmi=ALL-UNNAMED
    --add-exports java.rmi/sun.rmi.registry=ALL-UNNAMED
    --add-exports java.rmi/sun.rmi.server=ALL-UNNAMED
    --add-exports java.sql/java.sql=ALL-UNNAMED
    --add-exports java.base/java.lang.ref=ALL-UNNAMED
    --add-exports jdk.unsupported/sun.misc=ALL-UNNAMED
    --add-exports jdk.compiler/com.sun.tools.javac.file=ALL-UNNAMED
    --add-exports jdk.attach/sun.tools.attach=ALL-UNNAMED
    --add-opens java.base/java.lang.module=ALL-UNNAMED
    --add-opens java.base/jdk.internal.loader=ALL-UNNAMED
    --add-opens java.base/jdk.internal.ref=ALL-UNNAMED
    --add-opens java.base/jdk.internal.reflect=ALL-UNNAMED
    --add-opens java.base/jdk.internal.math=ALL-UNNAMED
    --add-opens java.base/jdk.internal.module=ALL-UNNAMED
    --add-opens java.base/jdk.internal.util.jar=ALL-UNNAMED
    --add-opens jdk.management/com.sun.management.internal=ALL-UNNAMED
    --add-opens java.base/sun.nio.ch=ALL-UNNAMED
    --add-opens java.base/java.io=ALL-UNNAMED
    --add-opens java.base/java.lang.reflect=ALL-UNNAMED
    --add-opens jdk.compiler/com.sun.tools.javac=ALL-UNNAMED
    --add-opens java.base/java.lang=ALL-UNNAMED
    --add-opens java.base/java.util=ALL-UNNAMED
    # Netty options of jvm17-server.options
    -Dio.netty.tryReflectionSetAccessible=true
    -Dio.netty.allocator.useCacheForAllThreads=true -Dio.netty.allocator.maxOrder=11
    # jamm measures memtable sizes (cassandra-env.sh adds this agent)
    -javaagent:"$CASSANDRA_LIB/jamm-0.4.0.jar"
    # what bin/cassandra sets
    -Dcassandra.config="file://$NODE_HOME/conf/cassandra.yaml"
    -Dlogback.configurationFile="$NODE_HOME/conf/logback.xml"
    -Dcassandra.logdir="$LOG_DIR" -Dcassandra.storagedir="$NODE_HOME"
    -Dcassandra-foreground=yes -Dcassandra.triggers_dir="$NODE_HOME/conf/triggers"
    # a lone test node: no need to wait for gossip to settle with peers it does not have
    -Dcassandra.skip_wait_for_gossip_to_settle=0 -Dcassandra.ring_delay_ms=1000
    -Dcassandra.superuser_setup_delay_ms=0
    -cp "$NODE_HOME/conf:$CASSANDRA_LIB/*"
    org.apache.cassandra.service.CassandraDaemon
  )
  [ -f "$CASSANDRA_LIB/jamm-0.4.0.jar" ] || fail cassandra "jamm-0.4.0.jar is not among the resolved jars; update the -javaagent in svc/cassandra.sh" "$CASSANDRA_LIB"
  mkdir -p "$NODE_HOME/conf/triggers"
  # CassandraDaemon does not write the pid file itself (bin/cassandra does, from $!).
  # setsid execs java in place here (a background job of a non-interactive shell is not
  # a process-group leader), so $! is the JVM; live_pid verifies that.
  setsid "$java" "${opts[@]}" </dev/null >>"$NODE_STDOUT" 2>&1 &
  echo $! >"$NODE_PIDFILE"
}

cassandra_wait() {
  # First boot on 2 cores (while Go builds the schema tools) takes about a minute.
  wait_for 300 cassandra_cql_ready ||
    fail cassandra "CQL port $SERVICES_HOST:$CASSANDRA_PORT not open within 300s" "$CASSANDRA_LOG"
  wait_for 300 cassandra_tls_cql_ready ||
    fail cassandra "the secured node's CQL port $SERVICES_HOST:$CASSANDRA_TLS_PORT not open within 300s" "$CASSANDRA_TLS_LOG"
}

cassandra_tls_cql_ready() {
  live_pid "$CASSANDRA_TLS_PIDFILE" >/dev/null && port_open "$SERVICES_HOST" "$CASSANDRA_TLS_PORT"
}

# temporal-cassandra-tool on the secured node: the superuser over TLS with the test
# client certificate, the CA checked and the host name verified (the tool's default once
# --tls is on).
cassandra_tls_tool() {
  "$CASSANDRA_TOOL" --ep "$SERVICES_HOST" -p "$CASSANDRA_TLS_PORT" -u "$CASSANDRA_SUPERUSER" \
    --pw "$CASSANDRA_SUPERUSER_PASSWORD" --tls --tls-ca-file "$TLS_DIR/ca.crt" \
    --tls-cert-file "$TLS_DIR/client.crt" --tls-key-file "$TLS_DIR/client.key" "$@"
}

# CQL statements on the secured node as the superuser with PASSWORD (CassandraCql.java).
cassandra_tls_cql() {
  local password=$1
  shift
  "$(java_bin)" -cp "$CASSANDRA_LIB/*" "$SERVICES_HOME/cassandra/CassandraCql.java" \
    "$SERVICES_HOST" "$CASSANDRA_TLS_PORT" "$TLS_DIR/ca.crt" "$TLS_DIR/client.crt" "$TLS_DIR/client.key" \
    "$CASSANDRA_SUPERUSER" "$password" "$@"
}

# The superuser has CASSANDRA_SUPERUSER_PASSWORD, not Cassandra's default: a node still on
# the default (first boot) has it changed.
cassandra_tls_superuser() {
  cassandra_tls_cql "$CASSANDRA_SUPERUSER_PASSWORD" "SELECT release_version FROM system.local" ||
    cassandra_tls_cql "$CASSANDRA_SUPERUSER_DEFAULT_PASSWORD" \
      "ALTER ROLE $CASSANDRA_SUPERUSER WITH PASSWORD = '$CASSANDRA_SUPERUSER_PASSWORD'"
}

# The secured node's reader: TLS_USER, allowed to log in and to SELECT, nothing else
# (Cassandra is a source only). Created once per data directory (the marker).
cassandra_tls_roles() {
  local marker="$CASSANDRA_TLS_HOME/roles-created" log="$LOG_DIR/schema-cassandra-tls.log"
  wait_for 120 cassandra_tls_superuser ||
    fail cassandra "could not log in to the secured node as $CASSANDRA_SUPERUSER (nor change its default password) for 120s" "$CASSANDRA_TLS_LOG"
  wait_for 120 cassandra_tls_tool validate-health ||
    fail cassandra "temporal-cassandra-tool validate-health on the secured node failed for 120s" "$CASSANDRA_TLS_LOG"
  [ -f "$marker" ] && return 0
  cassandra_tls_cql "$CASSANDRA_SUPERUSER_PASSWORD" \
    "CREATE ROLE IF NOT EXISTS $TLS_USER WITH PASSWORD = '$TLS_PASSWORD' AND LOGIN = true" \
    "GRANT SELECT ON ALL KEYSPACES TO $TLS_USER" >>"$log" 2>&1 ||
    fail cassandra "creating role $TLS_USER on the secured node failed" "$log"
  touch "$marker"
}

cassandra_cql_ready() {
  cassandra_running || return 1
  port_open "$SERVICES_HOST" "$CASSANDRA_PORT"
}

cassandra_version() {
  local v
  v=$(grep -m1 -o 'Cassandra version: [0-9.]*' "$CASSANDRA_LOG" 2>/dev/null | awk '{print $3}')
  printf 'Apache Cassandra %s' "${v:-$CASSANDRA_VERSION}"
}

cassandra_tool() {
  "$CASSANDRA_TOOL" --ep "$SERVICES_HOST" -p "$CASSANDRA_PORT" "$@"
}

# Applies Temporal's standard visibility schema with temporal-cassandra-tool, once per
# data directory (the marker file); later calls only run update-schema, which applies
# nothing when the schema is current.
cassandra_schema() {
  local log="$LOG_DIR/schema-cassandra-$CASSANDRA_KEYSPACE.log" dir
  wait_tools "$TEMPORAL_STANDARD_VERSION"
  dir="$(temporal_module_dir "$TEMPORAL_STANDARD_VERSION")/schema/cassandra/visibility/versioned"
  wait_for 120 cassandra_tool validate-health ||
    fail cassandra "temporal-cassandra-tool validate-health failed for 120s" "$CASSANDRA_LOG"
  if [ -f "$CASSANDRA_SCHEMA_MARKER" ]; then
    cassandra_tool -k "$CASSANDRA_KEYSPACE" update-schema -d "$dir" >>"$log" 2>&1 ||
      fail cassandra "update-schema of keyspace $CASSANDRA_KEYSPACE failed" "$log"
    cassandra_tls_roles
    return 0
  fi
  : >"$log"
  {
    cassandra_tool drop-keyspace -k "$CASSANDRA_KEYSPACE" -f &&
      cassandra_tool create-keyspace -k "$CASSANDRA_KEYSPACE" --rf 1 &&
      cassandra_tool -k "$CASSANDRA_KEYSPACE" setup-schema -v 0.0 &&
      cassandra_tool -k "$CASSANDRA_KEYSPACE" update-schema -d "$dir"
  } >>"$log" 2>&1 || fail cassandra "temporal-cassandra-tool could not create keyspace $CASSANDRA_KEYSPACE" "$log"
  touch "$CASSANDRA_SCHEMA_MARKER"
  cassandra_tls_roles
}

cassandra_stop() {
  # SIGTERM runs Cassandra's shutdown hook (drains and flushes memtables).
  stop_pidfile cassandra "$CASSANDRA_PIDFILE" 60
  stop_pidfile cassandra-tls "$CASSANDRA_TLS_PIDFILE" 60
}

cassandra_rss_pid() { live_pid "$CASSANDRA_PIDFILE"; }
cassandra_address() { echo "$SERVICES_HOST:$CASSANDRA_PORT"; }
