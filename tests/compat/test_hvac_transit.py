"""hvac's transit API (`client.secrets.transit`) against Zafe's transit
engine (R-KV-3): keys, encrypt/decrypt/rewrap (single and batch), rotation,
minimum decryption version, data keys, random bytes, hashing, HMAC, Ed25519
signatures, trim and delete."""

import base64
import hashlib
import hmac as pyhmac

import hvac
import pytest
from hvac import exceptions

MOUNT = "transit"


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def unb64(text: str) -> bytes:
    return base64.b64decode(text)


@pytest.fixture(scope="module", autouse=True)
def transit_mount(server):
    root = hvac.Client(url=server.url, token=server.root_token, timeout=20)
    root.sys.enable_secrets_engine("transit", path=MOUNT)
    yield MOUNT


@pytest.fixture
def transit(client):
    return client.secrets.transit


def test_create_read_list_key(transit, unique):
    name = unique("aes")
    resp = transit.create_key(name)
    # Vault 1.12+ answers 200 with the key, older ones 204.
    assert isinstance(resp, dict) or resp.status_code == 204
    key = transit.read_key(name)["data"]
    assert key["name"] == name
    assert key["type"] == "aes256-gcm96"
    assert key["latest_version"] == 1
    assert key["min_decryption_version"] == 1
    assert key["min_encryption_version"] == 0
    assert key["deletion_allowed"] is False
    assert key["exportable"] is False
    assert key["supports_encryption"] is True
    assert key["supports_decryption"] is True
    assert key["supports_signing"] is False
    assert list(key["keys"]) == ["1"]
    assert name in transit.list_keys()["data"]["keys"]
    with pytest.raises(exceptions.InvalidPath):
        transit.read_key(unique("nope"))


def test_create_key_types(transit, unique):
    for key_type in ("aes256-gcm96", "chacha20-poly1305", "ed25519"):
        name = unique(key_type)
        transit.create_key(name, key_type=key_type)
        assert transit.read_key(name)["data"]["type"] == key_type


def test_encrypt_decrypt(transit, unique):
    name = unique("enc")
    transit.create_key(name)
    plaintext = b"attack at dawn \x00\xff"
    ct = transit.encrypt_data(name, plaintext=b64(plaintext))["data"]["ciphertext"]
    assert ct.startswith("vault:v1:")
    out = transit.decrypt_data(name, ciphertext=ct)["data"]["plaintext"]
    assert unb64(out) == plaintext
    # Tampering is detected.
    raw = bytearray(unb64(ct[len("vault:v1:"):]))
    raw[-1] ^= 1
    with pytest.raises(exceptions.InvalidRequest):
        transit.decrypt_data(name, ciphertext="vault:v1:" + b64(bytes(raw)))


def test_associated_data(transit, unique):
    name = unique("aad")
    transit.create_key(name)
    aad = b64(b"record-17")
    ct = transit.encrypt_data(name, plaintext=b64(b"x"), associated_data=aad)["data"]["ciphertext"]
    assert unb64(transit.decrypt_data(name, ciphertext=ct, associated_data=aad)["data"]["plaintext"]) == b"x"
    with pytest.raises(exceptions.InvalidRequest):
        transit.decrypt_data(name, ciphertext=ct, associated_data=b64(b"record-18"))


def test_encrypt_upserts_a_missing_key(transit, unique):
    """Vault creates the key on first encrypt when the caller may create it."""
    name = unique("upsert")
    ct = transit.encrypt_data(name, plaintext=b64(b"hello"))["data"]["ciphertext"]
    assert ct.startswith("vault:v1:")
    assert transit.read_key(name)["data"]["type"] == "aes256-gcm96"


def test_batch_encrypt_decrypt(transit, unique):
    name = unique("batch")
    transit.create_key(name)
    items = [b"one", b"two", b"three"]
    enc = transit.encrypt_data(name, batch_input=[{"plaintext": b64(p)} for p in items])
    results = enc["data"]["batch_results"]
    assert len(results) == 3
    assert all(r["ciphertext"].startswith("vault:v1:") for r in results)
    dec = transit.decrypt_data(name, batch_input=[{"ciphertext": r["ciphertext"]} for r in results])
    assert [unb64(r["plaintext"]) for r in dec["data"]["batch_results"]] == items


def test_batch_reports_item_errors(transit, unique):
    name = unique("batcherr")
    transit.create_key(name)
    good = transit.encrypt_data(name, plaintext=b64(b"ok"))["data"]["ciphertext"]
    try:
        resp = transit.decrypt_data(name, batch_input=[{"ciphertext": good}, {"ciphertext": "vault:v1:AAAA"}])
        results = resp["data"]["batch_results"]
    except exceptions.InvalidRequest as e:
        # Vault answers 400 when every item failed and 200 otherwise; both
        # carry per-item results.
        results = e.json["data"]["batch_results"]
    assert unb64(results[0]["plaintext"]) == b"ok"
    assert results[1].get("error")


