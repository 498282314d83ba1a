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

go_build_begin "temporal tools $version" "$out" tools "tools-$version"

(
  cd "$GO_BUILD_SCRATCH"
  export GOTOOLCHAIN=local GOFLAGS="${GOFLAGS:--buildvcs=false}"
  go mod init vismig-temporal-tools
  go get "go.temporal.io/server/cmd/tools/sql@$version" "go.temporal.io/server/cmd/tools/cassandra@$version"
  # One go build for both main packages: they share most of their dependency graph.
  go build -trimpath -o "$out.tmp/" go.temporal.io/server/cmd/tools/sql go.temporal.io/server/cmd/tools/cassandra
) >>"$GO_BUILD_LOG" 2>&1 || go_build_failed "temporal tools $version"

mv "$out.tmp/sql" "$out.tmp/temporal-sql-tool"
mv "$out.tmp/cassandra" "$out.tmp/temporal-cassandra-tool"
go_build_finish "$out"
