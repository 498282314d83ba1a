# shellcheck shell=bash
# shellcheck disable=SC2034 # variables are used by the scripts that source this file
# Elasticsearch 7.17, single node, no X-Pack (not on Maven Central): the server jar and
# its module jars (*-client artifacts) from Maven Central, booted by our launcher
# elasticsearch/VismigElasticsearch.java with the modules as classpath plugins. Then
# Temporal's cluster settings and index template, as for OpenSearch. 8.x cannot be run
# this way: it publishes no module jars (see README.md).
# Sourced by up.sh and down.sh after lib.sh and svc/cassandra.sh.
# shellcheck source=tests/services/svc/search.sh
. "$SERVICES_HOME/svc/search.sh"

ELASTICSEARCH_CACHE="$VISMIG_SERVICES_CACHE/elasticsearch-$ELASTICSEARCH_VERSION"
ELASTICSEARCH_LIB="$ELASTICSEARCH_CACHE/lib"
ELASTICSEARCH_LAUNCHER_CLASSES="$ELASTICSEARCH_CACHE/launcher"
ELASTICSEARCH_HOME="$VISMIG_SERVICES_DIR/elasticsearch"
ELASTICSEARCH_PIDFILE="$RUN_DIR/elasticsearch.pid"
ELASTICSEARCH_LOG="$LOG_DIR/elasticsearch.log"
ELASTICSEARCH_STDOUT="$LOG_DIR/elasticsearch.stdout.log"
ELASTICSEARCH_URL="http://$SERVICES_HOST:$ELASTICSEARCH_PORT"
ELASTICSEARCH_INDICES=(temporal_visibility_v1 temporal_visibility_v1_new)
# The modules, as the plugin classes the launcher loads.
ELASTICSEARCH_PLUGINS=(
  org.elasticsearch.transport.Netty4Plugin          # transport-netty4: HTTP and transport
  org.elasticsearch.reindex.ReindexPlugin           # reindex: _reindex, _update_by_query, _delete_by_query
  org.elasticsearch.index.mapper.MapperExtrasPlugin # mapper-extras: scaled_float (Temporal's template)
)

elasticsearch_prepare() {
  search_prepare elasticsearch "$SERVICES_HOME/maven/elasticsearch-pom.xml" "$ELASTICSEARCH_LIB" \
    "$SERVICES_HOME/elasticsearch/VismigElasticsearch.java" "$ELASTICSEARCH_LAUNCHER_CLASSES" \
    -Delasticsearch.version="$ELASTICSEARCH_VERSION"
}

elasticsearch_running() { live_pid "$ELASTICSEARCH_PIDFILE" >/dev/null; }
elasticsearch_healthy() { elasticsearch_running && search_healthy_url "$ELASTICSEARCH_URL"; }

elasticsearch_write_config() {
  mkdir -p "$ELASTICSEARCH_HOME/config" "$ELASTICSEARCH_HOME/data" "$ELASTICSEARCH_HOME/modules" "$ELASTICSEARCH_HOME/plugins"
  cat >"$ELASTICSEARCH_HOME/config/elasticsearch.yml" <<EOC
# Written by vismig tests/services/up.sh on every start; edit svc/elasticsearch.sh instead.
cluster.name: vismig-test
node.name: vismig-elasticsearch
path.data: $ELASTICSEARCH_HOME/data
path.logs: $LOG_DIR
network.host: $SERVICES_HOST
http.port: $ELASTICSEARCH_PORT
transport.port: $ELASTICSEARCH_TRANSPORT_PORT
discovery.type: single-node
# The test machine's disk may be fuller than a production node's watermarks allow.
cluster.routing.allocation.disk.threshold_enabled: false
EOC
  search_write_log4j "$ELASTICSEARCH_HOME" elasticsearch
}

elasticsearch_start() {
  if elasticsearch_healthy; then
    set_state elasticsearch reused
    return 0
  fi
  if elasticsearch_running; then
    fail elasticsearch "an Elasticsearch process from an earlier run is alive but not answering on $ELASTICSEARCH_URL" "$ELASTICSEARCH_LOG"
  fi
  port_open "$SERVICES_HOST" "$ELASTICSEARCH_PORT" &&
    fail elasticsearch "port $SERVICES_HOST:$ELASTICSEARCH_PORT is taken by a process up.sh did not start"
  port_open "$SERVICES_HOST" "$ELASTICSEARCH_TRANSPORT_PORT" &&
    fail elasticsearch "port $SERVICES_HOST:$ELASTICSEARCH_TRANSPORT_PORT (transport) is taken by a process up.sh did not start"
  elasticsearch_write_config
  search_jvm_opts "$ELASTICSEARCH_HOME"
  rm -f "$ELASTICSEARCH_PIDFILE"
  # The launcher writes its own pid file.
  setsid "$(java_bin)" "${SEARCH_JVM_OPTS[@]}" -Des.networkaddress.cache.ttl=60 \
    -Dvismig.pidfile="$ELASTICSEARCH_PIDFILE" -cp "$ELASTICSEARCH_LIB/*:$ELASTICSEARCH_LAUNCHER_CLASSES" \
    vismig.services.VismigElasticsearch "$ELASTICSEARCH_HOME" "${ELASTICSEARCH_PLUGINS[@]}" \
    </dev/null >>"$ELASTICSEARCH_STDOUT" 2>&1 &
  set_state elasticsearch started
}

elasticsearch_wait() {
  wait_for 240 elasticsearch_healthy ||
    fail elasticsearch "cluster not yellow on $ELASTICSEARCH_URL within 240s" "$ELASTICSEARCH_LOG"
}

elasticsearch_version() { printf 'Elasticsearch %s' "$(search_version_number "$ELASTICSEARCH_URL")"; }
elasticsearch_schema() { search_apply_temporal elasticsearch "$ELASTICSEARCH_URL" "${ELASTICSEARCH_INDICES[@]}"; }
elasticsearch_stop() { stop_pidfile elasticsearch "$ELASTICSEARCH_PIDFILE" 60; }
elasticsearch_rss_pid() { live_pid "$ELASTICSEARCH_PIDFILE"; }
elasticsearch_address() { echo "$SERVICES_HOST:$ELASTICSEARCH_PORT"; }
