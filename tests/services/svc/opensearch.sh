# shellcheck shell=bash
# shellcheck disable=SC2034 # variables are used by the scripts that source this file
# OpenSearch 2.19, single node, security off: the server jar and its module jars from
# Maven Central, booted by our launcher opensearch/VismigOpenSearch.java (compiled into
# the cache) with the modules as classpath plugins. Then Temporal's cluster settings and
# index template are applied with curl, as Temporal's Makefile did before v1.30.
# Sourced by up.sh and down.sh after lib.sh (and svc/cassandra.sh for maven_fetch/java).

OPENSEARCH_CACHE="$VISMIG_SERVICES_CACHE/opensearch-$OPENSEARCH_VERSION"
OPENSEARCH_LIB="$OPENSEARCH_CACHE/lib"
OPENSEARCH_LAUNCHER_CLASSES="$OPENSEARCH_CACHE/launcher"
OPENSEARCH_HOME="$VISMIG_SERVICES_DIR/opensearch"
OPENSEARCH_PIDFILE="$RUN_DIR/opensearch.pid"
OPENSEARCH_LOG="$LOG_DIR/opensearch.log"
OPENSEARCH_STDOUT="$LOG_DIR/opensearch.stdout.log"
OPENSEARCH_URL="http://$SERVICES_HOST:$OPENSEARCH_PORT"
OPENSEARCH_INDICES="temporal_visibility_v1 temporal_visibility_v1_new"
# The modules, as the plugin classes the launcher loads:
#   transport-netty4 (HTTP and transport), reindex (_reindex, _update_by_query,
#   _delete_by_query), mapper-extras (scaled_float, used by Temporal's template),
#   analysis-common (common analyzers), lang-painless (scripts).
OPENSEARCH_PLUGINS=(
  org.opensearch.transport.Netty4Plugin
  org.opensearch.index.reindex.ReindexPlugin
  org.opensearch.index.mapper.MapperExtrasPlugin
  org.opensearch.analysis.common.CommonAnalysisPlugin
  org.opensearch.painless.PainlessPlugin
)

opensearch_prepare() {
  ensure_java opensearch
  command -v curl >/dev/null || ensure_debian_packages curl
  maven_fetch opensearch "$SERVICES_HOME/maven/opensearch-pom.xml" "$OPENSEARCH_LIB" -Dopensearch.version="$OPENSEARCH_VERSION"
  # Compile the launcher when it is missing or its source changed.
  local src="$SERVICES_HOME/opensearch/VismigOpenSearch.java" sum log="$LOG_DIR/opensearch-launcher-javac.log"
  sum=$(sha256sum "$src" | cut -d' ' -f1)
  if [ "$(cat "$OPENSEARCH_LAUNCHER_CLASSES/.source-sha256" 2>/dev/null)" != "$sum" ]; then
    rm -rf "$OPENSEARCH_LAUNCHER_CLASSES"
    mkdir -p "$OPENSEARCH_LAUNCHER_CLASSES"
    javac -nowarn -d "$OPENSEARCH_LAUNCHER_CLASSES" -cp "$OPENSEARCH_LIB/*" "$src" >"$log" 2>&1 ||
      fail opensearch "compiling the launcher VismigOpenSearch.java failed" "$log"
    echo "$sum" >"$OPENSEARCH_LAUNCHER_CLASSES/.source-sha256"
  fi
}

opensearch_running() { live_pid "$OPENSEARCH_PIDFILE" >/dev/null; }

opensearch_healthy() {
  opensearch_running &&
    curl -fsS -m 5 "$OPENSEARCH_URL/_cluster/health?wait_for_status=yellow&timeout=1s" >/dev/null 2>&1
}

opensearch_write_config() {
  mkdir -p "$OPENSEARCH_HOME/config" "$OPENSEARCH_HOME/data" "$OPENSEARCH_HOME/modules" "$OPENSEARCH_HOME/plugins"
  cat >"$OPENSEARCH_HOME/config/opensearch.yml" <<EOF
# Written by vismig tests/services/up.sh on every start; edit svc/opensearch.sh instead.
cluster.name: vismig-test
node.name: vismig-opensearch
path.data: $OPENSEARCH_HOME/data
path.logs: $LOG_DIR
network.host: $SERVICES_HOST
http.port: $OPENSEARCH_PORT
transport.port: $OPENSEARCH_TRANSPORT_PORT
discovery.type: single-node
# The test machine's disk may be fuller than a production node's watermarks allow.
cluster.routing.allocation.disk.threshold_enabled: false
EOF
  cat >"$OPENSEARCH_HOME/config/log4j2.properties" <<'EOF'
status = error
appender.file.type = File
appender.file.name = file
appender.file.fileName = ${sys:opensearch.logs.base_path}${sys:file.separator}opensearch.log
appender.file.layout.type = PatternLayout
appender.file.layout.pattern = [%d{ISO8601}][%-5p][%-25c{1.}] %m%n
rootLogger.level = info
rootLogger.appenderRef.file.ref = file
EOF
}

