#!/usr/bin/env bash
# Stops the servers tests/services/up.sh started, by the pids it recorded (never by
# process name).
# Usage: tests/services/down.sh [--purge] [postgres] [mariadb] [cassandra] [opensearch] [opensearch_secure] [elasticsearch] [kube]
#   no service named = all; --purge also deletes their data (and, for all, the logs).
# Caches (VISMIG_SERVICES_CACHE: jars, built tools) are kept; delete that directory by hand.
set -euo pipefail
# shellcheck source=tests/services/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
for svc in $ALL_SERVICES; do
  # shellcheck source=/dev/null
  . "$SERVICES_HOME/svc/$svc.sh"
done

purge=0
selected=""
for arg in "$@"; do
  case $arg in
    --purge) purge=1 ;;
    -h | --help) sed -n '2,6p' "$0"; exit 0 ;;
    *)
      case " $ALL_SERVICES " in
        *" $arg "*) selected="$selected $arg" ;;
        *) fail down.sh "unknown argument '$arg' (--purge, $ALL_SERVICES)" ;;
      esac ;;
  esac
done
all=0
[ -n "$selected" ] || { selected=$ALL_SERVICES; all=1; }

for svc in $selected; do
  "${svc}_stop"
  say "$svc: stopped"
  if [ "$purge" = 1 ]; then
    rm -rf "${VISMIG_SERVICES_DIR:?}/$svc"
    say "$svc: data deleted"
  fi
done

# env.sh must no longer list what was stopped.
if [ -s "$STATE_FILE" ]; then
  left=""
  for svc in $(head -n1 "$STATE_FILE"); do
    case " $selected " in *" $svc "*) ;; *) left="$left $svc" ;; esac
  done
  echo "${left# }" >"$STATE_FILE"
fi
if [ "$purge" = 1 ] && [ "$all" = 1 ]; then
  rm -rf "${VISMIG_SERVICES_DIR:?}"
  say "deleted $VISMIG_SERVICES_DIR"
fi
