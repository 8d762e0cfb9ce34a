"""hvac's token auth method (`client.auth.token`) against Zafe's token store
(R-AUTH-10): create (child, orphan, limited use, role), lookup (self, by
token, by accessor), renew, revoke (self, by token, by accessor, orphaning
children), list accessors, roles."""

import pytest
from hvac import exceptions

POLICY = 'path "secret/data/tok/*" { capabilities = ["read", "create", "update"] }'


@pytest.fixture(scope="module", autouse=True)
def policies(server):
    import hvac

    root = hvac.Client(url=server.url, token=server.root_token, timeout=20)
    root.sys.create_or_update_policy("tok-reader", POLICY)
    root.sys.create_or_update_policy("tok-other", 'path "secret/data/other/*" { capabilities = ["read"] }')
    # As in Vault, the default policy does not let a token create children.
    root.sys.create_or_update_policy("tok-creator", 'path "auth/token/create" { capabilities = ["create", "update"] }')


def test_create_token(client):
    resp = client.auth.token.create(policies=["tok-reader"], ttl="1h", meta={"app": "compat"}, display_name="ci")
    auth = resp["auth"]
    assert auth["client_token"]
    assert auth["accessor"]
    assert sorted(auth["policies"]) == ["default", "tok-reader"]
    assert sorted(auth["token_policies"]) == ["default", "tok-reader"]
    assert auth["lease_duration"] == 3600
    assert auth["renewable"] is True
    assert auth["metadata"] == {"app": "compat"}
    assert auth["orphan"] is False
    assert auth.get("token_type", "service") == "service"


def test_lookup_self(client, new_client):
    auth = client.auth.token.create(policies=["tok-reader"], ttl="30m", display_name="me")["auth"]
    me = new_client(auth["client_token"])
    data = me.auth.token.lookup_self()["data"]
    assert data["id"] == auth["client_token"]
    assert data["accessor"] == auth["accessor"]
    assert sorted(data["policies"]) == ["default", "tok-reader"]
    assert 0 < data["ttl"] <= 1800
    assert data["creation_ttl"] == 1800
    assert data["display_name"] == "token-me"
    assert data["renewable"] is True
    assert data["orphan"] is False
    assert data["path"] == "auth/token/create"
    for field in ("creation_time", "expire_time", "explicit_max_ttl", "num_uses", "type", "issue_time", "meta"):
        assert field in data, f"lookup-self lacks {field}: {data}"
    assert me.is_authenticated() is True


def test_root_lookup_self(client):
    data = client.auth.token.lookup_self()["data"]
    assert data["policies"] == ["root"]
    assert data["ttl"] == 0
    assert data["expire_time"] is None


def test_lookup_and_lookup_accessor(client):
    auth = client.auth.token.create(policies=["tok-reader"], ttl="1h")["auth"]
    data = client.auth.token.lookup(auth["client_token"])["data"]
    assert data["id"] == auth["client_token"]
    assert data["accessor"] == auth["accessor"]
    by_acc = client.auth.token.lookup_accessor(auth["accessor"])["data"]
    assert by_acc["accessor"] == auth["accessor"]
    # A lookup by accessor never reveals the token.
    assert by_acc["id"] == ""
    assert sorted(by_acc["policies"]) == ["default", "tok-reader"]
    with pytest.raises((exceptions.Forbidden, exceptions.InvalidRequest)):
        client.auth.token.lookup("no-such-token")


def test_create_orphan(client):
    parent = client.auth.token.create(policies=["tok-reader"], ttl="1h")["auth"]
    orphan = client.auth.token.create_orphan(policies=["tok-reader"], ttl="1h")["auth"]
    assert orphan["orphan"] is True
    assert client.auth.token.lookup(orphan["client_token"])["data"]["orphan"] is True
    # no_parent=True on create (root may) is an orphan too.
    also = client.auth.token.create(policies=["tok-reader"], ttl="1h", no_parent=True)["auth"]
    assert also["orphan"] is True
    assert parent["orphan"] is False


def test_renew_self_and_renew(client, new_client):
    auth = client.auth.token.create(policies=["tok-reader"], ttl="10m", explicit_max_ttl="2h")["auth"]
    me = new_client(auth["client_token"])
    renewed = me.auth.token.renew_self(increment="1h")["auth"]
    assert renewed["client_token"] == auth["client_token"]
    assert 1800 < renewed["lease_duration"] <= 3600
    ttl = me.auth.token.lookup_self()["data"]["ttl"]
    assert 1800 < ttl <= 3600
    renewed = client.auth.token.renew(auth["client_token"], increment="30m")["auth"]
    assert 0 < renewed["lease_duration"] <= 1800
    # renew_accessor works without the token.
    renewed = client.auth.token.renew_accessor(auth["accessor"], increment="20m")["auth"]
    assert 0 < renewed["lease_duration"] <= 1200


def test_non_renewable_token(client, new_client):
    auth = client.auth.token.create(policies=["tok-reader"], ttl="10m", renewable=False)["auth"]
    assert auth["renewable"] is False
    with pytest.raises(exceptions.InvalidRequest):
        new_client(auth["client_token"]).auth.token.renew_self()


def test_revoke_self(client, new_client):
    auth = client.auth.token.create(policies=["tok-reader"], ttl="1h")["auth"]
    me = new_client(auth["client_token"])
    assert me.auth.token.revoke_self().status_code == 204
    assert me.is_authenticated() is False
    with pytest.raises(exceptions.Forbidden):
        me.auth.token.lookup_self()


