"""hvac's system backend against a Zafe dev server: status, health, mounts,
auth methods and policies (both the legacy sys/policy endpoints hvac's
`sys.*_policy` methods use and sys/policies/acl)."""

import json

import hvac
import pytest
import requests
from hvac import exceptions

HEALTH_FIELDS = {
    "initialized",
    "sealed",
    "standby",
    "performance_standby",
    "replication_performance_mode",
    "replication_dr_mode",
    "server_time_utc",
    "version",
    "cluster_name",
    "cluster_id",
}


def test_status_helpers(client, anon):
    assert client.sys.is_initialized() is True
    assert client.sys.is_sealed() is False
    # Both answer without a token, as in Vault.
    assert anon.sys.is_initialized() is True
    assert anon.sys.is_sealed() is False
    assert anon.sys.read_init_status() == {"initialized": True}


def test_read_health_status_get(anon):
    health = anon.sys.read_health_status(method="GET")
    assert isinstance(health, dict), health
    missing = HEALTH_FIELDS - health.keys()
    assert not missing, f"health lacks {missing}: {health}"
    assert health["initialized"] is True
    assert health["sealed"] is False
    assert health["standby"] is False
    assert isinstance(health["server_time_utc"], int)
    assert isinstance(health["version"], str) and health["version"]


def test_read_health_status_head_and_codes(anon):
    head = anon.sys.read_health_status()  # HEAD is hvac's default
    assert isinstance(head, requests.Response)
    assert head.status_code == 200
    # Status code overrides: activecode applies to an active, unsealed node.
    resp = anon.sys.read_health_status(method="GET", active_code=299)
    assert isinstance(resp, requests.Response), "a non-200 status is returned as the raw response"
    assert resp.status_code == 299
    assert resp.json()["sealed"] is False
    ok = anon.sys.read_health_status(method="GET", standby_ok=True, sealed_code=200, uninit_code=200)
    assert isinstance(ok, dict) and ok["initialized"] is True


def test_read_seal_status(anon):
    status = anon.sys.read_seal_status()
    assert status["type"] == "shamir"
    assert status["initialized"] is True
    assert status["sealed"] is False
    for field in ("t", "n", "progress", "version", "cluster_name", "cluster_id"):
        assert field in status, f"seal-status lacks {field}: {status}"
    assert status["t"] >= 1 and status["n"] >= status["t"]
    assert status["progress"] == 0


def test_list_mounted_secrets_engines(client):
    mounts = client.sys.list_mounted_secrets_engines()
    # hvac's callers read both the envelope and the top-level copy.
    assert "secret/" in mounts["data"]
    assert "secret/" in mounts
    secret = mounts["data"]["secret/"]
    assert secret["type"] == "kv"
    assert secret["options"]["version"] == "2"
    for field in ("accessor", "config", "description", "local", "seal_wrap", "uuid"):
        assert field in secret, f"mount entry lacks {field}: {secret}"
    assert {"default_lease_ttl", "max_lease_ttl"} <= secret["config"].keys()
    # The auth method store is not listed among the secrets engines.
    assert not any(k.startswith("auth/") for k in mounts["data"])


def test_retrieve_mount_option(client):
    assert client.sys.retrieve_mount_option("secret", "version") == "2"


def test_enable_read_tune_disable_secrets_engine(client, unique):
    path = unique("kv")
    resp = client.sys.enable_secrets_engine(
        backend_type="kv",
        path=path,
        description="compat test mount",
        options={"version": "2"},
        config={"default_lease_ttl": "30m", "max_lease_ttl": "2h"},
    )
    assert resp.status_code == 204
    mounts = client.sys.list_mounted_secrets_engines()["data"]
    assert f"{path}/" in mounts
    entry = mounts[f"{path}/"]
    assert entry["type"] == "kv"
    assert entry["description"] == "compat test mount"
    assert entry["options"]["version"] == "2"

    config = client.sys.read_mount_configuration(path)
    assert config["data"]["default_lease_ttl"] == 1800
    assert config["data"]["max_lease_ttl"] == 7200

    resp = client.sys.tune_mount_configuration(
        path,
        default_lease_ttl="1h",
        max_lease_ttl="3h",
        description="tuned",
    )
    assert resp.status_code == 204
    config = client.sys.read_mount_configuration(path)
    assert config["data"]["default_lease_ttl"] == 3600
    assert config["data"]["max_lease_ttl"] == 10800
    assert client.sys.list_mounted_secrets_engines()["data"][f"{path}/"]["description"] == "tuned"

    # The mount works: a secret written through it reads back.
    client.secrets.kv.v2.create_or_update_secret("x", {"k": "v"}, mount_point=path)
    read = client.secrets.kv.v2.read_secret_version("x", mount_point=path, raise_on_deleted_version=True)
    assert read["data"]["data"] == {"k": "v"}

    assert client.sys.disable_secrets_engine(path).status_code == 204
    assert f"{path}/" not in client.sys.list_mounted_secrets_engines()["data"]
    # Its data went with it: re-enabling the same path starts empty.
    client.sys.enable_secrets_engine("kv", path=path, options={"version": "2"})
    with pytest.raises(exceptions.InvalidPath):
        client.secrets.kv.v2.read_secret_version("x", mount_point=path, raise_on_deleted_version=True)
    client.sys.disable_secrets_engine(path)


