"""A pytest plugin that runs hvac's own integration tests against Zafe.

hvac's tests start a `vault server -config=tests/config_files/vault-tls.hcl`
through `tests.utils.server_manager.ServerManager`, then initialise it with
`sys.initialize(5, 3)` and unseal it with three keys. This plugin leaves
their test files untouched and replaces only how the server is started:
`zafe server --config` with SQLite in a fresh temporary directory and the
same TLS certificate hvac's tests trust, on a free 127.0.0.1 port. hvac's
tests then initialise and unseal Zafe exactly as they would Vault.

Environment: ZAFE_BIN (the binary), ZAFE_CLAIMED_VAULT_VERSION (the Vault
version hvac's version-dependent tests should assume; default 1.15.0),
ZAFE_UPSTREAM_TEST_TIMEOUT (seconds per test, default 120).
"""

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time

import pytest

ZAFE_BIN = os.environ["ZAFE_BIN"]
CLAIMED_VAULT_VERSION = os.environ.get("ZAFE_CLAIMED_VAULT_VERSION", "1.15.0")
TEST_TIMEOUT = int(os.environ.get("ZAFE_UPSTREAM_TEST_TIMEOUT", "120"))


def _free_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _start_zafe(self, *, consul_config=None, attempt=1, max_attempts=3, delay_s=1):
    from tests.utils import create_client, get_config_file_path
    from tests.utils.server_manager import TestProcessInfo

    workdir = tempfile.mkdtemp(prefix="zafe-hvac-upstream-")
    port = _free_port()
    # Zafe refuses key files that others can read: use a private copy.
    cert = os.path.join(workdir, "server-cert.pem")
    key = os.path.join(workdir, "server-key.pem")
    shutil.copy(get_config_file_path("server-cert.pem"), cert)
    shutil.copy(get_config_file_path("server-key.pem"), key)
    os.chmod(key, 0o600)
    config = os.path.join(workdir, "zafe.toml")
    with open(config, "w") as f:
        f.write(
            f'listen = "127.0.0.1:{port}"\n'
            f'data_dir = "{workdir}/data"\n'
            "[storage]\n"
            'kind = "sqlite"\n'
            f'path = "{workdir}/data/zafe.db"\n'
            "[tls]\n"
            f'cert_file = "{cert}"\n'
            f'key_file = "{key}"\n'
        )
    os.chmod(config, 0o600)
    addr = f"https://127.0.0.1:{port}"
    self.active_config_paths = [config]
    if not hasattr(self, "_zafe_addresses"):
        self._zafe_addresses = {}
    self._zafe_addresses[config] = addr
    client = create_client(url=addr)
    if self.client is None:
        self.client = client
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ZAFE_", "VAULT_"))}
    env["NO_COLOR"] = "1"
    log = open(os.path.join(workdir, "zafe.log"), "wb")
    process = subprocess.Popen(
        [ZAFE_BIN, "server", "--config", config],
        stdin=subprocess.DEVNULL,
        stdout=log,
        stderr=subprocess.STDOUT,
        env=env,
    )
    log.close()
    self._processes.append(TestProcessInfo("zafe", process, os.path.basename(workdir)))
    deadline = time.monotonic() + 30
    last = None
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise Exception(f"zafe exited with {process.returncode}; log in {workdir}/zafe.log")
        try:
            client.sys.is_initialized()
            return
        except Exception as e:  # not listening yet
            last = e
            time.sleep(0.1)
    process.kill()
    raise Exception(f"zafe did not become ready: {last}")


def _address(self, config_path):
    return self._zafe_addresses[config_path]


def pytest_configure(config):
    from tests import utils
    from tests.utils import server_manager

    # hvac's tests ask `vault -version` which Vault they talk to; Zafe
    # claims this one.
    utils.get_vault_version_string.cache = CLAIMED_VAULT_VERSION
    server_manager.ServerManager.start_vault = _start_zafe
    server_manager.ServerManager.get_config_vault_address = _address
    for name in ("VAULT_ADDR", "VAULT_TOKEN"):
        os.environ.pop(name, None)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item, nextitem):
    def on_alarm(signum, frame):
        raise TimeoutError(f"test exceeded {TEST_TIMEOUT}s")

    previous = signal.signal(signal.SIGALRM, on_alarm)
    signal.alarm(TEST_TIMEOUT)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)
