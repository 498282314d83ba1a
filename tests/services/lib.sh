# shellcheck shell=bash
# shellcheck disable=SC2034 # the variables here are used by the scripts that source this file
# Shared settings and helpers for tests/services/*.sh. Sourced, never run.
#
# Every path that up.sh writes to is derived here, so up.sh, down.sh, env.sh and
# reset-db.sh always agree:
#   VISMIG_SERVICES_CACHE  downloads, built tools, jars (kept across runs)
#   VISMIG_SERVICES_DIR    data, pid files, sockets and logs of the running servers
# Nothing is written inside the repository.

SERVICES_HOME=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)

VISMIG_SERVICES_CACHE="${VISMIG_SERVICES_CACHE:-/var/cache/vismig-services}"
VISMIG_SERVICES_DIR="${VISMIG_SERVICES_DIR:-/tmp/vismig-services}"
LOG_DIR="$VISMIG_SERVICES_DIR/logs"
RUN_DIR="$VISMIG_SERVICES_DIR/run"
# The services up.sh brought up, one line of names; env.sh exports it as VISMIG_TEST_SERVICES.
STATE_FILE="$VISMIG_SERVICES_DIR/services"

ALL_SERVICES="postgres mariadb cassandra opensearch opensearch_secure elasticsearch kube"

# Pinned versions. The Temporal pins are shared with temporal-module.sh.
TEMPORAL_ADVANCED_VERSION="${TEMPORAL_ADVANCED_VERSION:-v1.32.0}"
TEMPORAL_STANDARD_VERSION="${TEMPORAL_STANDARD_VERSION:-v1.23.1}"
export TEMPORAL_ADVANCED_VERSION TEMPORAL_STANDARD_VERSION
CASSANDRA_VERSION="${VISMIG_CASSANDRA_VERSION:-5.0.9}"
OPENSEARCH_VERSION="${VISMIG_OPENSEARCH_VERSION:-2.19.6}"
ELASTICSEARCH_VERSION="${VISMIG_ELASTICSEARCH_VERSION:-7.17.29}"
PG_MAJOR="${VISMIG_PG_MAJOR:-15}"
PG_BIN="/usr/lib/postgresql/$PG_MAJOR/bin"

# Every server binds the loopback address only.
SERVICES_HOST=127.0.0.1
PG_PORT="${VISMIG_PG_PORT:-5432}"
PG_REPLICA_PORT="${VISMIG_PG_REPLICA_PORT:-5433}"
MYSQL_PORT="${VISMIG_MYSQL_PORT:-3306}"
# The secured MariaDB instance (require_secure_transport), beside the plain one.
MYSQL_TLS_PORT="${VISMIG_MYSQL_TLS_PORT:-3307}"
CASSANDRA_PORT="${VISMIG_CASSANDRA_PORT:-9042}"
CASSANDRA_STORAGE_PORT="${VISMIG_CASSANDRA_STORAGE_PORT:-7000}"
# The secured Cassandra node (password authentication, TLS required), beside the plain one.
CASSANDRA_TLS_PORT="${VISMIG_CASSANDRA_TLS_PORT:-9142}"
CASSANDRA_TLS_STORAGE_PORT="${VISMIG_CASSANDRA_TLS_STORAGE_PORT:-7001}"
# Its superuser (made by Cassandra at first boot as cassandra/cassandra; set-up changes
# the password at once, as production does): sets up schemas and roles.
CASSANDRA_SUPERUSER=cassandra
CASSANDRA_SUPERUSER_DEFAULT_PASSWORD=cassandra
CASSANDRA_SUPERUSER_PASSWORD=vismig-cassandra-Su1
OPENSEARCH_PORT="${VISMIG_OPENSEARCH_PORT:-9200}"
OPENSEARCH_TRANSPORT_PORT="${VISMIG_OPENSEARCH_TRANSPORT_PORT:-9300}"
OPENSEARCH_SECURE_PORT="${VISMIG_OPENSEARCH_SECURE_PORT:-9202}"
OPENSEARCH_SECURE_TRANSPORT_PORT="${VISMIG_OPENSEARCH_SECURE_TRANSPORT_PORT:-9302}"
ELASTICSEARCH_PORT="${VISMIG_ELASTICSEARCH_PORT:-9201}"
ELASTICSEARCH_TRANSPORT_PORT="${VISMIG_ELASTICSEARCH_TRANSPORT_PORT:-9301}"
KUBE_PORT="${VISMIG_KUBE_PORT:-6443}"
KUBE_ETCD_PORT="${VISMIG_KUBE_ETCD_PORT:-12379}"
KUBE_ETCD_PEER_PORT="${VISMIG_KUBE_ETCD_PEER_PORT:-12380}"