def test_enable_kv_v2_by_type_name_and_transit(client, unique):
    kv = unique("kvv2")
    transit = unique("transit")
    client.sys.enable_secrets_engine(backend_type="kv-v2", path=kv)
    client.sys.enable_secrets_engine(backend_type="transit", path=transit)
    mounts = client.sys.list_mounted_secrets_engines()["data"]
    assert mounts[f"{kv}/"]["type"] == "kv"
    assert mounts[f"{kv}/"]["options"]["version"] == "2"
    assert mounts[f"{transit}/"]["type"] == "transit"
    client.sys.disable_secrets_engine(kv)
    client.sys.disable_secrets_engine(transit)


def test_enable_twice_and_unknown_type_are_400(client, unique):
    path = unique("dup")
    client.sys.enable_secrets_engine("transit", path=path)
    with pytest.raises(exceptions.InvalidRequest):
        client.sys.enable_secrets_engine("transit", path=path)
    with pytest.raises(exceptions.InvalidRequest):
        client.sys.enable_secrets_engine("no-such-engine", path=unique("bad"))
    client.sys.disable_secrets_engine(path)


def test_list_enable_tune_disable_auth_methods(client, unique):
    methods = client.sys.list_auth_methods()
    assert "token/" in methods["data"]
    assert methods["data"]["token/"]["type"] == "token"
    assert "accessor" in methods["data"]["token/"]
    # Vault reports the token type each auth method issues (vaultrs requires it).
    assert methods["data"]["token/"]["config"]["token_type"] == "default-service"

    path = unique("approle")
    resp = client.sys.enable_auth_method("approle", path=path, description="machines")
    assert resp.status_code == 204
    methods = client.sys.list_auth_methods()["data"]
    assert methods[f"{path}/"]["type"] == "approle"
    assert methods[f"{path}/"]["description"] == "machines"

    client.sys.tune_auth_method(path, default_lease_ttl="10m", max_lease_ttl="1h")
    tuning = client.sys.read_auth_method_tuning(path)
    assert tuning["data"]["default_lease_ttl"] == 600
    assert tuning["data"]["max_lease_ttl"] == 3600

    assert client.sys.disable_auth_method(path).status_code == 204
    assert f"{path}/" not in client.sys.list_auth_methods()["data"]


def test_mounts_need_a_token(anon):
    with pytest.raises(exceptions.Forbidden):
        anon.sys.list_mounted_secrets_engines()
    with pytest.raises(exceptions.Forbidden):
        anon.sys.enable_secrets_engine("kv", path="stranger")


# ---- policies -------------------------------------------------------------

POLICY_HCL = """
path "secret/data/compat/*" {
  capabilities = ["create", "read", "update", "list"]
}
"""


def test_legacy_policy_crud(client, unique):
    name = unique("pol")
    resp = client.sys.create_or_update_policy(name, POLICY_HCL)
    assert resp.status_code == 204

    read = client.sys.read_policy(name)
    # hvac's docs read the text from data.rules (sys/policy), Vault also
    # repeats it at the top level.
    assert read["data"]["name"] == name
    assert read["data"]["rules"] == POLICY_HCL
    assert read["rules"] == POLICY_HCL

    listed = client.sys.list_policies()
    assert name in listed["data"]["policies"]
    assert "default" in listed["data"]["policies"]
    assert "root" in listed["data"]["policies"]
    assert name in listed["policies"]

    # Update replaces the text.
    client.sys.create_or_update_policy(name, 'path "secret/*" { capabilities = ["read"] }')
    assert 'capabilities = ["read"]' in client.sys.read_policy(name)["data"]["rules"]

    assert client.sys.delete_policy(name).status_code == 204
    assert name not in client.sys.list_policies()["data"]["policies"]
    with pytest.raises(exceptions.InvalidPath):
        client.sys.read_policy(name)


def test_policy_given_as_a_dict_is_sent_as_json(client, unique):
    # hvac turns a dict into JSON; Vault's policy parser accepts JSON (it is
    # HCL), so a policy written this way must work, like hvac's own tests do.
    name = unique("jsonpol")
    policy = {"path": {"secret/data/jsonpol/*": {"capabilities": ["read", "list"]}}}
    client.sys.create_or_update_policy(name, policy)
    text = client.sys.read_policy(name)["data"]["rules"]
    assert json.loads(text) == policy
    token = client.auth.token.create(policies=[name], ttl="10m")["auth"]["client_token"]
    caps = client.sys.get_capabilities(["secret/data/jsonpol/x"], token=token)
    assert sorted(caps["secret/data/jsonpol/x"]) == ["list", "read"]
    client.sys.delete_policy(name)


