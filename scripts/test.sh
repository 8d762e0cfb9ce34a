#!/usr/bin/env bash
# Runs every Zafe test. This is the test command README.md shows; .ci/run
# calls it. On a fresh Debian machine, as root, it installs and starts what
# the tests need itself:
#   - PostgreSQL (Debian packages), a throwaway cluster on 127.0.0.1 only,
#     so the storage suite runs against both backends;
# and then runs the whole Cargo workspace's tests.
set -euo pipefail
cd "$(dirname "$0")/.."

# PostgreSQL: the storage conformance suite must run on it (ZAFE_REQUIRE_POSTGRES
# makes a missing database a failure, not a skip).
eval "$(scripts/start-postgres.sh)"
trap 'scripts/start-postgres.sh stop >/dev/null 2>&1 || true' EXIT
export ZAFE_REQUIRE_POSTGRES=1

# Tests send traffic only to 127.0.0.1; keep proxies out of the way.
unset http_proxy https_proxy HTTP_PROXY HTTPS_PROXY ALL_PROXY all_proxy

cargo test --workspace --locked "$@"
