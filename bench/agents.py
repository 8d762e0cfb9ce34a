#!/usr/bin/env python3
"""The 1,000-agent benchmark (issue 11, item 10); run it through bench/agents.sh.

On 127.0.0.1, in one run:
  1. a release Zafe server (SQLite, audit file on, as bench/run.sh starts it), a project
     `bench` with `prod/DB_URL`, and BENCH_AGENTS agents registered through the API
     (sys/agents/bench/<name>), each with a template that uses the secret;
  2. BENCH_AGENTS real `zafe agent run --config agent.toml` processes, each with its own
     configuration directory (pin store), its own token file and its own destination file;
     server RSS before and after they are all connected -> memory per connection; the agents'
     own RSS and private memory (USS, from /proc/PID/smaps_rollup);
  3. OpenBao Agent (`bao agent`, AppRole auto-auth against the same Zafe server, one template
     for the same secret, template_config.static_secret_render_interval = BENCH_BAO_INTERVAL);
  4. BENCH_CHANGES changes of the secret, each a new KV v2 version written over the HTTP API;
     for each, the time from the write's acknowledgement to every destination file holding the
     new value, seen with inotify on the one directory all the files are in (one process,
     one monotonic clock) -> Zafe notice-to-file p50/p99/max over every agent and change, and
     OpenBao Agent's change-to-file for the same changes.
Every process it starts is stopped when it ends, also on failure (and, through
PR_SET_PDEATHSIG, if this driver itself is killed).
"""

import ctypes
import json
import os
import random
import select
import signal
import statistics
import struct
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ZAFE = os.environ.get("BENCH_ZAFE_BIN", os.path.join(ROOT, "target/release/zafe"))
BAO = os.environ.get("BENCH_BAO_BIN", "bao")
AGENTS = int(os.environ.get("BENCH_AGENTS", "1000"))
CHANGES = int(os.environ.get("BENCH_CHANGES", "6"))
PORT = int(os.environ.get("BENCH_PORT_ZAFE", "18400"))
BAO_INTERVAL = os.environ.get("BENCH_BAO_INTERVAL", "30s")
SPAWN_BATCH = int(os.environ.get("BENCH_SPAWN_BATCH", "50"))
MAX_AGENT_MEMORY_GIB = float(os.environ.get("BENCH_MAX_AGENT_GIB", "8"))
ADDR = f"http://127.0.0.1:{PORT}"


def seconds(text):
    """Seconds in "30s", "5m", "1h" or a plain number."""
    units = {"s": 1, "m": 60, "h": 3600}
    text = text.strip()
    return float(text[:-1]) * units[text[-1]] if text and text[-1] in units else float(text)


# OpenBao Agent's default static_secret_render_interval is 5 minutes.
PHASE_MAX = float(os.environ.get("BENCH_PHASE_MAX", seconds(BAO_INTERVAL or "5m")))
PROJECT, ENV, KEY = "bench", "prod", "DB_URL"
KV_PATH = f"/v1/secret/data/{PROJECT}/{ENV}/{KEY}"

libc = ctypes.CDLL("libc.so.6", use_errno=True)
PR_SET_PDEATHSIG = 1
IN_CLOSE_WRITE, IN_MOVED_TO = 0x8, 0x80

children = []


def log(msg):
    print(f"bench-agents: {msg}", file=sys.stderr, flush=True)


def die_with_parent():
    libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)


def spawn(args, log_path, env=None, **kw):
    out = open(log_path, "wb")
    p = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                         env=env, preexec_fn=die_with_parent, **kw)
    out.close()
    children.append(p)
    return p


def stop_all():
    for p in children:
        if p.poll() is None:
            try:
                p.terminate()
            except ProcessLookupError:
                pass
    deadline = time.monotonic() + 20
    for p in children:
        try:
            p.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()


