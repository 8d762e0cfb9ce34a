#!/usr/bin/env bash
# Several Zafe nodes on one PostgreSQL behind HAProxy (issue 12, item 8), on loopback:
#   - KV v2 reads and writes through HAProxy with 1, 2 and 3 nodes, with bench/run.sh's load
#     (wrk, bench/read.lua and bench/write.lua). On two cores this shows what more nodes cost,
#     not scale: the nodes, PostgreSQL, HAProxy and wrk share the same cores.
#   - how long a change made through one node takes to be enforced by another: a policy is
#     widened and narrowed in turn through node 1, and node 2 is asked (with a token of that
#     policy) until its answer changes; p50/p99/max over BENCH_CHANGES changes.
#
#   bench/nodes.sh
#
# Settings (env): BENCH_CHANGES=200, BENCH_PG_PORT=54360, BENCH_PORT_BASE=18500, and
# bench/run.sh's BENCH_KEYS, BENCH_DURATION, BENCH_CONNECTIONS, BENCH_THREADS. Results are
# printed and appended to bench/results.log. Everything it starts is stopped when it ends.
set -euo pipefail
cd "$(dirname "$0")/.."

log() { printf 'bench-nodes: %s\n' "$*" >&2; }
BASE="${BENCH_PORT_BASE:-18500}"
CHANGES="${BENCH_CHANGES:-200}"

command -v haproxy >/dev/null 2>&1 || [ -x /usr/sbin/haproxy ] || {
    log "installing haproxy (Debian package)"
    apt-get update -qq >/dev/null && apt-get install -y -qq haproxy >/dev/null
}
HAPROXY=$(command -v haproxy || echo /usr/sbin/haproxy)

log "building zafe (release)"
cargo build --release --locked -q -p zafe

