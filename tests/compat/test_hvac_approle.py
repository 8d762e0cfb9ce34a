"""hvac's AppRole auth method (`client.auth.approle`) against Zafe's AppRole
(R-AUTH-11): roles, role ids, secret ids (generated and custom, use counts,
CIDR binding, destroy by value and by accessor), login."""

import hvac
import pytest
from hvac import exceptions

from conftest import make_client

MOUNT = "approle"
POLICY = 'path "secret/data/app/*" { capabilities = ["read"] }'


@pytest.fixture(scope="module", autouse=True)
def approle_mount(server):
    root = hvac.Client(url=server.url, token=server.root_token, timeout=20)
    root.sys.enable_auth_method("approle", path=MOUNT)
    root.sys.create_or_update_policy("app-reader", POLICY)
    root.secrets.kv.v2.create_or_update_secret("app/config", {"db": "postgres://app"})
    yield MOUNT


@pytest.fixture
def approle(client):
    return client.auth.approle


def make_role(approle, name, **kwargs):
    kwargs.setdefault("token_policies", ["app-reader"])
    kwargs.setdefault("token_ttl", "20m")
    kwargs.setdefault("token_max_ttl", "1h")
    resp = approle.create_or_update_approle(name, mount_point=MOUNT, **kwargs)
    assert resp.status_code == 204
    return name


def test_create_read_list_delete_role(approle, unique):
    name = make_role(approle, unique("role"), secret_id_ttl="10m", secret_id_num_uses=5)
    role = approle.read_role(name, mount_point=MOUNT)["data"]
    assert role["token_policies"] == ["app-reader"]
    assert role["token_ttl"] == 1200
    assert role["token_max_ttl"] == 3600
    assert role["secret_id_ttl"] == 600
    assert role["secret_id_num_uses"] == 5
    assert role["bind_secret_id"] is True
    assert name in approle.list_roles(mount_point=MOUNT)["data"]["keys"]
    # Update keeps what is not given.
    approle.create_or_update_approle(name, token_ttl="5m", mount_point=MOUNT)
    role = approle.read_role(name, mount_point=MOUNT)["data"]
    assert role["token_ttl"] == 300
    assert role["token_policies"] == ["app-reader"]
    assert approle.delete_role(name, mount_point=MOUNT).status_code == 204
    with pytest.raises(exceptions.InvalidPath):
        approle.read_role(name, mount_point=MOUNT)


def test_read_and_update_role_id(approle, unique):
    name = make_role(approle, unique("rid"))
    role_id = approle.read_role_id(name, mount_point=MOUNT)["data"]["role_id"]
    assert role_id
    custom = "custom-" + unique("id")
    assert approle.update_role_id(name, custom, mount_point=MOUNT).status_code == 204
    assert approle.read_role_id(name, mount_point=MOUNT)["data"]["role_id"] == custom


def test_generate_secret_id_and_login(approle, server, unique):
    name = make_role(approle, unique("login"))
    role_id = approle.read_role_id(name, mount_point=MOUNT)["data"]["role_id"]
    generated = approle.generate_secret_id(name, metadata={"host": "ci-1"}, mount_point=MOUNT)["data"]
    assert generated["secret_id"]
    assert generated["secret_id_accessor"]
    assert "secret_id_ttl" in generated

    app = make_client(server)
    login = app.auth.approle.login(role_id, generated["secret_id"], mount_point=MOUNT)
    auth = login["auth"]
    assert auth["client_token"]
    assert sorted(auth["policies"]) == ["app-reader", "default"]
    assert auth["lease_duration"] == 1200
    assert auth["renewable"] is True
    assert auth["metadata"]["role_name"] == name
    # use_token=True: hvac now uses the new token.
    assert app.token == auth["client_token"]
    assert app.is_authenticated() is True
    out = app.secrets.kv.v2.read_secret_version("app/config", raise_on_deleted_version=True)
    assert out["data"]["data"] == {"db": "postgres://app"}
    with pytest.raises(exceptions.Forbidden):
        app.secrets.kv.v2.create_or_update_secret("app/config", {"db": "evil"})
    looked = app.auth.token.lookup_self()["data"]
    assert looked["path"] == f"auth/{MOUNT}/login"
    assert looked["meta"]["role_name"] == name


