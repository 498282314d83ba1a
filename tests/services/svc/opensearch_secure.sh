# shellcheck shell=bash
# shellcheck disable=SC2034 # variables are used by the scripts that source this file
# A second OpenSearch 2.19 node with its security plugin, on ports of its own: TLS on HTTP
# and transport with the test CA's server certificate (tls.sh), HTTP basic auth against
# the plugin's internal users, no demo configuration, and the least-privilege role that
# vismig needs (roles below). The plugin's distribution zip from Maven Central (its
# newest 2.19 release, 2.19.4.0) gives the plugin jar and its own dependencies; those the
# server already has are left out, and the rest join the server's jars on the classpath of
# the same launcher as svc/opensearch.sh. Temporal's settings, template and indices are
# applied over HTTPS as the admin user. Sourced by up.sh and down.sh after svc/opensearch.sh.

OPENSEARCH_SECURITY_VERSION="${VISMIG_OPENSEARCH_SECURITY_VERSION:-2.19.4.0}"
OPENSEARCH_SECURE_LIB="$VISMIG_SERVICES_CACHE/opensearch-security-$OPENSEARCH_SECURITY_VERSION/lib"
OPENSEARCH_SECURE_HOME="$VISMIG_SERVICES_DIR/opensearch_secure"
OPENSEARCH_SECURE_PIDFILE="$RUN_DIR/opensearch_secure.pid"
OPENSEARCH_SECURE_LOG="$LOG_DIR/opensearch_secure.log"
OPENSEARCH_SECURE_STDOUT="$LOG_DIR/opensearch_secure.stdout.log"
OPENSEARCH_SECURE_URL="https://$SERVICES_HOST:$OPENSEARCH_SECURE_PORT"
# Index names the roles know: Temporal's two, and the tests' (…_primary / …_secondary).
OPENSEARCH_SECURE_INDICES=(temporal_visibility_v1 temporal_visibility_v1_new)