DB_USER=temporal
DB_PASSWORD=temporal
# The secured OpenSearch's users (svc/opensearch_secure.sh). The admin (all_access) sets
# the node up; vismig has role vismig_migrator (read on the primary indices, read and
# write on the secondary ones); vismig_nowrite has the same without the bulk write;
# temporal (created by the schema step) is the e2e Temporal server's.
OPENSEARCH_SECURE_ADMIN=admin
OPENSEARCH_SECURE_ADMIN_PASSWORD=vismig-admin-Pw1
OPENSEARCH_SECURE_USER=vismig
OPENSEARCH_SECURE_PASSWORD=vismig-Pw1
OPENSEARCH_SECURE_NOWRITE_USER=vismig_nowrite
OPENSEARCH_SECURE_NOWRITE_PASSWORD=vismig-nowrite-Pw1
# The Temporal server's user in the e2e test (role temporal_server: Temporal's indices).
OPENSEARCH_SECURE_TEMPORAL_USER=temporal
OPENSEARCH_SECURE_TEMPORAL_PASSWORD=Vis-e2e-Frontend-9qZk

# The test CA and its certificates (tls.sh); the client certificate's CN is the user that
# the secured servers authenticate by certificate.
TLS_DIR="$VISMIG_SERVICES_DIR/tls"
TLS_CLIENT_CN=vismig_cert
# The password user of the secured servers, allowed over TLS only.
TLS_USER=vismig_tls
TLS_PASSWORD=vismig-tls-secret

# Built schema tools, keyed by Temporal version (see build-tools.sh).
# Kubernetes (kube-apiserver, kubectl) built from k8s.io/kubernetes by build-kube.sh.
KUBE_VERSION="${KUBE_VERSION:-v1.37.2}"
kube_dir() { printf '%s/kube/%s\n' "$VISMIG_SERVICES_CACHE" "$1"; }
tools_dir() { printf '%s/tools/%s\n' "$VISMIG_SERVICES_CACHE" "$1"; }
SQL_TOOL="$(tools_dir "$TEMPORAL_ADVANCED_VERSION")/temporal-sql-tool"
SQL_TOOL_STANDARD="$(tools_dir "$TEMPORAL_STANDARD_VERSION")/temporal-sql-tool"
CASSANDRA_TOOL="$(tools_dir "$TEMPORAL_STANDARD_VERSION")/temporal-cassandra-tool"

# Directory of Temporal's Go module at a version, without network access when it is
# already in the module cache (temporal-module.sh downloads it otherwise).
temporal_module_dir() {
  local version=$1 modcache dir
  modcache=$(go env GOMODCACHE 2>/dev/null || true)
  dir="$modcache/go.temporal.io/server@$version"
  if [ -n "$modcache" ] && [ -f "$dir/go.mod" ]; then
    printf '%s\n' "$dir"
  else
    "$SERVICES_HOME/temporal-module.sh" "$version"
  fi
}

# How each service came up in this run (started or reused), for up.sh's summary.
declare -A SERVICE_STATE=()
set_state() { SERVICE_STATE[$1]=$2; }

# --- output -------------------------------------------------------------------------

say() { printf '%s\n' "$*" >&2; }

# One line naming the service, what failed and the log to read; then exit.
# A cached Go build into $out (build-tools.sh, build-kube.sh). go_build_begin checks
# for the finished cache first, then holds a lock so that two up.sh runs never build
# into the same directory, and sets GO_BUILD_LOG and GO_BUILD_SCRATCH (a fresh scratch
# module dir) and an empty "$out.tmp" for the binaries. Exits 0 printing $out when the
# cache is complete.
go_build_begin() {
  local what=$1 out=$2 kind=$3 name=$4
  if [ -f "$out/.complete" ]; then echo "$out"; exit 0; fi
  command -v go >/dev/null || fail "$what" "go is not installed"
  mkdir -p "$VISMIG_SERVICES_CACHE/$kind" "$LOG_DIR"
  GO_BUILD_LOG="$LOG_DIR/build-$name.log"
  : >"$GO_BUILD_LOG"
  exec 9>"$VISMIG_SERVICES_CACHE/$kind/.lock-$name"
  flock 9
  if [ -f "$out/.complete" ]; then echo "$out"; exit 0; fi
  GO_BUILD_SCRATCH="$VISMIG_SERVICES_CACHE/go-build/$name"
  rm -rf "$GO_BUILD_SCRATCH" "$out.tmp"
  mkdir -p "$GO_BUILD_SCRATCH" "$out.tmp"
}

# One line: what failed and Go's first error line; the rest is in the log.
go_build_failed() {
  local what=$1 first
  first=$(grep -v -E '^go: (downloading|added|upgraded|finding|creating|extracting|to add module requirements)' "$GO_BUILD_LOG" |
    grep -v -E '^#' | grep -m1 -E '.' || true)
  fail "$what" "go build failed: ${first:-see log}" "$GO_BUILD_LOG"
}