eval "$(ZAFE_PG_PORT="${BENCH_PG_PORT:-54360}" scripts/start-postgres.sh)"
admin_url=$ZAFE_TEST_POSTGRES_URL
db="zafe_bench_nodes_$$"
psql_bin=$(command -v psql || ls /usr/lib/postgresql/*/bin/psql | tail -n 1)

work=$(mktemp -d /tmp/zafe-bench-nodes.XXXXXX)
pids=()
proxy_pid=
cleanup() {
    [ -n "$proxy_pid" ] && kill "$proxy_pid" 2>/dev/null || true
    for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
    "$psql_bin" "$admin_url" -q -c "DROP DATABASE IF EXISTS \"$db\" WITH (FORCE)" >/dev/null 2>&1 || true
    ZAFE_PG_PORT="${BENCH_PG_PORT:-54360}" scripts/start-postgres.sh stop >/dev/null 2>&1 || true
    rm -rf "$work"
}
trap cleanup EXIT

"$psql_bin" "$admin_url" -q -c "CREATE DATABASE \"$db\"" >/dev/null
db_url=$(python3 -c 'import sys; u, d = sys.argv[1:]; b, _, q = u.partition("?"); s = b.index("://") + 3; e = b.find("/", s); e = len(b) if e < 0 else e; print(b[:e] + "/" + d + ("?" + q if q else ""))' "$admin_url" "$db")
umask 077
printf '%s' "$db_url" > "$work/db-url"
python3 -c 'import os; print(os.urandom(32).hex())' > "$work/master.key"

start_node() { # index
    local i=$1 port=$((BASE + $1))
    mkdir -p "$work/node$i"
    cat > "$work/node$i.toml" <<TOML
listen = "127.0.0.1:$port"
data_dir = "$work/node$i"
[storage]
kind = "postgres"
url_file = "$work/db-url"
[seal]
master_key_file = "$work/master.key"
[identity]
key_file = "$work/identity.key"
TOML
    ZAFE_LOG=warn ./target/release/zafe server --config "$work/node$i.toml" > "$work/node$i.log" 2>&1 &
    pids+=($!)
    for _ in $(seq 1 200); do
        curl -s -o /dev/null "http://127.0.0.1:$port/v1/sys/health" && return 0
        sleep 0.1
    done
    log "node $i did not start"; cat "$work/node$i.log" >&2; exit 1
}

start_node 1
root=$(curl -s -X PUT -d '{"secret_shares":1,"secret_threshold":1}' \
    "http://127.0.0.1:$((BASE + 1))/v1/sys/init" | python3 -c 'import json,sys; print(json.load(sys.stdin)["root_token"])')
start_node 2
start_node 3

proxy() { # number of nodes
    [ -n "$proxy_pid" ] && { kill "$proxy_pid" 2>/dev/null || true; wait "$proxy_pid" 2>/dev/null || true; }
    {
        printf 'global\n    maxconn 4096\ndefaults\n    mode http\n    timeout connect 1s\n    timeout client 30s\n    timeout server 30s\n'
        printf 'frontend zafe\n    bind 127.0.0.1:%s\n    default_backend nodes\n' "$BASE"
        printf 'backend nodes\n    balance roundrobin\n    option httpchk GET /v1/sys/health\n    http-check expect status 200\n'
        for i in $(seq 1 "$1"); do printf '    server n%s 127.0.0.1:%s check\n' "$i" $((BASE + i)); done
    } > "$work/haproxy.cfg"
    "$HAPROXY" -db -f "$work/haproxy.cfg" > "$work/haproxy.log" 2>&1 &
    proxy_pid=$!
    for _ in $(seq 1 100); do
        curl -s -o /dev/null "http://127.0.0.1:$BASE/v1/sys/health" && return 0
        sleep 0.1
    done
    log "haproxy did not start"; cat "$work/haproxy.log" >&2; exit 1
}

for n in 1 2 3; do
    proxy "$n"
    log "$n node(s) behind HAProxy"
    BENCH_NAME="nodes-$n" bench/run.sh external "http://127.0.0.1:$BASE" "$root"
done

log "enforcement delay between nodes ($CHANGES changes)"
python3 - "http://127.0.0.1:$((BASE + 1))" "http://127.0.0.1:$((BASE + 2))" "$root" "$CHANGES" <<'PY' | tee -a bench/results.log
import json, statistics, sys, time, urllib.error, urllib.request
one, two, root, changes = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])

def call(base, method, path, token, body=None):
    req = urllib.request.Request(base + path, method=method, headers={"X-Vault-Token": token},
        data=None if body is None else json.dumps(body).encode())
    try:
        with urllib.request.urlopen(req) as r:
            return r.status
    except urllib.error.HTTPError as e:
        return e.code

wide = 'path "secret/data/lat/*" { capabilities = ["read"] }'
narrow = 'path "secret/data/other/*" { capabilities = ["read"] }'
assert call(one, "POST", "/v1/secret/data/lat/x", root, {"data": {"v": "1"}}) == 200
assert call(one, "PUT", "/v1/sys/policy/lat", root, {"policy": wide}) == 204
token_req = urllib.request.Request(one + "/v1/auth/token/create", method="POST",
    headers={"X-Vault-Token": root}, data=json.dumps({"policies": ["lat"]}).encode())
token = json.load(urllib.request.urlopen(token_req))["auth"]["client_token"]
delays = []
for i in range(changes):
    text, expected = (narrow, 403) if i % 2 == 0 else (wide, 200)
    assert call(one, "PUT", "/v1/sys/policy/lat", root, {"policy": text}) == 204
    acked = time.monotonic()
    while call(two, "GET", "/v1/secret/data/lat/x", token) != expected:
        pass
    delays.append((time.monotonic() - acked) * 1000)
delays.sort()
q = statistics.quantiles(delays, n=100)
print(f"== nodes enforcement {time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime())} changes={changes}")
print(f"a policy changed through node 1 is enforced by node 2 after: p50 {q[49]:.1f} ms, "
      f"p99 {q[98]:.1f} ms, max {delays[-1]:.1f} ms (from the write's acknowledgement; "
      f"includes one request to node 2)")
PY
