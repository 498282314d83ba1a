#!/usr/bin/env bash
# Prints the directory of Temporal's Go module (go.temporal.io/server) at a pinned
# version, downloading it into the Go module cache (outside the repo) when needed.
# Usage: tests/services/temporal-module.sh [advanced|standard|vX.Y.Z]
#   advanced: the current release, for the advanced SQL schemas and SQLite (default)
#   standard: the last release with standard visibility (Cassandra, MySQL 5.7, PG 9.6)
set -euo pipefail
TEMPORAL_ADVANCED_VERSION="${TEMPORAL_ADVANCED_VERSION:-v1.32.0}"
TEMPORAL_STANDARD_VERSION="${TEMPORAL_STANDARD_VERSION:-v1.23.1}"
case "${1:-advanced}" in
  advanced) version="$TEMPORAL_ADVANCED_VERSION" ;;
  standard) version="$TEMPORAL_STANDARD_VERSION" ;;
  v*) version="$1" ;;
  *) echo "temporal-module.sh: unknown argument '$1' (advanced, standard or vX.Y.Z)" >&2; exit 2 ;;
esac
command -v go >/dev/null || { echo "temporal-module.sh: go is not installed" >&2; exit 1; }
# go mod download needs no module of its own when given path@version; run it from a
# scratch directory so a go.mod above the caller cannot interfere.
scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT
json=$(cd "$scratch" && GOFLAGS=-mod=mod go mod download -json "go.temporal.io/server@${version}") || {
  echo "temporal-module.sh: go mod download go.temporal.io/server@${version} failed" >&2; exit 1; }
dir=$(printf '%s' "$json" | sed -n 's/^[[:space:]]*"Dir": "\(.*\)",\{0,1\}$/\1/p')
err=$(printf '%s' "$json" | sed -n 's/^[[:space:]]*"Error": "\(.*\)",\{0,1\}$/\1/p')
if [ -n "$err" ] || [ -z "$dir" ] || [ ! -d "$dir" ]; then
  echo "temporal-module.sh: go.temporal.io/server@${version}: ${err:-no module directory}" >&2; exit 1
fi
echo "$dir"
