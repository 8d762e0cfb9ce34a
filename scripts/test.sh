#!/usr/bin/env bash
# Runs every Zafe test. This is the test command README.md shows; .ci/run
# calls it. On a fresh Debian machine, as root, it installs and starts what
# the tests need itself:
#   - PostgreSQL (Debian packages), a throwaway cluster on 127.0.0.1 only,
#     so the storage suite runs against both backends;
#   - Python (hvac, pytest) and npm (node-vault) packages for the Vault-client
#     compatibility suite in tests/compat;
#   - the OpenID provider (npm `oidc-provider`, tests/oidc) that the OIDC
#     login tests log in through;
# and then runs the whole Cargo workspace's tests, then that suite.
set -euo pipefail
cd "$(dirname "$0")/.."

# PostgreSQL: the storage conformance suite must run on it (ZAFE_REQUIRE_POSTGRES
# makes a missing database a failure, not a skip).
eval "$(scripts/start-postgres.sh)"
trap 'scripts/start-postgres.sh stop >/dev/null 2>&1 || true' EXIT
export ZAFE_REQUIRE_POSTGRES=1

# Tests send traffic only to 127.0.0.1; keep proxies out of the way.
unset http_proxy https_proxy HTTP_PROXY HTTPS_PROXY ALL_PROXY all_proxy

# OIDC: a real OpenID provider under node for the login tests
# (ZAFE_REQUIRE_OIDC makes a missing install a failure, not a skip).
(cd tests/oidc && npm ci --no-audit --no-fund --loglevel=error)
export ZAFE_REQUIRE_OIDC=1

cargo test --workspace --locked "$@"

# Vault-client compatibility (tests/compat): unmodified Vault clients against
# the zafe binary `cargo test` just built. Python's hvac under pytest, in a
# venv under target/ with pinned versions (quiet pip, also as root); then
# node-vault under node's test runner. Both run; any failure, and pytest's
# exit code 5 (no tests collected), fails this script.
target_dir=$(cd "${CARGO_TARGET_DIR:-target}" && pwd)
export ZAFE_BIN="$target_dir/debug/zafe"
venv="$target_dir/compat-venv"
[ -x "$venv/bin/python3" ] || python3 -m venv "$venv"
PIP_ROOT_USER_ACTION=ignore PIP_DISABLE_PIP_VERSION_CHECK=1 \
  "$venv/bin/python3" -m pip install -q hvac==2.4.0 pytest==9.2.0 cryptography==48.0.0
compat=0
"$venv/bin/python3" -m pytest -q -p no:cacheprovider tests/compat || compat=$?
(cd tests/compat/node && npm ci --no-audit --no-fund --loglevel=error && npm test) || compat=$?
exit "$compat"
