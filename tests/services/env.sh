# shellcheck shell=bash
# Source me after tests/services/up.sh:
#   source tests/services/env.sh && cargo test --test services_smoke
# Exports the addresses and credentials of the servers up.sh started, the paths of
# Temporal's schema tools and modules, and VISMIG_TEST_SERVICES: the services that are up.
# A test must fail, not skip, when a service listed there is unreachable.
# Honours VISMIG_SERVICES_DIR / VISMIG_SERVICES_CACHE like up.sh.
eval "$(bash -c '. "$1/lib.sh" && print_test_env' env.sh "$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)")"