def test_read_secret_id_and_accessors(approle, unique):
    name = make_role(approle, unique("sidinfo"))
    gen = approle.generate_secret_id(name, metadata={"host": "ci-2"}, mount_point=MOUNT)["data"]
    info = approle.read_secret_id(name, gen["secret_id"], mount_point=MOUNT)["data"]
    assert info["secret_id_accessor"] == gen["secret_id_accessor"]
    assert info["metadata"] == {"host": "ci-2"}
    for field in ("creation_time", "expiration_time", "secret_id_num_uses", "secret_id_ttl", "cidr_list"):
        assert field in info, f"secret-id lookup lacks {field}: {info}"
    accessors = approle.list_secret_id_accessors(name, mount_point=MOUNT)["data"]["keys"]
    assert gen["secret_id_accessor"] in accessors
    by_acc = approle.read_secret_id_accessor(name, gen["secret_id_accessor"], mount_point=MOUNT)["data"]
    assert by_acc["metadata"] == {"host": "ci-2"}
    assert "secret_id" not in by_acc


def test_destroy_secret_id(approle, server, unique):
    name = make_role(approle, unique("destroy"))
    role_id = approle.read_role_id(name, mount_point=MOUNT)["data"]["role_id"]
    sid = approle.generate_secret_id(name, mount_point=MOUNT)["data"]["secret_id"]
    assert approle.destroy_secret_id(name, sid, mount_point=MOUNT).status_code == 204
    app = make_client(server)
    with pytest.raises(exceptions.InvalidRequest):
        app.auth.approle.login(role_id, sid, mount_point=MOUNT)
    # And by accessor.
    gen = approle.generate_secret_id(name, mount_point=MOUNT)["data"]
    resp = approle.destroy_secret_id_accessor(name, gen["secret_id_accessor"], mount_point=MOUNT)
    assert resp.status_code == 204
    with pytest.raises(exceptions.InvalidRequest):
        app.auth.approle.login(role_id, gen["secret_id"], mount_point=MOUNT)
    # An empty list is a 404, as in Vault.
    with pytest.raises(exceptions.InvalidPath):
        approle.list_secret_id_accessors(name, mount_point=MOUNT)


def test_custom_secret_id(approle, server, unique):
    name = make_role(approle, unique("custom"))
    role_id = approle.read_role_id(name, mount_point=MOUNT)["data"]["role_id"]
    custom = "my-own-secret-" + unique("s")
    out = approle.create_custom_secret_id(name, custom, mount_point=MOUNT)["data"]
    assert out["secret_id"] == custom
    app = make_client(server)
    assert app.auth.approle.login(role_id, custom, mount_point=MOUNT)["auth"]["client_token"]


def test_secret_id_num_uses(approle, server, unique):
    name = make_role(approle, unique("uses"), secret_id_num_uses=1)
    role_id = approle.read_role_id(name, mount_point=MOUNT)["data"]["role_id"]
    sid = approle.generate_secret_id(name, mount_point=MOUNT)["data"]["secret_id"]
    app = make_client(server)
    app.auth.approle.login(role_id, sid, mount_point=MOUNT, use_token=False)
    with pytest.raises(exceptions.InvalidRequest):
        app.auth.approle.login(role_id, sid, mount_point=MOUNT, use_token=False)


def test_wrong_credentials(approle, server, unique):
    name = make_role(approle, unique("wrong"))
    role_id = approle.read_role_id(name, mount_point=MOUNT)["data"]["role_id"]
    sid = approle.generate_secret_id(name, mount_point=MOUNT)["data"]["secret_id"]
    app = make_client(server)
    with pytest.raises(exceptions.InvalidRequest):
        app.auth.approle.login(role_id, sid + "x", mount_point=MOUNT)
    with pytest.raises(exceptions.InvalidRequest):
        app.auth.approle.login("no-such-role-id", sid, mount_point=MOUNT)
    assert app.token is None


