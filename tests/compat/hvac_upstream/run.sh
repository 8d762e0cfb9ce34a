#!/usr/bin/env bash
# Runs hvac's own integration tests (shipped in its source distribution on
# PyPI) against Zafe, through zafe_vault_plugin.py: their test files are not
# changed, only the server they start is Zafe instead of Vault.
#
#   tests/compat/hvac_upstream/run.sh                 # the areas Zafe covers
#   tests/compat/hvac_upstream/run.sh path/to/test.py # chosen files (relative to the sdist)
#
# Not part of scripts/test.sh: many of hvac's tests exercise Vault features
# Zafe does not have, so this is a report (per-file pass/fail counts), not a
# gate. Exit status: 0 if pytest ran and every selected test passed.
set -euo pipefail
cd "$(dirname "$0")/../../.."
repo=$PWD
HVAC_VERSION=2.4.0
export ZAFE_BIN=${ZAFE_BIN:-$repo/target/debug/zafe}
[ -x "$ZAFE_BIN" ] || cargo build -p zafe

work=$(mktemp -d "${TMPDIR:-/tmp}/zafe-hvac-upstream.XXXXXX")
trap 'rm -rf "$work"' EXIT
export TMPDIR=$work PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_ROOT_USER_ACTION=ignore
unset http_proxy https_proxy HTTP_PROXY HTTPS_PROXY ALL_PROXY all_proxy VAULT_ADDR VAULT_TOKEN

python3 -m venv "$work/venv"
# shellcheck disable=SC1091
. "$work/venv/bin/activate"
pip install -q "hvac==$HVAC_VERSION" pytest==8.4.2 parameterized==0.9.0 pyhcl==0.4.5 "packaging<24"
pip download -q --no-binary :all: --no-deps -d "$work" "hvac==$HVAC_VERSION"
tar xzf "$work/hvac-$HVAC_VERSION.tar.gz" -C "$work"
cd "$work/hvac-$HVAC_VERSION"

if [ $# -gt 0 ]; then
  files=("$@")
else
  t=tests/integration_tests
  files=(
    $t/api/system_backend/test_health.py
    $t/api/system_backend/test_init.py
    $t/api/system_backend/test_seal.py
    $t/api/system_backend/test_mount.py
    $t/api/system_backend/test_auth.py
    $t/api/system_backend/test_policy.py
    $t/api/system_backend/test_policies.py
    $t/api/system_backend/test_key.py
    $t/api/secrets_engines/test_kv_v2.py
    $t/api/secrets_engines/test_transit.py
    $t/api/auth_methods/test_token.py
    $t/api/auth_methods/test_approle.py
    $t/v1/test_approle.py
    $t/v1/test_system_backend.py
    $t/v1/test_integration.py
  )
fi

status=0
PYTHONPATH="$repo/tests/compat/hvac_upstream" timeout 1200 \
  python3 -m pytest -p zafe_vault_plugin -o addopts= -p no:cacheprovider -q -rfE \
  --junitxml="$work/junit.xml" "${files[@]}" || status=$?

python3 - "$work/junit.xml" <<'PY'
import collections, sys, xml.etree.ElementTree as ET
counts = collections.defaultdict(lambda: collections.Counter())
for case in ET.parse(sys.argv[1]).iter("testcase"):
    f = case.get("classname", "").rsplit(".", 1)[0].replace(".", "/") + ".py"
    kind = "passed"
    for child in case:
        if child.tag in ("failure", "error"):
            kind = "failed"
        elif child.tag == "skipped":
            kind = "skipped"
    counts[f][kind] += 1
print("\nhvac upstream integration tests against Zafe, per file:")
total = collections.Counter()
for f in sorted(counts):
    c = counts[f]
    total.update(c)
    print(f"  {f:70s} {c['passed']:4d} passed {c['failed']:4d} failed {c['skipped']:4d} skipped")
print(f"  {'total':70s} {total['passed']:4d} passed {total['failed']:4d} failed {total['skipped']:4d} skipped")
PY
exit $status
