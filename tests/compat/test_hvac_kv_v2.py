"""Every KV version 2 operation hvac exposes (`client.secrets.kv.v2`),
against Zafe's KV engine (R-KV-1), on the default `secret/` mount and on a
mount enabled through hvac."""

import time

import pytest
from hvac import exceptions

MOUNT = "kvcompat"


@pytest.fixture(scope="module", autouse=True)
def kv_mount(server):
    import hvac

    root = hvac.Client(url=server.url, token=server.root_token, timeout=20)
    root.sys.enable_secrets_engine("kv", path=MOUNT, options={"version": 2})
    yield MOUNT


@pytest.fixture
def kv(client):
    return client.secrets.kv.v2


def read(kv, path, version=None, mount_point=MOUNT):
    return kv.read_secret_version(path, version=version, mount_point=mount_point, raise_on_deleted_version=True)


def test_create_and_read_on_default_mount(kv, unique):
    path = unique("default")
    resp = kv.create_or_update_secret(path, {"user": "alice", "n": 1})
    meta = resp["data"]
    assert meta["version"] == 1
    assert meta["destroyed"] is False
    assert meta["deletion_time"] == ""
    assert meta["created_time"].endswith("Z")
    out = kv.read_secret_version(path, raise_on_deleted_version=True)
    assert out["data"]["data"] == {"user": "alice", "n": 1}
    assert out["data"]["metadata"]["version"] == 1
    assert "custom_metadata" in out["data"]["metadata"]
    # hvac's read_secret is read_secret_version without a version.
    assert kv.read_secret(path, raise_on_deleted_version=True)["data"]["data"] == {"user": "alice", "n": 1}


def test_versions_are_kept_and_readable(kv, unique):
    path = unique("ver")
    for i in range(1, 4):
        assert kv.create_or_update_secret(path, {"i": i}, mount_point=MOUNT)["data"]["version"] == i
    assert read(kv, path)["data"]["data"] == {"i": 3}
    for i in range(1, 4):
        out = read(kv, path, version=i)
        assert out["data"]["data"] == {"i": i}
        assert out["data"]["metadata"]["version"] == i
    with pytest.raises(exceptions.InvalidPath):
        read(kv, path, version=99)


def test_check_and_set(kv, unique):
    path = unique("cas")
    # cas=0: write only if the secret does not exist yet.
    kv.create_or_update_secret(path, {"v": 1}, cas=0, mount_point=MOUNT)
    with pytest.raises(exceptions.InvalidRequest):
        kv.create_or_update_secret(path, {"v": 2}, cas=0, mount_point=MOUNT)
    with pytest.raises(exceptions.InvalidRequest):
        kv.create_or_update_secret(path, {"v": 2}, cas=5, mount_point=MOUNT)
    out = kv.create_or_update_secret(path, {"v": 2}, cas=1, mount_point=MOUNT)
    assert out["data"]["version"] == 2
    assert read(kv, path)["data"]["data"] == {"v": 2}


def test_patch(kv, unique):
    path = unique("patch")
    kv.create_or_update_secret(path, {"a": "1", "b": "2"}, mount_point=MOUNT)
    out = kv.patch(path, {"b": "20", "c": "3"}, mount_point=MOUNT)
    assert out["data"]["version"] == 2
    assert read(kv, path)["data"]["data"] == {"a": "1", "b": "20", "c": "3"}
    # hvac refuses to patch a secret that does not exist (it reads first).
    with pytest.raises(exceptions.InvalidPath):
        kv.patch(unique("absent"), {"x": "1"}, mount_point=MOUNT)


def test_native_http_patch(client, kv, unique):
    """`vault kv patch` (and other clients) send a JSON merge patch with
    PATCH; hvac's adapter can send it too."""
    path = unique("mergepatch")
    kv.create_or_update_secret(path, {"a": "1", "b": "2"}, mount_point=MOUNT)
    resp = client.adapter.request(
        "PATCH",
        f"/v1/{MOUNT}/data/{path}",
        json={"data": {"b": None, "c": "3"}},
        headers={"Content-Type": "application/merge-patch+json"},
    )
    assert resp["data"]["version"] == 2
    assert read(kv, path)["data"]["data"] == {"a": "1", "c": "3"}


