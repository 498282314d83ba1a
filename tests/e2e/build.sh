#!/usr/bin/env bash
# Builds, from the Go module proxy, the binaries the end-to-end tests run, and caches them
# outside the repository (never committed), keyed by version:
#   build.sh server vX.Y.Z   Temporal server (go.temporal.io/server/cmd/server)
#                            -> $VISMIG_E2E_CACHE/vX.Y.Z/server/temporal-server
#   build.sh es-tool vX.Y.Z  temporal-elasticsearch-tool (v1.30+: cmd/tools/elasticsearch)
#                            -> $VISMIG_E2E_CACHE/vX.Y.Z/es-tool/temporal-elasticsearch-tool
#   build.sh cli vX.Y.Z      temporal CLI (github.com/temporalio/cli/cmd/temporal)
#                            -> $VISMIG_E2E_CACHE/cli-vX.Y.Z/temporal
#   build.sh workload        tests/e2e/workload (go.temporal.io/sdk), keyed by its sources
#                            -> $VISMIG_E2E_CACHE/workload-<sha>/e2e-workload
# Prints the path of the binary. A cached binary is reused; a failed build prints one line
# naming what and which version failed, Go's first error, and the full log.
#
# Like tests/services/build-tools.sh: a scratch module (go mod init + go get) at the
# pinned version, so the dependency versions are exactly the module's own (it has no
# replace directives), and GOTOOLCHAIN=local, so a version that needs a newer Go fails with
# Go's own message instead of fetching a toolchain. Go's module and build caches are the
# machine's (GOMODCACHE, GOCACHE), so the schema tools' build already warmed part of it.
set -euo pipefail
# shellcheck source=tests/e2e/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

kind=${1:?usage: build.sh server|es-tool|cli vX.Y.Z | build.sh workload}
case $kind in
  server)
    version=${2:?usage: build.sh server vX.Y.Z}
    out="$VISMIG_E2E_CACHE/$version/server" bin=temporal-server pkg=go.temporal.io/server/cmd/server
    what="temporal server $version" ;;
  es-tool)
    version=${2:?usage: build.sh es-tool vX.Y.Z}
    out="$VISMIG_E2E_CACHE/$version/es-tool" bin=temporal-elasticsearch-tool pkg=go.temporal.io/server/cmd/tools/elasticsearch
    what="temporal-elasticsearch-tool $version" ;;
  cli)
    version=${2:?usage: build.sh cli vX.Y.Z}
    out="$VISMIG_E2E_CACHE/cli-$version" bin=temporal pkg=github.com/temporalio/cli/cmd/temporal
    what="temporal CLI $version" ;;
  workload)
    src="$E2E_HOME/workload"
    version=$(cat "$src/go.mod" "$src/go.sum" "$src"/*.go | sha256sum | cut -c1-16)
    out="$VISMIG_E2E_CACHE/workload-$version" bin=e2e-workload pkg=.
    what="e2e workload ($src)" ;;
  *) echo "usage: build.sh server|es-tool|cli vX.Y.Z | build.sh workload" >&2; exit 2 ;;
esac

if [ -x "$out/$bin" ] && [ -f "$out/.complete" ]; then
  echo "$out/$bin"
  exit 0
fi
command -v go >/dev/null || fail "$what" "go is not installed"
mkdir -p "$VISMIG_E2E_CACHE" "$E2E_LOG_DIR"
log="$E2E_LOG_DIR/build-$kind-$version.log"

# Two runs at once must not build into the same directory.
exec 9>"$VISMIG_E2E_CACHE/.lock-$kind-$version"
flock 9
if [ -x "$out/$bin" ] && [ -f "$out/.complete" ]; then echo "$out/$bin"; exit 0; fi

build_failed() {
  # One line: what, the version and Go's first error line; the rest is in the log.
  local first
  first=$(grep -v -E '^go: (downloading|added|upgraded|finding|creating|extracting|to add module requirements|found)' "$log" |
    grep -v -E '^(#|\+ )' | grep -m1 -E '.' || true)
  fail "$what" "go build failed: ${first:-see log}" "$log"
}

rm -rf "$out.tmp"
mkdir -p "$out.tmp" "$VISMIG_E2E_CACHE/go-build"
t0=$SECONDS
say "building $what (cold: several minutes; log: $log)"
export GOTOOLCHAIN=local GOFLAGS="${GOFLAGS:--buildvcs=false}"
if [ "$kind" = workload ]; then
  (cd "$src" && nice -n "${VISMIG_E2E_NICE:-19}" go build -trimpath -o "$out.tmp/$bin" .) >"$log" 2>&1 || build_failed
else
  scratch="$VISMIG_E2E_CACHE/go-build/$kind-$version"
  rm -rf "$scratch"
  mkdir -p "$scratch"
  (
    cd "$scratch"
    set -x
    go mod init "vismig-e2e-$kind"
    go get "$pkg@$version"
    nice -n "${VISMIG_E2E_NICE:-19}" go build -trimpath -o "$out.tmp/$bin" "$pkg"
  ) >"$log" 2>&1 || build_failed
fi
rm -rf "$out"
mv "$out.tmp" "$out"
echo "built in $((SECONDS - t0))s" >"$out/.complete"
say "built $what in $((SECONDS - t0))s"
echo "$out/$bin"
