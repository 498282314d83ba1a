#!/usr/bin/env bash
# Builds Temporal's schema tools (temporal-sql-tool, temporal-cassandra-tool) from the Go
# module go.temporal.io/server at one pinned version, the way Temporal's Makefile names
# them, and caches them in $VISMIG_SERVICES_CACHE/tools/<version>/.
# Usage: tests/services/build-tools.sh vX.Y.Z      (prints the tools directory)
#
# A scratch module (go mod init + go get) is used rather than `go install pkg@version`
# so that both tools come from one dependency resolution and one build. GOTOOLCHAIN=local:
# a version whose go.mod asks for a newer Go than the installed one fails with Go's
# own message instead of trying to download a toolchain.
set -euo pipefail
# shellcheck source=tests/services/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

version=${1:?usage: build-tools.sh vX.Y.Z}
out=$(tools_dir "$version")
if [ -x "$out/temporal-sql-tool" ] && [ -x "$out/temporal-cassandra-tool" ] && [ -f "$out/.complete" ]; then
  echo "$out"
  exit 0
fi

command -v go >/dev/null || fail "temporal tools $version" "go is not installed"
mkdir -p "$VISMIG_SERVICES_CACHE/tools" "$LOG_DIR"
log="$LOG_DIR/build-tools-$version.log"
: >"$log"

# Two up.sh runs at once must not build into the same directory.
exec 9>"$VISMIG_SERVICES_CACHE/tools/.lock-$version"
flock 9
if [ -f "$out/.complete" ]; then echo "$out"; exit 0; fi

scratch="$VISMIG_SERVICES_CACHE/go-build/$version"
rm -rf "$scratch" "$out.tmp"
mkdir -p "$scratch" "$out.tmp"

build_failed() {
  # One line: the version and Go's first error line; the rest is in the log.
  local first
  first=$(grep -v -E '^go: (downloading|added|upgraded|finding|creating|extracting|to add module requirements)' "$log" |
    grep -v -E '^#' | grep -m1 -E '.' || true)
  fail "temporal tools $version" "go build failed: ${first:-see log}" "$log"
}

(
  cd "$scratch"
  export GOTOOLCHAIN=local GOFLAGS="${GOFLAGS:--buildvcs=false}"
  go mod init vismig-temporal-tools
  go get "go.temporal.io/server/cmd/tools/sql@$version" "go.temporal.io/server/cmd/tools/cassandra@$version"
  # One go build for both main packages: they share most of their dependency graph.
  go build -trimpath -o "$out.tmp/" go.temporal.io/server/cmd/tools/sql go.temporal.io/server/cmd/tools/cassandra
) >>"$log" 2>&1 || build_failed

mv "$out.tmp/sql" "$out.tmp/temporal-sql-tool"
mv "$out.tmp/cassandra" "$out.tmp/temporal-cassandra-tool"
rm -rf "$out"
mv "$out.tmp" "$out"
touch "$out/.complete"
echo "$out"