def call(method, path, token=None, body=None, timeout=30):
    req = urllib.request.Request(ADDR + path, method=method,
                                 data=None if body is None else json.dumps(body).encode())
    if token:
        req.add_header("X-Vault-Token", token)
    req.add_header("Content-Type", "application/json")
    with urllib.request.urlopen(req, timeout=timeout) as r:
        text = r.read()
    return json.loads(text) if text else {}


def wait_for(what, check, timeout, every=0.1):
    deadline = time.monotonic() + timeout
    while True:
        v = check()
        if v:
            return v
        if time.monotonic() > deadline:
            raise SystemExit(f"timed out waiting for {what}")
        time.sleep(every)


def status_kb(pid, field="VmRSS"):
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def rollup_kb(pid):
    """(Rss, Pss, USS = Private_Clean + Private_Dirty) in kB."""
    vals = {}
    try:
        with open(f"/proc/{pid}/smaps_rollup") as f:
            for line in f:
                parts = line.split()
                if len(parts) >= 2 and parts[0].endswith(":"):
                    try:
                        vals[parts[0][:-1]] = int(parts[1])
                    except ValueError:
                        pass
    except OSError:
        return (0, 0, 0)
    return (vals.get("Rss", 0), vals.get("Pss", 0),
            vals.get("Private_Clean", 0) + vals.get("Private_Dirty", 0))


def pct(values, p):
    s = sorted(values)
    if not s:
        return float("nan")
    k = max(0, min(len(s) - 1, int(round(p / 100 * len(s) + 0.5)) - 1))
    return s[k]


def ms(x):
    return f"{x * 1000:.1f} ms"


class Watch:
    """inotify on one directory: which file got which content, when (time.monotonic)."""

    def __init__(self, directory):
        self.dir = directory
        self.fd = libc.inotify_init1(os.O_NONBLOCK | os.O_CLOEXEC)
        if self.fd < 0:
            raise OSError(ctypes.get_errno(), "inotify_init1")
        if libc.inotify_add_watch(self.fd, directory.encode(), IN_CLOSE_WRITE | IN_MOVED_TO) < 0:
            raise OSError(ctypes.get_errno(), "inotify_add_watch")
        self.poll = select.poll()
        self.poll.register(self.fd, select.POLLIN)

    def until(self, names, needle, timeout):
        """Waits until every file in `names` holds `needle`; returns {name: seen_at}."""
        seen = {}
        # A file may already hold it (an agent faster than our first read).
        for n in names:
            if self._holds(n, needle):
                seen[n] = time.monotonic()
        deadline = time.monotonic() + timeout
        while len(seen) < len(names):
            left = deadline - time.monotonic()
            if left <= 0:
                break
            if not self.poll.poll(int(left * 1000) + 1):
                continue
            try:
                buf = os.read(self.fd, 1 << 20)
            except BlockingIOError:
                continue
            i = 0
            while i < len(buf):
                _wd, _mask, _cookie, ln = struct.unpack_from("iIII", buf, i)
                name = buf[i + 16:i + 16 + ln].rstrip(b"\0").decode()
                i += 16 + ln
                if name in names and name not in seen and self._holds(name, needle):
                    seen[name] = time.monotonic()
        return seen

    def _holds(self, name, needle):
        try:
            with open(os.path.join(self.dir, name)) as f:
                return needle in f.read()
        except OSError:
            return False


def main():
    work = tempfile.mkdtemp(prefix="zafe-agents-bench.")
    log(f"work directory {work}")
    try:
        run(work)
    finally:
        stop_all()
        if os.environ.get("BENCH_KEEP") != "1":
            subprocess.run(["rm", "-rf", work])