def test_rotate_rewrap_and_min_decryption_version(transit, unique):
    name = unique("rot")
    transit.create_key(name)
    v1 = transit.encrypt_data(name, plaintext=b64(b"secret"))["data"]["ciphertext"]
    transit.rotate_key(name)
    key = transit.read_key(name)["data"]
    assert key["latest_version"] == 2
    assert sorted(key["keys"]) == ["1", "2"]
    v2 = transit.encrypt_data(name, plaintext=b64(b"secret2"))["data"]["ciphertext"]
    assert v2.startswith("vault:v2:")
    # Old ciphertexts still decrypt.
    assert unb64(transit.decrypt_data(name, ciphertext=v1)["data"]["plaintext"]) == b"secret"
    # Encrypting with an explicit older version.
    old = transit.encrypt_data(name, plaintext=b64(b"o"), key_version=1)["data"]["ciphertext"]
    assert old.startswith("vault:v1:")

    rewrapped = transit.rewrap_data(name, ciphertext=v1)["data"]["ciphertext"]
    assert rewrapped.startswith("vault:v2:")
    assert unb64(transit.decrypt_data(name, ciphertext=rewrapped)["data"]["plaintext"]) == b"secret"

    batch = transit.rewrap_data(name, ciphertext=None, batch_input=[{"ciphertext": v1}, {"ciphertext": old}])
    assert all(r["ciphertext"].startswith("vault:v2:") for r in batch["data"]["batch_results"])

    resp = transit.update_key_configuration(name, min_decryption_version=2)
    assert isinstance(resp, dict) or resp.status_code == 204
    assert transit.read_key(name)["data"]["min_decryption_version"] == 2
    with pytest.raises(exceptions.InvalidRequest):
        transit.decrypt_data(name, ciphertext=v1)
    assert unb64(transit.decrypt_data(name, ciphertext=rewrapped)["data"]["plaintext"]) == b"secret"


def test_min_encryption_version(transit, unique):
    name = unique("minenc")
    transit.create_key(name)
    transit.rotate_key(name)
    transit.update_key_configuration(name, min_encryption_version=2)
    assert transit.read_key(name)["data"]["min_encryption_version"] == 2
    with pytest.raises(exceptions.InvalidRequest):
        transit.encrypt_data(name, plaintext=b64(b"x"), key_version=1)


def test_trim_key(transit, unique):
    name = unique("trim")
    transit.create_key(name)
    transit.rotate_key(name)
    transit.rotate_key(name)
    # Trimming past min_decryption_version is refused.
    with pytest.raises(exceptions.InvalidRequest):
        transit.trim_key(name, min_version=2)
    # As in Vault, trimming needs min_encryption_version set, and hvac wants
    # it above min_decryption_version.
    transit.update_key_configuration(name, min_decryption_version=2, min_encryption_version=3)
    resp = transit.trim_key(name, min_version=2)
    assert isinstance(resp, dict) or resp.status_code == 204
    key = transit.read_key(name)["data"]
    assert sorted(key["keys"]) == ["2", "3"]
    assert key.get("min_available_version") == 2


def test_delete_key(transit, unique):
    name = unique("del")
    transit.create_key(name)
    with pytest.raises(exceptions.InvalidRequest):
        transit.delete_key(name)
    transit.update_key_configuration(name, deletion_allowed=True)
    assert transit.read_key(name)["data"]["deletion_allowed"] is True
    assert transit.delete_key(name).status_code == 204
    with pytest.raises(exceptions.InvalidPath):
        transit.read_key(name)
    assert name not in transit.list_keys()["data"]["keys"]


def test_generate_data_key(transit, unique):
    name = unique("dk")
    transit.create_key(name)
    plain = transit.generate_data_key(name, key_type="plaintext")["data"]
    assert len(unb64(plain["plaintext"])) == 32
    assert plain["ciphertext"].startswith("vault:v1:")
    assert transit.decrypt_data(name, ciphertext=plain["ciphertext"])["data"]["plaintext"] == plain["plaintext"]
    wrapped = transit.generate_data_key(name, key_type="wrapped", bits=512)["data"]
    assert "plaintext" not in wrapped or wrapped["plaintext"] in (None, "")
    dec = transit.decrypt_data(name, ciphertext=wrapped["ciphertext"])["data"]["plaintext"]
    assert len(unb64(dec)) == 64


def test_generate_random_bytes(transit):
    out = transit.generate_random_bytes(n_bytes=32)["data"]["random_bytes"]
    assert len(unb64(out)) == 32
    hexed = transit.generate_random_bytes(n_bytes=16, output_format="hex")["data"]["random_bytes"]
    assert len(bytes.fromhex(hexed)) == 16
    assert transit.generate_random_bytes(n_bytes=32)["data"]["random_bytes"] != out