opensearch_secure_prepare() {
  opensearch_prepare
  [ -f "$OPENSEARCH_SECURE_LIB/.complete" ] && return 0
  local zips="$OPENSEARCH_SECURE_LIB.zip" jar base
  maven_fetch opensearch_secure "$SERVICES_HOME/maven/opensearch-security-pom.xml" "$zips" \
    -Dopensearch.security.version="$OPENSEARCH_SECURITY_VERSION"
  command -v unzip >/dev/null || ensure_debian_packages unzip
  rm -rf "$OPENSEARCH_SECURE_LIB" "$OPENSEARCH_SECURE_LIB.unzipped"
  unzip -q -o "$zips"/opensearch-security-*.zip -d "$OPENSEARCH_SECURE_LIB.unzipped" ||
    fail opensearch_secure "cannot unzip the security plugin in $zips"
  mkdir -p "$OPENSEARCH_SECURE_LIB"
  # One copy of each library on the classpath: the server's (same artifact, another
  # version, e.g. netty or transport-netty4-client 2.19.4) wins.
  for jar in "$OPENSEARCH_SECURE_LIB.unzipped"/*.jar; do
    base=$(basename "$jar" | sed -E 's/-[0-9][^-]*(\.Final)?(-jre)?\.jar$//')
    compgen -G "$OPENSEARCH_LIB/$base-[0-9]*.jar" >/dev/null || cp "$jar" "$OPENSEARCH_SECURE_LIB/"
  done
  rm -rf "$OPENSEARCH_SECURE_LIB.unzipped"
  touch "$OPENSEARCH_SECURE_LIB/.complete"
}

opensearch_secure_curl() {
  curl -sS -m 30 --cacert "$TLS_DIR/ca.crt" -u "$OPENSEARCH_SECURE_ADMIN:$OPENSEARCH_SECURE_ADMIN_PASSWORD" "$@"
}

opensearch_secure_running() { live_pid "$OPENSEARCH_SECURE_PIDFILE" >/dev/null; }
opensearch_secure_healthy() {
  opensearch_secure_running &&
    opensearch_secure_curl -f -o /dev/null "$OPENSEARCH_SECURE_URL/_cluster/health?wait_for_status=yellow&timeout=1s" 2>/dev/null
}

# The bcrypt hash of a password, by the plugin's own tool.
opensearch_secure_hash() {
  "$(java_bin)" -cp "$OPENSEARCH_SECURE_LIB/*:$OPENSEARCH_LIB/*" org.opensearch.security.tools.Hasher -p "$1" | tail -n1
}

# The security plugin's configuration, loaded into its index on the node's first start
# (plugins.security.allow_default_init_securityindex).
opensearch_secure_security_config() {
  local dir=$1
  mkdir -p "$dir"
  cat >"$dir/config.yml" <<'EOC'
_meta: { type: config, config_version: 2 }
config:
  dynamic:
    http: { anonymous_auth_enabled: false }
    authc:
      basic_internal_auth_domain:
        http_enabled: true
        transport_enabled: true
        order: 0
        http_authenticator: { type: basic, challenge: true }
        authentication_backend: { type: intern }
EOC
  cat >"$dir/internal_users.yml" <<EOC
_meta: { type: internalusers, config_version: 2 }
$OPENSEARCH_SECURE_ADMIN: { hash: "$(opensearch_secure_hash "$OPENSEARCH_SECURE_ADMIN_PASSWORD")", reserved: true }
$OPENSEARCH_SECURE_USER: { hash: "$(opensearch_secure_hash "$OPENSEARCH_SECURE_PASSWORD")" }
$OPENSEARCH_SECURE_NOWRITE_USER: { hash: "$(opensearch_secure_hash "$OPENSEARCH_SECURE_NOWRITE_PASSWORD")" }
EOC
  # What vismig needs, found by running vismig (backfill, verify --deep) as a user whose
  # role had nothing and granting each permission its denial named (README,
  # "Elasticsearch/OpenSearch permissions"). Scrolls and the bulk request itself are
  # checked as cluster actions, each bulk's items per index. The primary is only read;
  # the secondary is read (verify) and written (bulk index; delete for verify --repair).
  cat >"$dir/roles.yml" <<'EOC'
_meta: { type: roles, config_version: 2 }
vismig_migrator:
  cluster_permissions: [ "cluster:monitor/main", "indices:data/read/scroll", "indices:data/read/scroll/clear", "indices:data/write/bulk" ]
  index_permissions:
    - index_patterns: [ "temporal_visibility_v1", "*_primary" ]
      allowed_actions: [ "indices:admin/mappings/get", "indices:data/read/search" ]
    - index_patterns: [ "temporal_visibility_v1_new", "*_secondary" ]
      allowed_actions: [ "indices:admin/mappings/get", "indices:data/read/search", "indices:admin/refresh", "indices:admin/refresh[s]", "indices:data/write/bulk[s]", "indices:data/write/index", "indices:data/write/delete" ]
vismig_without_bulk:
  cluster_permissions: [ "cluster:monitor/main", "indices:data/read/scroll", "indices:data/read/scroll/clear", "indices:data/write/bulk" ]
  index_permissions:
    - index_patterns: [ "temporal_visibility_v1", "*_primary", "temporal_visibility_v1_new", "*_secondary" ]
      allowed_actions: [ "indices:admin/mappings/get", "indices:data/read/search", "indices:admin/refresh", "indices:admin/refresh[s]" ]
EOC
  cat >"$dir/roles_mapping.yml" <<EOC
_meta: { type: rolesmapping, config_version: 2 }
all_access: { users: [ "$OPENSEARCH_SECURE_ADMIN" ] }
vismig_migrator: { users: [ "$OPENSEARCH_SECURE_USER" ] }
vismig_without_bulk: { users: [ "$OPENSEARCH_SECURE_NOWRITE_USER" ] }
EOC
  local type
  for type in actiongroups tenants nodesdn allowlist; do
    printf '_meta: { type: %s, config_version: 2 }\n' "$type" >"$dir/$(opensearch_secure_config_file "$type")"
  done
  printf '_meta: { type: audit, config_version: 2 }\nconfig: { enabled: false }\n' >"$dir/audit.yml"
}
opensearch_secure_config_file() {
  case $1 in
    actiongroups) echo action_groups.yml ;;
    nodesdn) echo nodes_dn.yml ;;
    *) echo "$1.yml" ;;
  esac
}

opensearch_secure_write_config() {
  local config="$OPENSEARCH_SECURE_HOME/config" sum
  mkdir -p "$config" "$OPENSEARCH_SECURE_HOME/modules" "$OPENSEARCH_SECURE_HOME/plugins"
  # The plugin reads certificates from its config directory.
  cp "$TLS_DIR/ca.crt" "$TLS_DIR/server.crt" "$TLS_DIR/server.key" "$config/"
  cat >"$config/opensearch.yml" <<EOC
# Written by vismig tests/services/up.sh on every start; edit svc/opensearch_secure.sh instead.
cluster.name: vismig-test-secure
node.name: vismig-opensearch-secure
path.data: $OPENSEARCH_SECURE_HOME/data
path.logs: $LOG_DIR
network.host: $SERVICES_HOST
http.port: $OPENSEARCH_SECURE_PORT
transport.port: $OPENSEARCH_SECURE_TRANSPORT_PORT
discovery.type: single-node
cluster.routing.allocation.disk.threshold_enabled: false
plugins.security.ssl.transport.pemcert_filepath: server.crt
plugins.security.ssl.transport.pemkey_filepath: server.key
plugins.security.ssl.transport.pemtrustedcas_filepath: ca.crt
plugins.security.ssl.transport.enforce_hostname_verification: false
plugins.security.ssl.http.enabled: true
plugins.security.ssl.http.pemcert_filepath: server.crt
plugins.security.ssl.http.pemkey_filepath: server.key
plugins.security.ssl.http.pemtrustedcas_filepath: ca.crt
plugins.security.nodes_dn: [ "CN=localhost,O=vismig tests" ]
plugins.security.allow_default_init_securityindex: true
plugins.security.allow_unsafe_democertificates: false
plugins.security.audit.type: noop
plugins.security.restapi.roles_enabled: [ "all_access" ]
EOC
  search_write_log4j "$OPENSEARCH_SECURE_HOME" opensearch_secure
  # The security configuration is read into the node's security index once, at its first
  # start: when this script's configuration changed, the node starts from empty data.
  sum=$(sed -n '/^opensearch_secure_security_config()/,/^}/p' "${BASH_SOURCE[0]}" | sha256sum | cut -d' ' -f1)
  if [ "$(cat "$OPENSEARCH_SECURE_HOME/.security-config-sha256" 2>/dev/null)" != "$sum" ]; then
    rm -rf "$OPENSEARCH_SECURE_HOME/data" "$config/opensearch-security"
    opensearch_secure_security_config "$config/opensearch-security"
    echo "$sum" >"$OPENSEARCH_SECURE_HOME/.security-config-sha256"
  fi
  mkdir -p "$OPENSEARCH_SECURE_HOME/data"
}

opensearch_secure_start() {
  if opensearch_secure_healthy; then
    set_state opensearch_secure reused
    return 0
  fi
  if opensearch_secure_running; then
    fail opensearch_secure "an OpenSearch process from an earlier run is alive but not answering on $OPENSEARCH_SECURE_URL" "$OPENSEARCH_SECURE_LOG"
  fi
  port_open "$SERVICES_HOST" "$OPENSEARCH_SECURE_PORT" &&
    fail opensearch_secure "port $SERVICES_HOST:$OPENSEARCH_SECURE_PORT is taken by a process up.sh did not start"
  port_open "$SERVICES_HOST" "$OPENSEARCH_SECURE_TRANSPORT_PORT" &&
    fail opensearch_secure "port $SERVICES_HOST:$OPENSEARCH_SECURE_TRANSPORT_PORT (transport) is taken by a process up.sh did not start"
  opensearch_secure_write_config
  search_jvm_opts "$OPENSEARCH_SECURE_HOME"
  rm -f "$OPENSEARCH_SECURE_PIDFILE"
  setsid "$(java_bin)" "${SEARCH_JVM_OPTS[@]}" -Dopensearch.networkaddress.cache.ttl=60 \
    -Dvismig.pidfile="$OPENSEARCH_SECURE_PIDFILE" \
    -cp "$OPENSEARCH_LIB/*:$OPENSEARCH_SECURE_LIB/*:$OPENSEARCH_LAUNCHER_CLASSES" \
    vismig.services.VismigOpenSearch "$OPENSEARCH_SECURE_HOME" "${OPENSEARCH_PLUGINS[@]}" \
    org.opensearch.security.OpenSearchSecurityPlugin \
    </dev/null >>"$OPENSEARCH_SECURE_STDOUT" 2>&1 &
  set_state opensearch_secure started
}

opensearch_secure_wait() {
  wait_for 240 opensearch_secure_healthy ||
    fail opensearch_secure "cluster not yellow on $OPENSEARCH_SECURE_URL (as $OPENSEARCH_SECURE_ADMIN) within 240s" "$OPENSEARCH_SECURE_LOG"
}

opensearch_secure_version() {
  printf 'OpenSearch %s + security %s' "$(opensearch_secure_curl "$OPENSEARCH_SECURE_URL/" 2>/dev/null |
    sed -n 's/.*"number" *: *"\([^"]*\)".*/\1/p')" "$OPENSEARCH_SECURITY_VERSION"
}
opensearch_secure_schema() {
  SEARCH_CURL=(--cacert "$TLS_DIR/ca.crt" -u "$OPENSEARCH_SECURE_ADMIN:$OPENSEARCH_SECURE_ADMIN_PASSWORD")
  search_apply_temporal opensearch_secure "$OPENSEARCH_SECURE_URL" "${OPENSEARCH_SECURE_INDICES[@]}"
  opensearch_secure_temporal_user
  SEARCH_CURL=()
}