# The binaries in "$out.tmp" become the cache, marked complete.
go_build_finish() {
  local out=$1
  rm -rf "$out"
  mv "$out.tmp" "$out"
  touch "$out/.complete"
  echo "$out"
}

fail() {
  local service=$1 what=$2 logfile=${3:-}
  if [ -n "$logfile" ]; then
    printf '%s: %s (log: %s)\n' "$service" "$what" "$logfile" >&2
  else
    printf '%s: %s\n' "$service" "$what" >&2
  fi
  exit 1
}

# --- processes ----------------------------------------------------------------------

# Prints the pid recorded in a pid file if that process is alive and really is ours:
# every server we start has VISMIG_SERVICES_DIR on its command line, which guards
# against a recycled pid or a pid file left behind by a crash.
live_pid() {
  local pidfile=$1 pid
  [ -s "$pidfile" ] || return 1
  pid=$(head -n1 "$pidfile" | tr -dc '0-9')
  [ -n "$pid" ] && [ -r "/proc/$pid/cmdline" ] || return 1
  tr '\0' ' ' <"/proc/$pid/cmdline" | grep -qF -- "$VISMIG_SERVICES_DIR" || return 1
  printf '%s\n' "$pid"
}

# Stops the process in a pid file with SIGTERM, SIGKILL after a grace period.
stop_pidfile() {
  local name=$1 pidfile=$2 grace=${3:-60} pid i
  if ! pid=$(live_pid "$pidfile"); then
    rm -f "$pidfile"
    return 0
  fi
  kill -TERM "$pid" 2>/dev/null || true
  for ((i = 0; i < grace * 5; i++)); do
    [ -d "/proc/$pid" ] || { rm -f "$pidfile"; return 0; }
    sleep 0.2
  done
  say "$name: pid $pid did not stop within ${grace}s, sending SIGKILL"
  kill -KILL "$pid" 2>/dev/null || true
  rm -f "$pidfile"
}

# Is something accepting TCP connections on host:port? (no external tools needed)
port_open() {
  (exec 3<>"/dev/tcp/$1/$2") 2>/dev/null
}

# Polls a command until it succeeds or the timeout (seconds) runs out.
wait_for() {
  local timeout=$1 deadline
  shift
  deadline=$((SECONDS + timeout))
  until "$@" >/dev/null 2>&1; do
    ((SECONDS < deadline)) || return 1
    sleep 0.5
  done
}

# Memory of a process and all its descendants, in KiB: the sum of their proportional set
# sizes (PSS), so pages they share (PostgreSQL's shared buffers) are counted once, unlike
# a sum of RSS.
tree_pss_kib() {
  local pid=$1 total=0 p kib
  for p in $pid $(descendants "$pid"); do
    kib=$(awk '/^Pss:/ {print $2}' "/proc/$p/smaps_rollup" 2>/dev/null || true)
    total=$((total + ${kib:-0}))
  done
  printf '%s\n' "$total"
}
descendants() {
  local c
  # shellcheck disable=SC2013 # the children files hold space-separated pids
  for c in $(cat "/proc/$1/task/"*/children 2>/dev/null); do
    printf '%s\n' "$c"
    descendants "$c"
  done
}

# Makes sure Debian packages are installed. Installing a server package must not start
# Debian's own instance of it (it would take our port), so a policy-rc.d that denies
# service starts is put in place for the install when none exists.
ensure_debian_packages() {
  local missing=() pkg policy=/usr/sbin/policy-rc.d ours=0
  for pkg in "$@"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q 'install ok installed' || missing+=("$pkg")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  say "installing Debian packages: ${missing[*]}"
  if [ ! -e "$policy" ]; then
    printf '#!/bin/sh\n# temporary, from vismig tests/services\nexit 101\n' >"$policy"
    chmod 755 "$policy"
    ours=1
  fi
  local rc=0
  { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}"; } \
    >>"$LOG_DIR/apt.log" 2>&1 || rc=$?
  [ "$ours" = 1 ] && rm -f "$policy"
  [ "$rc" = 0 ] || fail packages "apt-get install ${missing[*]} failed" "$LOG_DIR/apt.log"
}

# The newest vX.Y directory of a versioned schema directory, as X.Y.
latest_schema_version() {
  find "$1" -mindepth 1 -maxdepth 1 -type d -name 'v*' -printf '%f\n' | sed 's/^v//' | sort -V | tail -n1
}

# Makes sure the schema tools of a Temporal version are built, building them now if no
# one else is (build-tools.sh takes a per-version lock, so this also waits for a build
# that up.sh started in the background).
wait_tools() {
  "$SERVICES_HOME/build-tools.sh" "$1" >/dev/null || exit 1
}