def test_revoke_and_revoke_accessor(client, new_client):
    a = client.auth.token.create(policies=["tok-reader"], ttl="1h")["auth"]
    b = client.auth.token.create(policies=["tok-reader"], ttl="1h")["auth"]
    assert client.auth.token.revoke(a["client_token"]).status_code == 204
    assert new_client(a["client_token"]).is_authenticated() is False
    assert client.auth.token.revoke_accessor(b["accessor"]).status_code == 204
    assert new_client(b["client_token"]).is_authenticated() is False
    with pytest.raises((exceptions.InvalidRequest, exceptions.InvalidPath)):
        client.auth.token.lookup_accessor(b["accessor"])


def test_children_die_with_their_parent_unless_orphaned(client, new_client):
    parent = client.auth.token.create(policies=["tok-reader", "tok-creator"], ttl="1h")["auth"]
    p = new_client(parent["client_token"])
    child = p.auth.token.create(policies=["tok-reader"], ttl="30m")["auth"]
    assert child["orphan"] is False
    # A child cannot have policies its parent lacks (Vault: 400).
    with pytest.raises(exceptions.InvalidRequest):
        p.auth.token.create(policies=["tok-other"], ttl="30m")
    client.auth.token.revoke(parent["client_token"])
    assert new_client(child["client_token"]).is_authenticated() is False

    parent = client.auth.token.create(policies=["tok-reader", "tok-creator"], ttl="1h")["auth"]
    child = new_client(parent["client_token"]).auth.token.create(policies=["tok-reader"], ttl="30m")["auth"]
    assert client.auth.token.revoke_and_orphan_children(parent["client_token"]).status_code == 204
    c = new_client(child["client_token"])
    assert c.is_authenticated() is True
    assert c.auth.token.lookup_self()["data"]["orphan"] is True


def test_num_uses(client, new_client):
    auth = client.auth.token.create(policies=["tok-reader"], ttl="1h", num_uses=2)["auth"]
    limited = new_client(auth["client_token"])
    client.secrets.kv.v2.create_or_update_secret("tok/x", {"v": "1"})
    assert limited.secrets.kv.v2.read_secret_version("tok/x", raise_on_deleted_version=True)["data"]["data"] == {"v": "1"}
    assert limited.secrets.kv.v2.read_secret_version("tok/x", raise_on_deleted_version=True)["data"]["data"] == {"v": "1"}
    with pytest.raises(exceptions.Forbidden):
        limited.secrets.kv.v2.read_secret_version("tok/x", raise_on_deleted_version=True)


def test_list_accessors(client):
    auth = client.auth.token.create(policies=["tok-reader"], ttl="1h")["auth"]
    keys = client.auth.token.list_accessors()["data"]["keys"]
    assert auth["accessor"] in keys
    root_accessor = client.auth.token.lookup_self()["data"]["accessor"]
    assert root_accessor in keys


def test_list_accessors_needs_sudo(client, new_client):
    auth = client.auth.token.create(policies=["tok-reader"], ttl="1h")["auth"]
    with pytest.raises(exceptions.Forbidden):
        new_client(auth["client_token"]).auth.token.list_accessors()


def test_token_roles(client):
    resp = client.auth.token.create_or_update_role(
        "compat-role",
        allowed_policies=["tok-reader"],
        orphan=True,
        token_period="1h",
        renewable=True,
    )
    assert resp.status_code == 204
    role = client.auth.token.read_role("compat-role")["data"]
    assert role["allowed_policies"] == ["tok-reader"]
    assert role["orphan"] is True
    assert "compat-role" in client.auth.token.list_roles()["data"]["keys"]
    auth = client.auth.token.create(role_name="compat-role", policies=["tok-reader"])["auth"]
    assert auth["orphan"] is True
    assert sorted(auth["policies"]) == ["default", "tok-reader"]
    data = client.auth.token.lookup(auth["client_token"])["data"]
    assert data["role"] == "compat-role"
    assert data["period"] == 3600
    # A role cannot grant policies outside its allowed list.
    with pytest.raises(exceptions.InvalidRequest):
        client.auth.token.create(role_name="compat-role", policies=["tok-other"])
    assert client.auth.token.delete_role("compat-role").status_code == 204
    with pytest.raises(exceptions.InvalidPath):
        client.auth.token.read_role("compat-role")


def test_tidy(client):
    resp = client.auth.token.tidy()
    assert isinstance(resp, dict) or resp.status_code in (200, 202, 204)


def test_wrap_ttl_is_never_silently_ignored(client, new_client):
    """hvac's `wrap_ttl` asks for response wrapping (X-Vault-Wrap-TTL): the
    caller means to hand the response to someone else and expects only a
    single-use wrapping token. A server must either wrap (wrap_info, no
    secret in the body) or refuse; returning the new token in the clear
    defeats the point."""
    try:
        resp = client.auth.token.create(policies=["tok-reader"], ttl="1h", wrap_ttl="5m")
    except exceptions.InvalidRequest:
        return  # refused: acceptable for a server without response wrapping
    assert resp.get("auth") is None, f"asked for a wrapped token, got it in the clear: {resp}"
    info = resp["wrap_info"]
    assert info["ttl"] == 300
    unwrapped = new_client(info["token"]).sys.unwrap()
    assert unwrapped["auth"]["client_token"]
