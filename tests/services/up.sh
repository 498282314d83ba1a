#!/usr/bin/env bash
# Starts the real servers vismig's integration tests run against, with Temporal's own
# visibility schemas applied by Temporal's own tools. Idempotent: a server that already
# runs (started by an earlier up.sh) and answers is reused, a schema that is current is
# kept with its data.
#
# Usage: tests/services/up.sh [postgres] [mariadb] [cassandra] [opensearch] [opensearch_secure] [elasticsearch] [kube]
#        VISMIG_SERVICES="postgres opensearch" tests/services/up.sh
# No selection = all. Then: source tests/services/env.sh
#
# Installs what is missing (Debian packages, Maven artifacts, Go-built Temporal tools)
# into VISMIG_SERVICES_CACHE; data, pid files and logs go to VISMIG_SERVICES_DIR.
# See tests/services/README.md.
set -euo pipefail
# shellcheck source=tests/services/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
for svc in $ALL_SERVICES; do
  # shellcheck source=/dev/null
  . "$SERVICES_HOME/svc/$svc.sh"
done

[ "$(id -u)" = 0 ] || fail up.sh "must run as root (servers run as the postgres/mysql users; packages are installed with apt-get)"

# --- which services ---------------------------------------------------------------
selected=""
if [ $# -gt 0 ]; then
  selected="$*"
elif [ -n "${VISMIG_SERVICES:-}" ]; then
  selected="$VISMIG_SERVICES"
else
  selected="$ALL_SERVICES"
fi
selected=$(tr -s ', ' '\n' <<<"$selected" | awk 'NF' | awk '!seen[$0]++' | tr '\n' ' ')
for svc in $selected; do
  case " $ALL_SERVICES " in
    *" $svc "*) ;;
    *) fail up.sh "unknown service '$svc' (known: $ALL_SERVICES)" ;;
  esac
done
selected=${selected% }

mkdir -p "$VISMIG_SERVICES_CACHE" "$VISMIG_SERVICES_DIR" "$LOG_DIR" "$RUN_DIR"
chmod 755 "$VISMIG_SERVICES_DIR" "$LOG_DIR" "$RUN_DIR"

declare -A SERVICE_T0=() SERVICE_T1=()
up_t0=$SECONDS
for svc in $selected; do SERVICE_T0[$svc]=$SECONDS; done

# --- Temporal's schema tools, built in the background while servers boot -------------
needed_versions=""
case " $selected " in *" postgres "* | *" mariadb "*) needed_versions="$TEMPORAL_ADVANCED_VERSION" ;; esac
case " $selected " in *" postgres "* | *" mariadb "* | *" cassandra "*) needed_versions="$needed_versions $TEMPORAL_STANDARD_VERSION" ;; esac
tools_bg_pid=""
missing_tools=""
for v in $needed_versions; do
  [ -f "$(tools_dir "$v")/.complete" ] || missing_tools="$missing_tools $v"
done
if [ -n "$missing_tools" ]; then
  command -v go >/dev/null || fail up.sh "go is needed to build Temporal's schema tools ($missing_tools) and is not installed"
  say "building Temporal schema tools:$missing_tools (in the background, logs in $LOG_DIR)"
  # Errors are reported by wait_tools (same script, same lock) when a schema needs them.
  (
    for v in $missing_tools; do "$SERVICES_HOME/build-tools.sh" "$v" >/dev/null 2>&1 || true; done
  ) </dev/null &
  tools_bg_pid=$!
fi
# kube-apiserver and kubectl (a long cold build): in the background too; kube_start,
# after every other server has been started, waits for it (build-kube.sh's lock).
kube_bg_pid=""
case " $selected " in
  *" kube "*)
    if [ ! -f "$(kube_dir "$KUBE_VERSION")/.complete" ]; then
      say "building kube-apiserver and kubectl $KUBE_VERSION (in the background, logs in $LOG_DIR)"
      ("$SERVICES_HOME/build-kube.sh" "$KUBE_VERSION" >/dev/null 2>&1 || true) </dev/null &
      kube_bg_pid=$!
    fi ;;
esac
# The module dirs (schema files) are needed by every service; downloading is quick.
for v in $TEMPORAL_ADVANCED_VERSION $TEMPORAL_STANDARD_VERSION; do
  temporal_module_dir "$v" >/dev/null || fail up.sh "cannot download go.temporal.io/server@$v"
done

# --- the test CA (before any server: the secured ones load its certificates) ----------
"$SERVICES_HOME/tls.sh"

# --- install, start, wait, schema ----------------------------------------------------
for svc in $selected; do "${svc}_prepare"; done
# Start everything first (JVMs boot in parallel), then wait for each and apply its schema.
for svc in $selected; do "${svc}_start"; done
for svc in $selected; do
  "${svc}_wait"
  "${svc}_schema"
  SERVICE_T1[$svc]=$SECONDS
done

[ -z "$tools_bg_pid" ] || wait "$tools_bg_pid" 2>/dev/null || true
[ -z "$kube_bg_pid" ] || wait "$kube_bg_pid" 2>/dev/null || true

# Remember what is up for env.sh: the union with services started by earlier calls that
# still answer, so `up.sh postgres` after `up.sh` does not hide the others.
up_now=""
for svc in $ALL_SERVICES; do
  if case " $selected " in *" $svc "*) true ;; *) false ;; esac || "${svc}_healthy" 2>/dev/null; then
    up_now="$up_now $svc"
  fi
done
echo "${up_now# }" >"$STATE_FILE"

# --- summary: one line per service -------------------------------------------------
total_kib=0
for svc in $selected; do
  pid=$("${svc}_rss_pid" 2>/dev/null || true)
  rss=0
  [ -n "$pid" ] && rss=$(tree_pss_kib "$pid")
  total_kib=$((total_kib + rss))
  printf '%-13s %-15s %-42s ready after %3ss (%s), memory %4s MiB\n' "$svc" "$("${svc}_address")" "$("${svc}_version")" \
    "$((SERVICE_T1[$svc] - SERVICE_T0[$svc]))" "${SERVICE_STATE[$svc]:-}" "$((rss / 1024))"
done
printf 'all up in %ss, memory (PSS) %s MiB; logs in %s; next: source %s/env.sh\n' \
  "$((SECONDS - up_t0))" "$((total_kib / 1024))" "$LOG_DIR" "$SERVICES_HOME"