opensearch_start() {
  if opensearch_healthy; then
    set_state opensearch reused
    return 0
  fi
  if opensearch_running; then
    fail opensearch "an OpenSearch process from an earlier run is alive but not answering on $OPENSEARCH_URL" "$OPENSEARCH_LOG"
  fi
  port_open "$SERVICES_HOST" "$OPENSEARCH_PORT" &&
    fail opensearch "port $SERVICES_HOST:$OPENSEARCH_PORT is taken by a process up.sh did not start"
  port_open "$SERVICES_HOST" "$OPENSEARCH_TRANSPORT_PORT" &&
    fail opensearch "port $SERVICES_HOST:$OPENSEARCH_TRANSPORT_PORT (transport) is taken by a process up.sh did not start"
  opensearch_write_config
  local java
  java=$(java_bin)
  # shellcheck disable=SC2054 # -Djava.locale.providers=SPI,COMPAT is one argument
  local opts=(
    # heap: at most 1 GiB (memory budget of the test machine)
    -Xms512m -Xmx1g
    # from the distribution's config/jvm.options
    -XX:+UseG1GC -XX:G1ReservePercent=25 -XX:InitiatingHeapOccupancyPercent=30
    -Djava.io.tmpdir="$OPENSEARCH_HOME/tmp" -XX:+HeapDumpOnOutOfMemoryError -XX:HeapDumpPath="$OPENSEARCH_HOME"
    -Dfile.encoding=UTF-8 -Djava.locale.providers=SPI,COMPAT -Djava.awt.headless=true
    -Dio.netty.noUnsafe=true -Dio.netty.noKeySetOptimization=true -Dio.netty.recycler.maxCapacityPerThread=0
    -Dio.netty.allocator.numDirectArenas=0
    -Dlog4j.shutdownHookEnabled=false -Dlog4j2.disable.jmx=true -Dlog4j2.formatMsgNoLookups=true
    -Dopensearch.networkaddress.cache.ttl=60
    -Dvismig.pidfile="$OPENSEARCH_PIDFILE"
    -cp "$OPENSEARCH_LIB/*:$OPENSEARCH_LAUNCHER_CLASSES"
    vismig.services.VismigOpenSearch "$OPENSEARCH_HOME" "${OPENSEARCH_PLUGINS[@]}"
  )
  mkdir -p "$OPENSEARCH_HOME/tmp"
  rm -f "$OPENSEARCH_PIDFILE"
  setsid "$java" "${opts[@]}" </dev/null >>"$OPENSEARCH_STDOUT" 2>&1 &
  set_state opensearch started
}

opensearch_wait() {
  wait_for 240 opensearch_healthy ||
    fail opensearch "cluster not yellow on $OPENSEARCH_URL within 240s" "$OPENSEARCH_LOG"
}

opensearch_version() {
  printf 'OpenSearch %s' "$(curl -fsS -m 5 "$OPENSEARCH_URL/" 2>/dev/null | sed -n 's/.*"number" *: *"\([^"]*\)".*/\1/p')"
}

os_put() {
  # PUT a JSON file or body; fails on any HTTP error, printing OpenSearch's answer.
  local path=$1 body=$2
  curl -sS -m 30 -f -X PUT "$OPENSEARCH_URL$path" -H 'Content-Type: application/json' --data-binary "$body"
}

opensearch_schema() {
  local log="$LOG_DIR/schema-opensearch.log" dir vmax index
  dir="$(temporal_module_dir "$TEMPORAL_ADVANCED_VERSION")/schema/elasticsearch/visibility"
  # The top-level index_template_v7.json is a symlink that module zips leave out; the
  # highest versioned/vN/ holds the current template.
  vmax=$(find "$dir/versioned" -mindepth 1 -maxdepth 1 -type d -name 'v[0-9]*' -printf '%f\n' | sed 's/^v//' | sort -n | tail -n1)
  [ -f "$dir/versioned/v$vmax/index_template_v7.json" ] ||
    fail opensearch "no index_template_v7.json under $dir/versioned"
  : >"$log"
  {
    os_put /_cluster/settings "@$dir/cluster_settings_v7.json" && echo &&
      os_put /_template/temporal_visibility_v1_template "@$dir/versioned/v$vmax/index_template_v7.json" && echo
  } >>"$log" 2>&1 || fail opensearch "applying Temporal's cluster settings or index template v$vmax failed" "$log"
  for index in $OPENSEARCH_INDICES; do
    if ! curl -fsS -m 10 -o /dev/null -I "$OPENSEARCH_URL/$index" 2>/dev/null; then
      os_put "/$index" '{}' >>"$log" 2>&1 || fail opensearch "creating index $index failed" "$log"
      echo >>"$log"
    fi
  done
  curl -fsS -m 60 "$OPENSEARCH_URL/_cluster/health?wait_for_status=yellow&timeout=50s" >>"$log" 2>&1 ||
    fail opensearch "indices did not become yellow" "$log"
  OPENSEARCH_TEMPLATE_VERSION="v$vmax"
}

opensearch_stop() {
  stop_pidfile opensearch "$OPENSEARCH_PIDFILE" 60
}

opensearch_rss_pid() { live_pid "$OPENSEARCH_PIDFILE"; }
opensearch_address() { echo "$SERVICES_HOST:$OPENSEARCH_PORT"; }
