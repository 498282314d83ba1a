# shellcheck shell=bash
# shellcheck disable=SC2034 # ports and names are used through the config template (@NAME@)
# Helpers for tests/e2e/run.sh: a Temporal server started from a config template, the
# temporal CLI against it, snapshots of what the server lists and counts, and cleanup.
# Sourced after lib.sh; every scenario sets S_NAME, S_DIR, SERVER_BIN before using them.

NAMESPACES="e2e-orders e2e-billing"
STATUSES="Running Completed Failed Canceled Terminated ContinuedAsNew TimedOut"

e2e_fail() {
  printf '\ne2e %s: FAILED: %s\n' "${S_NAME:-setup}" "$*" >&2
  [ -n "${S_SERVER_LOG:-}" ] && printf 'e2e %s: Temporal server log: %s\n' "${S_NAME:-}" "$S_SERVER_LOG" >&2
  [ -n "${S_DIR:-}" ] && printf 'e2e %s: every file of this scenario (configs, snapshots, vismig output): %s\n' "${S_NAME:-}" "$S_DIR" >&2
  exit 1
}

step() { printf '[e2e %s %4ss] %s\n' "${S_NAME:-}" "$((SECONDS - ${S_T0:-0}))" "$*"; }

# N free TCP ports on 127.0.0.1, held open together while picked so they differ. Below
# 32768: Temporal's SQL schema keeps the membership port in a SMALLINT column, and the
# kernel's ephemeral range (where port 0 binds) starts above it.
free_ports() {
  python3 - "$1" <<'EOF'
import random, socket, sys
socks = []
while len(socks) < int(sys.argv[1]):
    s = socket.socket()
    try:
        s.bind(("127.0.0.1", random.randrange(20000, 32000)))
    except OSError:
        s.close()
        continue
    socks.append(s)
print(" ".join(str(s.getsockname()[1]) for s in socks))
EOF
}

# Picks the ports of one Temporal server (kept for the whole scenario: the cluster's
# metadata records the frontend address).
pick_ports() {
  local p
  read -r -a p <<<"$(free_ports 9)"
  FRONTEND_PORT=${p[0]} FRONTEND_MEMBERSHIP_PORT=${p[1]} FRONTEND_HTTP_PORT=${p[2]}
  MATCHING_PORT=${p[3]} MATCHING_MEMBERSHIP_PORT=${p[4]}
  HISTORY_PORT=${p[5]} HISTORY_MEMBERSHIP_PORT=${p[6]}
  WORKER_PORT=${p[7]} WORKER_MEMBERSHIP_PORT=${p[8]}
  VISMIG_METRICS_PORT=$(free_ports 1)
  ADDRESS="127.0.0.1:$FRONTEND_PORT"
}