def test_list_secrets(kv, unique):
    folder = unique("dir")
    for name in ("a", "b", "sub/c", "sub/deeper/d"):
        kv.create_or_update_secret(f"{folder}/{name}", {"x": name}, mount_point=MOUNT)
    listed = kv.list_secrets(folder, mount_point=MOUNT)
    assert sorted(listed["data"]["keys"]) == ["a", "b", "sub/"]
    assert sorted(kv.list_secrets(f"{folder}/sub", mount_point=MOUNT)["data"]["keys"]) == ["c", "deeper/"]
    # A folder that holds nothing is a 404, as in Vault.
    with pytest.raises(exceptions.InvalidPath):
        kv.list_secrets(unique("nothing-here"), mount_point=MOUNT)


def test_read_metadata(kv, unique):
    path = unique("meta")
    kv.create_or_update_secret(path, {"v": 1}, mount_point=MOUNT)
    kv.create_or_update_secret(path, {"v": 2}, mount_point=MOUNT)
    meta = kv.read_secret_metadata(path, mount_point=MOUNT)["data"]
    for field in (
        "cas_required",
        "created_time",
        "current_version",
        "delete_version_after",
        "max_versions",
        "oldest_version",
        "updated_time",
        "custom_metadata",
        "versions",
    ):
        assert field in meta, f"metadata lacks {field}: {meta}"
    assert meta["current_version"] == 2
    assert meta["oldest_version"] in (0, 1)
    assert sorted(meta["versions"]) == ["1", "2"]
    v1 = meta["versions"]["1"]
    assert v1["destroyed"] is False and v1["deletion_time"] == ""
    assert v1["created_time"].endswith("Z")
    with pytest.raises(exceptions.InvalidPath):
        kv.read_secret_metadata(unique("no-such"), mount_point=MOUNT)


def test_update_metadata(kv, unique):
    path = unique("upmeta")
    kv.create_or_update_secret(path, {"v": 1}, mount_point=MOUNT)
    resp = kv.update_metadata(
        path,
        max_versions=2,
        cas_required=True,
        delete_version_after="1h",
        custom_metadata={"owner": "team-a", "ticket": "42"},
        mount_point=MOUNT,
    )
    assert resp.status_code == 204
    meta = kv.read_secret_metadata(path, mount_point=MOUNT)["data"]
    assert meta["max_versions"] == 2
    assert meta["cas_required"] is True
    assert meta["delete_version_after"] == "1h0m0s"
    assert meta["custom_metadata"] == {"owner": "team-a", "ticket": "42"}
    # cas_required on the secret: a write without cas is refused.
    with pytest.raises(exceptions.InvalidRequest):
        kv.create_or_update_secret(path, {"v": 2}, mount_point=MOUNT)
    kv.create_or_update_secret(path, {"v": 2}, cas=1, mount_point=MOUNT)
    kv.create_or_update_secret(path, {"v": 3}, cas=2, mount_point=MOUNT)
    # max_versions=2: version 1 is gone.
    meta = kv.read_secret_metadata(path, mount_point=MOUNT)["data"]
    assert sorted(meta["versions"]) == ["2", "3"]
    assert meta["oldest_version"] == 2
    with pytest.raises(exceptions.InvalidPath):
        read(kv, path, version=1)
    # custom_metadata also shows in the data read.
    assert read(kv, path)["data"]["metadata"]["custom_metadata"] == {"owner": "team-a", "ticket": "42"}


def test_metadata_can_be_written_before_the_secret(kv, unique):
    path = unique("premeta")
    kv.update_metadata(path, max_versions=3, custom_metadata={"k": "v"}, mount_point=MOUNT)
    meta = kv.read_secret_metadata(path, mount_point=MOUNT)["data"]
    assert meta["max_versions"] == 3
    assert meta["current_version"] == 0
    kv.create_or_update_secret(path, {"v": 1}, mount_point=MOUNT)
    assert read(kv, path)["data"]["metadata"]["version"] == 1


