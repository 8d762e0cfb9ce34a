"""Fixtures for the MCP suite: `zafe mcp` driven by the official MCP Python
SDK (package `mcp`, pinned in scripts/test.sh), against a real
`zafe server --dev` on 127.0.0.1.

The server is started once for the module with secrets stored in it; a
project directory holds env files; every test opens its own MCP session
(`zafe mcp` over stdio) and records every response it receives, so that the
leak check can scan all of them for every stored value in every encoding.
"""

import base64
import json
import os
import socket
import subprocess
import time
import urllib.parse
import urllib.request
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
ZAFE_BIN = Path(os.environ.get("ZAFE_BIN", REPO / "target" / "debug" / "zafe"))
ROOT_TOKEN = "mcp-test-root"

# Values stored on the server: the assistant must never see any of them.
SECRETS = {
    "API_KEY": "sk_live_51HqLyjWDarjtT1zdp7dcXk",
    "DB_PASSWORD": "p@ss w0rd/with+special=chars&more",
    "JWT_SECRET": "jwt-Secret-0123456789-abcdefXYZ",
    "PRIVATE_KEY": "-----BEGIN KEY-----\nMIIBVwIBADANBgkqhkiG9w0BAQEFAASC\n-----END KEY-----",
    "UNICODE": "pässwörd-ünïcode-värde",
}
# Stored in another environment, never resolved by any tool call.
PROD_SECRETS = {"API_KEY": "sk_prod_never_resolved_9f8e7d6c5b"}
# Given to set_secret during the tests.
NEW_SECRET = "brand-new-value-given-by-user-42"
# A plain value in a .env file (not on the server).
PLAIN_FILE_SECRET = "plain-file-value-not-a-ref-77"


def forms(value: str):
    """Every encoding a response is scanned for."""
    b = value.encode()
    out = {
        "plain": value,
        "reversed": value[::-1],
        "hex": b.hex(),
        "HEX": b.hex().upper(),
        "base64": base64.b64encode(b).decode(),
        "base64-nopad": base64.b64encode(b).decode().rstrip("="),
        "base64url": base64.urlsafe_b64encode(b).decode(),
        "base64url-nopad": base64.urlsafe_b64encode(b).decode().rstrip("="),
        "base32": base64.b32encode(b).decode(),
        "base32-nopad": base64.b32encode(b).decode().rstrip("="),
        "base32-lower": base64.b32encode(b).decode().lower(),
        # What `echo "$v" | base32` shows of the value: the characters holding only its bits.
        "base32-core": base64.b32encode(b).decode()[: len(b) * 8 // 5],
        "urlencoded": urllib.parse.quote(value, safe=""),
        "urlencoded-plus": urllib.parse.quote_plus(value),
        "json": json.dumps(value)[1:-1],
    }
    return out


def all_values():
    return [*SECRETS.values(), *PROD_SECRETS.values(), NEW_SECRET, PLAIN_FILE_SECRET]


def assert_no_leak(texts):
    """No stored value, in any form, in any of `texts`."""
    for text in texts:
        for value in all_values():
            for name, encoded in forms(value).items():
                assert encoded not in text, f"the {name} form of a secret leaked:\n{text}"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def http(method, url, body=None, token=ROOT_TOKEN):
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, method=method)
    req.add_header("X-Vault-Token", token)
    req.add_header("Content-Type", "application/json")
    with urllib.request.urlopen(req, timeout=20) as resp:
        return json.loads(resp.read() or b"null")


@pytest.fixture(scope="module")
def zafe(tmp_path_factory):
    assert ZAFE_BIN.exists(), f"{ZAFE_BIN} was not built (cargo build -p zafe)"
    work = tmp_path_factory.mktemp("mcp")
    port = free_port()
    addr = f"http://127.0.0.1:{port}"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ZAFE_", "VAULT_"))}
    for proxy in ("http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "all_proxy"):
        env.pop(proxy, None)
    log = open(work / "server.log", "wb")
    server = subprocess.Popen(
        [str(ZAFE_BIN), "server", "--dev", "--dev-root-token", ROOT_TOKEN, "--listen", f"127.0.0.1:{port}"],
        stdout=log, stderr=log, stdin=subprocess.DEVNULL, env=env,
    )
    try:
        deadline = time.time() + 30
        while True:
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=1):
                    break
            except OSError:
                if time.time() > deadline or server.poll() is not None:
                    raise RuntimeError((work / "server.log").read_text())
                time.sleep(0.05)
        for key, value in SECRETS.items():
            http("POST", f"{addr}/v1/secret/data/app/dev/{key}", {"data": {"value": value}})
        for key, value in PROD_SECRETS.items():
            http("POST", f"{addr}/v1/secret/data/app/prod/{key}", {"data": {"value": value}})
        project = work / "project"
        project.mkdir()
        refs = [f"{k}=zafe://app/dev/{k}" for k in SECRETS]
        (project / ".env.zafe").write_text("\n".join(refs + ["GREETING=hello"]) + "\n")
        (project / ".env.partial").write_text(
            "API_KEY=zafe://app/dev/API_KEY\nMISSING_ONE=zafe://app/dev/MISSING_ONE\n"
            f"PLAIN={PLAIN_FILE_SECRET}\nBROKEN=zafe://app\n"
        )
        (project / ".env.missing").write_text("NOPE=zafe://app/dev/NOPE\n")
        config_dir = work / "client"
        config_dir.mkdir()
        yield {
            "addr": addr,
            "project": project,
            "env": {
                "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
                "HOME": str(config_dir),
                "ZAFE_ADDR": addr,
                "ZAFE_TOKEN": ROOT_TOKEN,
                "ZAFE_CONFIG_DIR": str(config_dir),
                "NO_COLOR": "1",
            },
            "work": work,
        }
    finally:
        server.terminate()
        try:
            server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            server.kill()
        log.close()