# Writes the server config for a phase: `single` leaves out what dual visibility adds
# (lines tagged @secondary, blocks between @secondary-begin and @secondary-end),
# `dual` keeps them. Placeholders @NAME@ take the value of the shell variable NAME.
#   render_config PERSISTENCE_TEMPLATE PHASE OUT
render_config() {
  local persistence=$1 phase=$2 out=$3 text name
  local strip
  if [ "$phase" = single ]; then
    strip='/# @secondary-begin/,/# @secondary-end/d; /# @secondary$/d'
  else
    strip='/# @secondary-begin/d; /# @secondary-end/d; s/ *# @secondary$//'
  fi
  text=$(sed -e "$strip" "$persistence" | grep -v '^#')
  text=$(awk -v block="$text" '$0 == "@PERSISTENCE@" { print block; next } { print }' "$E2E_HOME/config/server.yaml")
  for name in $(grep -o '@[A-Z_]*@' <<<"$text" | sort -u | tr -d '@'); do
    [ -n "${!name+x}" ] || e2e_fail "config template: no value for @$name@"
    text=${text//@$name@/${!name}}
  done
  mkdir -p "$(dirname "$out")"
  printf '%s\n' "$text" >"$out"
}

# --- the Temporal server ---------------------------------------------------------------

# Starts the server with the config in $S_DIR/config/e2e.yaml and waits until the
# frontend serves and the namespace API answers.
server_start() {
  [ -z "${S_SERVER_PID:-}" ] || e2e_fail "server_start: a server is already running (pid $S_SERVER_PID)"
  printf '\n===== %s: starting %s with %s\n' "$(date -u +%FT%TZ)" "$SERVER_BIN" "$S_DIR/config/e2e.yaml" >>"$S_SERVER_LOG"
  "$SERVER_BIN" --root "$S_DIR" --config config --env e2e --allow-no-auth start >>"$S_SERVER_LOG" 2>&1 &
  S_SERVER_PID=$!
  local deadline=$((SECONDS + ${VISMIG_E2E_SERVER_TIMEOUT:-180}))
  until temporal operator cluster health >/dev/null 2>&1 &&
    temporal operator namespace describe -n temporal-system >/dev/null 2>&1; do
    [ -d "/proc/$S_SERVER_PID" ] || { S_SERVER_PID=""; e2e_fail "the Temporal server exited during startup"; }
    ((SECONDS < deadline)) || e2e_fail "the Temporal server did not serve within ${VISMIG_E2E_SERVER_TIMEOUT:-180}s"
    sleep 1
  done
}

server_stop() {
  local pid=${S_SERVER_PID:-} i
  [ -n "$pid" ] || return 0
  kill -TERM "$pid" 2>/dev/null || true
  for ((i = 0; i < 150; i++)); do
    [ -d "/proc/$pid" ] || break
    sleep 0.2
  done
  if [ -d "/proc/$pid" ]; then
    kill -KILL "$pid" 2>/dev/null || true
  fi
  wait "$pid" 2>/dev/null || true
  S_SERVER_PID=""
}

server_restart() {
  server_stop
  server_start
}

# --- the temporal CLI ------------------------------------------------------------------

temporal() {
  "$CLI_BIN" --address "$ADDRESS" --disable-config-file --disable-config-env --command-timeout 60s "$@"
}

# Registers a namespace, retrying while the cluster is still settling.
create_namespace() {
  local ns=$1 deadline=$((SECONDS + 60)) out
  until out=$(temporal operator namespace create -n "$ns" --retention 72h 2>&1); do
    case $out in *"already"*) return 0 ;; esac
    ((SECONDS < deadline)) || e2e_fail "temporal operator namespace create $ns: $out"
    sleep 1
  done
}

# Runs the workload program in a namespace; prints its expected counts (JSON).
workload() {
  local ns=$1 prefix=$2 count=$3
  shift 3
  "$WORKLOAD_BIN" --address "$ADDRESS" --namespace "$ns" --prefix "$prefix" --count "$count" "$@" \
    2>>"$S_DIR/workload.log" || e2e_fail "workload $prefix in $ns failed (see $S_DIR/workload.log)"
}

# --- snapshots of what the server returns ---------------------------------------------

# The runs the server lists in a namespace (optionally with a query), one JSON object
# per line sorted: workflowId, runId, status, closeTime (plus startTime, type, memo for
# the report). Fails if the CLI fails.
list_runs() {
  local ns=$1 query=${2:-} out
  if [ -n "$query" ]; then
    out=$(temporal workflow list -n "$ns" -q "$query" -o json 2>&1) || e2e_fail "temporal workflow list -n $ns -q \"$query\": $out"
  else
    out=$(temporal workflow list -n "$ns" -o json 2>&1) || e2e_fail "temporal workflow list -n $ns: $out"
  fi
  jq -c '.[] | {workflowId: .execution.workflowId, runId: .execution.runId,
               status: (.status | sub("^WORKFLOW_EXECUTION_STATUS_"; "")), closeTime: (.closeTime // null),
               startTime, type: .type.name, memo: ((.memo.fields // {}) | keys)}' <<<"$out" | sort ||
    e2e_fail "cannot parse the output of temporal workflow list -n $ns: $(head -c 300 <<<"$out")"
}

# The server's count for a namespace and query ("" = all).
count_runs() {
  local ns=$1 query=${2:-} out
  if [ -n "$query" ]; then
    out=$(temporal workflow count -n "$ns" -q "$query" -o json 2>&1) || { echo "error: $out"; return 1; }
  else
    out=$(temporal workflow count -n "$ns" -o json 2>&1) || { echo "error: $out"; return 1; }
  fi
  jq -r '.count // 0' <<<"$out"
}

# Status names as the server's query language spells them -> the CLI's JSON enum names.
status_enum() {
  case $1 in
    Running) echo RUNNING ;; Completed) echo COMPLETED ;; Failed) echo FAILED ;;
    Canceled) echo CANCELED ;; Terminated) echo TERMINATED ;;
    ContinuedAsNew) echo CONTINUED_AS_NEW ;; TimedOut) echo TIMED_OUT ;;
  esac
}