# The Temporal server's own user (tests/e2e, scenario `opensearch`): the server writes
# and reads both visibility indices and registers search attributes (mapping updates,
# then waits for the cluster's health), so its role has every index action on Temporal's
# indices and the cluster's monitor and bulk actions. Put through the security plugin's
# REST API on every up.sh, so a node already running converges without a restart (the
# static files above are loaded only into an empty node).
opensearch_secure_temporal_user() {
  local api="$OPENSEARCH_SECURE_URL/_plugins/_security/api" log="$LOG_DIR/schema-opensearch_secure.log"
  {
    search_put "$api/roles/temporal_server" '{
      "cluster_permissions": ["cluster_monitor", "cluster_composite_ops", "indices:data/read/scroll*"],
      "index_permissions": [{"index_patterns": ["temporal_visibility_v1*"], "allowed_actions": ["indices_all"]}]}' && echo &&
      search_put "$api/internalusers/$OPENSEARCH_SECURE_TEMPORAL_USER" "{\"password\": \"$OPENSEARCH_SECURE_TEMPORAL_PASSWORD\"}" && echo &&
      search_put "$api/rolesmapping/temporal_server" "{\"users\": [\"$OPENSEARCH_SECURE_TEMPORAL_USER\"]}" && echo
  } >>"$log" 2>&1 || fail opensearch_secure "creating the Temporal server's user and role through the security REST API failed" "$log"
}
opensearch_secure_stop() { stop_pidfile opensearch_secure "$OPENSEARCH_SECURE_PIDFILE" 60; }
opensearch_secure_rss_pid() { live_pid "$OPENSEARCH_SECURE_PIDFILE"; }
opensearch_secure_address() { echo "$SERVICES_HOST:$OPENSEARCH_SECURE_PORT"; }