def test_delete_latest_version_and_undelete(kv, unique):
    path = unique("dellatest")
    kv.create_or_update_secret(path, {"v": 1}, mount_point=MOUNT)
    kv.create_or_update_secret(path, {"v": 2}, mount_point=MOUNT)
    assert kv.delete_latest_version_of_secret(path, mount_point=MOUNT).status_code == 204
    with pytest.raises(exceptions.InvalidPath):
        read(kv, path)
    # With raise_on_deleted_version=False hvac hands back Vault's 404 body,
    # which carries the deleted version's metadata.
    deleted = kv.read_secret_version(path, mount_point=MOUNT, raise_on_deleted_version=False)
    assert deleted["data"]["data"] is None
    assert deleted["data"]["metadata"]["version"] == 2
    assert deleted["data"]["metadata"]["deletion_time"] != ""
    # Version 1 is untouched.
    assert read(kv, path, version=1)["data"]["data"] == {"v": 1}
    meta = kv.read_secret_metadata(path, mount_point=MOUNT)["data"]
    assert meta["versions"]["2"]["deletion_time"] != ""
    assert kv.undelete_secret_versions(path, [2], mount_point=MOUNT).status_code == 204
    assert read(kv, path)["data"]["data"] == {"v": 2}


def test_delete_and_undelete_versions(kv, unique):
    path = unique("delver")
    for i in range(1, 4):
        kv.create_or_update_secret(path, {"v": i}, mount_point=MOUNT)
    assert kv.delete_secret_versions(path, [1, 2], mount_point=MOUNT).status_code == 204
    meta = kv.read_secret_metadata(path, mount_point=MOUNT)["data"]
    assert meta["versions"]["1"]["deletion_time"] != ""
    assert meta["versions"]["2"]["deletion_time"] != ""
    assert meta["versions"]["3"]["deletion_time"] == ""
    with pytest.raises(exceptions.InvalidPath):
        read(kv, path, version=1)
    kv.undelete_secret_versions(path, [1], mount_point=MOUNT)
    assert read(kv, path, version=1)["data"]["data"] == {"v": 1}
    with pytest.raises(exceptions.InvalidPath):
        read(kv, path, version=2)
    # hvac validates the list itself.
    with pytest.raises(exceptions.ParamValidationError):
        kv.delete_secret_versions(path, [], mount_point=MOUNT)


def test_destroy_versions(kv, unique):
    path = unique("destroy")
    kv.create_or_update_secret(path, {"v": 1}, mount_point=MOUNT)
    kv.create_or_update_secret(path, {"v": 2}, mount_point=MOUNT)
    assert kv.destroy_secret_versions(path, [1], mount_point=MOUNT).status_code == 204
    meta = kv.read_secret_metadata(path, mount_point=MOUNT)["data"]
    assert meta["versions"]["1"]["destroyed"] is True
    with pytest.raises(exceptions.InvalidPath):
        read(kv, path, version=1)
    # A destroyed version cannot be undeleted.
    kv.undelete_secret_versions(path, [1], mount_point=MOUNT)
    with pytest.raises(exceptions.InvalidPath):
        read(kv, path, version=1)
    # Vault's 404 for a destroyed version still carries its metadata.
    with pytest.raises(exceptions.InvalidPath) as err:
        kv.read_secret_version(path, version=1, mount_point=MOUNT, raise_on_deleted_version=False)
    assert err.value.json["data"]["metadata"]["destroyed"] is True
    assert read(kv, path)["data"]["data"] == {"v": 2}