# Prints `export NAME=value` lines for env.sh (run in a subshell so that sourcing env.sh
# leaves none of lib.sh's variables or functions behind in the caller's shell).
print_test_env() {
  local services=""
  [ -s "$STATE_FILE" ] && services=$(head -n1 "$STATE_FILE")
  if [ -n "$services" ]; then
    printf 'export VISMIG_TEST_SERVICES=%q\n' "$services"
  else
    # Tests skip when this is unset, and fail for every service it lists.
    printf 'unset VISMIG_TEST_SERVICES\n'
    printf 'echo "env.sh: no services are up (run tests/services/up.sh); VISMIG_TEST_SERVICES is unset" >&2\n'
  fi
  # The PostgreSQL replica only when it runs (up.sh skips it without the disk for it).
  if [ -s "$VISMIG_SERVICES_DIR/postgres/replica/postmaster.pid" ]; then
    printf 'export VISMIG_TEST_PG_REPLICA_PORT=%q\n' "$PG_REPLICA_PORT"
  else
    printf 'unset VISMIG_TEST_PG_REPLICA_PORT\n'
  fi
  printf 'export %s=%q\n' \
    VISMIG_TEST_PG_HOST "$SERVICES_HOST" \
    VISMIG_TEST_PG_PORT "$PG_PORT" \
    VISMIG_TEST_PG_USER "$DB_USER" \
    VISMIG_TEST_PG_PASSWORD "$DB_PASSWORD" \
    VISMIG_TEST_MYSQL_HOST "$SERVICES_HOST" \
    VISMIG_TEST_MYSQL_PORT "$MYSQL_PORT" \
    VISMIG_TEST_MYSQL_USER "$DB_USER" \
    VISMIG_TEST_MYSQL_PASSWORD "$DB_PASSWORD" \
    VISMIG_TEST_MYSQL_TLS_PORT "$MYSQL_TLS_PORT" \
    VISMIG_TEST_CASSANDRA_HOSTS "$SERVICES_HOST" \
    VISMIG_TEST_CASSANDRA_PORT "$CASSANDRA_PORT" \
    VISMIG_TEST_CASSANDRA_TLS_PORT "$CASSANDRA_TLS_PORT" \
    VISMIG_TEST_CASSANDRA_SUPERUSER "$CASSANDRA_SUPERUSER" \
    VISMIG_TEST_CASSANDRA_SUPERUSER_PASSWORD "$CASSANDRA_SUPERUSER_PASSWORD" \
    VISMIG_TEST_OPENSEARCH_URL "http://$SERVICES_HOST:$OPENSEARCH_PORT" \
    VISMIG_TEST_ELASTICSEARCH_URL "http://$SERVICES_HOST:$ELASTICSEARCH_PORT" \
    VISMIG_TEST_OPENSEARCH_SECURE_URL "https://$SERVICES_HOST:$OPENSEARCH_SECURE_PORT" \
    VISMIG_TEST_OPENSEARCH_SECURE_ADMIN "$OPENSEARCH_SECURE_ADMIN:$OPENSEARCH_SECURE_ADMIN_PASSWORD" \
    VISMIG_TEST_OPENSEARCH_SECURE_USER "$OPENSEARCH_SECURE_USER:$OPENSEARCH_SECURE_PASSWORD" \
    VISMIG_TEST_OPENSEARCH_SECURE_NOWRITE_USER "$OPENSEARCH_SECURE_NOWRITE_USER:$OPENSEARCH_SECURE_NOWRITE_PASSWORD" \
    VISMIG_TEST_SQL_TOOL "$SQL_TOOL" \
    VISMIG_TEST_SQL_TOOL_STANDARD "$SQL_TOOL_STANDARD" \
    VISMIG_TEST_CASSANDRA_TOOL "$CASSANDRA_TOOL" \
    VISMIG_TEST_TEMPORAL_MODULE "$(temporal_module_dir "$TEMPORAL_ADVANCED_VERSION" 2>/dev/null)" \
    VISMIG_TEST_TEMPORAL_MODULE_STANDARD "$(temporal_module_dir "$TEMPORAL_STANDARD_VERSION" 2>/dev/null)" \
    VISMIG_TEST_TLS_DIR "$TLS_DIR" \
    VISMIG_TEST_TLS_CLIENT_USER "$TLS_CLIENT_CN" \
    VISMIG_TEST_TLS_USER "$TLS_USER" \
    VISMIG_TEST_TLS_PASSWORD "$TLS_PASSWORD" \
    VISMIG_TEST_KUBECONFIG "$VISMIG_SERVICES_DIR/kube/admin.kubeconfig" \
    VISMIG_TEST_KUBECTL "$(kube_dir "$KUBE_VERSION")/kubectl" \
    VISMIG_SERVICES_DIR "$VISMIG_SERVICES_DIR" \
    VISMIG_SERVICES_LOG_DIR "$LOG_DIR"
}
