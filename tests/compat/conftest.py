"""Fixtures for the Vault-client compatibility suite.

Every test here talks to a real `zafe` process through an unmodified Vault
client (hvac), on 127.0.0.1 only. Each test module gets its own dev server
(in memory, so modules cannot see each other's state); the seal tests start
a non-dev server that must be initialised and unsealed like Vault.

The binary is target/debug/zafe (ZAFE_BIN overrides it); it is built with
`cargo build -p zafe` if it is missing. Every test is bounded in time
(ZAFE_COMPAT_TEST_TIMEOUT seconds, default 60) and every HTTP call too.
"""

import contextlib
import os
import secrets
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import hvac
import pytest
import requests

REPO = Path(__file__).resolve().parents[2]
ZAFE_BIN = Path(os.environ.get("ZAFE_BIN", REPO / "target" / "debug" / "zafe"))
TEST_TIMEOUT = int(os.environ.get("ZAFE_COMPAT_TEST_TIMEOUT", "60"))
HTTP_TIMEOUT = 20
START_TIMEOUT = 30

# The adapter for hvac's own integration tests is run separately
# (hvac_upstream/run.sh); it is not part of this suite.
collect_ignore = ["hvac_upstream", "node"]

# Nothing from the caller's Vault environment may reach the clients.
for _name in ("VAULT_ADDR", "VAULT_TOKEN", "VAULT_NAMESPACE", "VAULT_CACERT", "VAULT_CAPATH",
              "VAULT_CLIENT_CERT", "VAULT_CLIENT_KEY", "VAULT_SKIP_VERIFY"):
    os.environ.pop(_name, None)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def ensure_binary() -> Path:
    if not ZAFE_BIN.exists():
        subprocess.run(
            ["cargo", "build", "-p", "zafe"],
            cwd=REPO,
            check=True,
            timeout=1800,
        )
    assert ZAFE_BIN.exists(), f"{ZAFE_BIN} was not built"
    return ZAFE_BIN


def clean_env() -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ZAFE_", "VAULT_"))}
    for proxy in ("http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "all_proxy"):
        env.pop(proxy, None)
    env["NO_COLOR"] = "1"
    env["ZAFE_LOG_FORMAT"] = "json"
    return env


class ZafeServer:
    """A `zafe server` child process on 127.0.0.1, stopped by `stop()`."""

    def __init__(self, args, workdir: Path, port: int, env=None):
        self.port = port
        self.root_token = None
        self.url = f"http://127.0.0.1:{self.port}"
        self.workdir = workdir
        self.log_path = workdir / "zafe.log"
        self.args = [str(ensure_binary()), *args]
        self.env = {**clean_env(), **(env or {})}
        self.proc = None

    def start(self):
        log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(
            self.args,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=self.env,
            cwd=self.workdir,
        )
        log.close()
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"zafe exited early ({self.proc.returncode}):\n{self.log_tail()}")
            try:
                requests.get(f"{self.url}/v1/sys/seal-status", timeout=2)
                return self
            except requests.RequestException:
                time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"zafe did not answer within {START_TIMEOUT}s:\n{self.log_tail()}")

    def log_tail(self, lines=40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def stop(self):
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=10)


@contextlib.contextmanager
def dev_server():
    token = "dev-" + secrets.token_hex(16)
    with tempfile.TemporaryDirectory(prefix="zafe-compat-") as d:
        port = free_port()
        server = ZafeServer(
            ["server", "--dev", "--dev-root-token", token, "--listen", f"127.0.0.1:{port}"],
            Path(d),
            port,
        )
        server.root_token = token
        server.start()
        try:
            yield server
        finally:
            server.stop()


@contextlib.contextmanager
def sealed_server():
    """A non-dev server (SQLite in a temporary directory, no master key):
    it starts uninitialised and sealed, as Vault does."""
    with tempfile.TemporaryDirectory(prefix="zafe-compat-sealed-") as d:
        d = Path(d)
        port = free_port()
        cfg = d / "zafe.toml"
        cfg.write_text(
            f'listen = "127.0.0.1:{port}"\n'
            f'data_dir = "{d / "data"}"\n'
            "[storage]\n"
            'kind = "sqlite"\n'
            f'path = "{d / "data" / "zafe.db"}"\n'
        )
        cfg.chmod(0o600)
        server = ZafeServer(["server", "--config", str(cfg)], d, port)
        server.start()
        try:
            yield server
        finally:
            server.stop()


def make_client(server, token=None) -> hvac.Client:
    client = hvac.Client(url=server.url, token=token, timeout=HTTP_TIMEOUT)
    # hvac falls back to VAULT_TOKEN / ~/.vault-token when given no token;
    # a client meant to be anonymous must really be.
    if token is None:
        client.token = None
    return client


@pytest.fixture(scope="module")
def server():
    """A fresh dev server for each test module."""
    with dev_server() as s:
        yield s


@pytest.fixture
def client(server) -> hvac.Client:
    """An hvac client holding the dev server's root token."""
    return make_client(server, server.root_token)


@pytest.fixture
def anon(server) -> hvac.Client:
    """An hvac client without a token."""
    return make_client(server)


@pytest.fixture
def new_client(server):
    """Makes more clients for the same server (with another token)."""
    return lambda token=None: make_client(server, token)


@pytest.fixture
def unique():
    """A fresh name, so tests in one module never collide."""
    return lambda prefix="t": f"{prefix}-{secrets.token_hex(4)}"


# Every test is bounded in time: a hung server fails the test, it never
# hangs the run.
@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_call(item):
    def on_alarm(signum, frame):
        raise TimeoutError(f"test exceeded {TEST_TIMEOUT}s")

    previous = signal.signal(signal.SIGALRM, on_alarm)
    signal.alarm(TEST_TIMEOUT)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


# Show the server's log tail for failed tests: the reason is usually there.
@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    if report.when == "call" and report.failed:
        srv = item.funcargs.get("server")
        if isinstance(srv, ZafeServer):
            report.sections.append(("zafe server log (tail)", srv.log_tail(15)))