def test_acl_policy_crud(client, unique):
    name = unique("acl")
    assert client.sys.create_or_update_acl_policy(name, POLICY_HCL).status_code == 204
    read = client.sys.read_acl_policy(name)
    assert read["data"]["name"] == name
    assert read["data"]["policy"] == POLICY_HCL
    listed = client.sys.list_acl_policies()
    assert name in listed["data"]["keys"]
    assert "root" in listed["data"]["keys"]
    # One store: a policy written one way reads back the other way.
    assert client.sys.read_policy(name)["data"]["rules"] == POLICY_HCL
    assert client.sys.delete_acl_policy(name).status_code == 204
    with pytest.raises(exceptions.InvalidPath):
        client.sys.read_acl_policy(name)
    assert name not in client.sys.list_acl_policies()["data"]["keys"]


def test_default_and_root_policies(client):
    default = client.sys.read_policy("default")["data"]["rules"]
    assert "auth/token/lookup-self" in default
    with pytest.raises(exceptions.InvalidRequest):
        client.sys.delete_policy("root")
    with pytest.raises(exceptions.InvalidRequest):
        client.sys.delete_policy("default")
    with pytest.raises(exceptions.InvalidRequest):
        client.sys.create_or_update_policy("root", 'path "*" { capabilities = ["read"] }')


def test_invalid_policy_is_refused(client, unique):
    with pytest.raises(exceptions.InvalidRequest):
        client.sys.create_or_update_policy(unique("bad"), 'path "x" { capabilities = ["fly"] }')
    with pytest.raises(exceptions.InvalidRequest):
        client.sys.create_or_update_acl_policy(unique("bad"), "this is { not hcl")


def test_policies_are_enforced(client, new_client, unique):
    name = unique("enforce")
    client.sys.create_or_update_policy(name, POLICY_HCL)
    client.secrets.kv.v2.create_or_update_secret("compat/allowed", {"a": "1"})
    client.secrets.kv.v2.create_or_update_secret("other/denied", {"b": "2"})
    token = client.auth.token.create(policies=[name], ttl="10m")["auth"]["client_token"]
    limited = new_client(token)

    read = limited.secrets.kv.v2.read_secret_version("compat/allowed", raise_on_deleted_version=True)
    assert read["data"]["data"] == {"a": "1"}
    limited.secrets.kv.v2.create_or_update_secret("compat/new", {"c": "3"})
    with pytest.raises(exceptions.Forbidden):
        limited.secrets.kv.v2.read_secret_version("other/denied", raise_on_deleted_version=True)
    with pytest.raises(exceptions.Forbidden):
        limited.secrets.kv.v2.delete_metadata_and_all_versions("compat/allowed")
    with pytest.raises(exceptions.Forbidden):
        limited.sys.create_or_update_policy(unique("escalate"), 'path "*" { capabilities = ["sudo"] }')

    caps = limited.sys.get_capabilities(["secret/data/compat/x", "secret/data/other/x"])
    assert sorted(caps["secret/data/compat/x"]) == ["create", "list", "read", "update"]
    assert caps["secret/data/other/x"] == ["deny"]

    # Deleting the policy takes the access away at once.
    client.sys.delete_policy(name)
    with pytest.raises(exceptions.Forbidden):
        limited.secrets.kv.v2.read_secret_version("compat/allowed", raise_on_deleted_version=True)


def test_unauthenticated_client(anon):
    assert anon.is_authenticated() is False
    with pytest.raises(exceptions.Forbidden):
        anon.sys.list_policies()


def test_hvac_client_is_authenticated(client):
    assert client.is_authenticated() is True
    bogus = hvac.Client(url=client.url, token="not-a-token", timeout=20)
    assert bogus.is_authenticated() is False


def test_read_leader_status(client):
    """`vault status` reads sys/leader after sys/seal-status and fails when
    it errors; a single node answers ha_enabled=false."""
    leader = client.sys.read_leader_status()
    assert leader["ha_enabled"] is False
    assert "is_self" in leader
    assert "leader_address" in leader


def test_mount_tuning_reports_effective_ttls(client, unique):
    """Vault's sys/mounts/<path>/tune reports the TTLs in force: a mount
    that sets none shows the system defaults (768h in Vault), never 0."""
    path = unique("ttl")
    client.sys.enable_secrets_engine("kv", path=path, options={"version": "2"})
    tuning = client.sys.read_mount_configuration(path)["data"]
    assert tuning["default_lease_ttl"] > 0
    assert tuning["max_lease_ttl"] >= tuning["default_lease_ttl"]
    auth_tuning = client.sys.read_auth_method_tuning("token")["data"]
    assert auth_tuning["default_lease_ttl"] > 0
    assert auth_tuning["max_lease_ttl"] >= auth_tuning["default_lease_ttl"]
    client.sys.disable_secrets_engine(path)


def test_encryption_key_status_and_rotation(client):
    status = client.sys.get_encryption_key_status()
    term = status["data"]["term"]
    assert term >= 1
    assert client.sys.rotate_encryption_key().status_code == 204
    assert client.sys.get_encryption_key_status()["data"]["term"] == term + 1
    # hvac's deprecated property reads the top-level copy.
    assert client.key_status["term"] == term + 1
