# shellcheck shell=bash
# shellcheck disable=SC2034 # the variables here are used by the scripts that source this file
# Settings shared by tests/e2e/*.sh. Sourced, never run. Builds on tests/services/lib.sh
# (pinned Temporal versions, schema tools, say/fail/wait_for/port_open).
#
#   VISMIG_E2E_CACHE  built Temporal servers, CLI and workload (kept across runs)
#   VISMIG_E2E_DIR    per-run configs, logs and data of the Temporal servers started here
E2E_HOME=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO_ROOT=$(cd "$E2E_HOME/../.." && pwd)
# shellcheck source=tests/services/lib.sh
. "$REPO_ROOT/tests/services/lib.sh"

VISMIG_E2E_CACHE="${VISMIG_E2E_CACHE:-/var/cache/vismig-e2e}"
VISMIG_E2E_DIR="${VISMIG_E2E_DIR:-/tmp/vismig-e2e}"
E2E_LOG_DIR="$VISMIG_E2E_DIR/logs"

# Pinned versions. The current server is the one whose schemas tests/services applies;
# the legacy one is the last release line with Cassandra (standard) visibility.
E2E_TEMPORAL_CURRENT="${VISMIG_E2E_TEMPORAL_CURRENT:-$TEMPORAL_ADVANCED_VERSION}"
E2E_TEMPORAL_LEGACY="${VISMIG_E2E_TEMPORAL_LEGACY:-$TEMPORAL_STANDARD_VERSION}"
# The oldest release with dual visibility (v1.21; PostgreSQL visibility schema 1.3). The
# last patch of that line: the module proxy serves it, and it builds with the current Go.
E2E_TEMPORAL_OLDEST="${VISMIG_E2E_TEMPORAL_OLDEST:-v1.21.6}"
# The newest temporal CLI the module proxy can build: from v1.6.0 on its go.mod replaces
# github.com/temporalio/cli/cliext with a directory that is not in the module zip.
# Any CLI talks to either server over the public gRPC API.
E2E_CLI_VERSION="${VISMIG_E2E_CLI_VERSION:-v1.5.1}"