@pytest.mark.parametrize(
    "algorithm,fn",
    [
        ("sha2-224", hashlib.sha224),
        ("sha2-256", hashlib.sha256),
        ("sha2-384", hashlib.sha384),
        ("sha2-512", hashlib.sha512),
    ],
)
def test_hash_data(transit, algorithm, fn):
    data = b"hash me"
    out = transit.hash_data(hash_input=b64(data), algorithm=algorithm)["data"]["sum"]
    assert out == fn(data).hexdigest()
    out = transit.hash_data(hash_input=b64(data), algorithm=algorithm, output_format="base64")["data"]["sum"]
    assert unb64(out) == fn(data).digest()


def test_hash_default_is_sha256_hex(transit):
    assert transit.hash_data(hash_input=b64(b"abc"))["data"]["sum"] == hashlib.sha256(b"abc").hexdigest()


def test_generate_and_verify_hmac(transit, unique):
    name = unique("hmac")
    transit.create_key(name)
    data = b64(b"message")
    mac = transit.generate_hmac(name, hash_input=data, algorithm="sha2-256")["data"]["hmac"]
    assert mac.startswith("vault:v1:")
    assert len(unb64(mac[len("vault:v1:"):])) == 32
    assert transit.verify_signed_data(name, hash_input=data, hmac=mac)["data"]["valid"] is True
    assert transit.verify_signed_data(name, hash_input=b64(b"other"), hmac=mac)["data"]["valid"] is False
    mac512 = transit.generate_hmac(name, hash_input=data, algorithm="sha2-512")["data"]["hmac"]
    assert len(unb64(mac512[len("vault:v1:"):])) == 64
    assert transit.verify_signed_data(name, hash_input=data, hmac=mac512, hash_algorithm="sha2-512")["data"]["valid"] is True


def test_hmac_matches_exported_key(transit, unique):
    """With an exportable key, the HMAC is plain HMAC-SHA256 under the
    exported hmac-key (as in Vault)."""
    name = unique("hmacexp")
    transit.create_key(name, exportable=True)
    exported = transit.export_key(name, key_type="hmac-key")["data"]["keys"]["1"]
    key = unb64(exported)
    mac = transit.generate_hmac(name, hash_input=b64(b"m"), algorithm="sha2-256")["data"]["hmac"]
    assert unb64(mac[len("vault:v1:"):]) == pyhmac.new(key, b"m", hashlib.sha256).digest()


def test_ed25519_sign_and_verify(transit, unique):
    name = unique("ed")
    transit.create_key(name, key_type="ed25519")
    key = transit.read_key(name)["data"]
    assert key["supports_signing"] is True
    assert key["supports_encryption"] is False
    public = key["keys"]["1"]["public_key"]
    assert len(unb64(public)) == 32
    data = b64(b"sign me")
    sig = transit.sign_data(name, hash_input=data)["data"]["signature"]
    assert sig.startswith("vault:v1:")
    assert len(unb64(sig[len("vault:v1:"):])) == 64
    assert transit.verify_signed_data(name, hash_input=data, signature=sig)["data"]["valid"] is True
    assert transit.verify_signed_data(name, hash_input=b64(b"forged"), signature=sig)["data"]["valid"] is False
    # After rotation, old signatures still verify and new ones use v2.
    transit.rotate_key(name)
    sig2 = transit.sign_data(name, hash_input=data)["data"]["signature"]
    assert sig2.startswith("vault:v2:")
    assert transit.verify_signed_data(name, hash_input=data, signature=sig)["data"]["valid"] is True
    # An AES key cannot sign.
    aes = unique("aes-nosign")
    transit.create_key(aes)
    with pytest.raises(exceptions.InvalidRequest):
        transit.sign_data(aes, hash_input=data)


def test_ed25519_signature_verifies_with_the_public_key(transit, unique):
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    name = unique("edpub")
    transit.create_key(name, key_type="ed25519")
    public = unb64(transit.read_key(name)["data"]["keys"]["1"]["public_key"])
    sig = transit.sign_data(name, hash_input=b64(b"payload"))["data"]["signature"]
    # Raises InvalidSignature if the signature is not plain Ed25519 over the input.
    Ed25519PublicKey.from_public_bytes(public).verify(unb64(sig[len("vault:v1:"):]), b"payload")


def test_unknown_key_type_is_refused(client, unique):
    # hvac validates key_type itself; the server must refuse what hvac lets through.
    with pytest.raises(exceptions.InvalidRequest):
        client.adapter.post(f"/v1/{MOUNT}/keys/{unique('bad')}", json={"type": "rot13"})