def run(work):
    out_dir = os.path.join(work, "out")
    os.makedirs(out_dir)
    # ---- the server, as bench/run.sh starts it ----
    env = dict(os.environ, ZAFE_DATA_DIR=f"{work}/data", ZAFE_LISTEN=f"127.0.0.1:{PORT}",
               ZAFE_AUDIT_FILE=f"{work}/audit.jsonl", ZAFE_LOG="warn")
    for k in ("ZAFE_ADDR", "ZAFE_TOKEN", "VAULT_ADDR", "VAULT_TOKEN"):
        env.pop(k, None)
    server = spawn([ZAFE, "server"], f"{work}/server.log", env=env)

    def health():
        try:
            call("GET", "/v1/sys/health")
            return True
        except Exception:
            return False
    wait_for("the server", health, 30)
    root = wait_for("the root token", lambda: next(
        (ln.split()[2] for ln in open(f"{work}/server.log") if "Root token:" in ln), None), 10)
    rss_idle = status_kb(server.pid)

    # ---- project, secret, agents ----
    cli_env = dict(env, ZAFE_ADDR=ADDR, ZAFE_TOKEN=root, ZAFE_CONFIG_DIR=f"{work}/cli", NO_COLOR="1")
    os.makedirs(f"{work}/cli")
    subprocess.run([ZAFE, "project", "create", PROJECT], env=cli_env, check=True,
                   stdout=subprocess.DEVNULL)
    value = f"postgres://bench-{random.getrandbits(64):016x}"
    subprocess.run([ZAFE, "secret", "set", KEY, "--project", PROJECT, "--env", ENV],
                   env=cli_env, input=value.encode(), check=True, stdout=subprocess.DEVNULL,
                   stderr=subprocess.DEVNULL)
    template = f"{work}/app.env.tpl"
    with open(template, "w") as f:
        f.write(f"{KEY}={{{{ zafe://{PROJECT}/{ENV}/{KEY} }}}}\n")

    log(f"registering {AGENTS} agents")
    t0 = time.monotonic()
    names = []
    for i in range(AGENTS):
        name = f"agent-{i:04d}"
        reply = call("POST", f"/v1/sys/agents/{PROJECT}/{name}", root, {"environments": [ENV]})
        home = f"{work}/agents/{name}"
        os.makedirs(f"{home}/config")
        token_file = f"{home}/token"
        fd = os.open(token_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        os.write(fd, reply["data"]["token"].encode())
        os.close(fd)
        with open(f"{home}/agent.toml", "w") as f:
            f.write(f'address = "{ADDR}"\ntoken_file = "{token_file}"\n\n[[template]]\n'
                    f'source = "{template}"\ndestination = "{out_dir}/{name}.env"\n')
        names.append(name)
    log(f"registered in {time.monotonic() - t0:.1f} s")
    time.sleep(1)
    rss_before = status_kb(server.pid)

    def agent_env(name):
        e = {k: v for k, v in cli_env.items() if k != "ZAFE_TOKEN"}
        e["ZAFE_CONFIG_DIR"] = f"{work}/agents/{name}/config"
        e["HOME"] = e["ZAFE_CONFIG_DIR"]
        return e

    def start_agent(name):
        return spawn([ZAFE, "agent", "run", "--config", f"{work}/agents/{name}/agent.toml"],
                     f"{work}/agents/{name}/log", env=agent_env(name))

    def connected_count():
        # {"keys": [...], "agents": {name: {..., "connected": bool}}}; at most 1,000 listed.
        rows = call("GET", f"/v1/sys/agents/{PROJECT}", root)["data"]["agents"]
        return sum(1 for r in rows.values() if r.get("connected"))

    # ---- one agent first: its memory decides whether 1,000 processes fit ----
    agents = {names[0]: start_agent(names[0])}
    wait_for("the first agent", lambda: connected_count() == 1, 30)
    time.sleep(0.5)
    one = rollup_kb(agents[names[0]].pid)
    log(f"one agent: RSS {one[0]} kB, PSS {one[1]} kB, private {one[2]} kB")
    projected_gib = one[2] * AGENTS / 1024 / 1024
    if projected_gib > MAX_AGENT_MEMORY_GIB:
        raise SystemExit(f"{AGENTS} agents would take ~{projected_gib:.1f} GiB of private memory "
                         f"(> BENCH_MAX_AGENT_GIB={MAX_AGENT_MEMORY_GIB}); lower BENCH_AGENTS")

    log(f"starting {AGENTS - 1} more agents, {SPAWN_BATCH} at a time")
    t0 = time.monotonic()
    for i, name in enumerate(names[1:], 1):
        agents[name] = start_agent(name)
        if i % SPAWN_BATCH == 0:
            time.sleep(0.2)
    wait_for(f"{AGENTS} agents connected", lambda: connected_count() == AGENTS, 300, every=1)
    connect_s = time.monotonic() - t0
    first = f"{KEY}={value}"
    wait_for("every first render", lambda: all(
        os.path.exists(f"{out_dir}/{n}.env") for n in names), 60, every=0.5)
    log(f"{AGENTS} agents connected and rendered in {connect_s:.1f} s")
    time.sleep(3)  # let the server settle before measuring it
    rss_after = status_kb(server.pid)
    mem = [rollup_kb(p.pid) for p in agents.values()]
    dead = [n for n, p in agents.items() if p.poll() is not None]
    if dead:
        raise SystemExit(f"{len(dead)} agents exited: {dead[:5]}")
    assert all(open(f"{out_dir}/{n}.env").read().strip() == first for n in names)

    # ---- OpenBao Agent against the same server ----
    policy = f'path "secret/data/{PROJECT}/{ENV}/*" {{ capabilities = ["read"] }}'
    call("PUT", "/v1/sys/policies/acl/bench-read", root, {"policy": policy})
    try:
        call("POST", "/v1/sys/auth/approle", root, {"type": "approle"})
    except urllib.error.HTTPError as e:
        if e.code != 400:
            raise
    call("POST", "/v1/auth/approle/role/bench", root, {"token_policies": ["bench-read"]})
    role_id = call("GET", "/v1/auth/approle/role/bench/role-id", root)["data"]["role_id"]
    secret_id = call("POST", "/v1/auth/approle/role/bench/secret-id", root, {})["data"]["secret_id"]
    bao_dir = f"{work}/bao"
    os.makedirs(bao_dir)
    for fname, content in (("role-id", role_id), ("secret-id", secret_id)):
        fd = os.open(f"{bao_dir}/{fname}", os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        os.write(fd, content.encode())
        os.close(fd)
    interval = f'  static_secret_render_interval = "{BAO_INTERVAL}"\n' if BAO_INTERVAL else ""
    with open(f"{bao_dir}/agent.hcl", "w") as f:
        f.write(f'''vault {{
  address = "{ADDR}"
}}
auto_auth {{
  method "approle" {{
    config = {{
      role_id_file_path = "{bao_dir}/role-id"
      secret_id_file_path = "{bao_dir}/secret-id"
      remove_secret_id_file_after_reading = false
    }}
  }}
}}
template_config {{
{interval}  exit_on_retry_failure = true
}}
template {{
  contents = "{KEY}={{{{ with secret \\"secret/data/{PROJECT}/{ENV}/{KEY}\\" }}}}{{{{ .Data.data.value }}}}{{{{ end }}}}\\n"
  destination = "{out_dir}/openbao.env"
  perms = "0600"
}}
''')
    bao_env = {k: v for k, v in os.environ.items() if not k.startswith(("VAULT_", "BAO_"))}
    bao = spawn([BAO, "agent", "-config", f"{bao_dir}/agent.hcl", "-log-level", "warn"],
                f"{bao_dir}/agent.log", env=bao_env)
    wait_for("OpenBao Agent's first render", lambda: os.path.exists(f"{out_dir}/openbao.env")
             and open(f"{out_dir}/openbao.env").read().strip() == first, 60)
    if bao.poll() is not None:
        raise SystemExit("bao agent exited: " + open(f"{bao_dir}/agent.log").read())
    log(f"OpenBao Agent rendered (static_secret_render_interval = {BAO_INTERVAL or 'default'})")

    # ---- the changes ----
    watch = Watch(out_dir)
    zafe_files = {f"{n}.env" for n in names}
    zafe_lat, zafe_from_send, bao_lat, rounds = [], [], [], []
    bao_timeout = float(os.environ.get("BENCH_BAO_TIMEOUT", "400"))
    for c in range(CHANGES):
        # A random phase against OpenBao Agent's render timer (which restarts at each render
        # it just did): uniform over one interval, so its figures are not biased.
        time.sleep(random.uniform(0.5, PHASE_MAX))
        new = f"postgres://bench-{random.getrandbits(64):016x}"
        sent = time.monotonic()
        call("POST", KV_PATH, root, {"data": {"value": new}})
        acked = time.monotonic()
        seen = watch.until(zafe_files, f"{KEY}={new}\n", 60)
        missing = len(zafe_files) - len(seen)
        lat = [t - acked for t in seen.values()]
        zafe_lat += lat
        zafe_from_send += [t - sent for t in seen.values()]
        # OpenBao Agent: it may already have it (then it was as fast as our read).
        bseen = watch.until({"openbao.env"}, f"{KEY}={new}\n", bao_timeout)
        b = bseen.get("openbao.env")
        if b is not None:
            bao_lat.append(b - acked)
        rounds.append((c + 1, len(seen), missing, pct(lat, 50), pct(lat, 99), max(lat) if lat else 0,
                       (b - acked) if b is not None else None, acked - sent))
        log(f"change {c + 1}: zafe {len(seen)}/{AGENTS} files p50 {ms(pct(lat, 50))} p99 "
            f"{ms(pct(lat, 99))} max {ms(max(lat) if lat else 0)}; openbao "
            f"{ms(b - acked) if b is not None else 'not seen'}; write ack {ms(acked - sent)}")

    # ---- report ----
    n_agents = len(mem)
    sum_rss = sum(m[0] for m in mem)
    sum_uss = sum(m[2] for m in mem)
    lines = [
        f"== agents {time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime())} agents={AGENTS} "
        f"changes={CHANGES} bao_interval={BAO_INTERVAL or 'default'} load={os.getloadavg()[0]:.2f}",
        f"server RSS: {rss_idle} kB idle, {rss_before} kB with {AGENTS} agents registered, "
        f"{rss_after} kB with {AGENTS} connected -> {(rss_after - rss_before) / AGENTS:.1f} kB "
        f"per connection",
        f"agents: {n_agents} processes connected and rendered in {connect_s:.1f} s; per agent RSS "
        f"{sum_rss / n_agents / 1024:.2f} MiB, private (USS) {sum_uss / n_agents / 1024:.2f} MiB; "
        f"all agents: {sum_uss / 1024 / 1024:.2f} GiB private",
        f"zafe notice-to-file (from the write's ack, {len(zafe_lat)} files over {CHANGES} changes): "
        f"p50 {ms(pct(zafe_lat, 50))}, p99 {ms(pct(zafe_lat, 99))}, max {ms(max(zafe_lat))}; "
        f"from the write's send: p50 {ms(pct(zafe_from_send, 50))}, p99 "
        f"{ms(pct(zafe_from_send, 99))}",
        "openbao agent change-to-file (from the write's ack, "
        f"{len(bao_lat)}/{CHANGES} changes, interval {BAO_INTERVAL or 'default 5m'}): "
        + (f"p50 {ms(statistics.median(bao_lat))}, min {ms(min(bao_lat))}, max {ms(max(bao_lat))}"
           if bao_lat else "none seen"),
    ]
    for r in rounds:
        lines.append(f"  change {r[0]}: zafe {r[1]} files ({r[2]} missing) p50 {ms(r[3])} p99 "
                     f"{ms(r[4])} max {ms(r[5])}; openbao "
                     f"{ms(r[6]) if r[6] is not None else 'not seen'}; write ack {ms(r[7])}")
    text = "\n".join(lines)
    print(text, flush=True)
    with open(os.path.join(ROOT, "bench/results.log"), "a") as f:
        f.write(text + "\n")
    if any(r[2] for r in rounds) or len(bao_lat) < CHANGES:
        raise SystemExit("some files never got the new value (see above)")


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    signal.signal(signal.SIGINT, lambda *_: sys.exit(130))
    main()
