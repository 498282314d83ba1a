# shellcheck shell=bash
# shellcheck disable=SC2034 # SEARCH_JVM_OPTS is used by the scripts that source this file
# Shared by svc/opensearch.sh and svc/elasticsearch.sh: both run a search node from Maven
# Central jars with a small launcher of ours, and both get Temporal's cluster settings,
# index template and indices. Sourced after lib.sh and svc/cassandra.sh (maven_fetch,
# ensure_java).

# Resolves the jars and compiles the launcher when it is missing or its source changed.
#   search_prepare SERVICE POM LIB_DIR LAUNCHER_SOURCE CLASSES_DIR MAVEN_ARGS...
search_prepare() {
  local service=$1 pom=$2 lib=$3 src=$4 classes=$5
  shift 5
  ensure_java "$service"
  command -v curl >/dev/null || ensure_debian_packages curl
  maven_fetch "$service" "$pom" "$lib" "$@"
  local sum log="$LOG_DIR/$service-launcher-javac.log"
  sum=$(sha256sum "$src" | cut -d' ' -f1)
  if [ "$(cat "$classes/.source-sha256" 2>/dev/null)" != "$sum" ]; then
    rm -rf "$classes"
    mkdir -p "$classes"
    javac -nowarn -d "$classes" -cp "$lib/*" "$src" >"$log" 2>&1 ||
      fail "$service" "compiling the launcher $(basename "$src") failed" "$log"
    echo "$sum" >"$classes/.source-sha256"
  fi
}

# log4j2 configuration: everything into LOG_DIR/<cluster log name>.log (path.logs is LOG_DIR).
search_write_log4j() {
  local home=$1 name=$2
  cat >"$home/config/log4j2.properties" <<EOF
status = error
appender.file.type = File
appender.file.name = file
appender.file.fileName = $LOG_DIR/$name.log
appender.file.layout.type = PatternLayout
appender.file.layout.pattern = [%d{ISO8601}][%-5p][%-25c{1.}] %m%n
rootLogger.level = info
rootLogger.appenderRef.file.ref = file
EOF
}

# JVM flags both nodes share: heap at most 1 GiB, and the flags of the distributions'
# config/jvm.options that matter outside their launcher.
search_jvm_opts() {
  local home=$1
  # shellcheck disable=SC2054 # -Djava.locale.providers=SPI,COMPAT is one argument
  SEARCH_JVM_OPTS=(
    -Xms512m -Xmx1g
    -XX:+UseG1GC -XX:G1ReservePercent=25 -XX:InitiatingHeapOccupancyPercent=30
    -Djava.io.tmpdir="$home/tmp" -XX:+HeapDumpOnOutOfMemoryError -XX:HeapDumpPath="$home"
    -Dfile.encoding=UTF-8 -Djava.locale.providers=SPI,COMPAT -Djava.awt.headless=true
    -Dio.netty.noUnsafe=true -Dio.netty.noKeySetOptimization=true -Dio.netty.recycler.maxCapacityPerThread=0
    -Dio.netty.allocator.numDirectArenas=0
    -Dlog4j.shutdownHookEnabled=false -Dlog4j2.disable.jmx=true -Dlog4j2.formatMsgNoLookups=true
  )
  mkdir -p "$home/tmp"
}

search_healthy_url() {
  curl -fsS -m 5 "$1/_cluster/health?wait_for_status=yellow&timeout=1s" >/dev/null 2>&1
}

search_version_number() {
  curl -fsS -m 5 "$1/" 2>/dev/null | sed -n 's/.*"number" *: *"\([^"]*\)".*/\1/p'
}

# curl's extra arguments for the node being set up (the secured node's CA and login).
SEARCH_CURL=()

# PUT a JSON body (or @file); fails on any HTTP error, printing the server's answer.
search_put() {
  local url=$1 body=$2
  curl "${SEARCH_CURL[@]}" -sS -m 30 -f -X PUT "$url" -H 'Content-Type: application/json' --data-binary "$body"
}

# Applies Temporal's cluster settings and index template (the highest versioned/vN, as
# the top-level index_template_v7.json is a symlink that module zips leave out), then
# creates the indices that do not exist yet (an existing index keeps its documents).
#   search_apply_temporal SERVICE URL INDEX...
search_apply_temporal() {
  local service=$1 url=$2 log="$LOG_DIR/schema-$1.log" dir vmax index
  shift 2
  dir="$(temporal_module_dir "$TEMPORAL_ADVANCED_VERSION")/schema/elasticsearch/visibility"
  vmax=$(find "$dir/versioned" -mindepth 1 -maxdepth 1 -type d -name 'v[0-9]*' -printf '%f\n' | sed 's/^v//' | sort -n | tail -n1)
  [ -f "$dir/versioned/v$vmax/index_template_v7.json" ] ||
    fail "$service" "no index_template_v7.json under $dir/versioned"
  : >"$log"
  {
    search_put "$url/_cluster/settings" "@$dir/cluster_settings_v7.json" && echo &&
      search_put "$url/_template/temporal_visibility_v1_template" "@$dir/versioned/v$vmax/index_template_v7.json" && echo
  } >>"$log" 2>&1 || fail "$service" "applying Temporal's cluster settings or index template v$vmax failed" "$log"
  for index in "$@"; do
    if ! curl "${SEARCH_CURL[@]}" -fsS -m 10 -o /dev/null -I "$url/$index" 2>/dev/null; then
      search_put "$url/$index" '{}' >>"$log" 2>&1 || fail "$service" "creating index $index failed" "$log"
      echo >>"$log"
    fi
  done
  curl "${SEARCH_CURL[@]}" -fsS -m 60 "$url/_cluster/health?wait_for_status=yellow&timeout=50s" >>"$log" 2>&1 ||
    fail "$service" "indices did not become yellow" "$log"
}
