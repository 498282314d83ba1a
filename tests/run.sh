#!/usr/bin/env bash
# The project's test command (README, CI): format and lint checks, the real servers
# the integration tests need, then every test. Run from anywhere in the repo.
set -euo pipefail
cd "$(dirname "$0")/.."

step() { printf '\n== %s\n' "$*"; }

step "toolchain"
if ! cargo fmt --version >/dev/null 2>&1 || ! cargo clippy --version >/dev/null 2>&1; then
  rustup component add rustfmt clippy
fi
command -v go >/dev/null || { echo "tests/run.sh: go is required (Temporal's schemas and tools come from its Go module)" >&2; exit 1; }

step "cargo fmt --check"
cargo fmt --all -- --check

step "cargo clippy -D warnings"
cargo clippy --all-targets -- -D warnings

if [ "${VISMIG_SKIP_SERVICES:-}" != "1" ] && [ -x tests/services/up.sh ]; then
  step "services (tests/services/up.sh)"
  bash tests/services/up.sh
  # shellcheck disable=SC1091
  source tests/services/env.sh
  bash tests/services/drop-test-dbs.sh vt_
fi

step "cargo test"
cargo test --all-targets --no-fail-fast

# A real Temporal server (built from the Go module proxy, cached in /var/cache/vismig-e2e)
# reads what vismig migrated: tests/e2e/run.sh, three scenarios (README, "End-to-end tests").
if [ "${VISMIG_SKIP_E2E:-}" = "1" ]; then
  step "end-to-end tests skipped (VISMIG_SKIP_E2E=1)"
else
  step "end-to-end tests (tests/e2e/run.sh)"
  bash tests/e2e/run.sh
fi
