"""hvac's init / unseal / seal flow against a non-dev Zafe server (SQLite in
a temporary directory, no master key): exactly what a Vault operator does
with `sys.initialize(5, 3)` and `submit_unseal_keys`."""

import secrets

import pytest
import requests
from hvac import exceptions

from conftest import make_client, sealed_server


@pytest.fixture(scope="module")
def server():
    with sealed_server() as s:
        yield s


@pytest.fixture(scope="module")
def init_result(server):
    """Initialises the server once for the module (the first test checks the
    uninitialised state before this runs)."""
    client = make_client(server)
    result = client.sys.initialize(secret_shares=5, secret_threshold=3)
    return result


def test_uninitialised_server(server):
    client = make_client(server)
    assert client.sys.is_initialized() is False
    status = client.sys.read_seal_status()
    assert status["initialized"] is False
    assert status["sealed"] is True
    health = client.sys.read_health_status(method="GET")
    assert isinstance(health, requests.Response)
    assert health.status_code == 501
    assert health.json()["initialized"] is False
    # uninitcode overrides the status for monitoring that wants a 200.
    assert client.sys.read_health_status(method="GET", uninit_code=200)["initialized"] is False
    # Unsealing before init is an error, not a crash.
    with pytest.raises((exceptions.InvalidRequest, exceptions.VaultDown)):
        client.sys.submit_unseal_key("00" * 33)


def test_initialize_5_of_3(server, init_result):
    assert len(init_result["keys"]) == 5
    assert len(init_result["keys_base64"]) == 5
    assert len(set(init_result["keys"])) == 5
    assert init_result["root_token"]
    client = make_client(server)
    assert client.sys.is_initialized() is True
    assert client.sys.is_sealed() is True
    status = client.sys.read_seal_status()
    assert (status["t"], status["n"], status["progress"]) == (3, 5, 0)
    # A second initialisation is refused.
    with pytest.raises(exceptions.InvalidRequest):
        client.sys.initialize(secret_shares=5, secret_threshold=3)


def test_sealed_server_answers_503(server, init_result):
    client = make_client(server, init_result["root_token"])
    health = client.sys.read_health_status(method="GET")
    assert isinstance(health, requests.Response)
    assert health.status_code == 503
    assert health.json()["sealed"] is True
    assert client.sys.read_health_status(method="GET", sealed_code=200)["sealed"] is True
    with pytest.raises(exceptions.VaultDown):
        client.sys.list_mounted_secrets_engines()
    with pytest.raises(exceptions.VaultDown):
        client.secrets.kv.v2.read_secret_version("x", raise_on_deleted_version=True)


def test_unseal_progress_and_reset(server, init_result):
    client = make_client(server)
    keys = init_result["keys"]
    status = client.sys.submit_unseal_key(keys[0])
    assert status["sealed"] is True
    assert status["progress"] == 1
    assert status["t"] == 3
    status = client.sys.submit_unseal_key(reset=True)
    assert status["progress"] == 0
    assert status["sealed"] is True


def test_wrong_key_is_refused(server, init_result):
    client = make_client(server)
    client.sys.submit_unseal_key(init_result["keys"][0])
    wrong = secrets.token_hex(len(bytes.fromhex(init_result["keys"][0])))
    with pytest.raises(exceptions.InvalidRequest):
        client.sys.submit_unseal_key(wrong)
    status = client.sys.read_seal_status()
    assert status["sealed"] is True
    client.sys.submit_unseal_key(reset=True)


def test_submit_unseal_keys_unseals(server, init_result):
    client = make_client(server, init_result["root_token"])
    status = client.sys.submit_unseal_keys(init_result["keys"][1:4])
    assert status["sealed"] is False
    assert status["progress"] == 0
    assert client.sys.is_sealed() is False
    health = client.sys.read_health_status(method="GET")
    assert isinstance(health, dict) and health["sealed"] is False
    # The root token works and the default mounts are there.
    assert "secret/" in client.sys.list_mounted_secrets_engines()["data"]
    client.secrets.kv.v2.create_or_update_secret("persisted", {"v": "1"})


def test_seal_needs_a_privileged_token(server, init_result):
    client = make_client(server, init_result["root_token"])
    assert client.sys.is_sealed() is False
    with pytest.raises(exceptions.Forbidden):
        make_client(server).sys.seal()
    weak = client.auth.token.create(policies=["default"], ttl="5m")["auth"]["client_token"]
    with pytest.raises(exceptions.Forbidden):
        make_client(server, weak).sys.seal()
    assert client.sys.is_sealed() is False


def test_seal_then_unseal_with_base64_keys(server, init_result):
    client = make_client(server, init_result["root_token"])
    resp = client.sys.seal()
    assert resp.status_code == 204
    assert client.sys.is_sealed() is True
    with pytest.raises(exceptions.VaultDown):
        client.secrets.kv.v2.read_secret_version("persisted", raise_on_deleted_version=True)
    # Vault accepts the base64 form of the shares as well.
    status = client.sys.submit_unseal_keys(init_result["keys_base64"][2:5])
    assert status["sealed"] is False
    read = client.secrets.kv.v2.read_secret_version("persisted", raise_on_deleted_version=True)
    assert read["data"]["data"] == {"v": "1"}


def test_rekey_with_hvac(server, init_result):
    """`sys.start_rekey` / `rekey_multi`: new shares replace the old ones."""
    client = make_client(server, init_result["root_token"])
    assert client.sys.is_sealed() is False
    assert client.sys.read_rekey_progress()["started"] is False
    started = client.sys.start_rekey(secret_shares=3, secret_threshold=2)
    assert started["started"] is True
    assert started["nonce"]
    assert client.sys.read_rekey_progress()["started"] is True
    client.sys.cancel_rekey()
    assert client.sys.read_rekey_progress()["started"] is False

    started = client.sys.start_rekey(secret_shares=3, secret_threshold=2)
    result = client.sys.rekey_multi(init_result["keys"][:3], nonce=started["nonce"])
    assert result["complete"] is True
    assert len(result["keys"]) == 3
    client.sys.seal()
    # The old shares no longer unseal; two new ones do.
    with pytest.raises(exceptions.InvalidRequest):
        client.sys.submit_unseal_key(init_result["keys"][0])
    client.sys.submit_unseal_key(reset=True)
    status = client.sys.submit_unseal_keys(result["keys"][:2])
    assert status["sealed"] is False