def test_delete_metadata_and_all_versions(kv, unique):
    folder = unique("purge")
    path = f"{folder}/s"
    kv.create_or_update_secret(path, {"v": 1}, mount_point=MOUNT)
    kv.create_or_update_secret(path, {"v": 2}, mount_point=MOUNT)
    assert kv.delete_metadata_and_all_versions(path, mount_point=MOUNT).status_code == 204
    with pytest.raises(exceptions.InvalidPath):
        kv.read_secret_metadata(path, mount_point=MOUNT)
    with pytest.raises(exceptions.InvalidPath):
        read(kv, path, version=1)
    with pytest.raises(exceptions.InvalidPath):
        kv.list_secrets(folder, mount_point=MOUNT)
    # The path starts over at version 1.
    assert kv.create_or_update_secret(path, {"v": "new"}, mount_point=MOUNT)["data"]["version"] == 1


def test_configure_and_read_configuration(client, kv, unique):
    mount = unique("kvconf")
    client.sys.enable_secrets_engine("kv", path=mount, options={"version": "2"})
    conf = kv.read_configuration(mount_point=mount)["data"]
    assert conf["max_versions"] == 0
    assert conf["cas_required"] is False
    assert conf["delete_version_after"] == "0s"

    resp = kv.configure(max_versions=3, cas_required=True, delete_version_after="30m", mount_point=mount)
    assert resp.status_code == 204
    conf = kv.read_configuration(mount_point=mount)["data"]
    assert conf["max_versions"] == 3
    assert conf["cas_required"] is True
    assert conf["delete_version_after"] == "30m0s"

    # The mount's settings apply to its secrets.
    with pytest.raises(exceptions.InvalidRequest):
        kv.create_or_update_secret("s", {"v": 0}, mount_point=mount)
    for i in range(5):
        kv.create_or_update_secret("s", {"v": i}, cas=i, mount_point=mount)
    meta = kv.read_secret_metadata("s", mount_point=mount)["data"]
    assert sorted(meta["versions"], key=int) == ["3", "4", "5"]
    kv.configure(max_versions=10, cas_required=False, mount_point=mount)
    assert kv.read_configuration(mount_point=mount)["data"]["cas_required"] is False
    client.sys.disable_secrets_engine(mount)


def test_delete_version_after_expires_versions(kv, unique):
    path = unique("ttl")
    kv.update_metadata(path, delete_version_after="1s", mount_point=MOUNT)
    kv.create_or_update_secret(path, {"v": 1}, mount_point=MOUNT)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            read(kv, path)
        except exceptions.InvalidPath:
            break
        time.sleep(0.25)
    else:
        pytest.fail("a version with delete_version_after=1s was still readable after 10s")


def test_missing_secret_is_404(kv, unique):
    with pytest.raises(exceptions.InvalidPath):
        read(kv, unique("missing"))
    with pytest.raises(exceptions.InvalidPath):
        kv.read_secret_version(unique("missing"), mount_point=MOUNT, raise_on_deleted_version=False)


def test_nested_paths_and_odd_characters(kv, unique):
    path = unique("odd") + "/a b/ü-ñ/x.y_z"
    kv.create_or_update_secret(path, {"k": "v"}, mount_point=MOUNT)
    assert read(kv, path)["data"]["data"] == {"k": "v"}
    parent = path.rsplit("/", 1)[0]
    assert kv.list_secrets(parent, mount_point=MOUNT)["data"]["keys"] == ["x.y_z"]


def test_kv_preflight_used_by_the_vault_cli(client, kv, unique):
    """`vault kv get/put/...` first asks sys/internal/ui/mounts/<path> which
    KV version serves the path; on a 404 it assumes KV version 1 and uses
    the v1 paths, which a KV v2 mount refuses. Sent through hvac's adapter
    (hvac itself does not call it)."""
    path = unique("preflight")
    kv.create_or_update_secret(path, {"k": "v"})
    info = client.adapter.get(f"/v1/sys/internal/ui/mounts/secret/{path}")["data"]
    assert info["path"] == "secret/"
    assert info["type"] == "kv"
    assert info["options"]["version"] == "2"
    info = client.adapter.get(f"/v1/sys/internal/ui/mounts/{MOUNT}/any/thing")["data"]
    assert info["path"] == f"{MOUNT}/"
    assert info["options"]["version"] == "2"