def test_cidr_binding(approle, server, unique):
    elsewhere = make_role(approle, unique("cidr-no"), secret_id_bound_cidrs=["10.0.0.0/8"])
    here = make_role(approle, unique("cidr-yes"), secret_id_bound_cidrs=["127.0.0.0/8"])
    app = make_client(server)
    rid = approle.read_role_id(elsewhere, mount_point=MOUNT)["data"]["role_id"]
    sid = approle.generate_secret_id(elsewhere, mount_point=MOUNT)["data"]["secret_id"]
    with pytest.raises(exceptions.InvalidRequest):
        app.auth.approle.login(rid, sid, mount_point=MOUNT, use_token=False)
    rid = approle.read_role_id(here, mount_point=MOUNT)["data"]["role_id"]
    sid = approle.generate_secret_id(here, mount_point=MOUNT)["data"]["secret_id"]
    assert app.auth.approle.login(rid, sid, mount_point=MOUNT, use_token=False)["auth"]["client_token"]
    # Per-secret-id CIDRs (cidr_list) are checked too.
    # (They must lie within the role's secret_id_bound_cidrs, as in Vault.)
    sid = approle.generate_secret_id(here, cidr_list=["127.0.0.2/32"], mount_point=MOUNT)["data"]["secret_id"]
    with pytest.raises(exceptions.InvalidRequest):
        app.auth.approle.login(rid, sid, mount_point=MOUNT, use_token=False)


def test_token_bound_cidrs(approle, server, unique):
    name = make_role(approle, unique("tokcidr"), token_bound_cidrs=["10.0.0.0/8"])
    rid = approle.read_role_id(name, mount_point=MOUNT)["data"]["role_id"]
    sid = approle.generate_secret_id(name, mount_point=MOUNT)["data"]["secret_id"]
    app = make_client(server)
    app.auth.approle.login(rid, sid, mount_point=MOUNT)
    # The token was issued but cannot be used from 127.0.0.1.
    assert app.is_authenticated() is False


def test_role_without_secret_id(approle, server, unique):
    name = make_role(approle, unique("nosid"), bind_secret_id=False, secret_id_bound_cidrs=["127.0.0.1/32"])
    rid = approle.read_role_id(name, mount_point=MOUNT)["data"]["role_id"]
    app = make_client(server)
    assert app.auth.approle.login(rid, mount_point=MOUNT)["auth"]["client_token"]


def test_admin_policy_json_and_approle_login_like_hvacs_own_tests(client, server, unique):
    """hvac's own integration tests log in through AppRole with a JSON policy
    granting everything under "*"; this is that flow."""
    client.sys.create_or_update_policy(
        "compat-admin",
        {"path": {"*": {"capabilities": ["sudo", "create", "read", "update", "delete", "list"]}}},
    )
    name = make_role(client.auth.approle, unique("admin"), token_policies=["compat-admin"])
    client.auth.approle.update_role_id(name, "admin-role-id-" + name, mount_point=MOUNT)
    sid = client.auth.approle.generate_secret_id(name, mount_point=MOUNT)["data"]["secret_id"]
    app = make_client(server)
    app.auth.approle.login("admin-role-id-" + name, sid, mount_point=MOUNT)
    assert "secret/" in app.sys.list_mounted_secrets_engines()["data"]


def test_wrapped_secret_id_is_never_returned_in_the_clear(approle, unique):
    """The usual AppRole pattern: a trusted orchestrator fetches a *wrapped*
    secret id (wrap_ttl) and hands the wrapping token to the machine. The
    server must wrap it or refuse, never return the secret id itself."""
    name = make_role(approle, unique("wrapped"))
    try:
        resp = approle.generate_secret_id(name, wrap_ttl="2m", mount_point=MOUNT)
    except exceptions.InvalidRequest:
        return  # refused: acceptable for a server without response wrapping
    assert not (resp.get("data") or {}).get("secret_id"), f"asked for a wrapped secret id, got it in the clear: {resp}"
    assert resp["wrap_info"]["ttl"] == 120
