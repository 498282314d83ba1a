# shellcheck shell=bash
# shellcheck disable=SC2034 # variables are used by the scripts that source this file
# OpenSearch 2.19, single node, security off (no security plugin): the server jar and its
# module jars from Maven Central, booted by our launcher opensearch/VismigOpenSearch.java
# (compiled into the cache) with the modules as classpath plugins. Then Temporal's cluster
# settings and index template are applied with curl, as Temporal's Makefile did before
# v1.30. Sourced by up.sh and down.sh after lib.sh and svc/cassandra.sh.
# shellcheck source=tests/services/svc/search.sh
. "$SERVICES_HOME/svc/search.sh"

OPENSEARCH_CACHE="$VISMIG_SERVICES_CACHE/opensearch-$OPENSEARCH_VERSION"
OPENSEARCH_LIB="$OPENSEARCH_CACHE/lib"
OPENSEARCH_LAUNCHER_CLASSES="$OPENSEARCH_CACHE/launcher"
OPENSEARCH_HOME="$VISMIG_SERVICES_DIR/opensearch"
OPENSEARCH_PIDFILE="$RUN_DIR/opensearch.pid"
OPENSEARCH_LOG="$LOG_DIR/opensearch.log"
OPENSEARCH_STDOUT="$LOG_DIR/opensearch.stdout.log"
OPENSEARCH_URL="http://$SERVICES_HOST:$OPENSEARCH_PORT"
OPENSEARCH_INDICES=(temporal_visibility_v1 temporal_visibility_v1_new)
# The modules, as the plugin classes the launcher loads.
OPENSEARCH_PLUGINS=(
  org.opensearch.transport.Netty4Plugin              # transport-netty4: HTTP and transport
  org.opensearch.index.reindex.ReindexPlugin         # reindex: _reindex, _update_by_query, _delete_by_query
  org.opensearch.index.mapper.MapperExtrasPlugin     # mapper-extras: scaled_float (Temporal's template)
  org.opensearch.analysis.common.CommonAnalysisPlugin # analysis-common: common analyzers
  org.opensearch.painless.PainlessPlugin             # lang-painless: scripts
)

opensearch_prepare() {
  search_prepare opensearch "$SERVICES_HOME/maven/opensearch-pom.xml" "$OPENSEARCH_LIB" \
    "$SERVICES_HOME/opensearch/VismigOpenSearch.java" "$OPENSEARCH_LAUNCHER_CLASSES" \
    -Dopensearch.version="$OPENSEARCH_VERSION"
}

opensearch_running() { live_pid "$OPENSEARCH_PIDFILE" >/dev/null; }
opensearch_healthy() { opensearch_running && search_healthy_url "$OPENSEARCH_URL"; }

opensearch_write_config() {
  mkdir -p "$OPENSEARCH_HOME/config" "$OPENSEARCH_HOME/data" "$OPENSEARCH_HOME/modules" "$OPENSEARCH_HOME/plugins"
  cat >"$OPENSEARCH_HOME/config/opensearch.yml" <<EOC
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
EOC
  search_write_log4j "$OPENSEARCH_HOME" opensearch
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
  search_jvm_opts "$OPENSEARCH_HOME"
  rm -f "$OPENSEARCH_PIDFILE"
  # The launcher writes its own pid file.
  setsid "$(java_bin)" "${SEARCH_JVM_OPTS[@]}" -Dopensearch.networkaddress.cache.ttl=60 \
    -Dvismig.pidfile="$OPENSEARCH_PIDFILE" -cp "$OPENSEARCH_LIB/*:$OPENSEARCH_LAUNCHER_CLASSES" \
    vismig.services.VismigOpenSearch "$OPENSEARCH_HOME" "${OPENSEARCH_PLUGINS[@]}" \
    </dev/null >>"$OPENSEARCH_STDOUT" 2>&1 &
  set_state opensearch started
}

opensearch_wait() {
  wait_for 240 opensearch_healthy ||
    fail opensearch "cluster not yellow on $OPENSEARCH_URL within 240s" "$OPENSEARCH_LOG"
}

opensearch_version() { printf 'OpenSearch %s' "$(search_version_number "$OPENSEARCH_URL")"; }
opensearch_schema() { search_apply_temporal opensearch "$OPENSEARCH_URL" "${OPENSEARCH_INDICES[@]}"; }
opensearch_stop() { stop_pidfile opensearch "$OPENSEARCH_PIDFILE" 60; }
opensearch_rss_pid() { live_pid "$OPENSEARCH_PIDFILE"; }
opensearch_address() { echo "$SERVICES_HOST:$OPENSEARCH_PORT"; }
