#!/usr/bin/env bash
# Runs every Zafe test. This is the test command README.md shows; .ci/run
# calls it. On a fresh Debian machine, as root, it installs and starts what
# the tests need itself:
#   - PostgreSQL (Debian packages), a throwaway cluster on 127.0.0.1 only,
#     so the storage suite runs against both backends;
#   - Python (hvac, pytest) and npm (node-vault) packages for the Vault-client
#     compatibility suite in tests/compat;
#   - the official MCP Python SDK (mcp, pinned) for the `zafe mcp` suite in
#     tests/mcp, and the tools its commands use (xxd, script);
#   - git, for the import tests;
#   - HAProxy, in front of three nodes on PostgreSQL for the cluster test;
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

# git: the import tests stage files in a real repository (crates/zafe/tests/it/workflow_cli.rs).
if ! command -v git >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    apt-get update -qq && apt-get install -y -qq --no-install-recommends git >&2
  else
    echo "test.sh: git is required (apt-get install git)" >&2
    exit 1
  fi
fi

# Tests send traffic only to 127.0.0.1; keep proxies out of the way.
unset http_proxy https_proxy HTTP_PROXY HTTPS_PROXY ALL_PROXY all_proxy

# `zafe run`/`zafe mcp` tests print values through xxd, hexdump and od and run
# zafe under `script` (a pseudo-terminal): make sure they are there.
if ! command -v xxd >/dev/null || ! command -v script >/dev/null || ! command -v hexdump >/dev/null; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq xxd bsdutils bsdextrautils >/dev/null
  fi
fi
command -v xxd >/dev/null || { echo "xxd is required (apt-get install xxd)" >&2; exit 1; }
command -v script >/dev/null || { echo "script is required (apt-get install bsdutils)" >&2; exit 1; }
command -v hexdump >/dev/null || { echo "hexdump is required (apt-get install bsdextrautils)" >&2; exit 1; }
# HAProxy: three zafe nodes on PostgreSQL behind a real load balancer
# (crates/zafe/tests/it/cluster.rs); ZAFE_REQUIRE_HAPROXY makes a missing
# install a failure, not a skip.
if ! command -v haproxy >/dev/null 2>&1 && [ ! -x /usr/sbin/haproxy ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends haproxy >/dev/null
  fi
fi
export ZAFE_REQUIRE_HAPROXY=1
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

# `zafe mcp` (R-DEV-5) driven by the official MCP Python SDK, in its own venv
# with a pinned version; a missing package fails here (pip), never skips.
mcp_venv="$target_dir/mcp-venv"
[ -x "$mcp_venv/bin/python3" ] || python3 -m venv "$mcp_venv"
PIP_ROOT_USER_ACTION=ignore PIP_DISABLE_PIP_VERSION_CHECK=1 \
  "$mcp_venv/bin/python3" -m pip install -q mcp==2.3.0 pytest==9.2.0
"$mcp_venv/bin/python3" -m pytest -q -p no:cacheprovider tests/mcp || compat=$?
(cd tests/compat/node && npm ci --no-audit --no-fund --loglevel=error && npm test) || compat=$?
exit "$compat"