# Waits until the server lists, in namespace ns, at least the given number of runs per
# status (JSON object of status -> count, the workload's expectation summed), then
# returns. Visibility is written asynchronously by the history service.
wait_listed() {
  local ns=$1 expected=$2 deadline=$((SECONDS + 120)) runs s want have ok
  while :; do
    runs=$(list_runs "$ns")
    ok=1
    for s in $STATUSES; do
      want=$(jq -r --arg s "$s" '.[$s] // 0' <<<"$expected")
      have=$(grep -c "\"status\":\"$(status_enum "$s")\"" <<<"$runs" || true)
      [ "$have" -ge "$want" ] || ok=0
    done
    [ "$ok" = 1 ] && return 0
    ((SECONDS < deadline)) || e2e_fail "namespace $ns: the server does not list the expected runs after 120s (expected $expected; listed: $(jq -rs 'group_by(.status) | map("\(.[0].status)=\(length)") | join(" ")' <<<"$runs"))"
    sleep 1
  done
}

# Adds two expectation objects.
add_counts() {
  jq -cn --argjson a "$1" --argjson b "$2" '$a as $a | reduce ($b | to_entries[]) as $e ($a; .[$e.key] += $e.value)'
}

# Saves what the server returns for every namespace: the full listing, the listing per
# status (a query), and, when the store can count, the counts (all, per status).
#   snapshot LABEL [nocount]
snapshot() {
  local label=$1 can_count=${2:-count} ns s dir="$S_DIR/snapshots/$1"
  mkdir -p "$dir"
  for ns in $NAMESPACES; do
    list_runs "$ns" >"$dir/$ns.list"
    for s in $STATUSES; do
      list_runs "$ns" "ExecutionStatus=\"$s\"" >"$dir/$ns.list.$s"
      if [ "$can_count" = count ]; then
        count_runs "$ns" "ExecutionStatus=\"$s\"" >"$dir/$ns.count.$s" ||
          e2e_fail "temporal workflow count -n $ns -q ExecutionStatus=\"$s\" ($label): $(cat "$dir/$ns.count.$s")"
      fi
    done
    if [ "$can_count" = count ]; then
      count_runs "$ns" >"$dir/$ns.count" || e2e_fail "temporal workflow count -n $ns ($label): $(cat "$dir/$ns.count")"
    fi
  done
}

# The comparable key of a listed run: (workflowId, runId, status, closeTime), with times
# cut to `precision` fraction digits (9 = as returned).
keys() {
  local file=$1 precision=${2:-9}
  jq -c --argjson p "$precision" '
    def cut: if . == null then null else sub("(?<s>\\.[0-9]+)?Z$"; "") as $base
      | ((capture("\\.(?<f>[0-9]+)Z$").f // "") + "000000000")[0:$p] as $f
      | if $p == 0 then $base + "Z" else $base + "." + $f + "Z" end end;
    [.workflowId, .runId, .status, (.closeTime | cut)]' "$file" | sort
}

# Fails with a diff when two key files differ.
#   same_keys WHAT EXPECTED_FILE ACTUAL_FILE
same_keys() {
  local what=$1 a=$2 b=$3
  if ! diff -q "$a" "$b" >/dev/null; then
    printf 'e2e %s: %s differ (< expected %s, > actual %s):\n' "$S_NAME" "$what" "$a" "$b" >&2
    diff "$a" "$b" | head -40 >&2
    e2e_fail "$what: the server returns different runs"
  fi
}

# Per status counts of a listing, as JSON (status enum name -> count).
list_status_counts() {
  jq -s -c 'group_by(.status) | map({(.[0].status): length}) | add // {}' "$1"
}
