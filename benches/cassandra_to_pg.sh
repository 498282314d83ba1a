#!/usr/bin/env bash
# Cassandra (Temporal v1.23 standard visibility) -> PostgreSQL (advanced schema v12):
# records/s of `vismig backfill` (release build) over 200,001 runs in three namespaces,
# written with Temporal v1.23's statements by the test's own writer.
#   benches/cassandra_to_pg.sh [RECORDS]      default 200001
# Needs tests/services/up.sh cassandra postgres. No anchor exists for this pair (no
# other tool reads Temporal's Cassandra visibility), so the figure stands alone.
set -euo pipefail
cd "$(dirname "$0")/.."
bash tests/services/up.sh cassandra postgres >/dev/null
# shellcheck disable=SC1091
source tests/services/env.sh
VISMIG_BENCH_RECORDS=${1:-200001} cargo test --release --test cassandra_store -- --ignored --nocapture \
  cassandra_to_postgres_200k_benchmark 2>&1 | grep -E "wrote|records/s|test result|panicked"
