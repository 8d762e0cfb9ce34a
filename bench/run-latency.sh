#!/usr/bin/env bash
# `zafe run` latency to exec with 50 references (R-PERF-3), on loopback.
#
#   bench/run-latency.sh            build release, start a dev server, measure
#   BENCH_REFS=50 BENCH_RUNS=50     settings (env)
#
# Stores BENCH_REFS secrets in one project environment, writes an env file of
# their references, and times `zafe run --env-file F -- true` with hyperfine
# (Debian package, installed if missing): start-up, reading the env file,
# verifying the server's identity, one batched sys/resolve and exec of the
# command, through to the command's exit. Two variants: masked (the default:
# pipes and the masker) and --no-mask (Zafe execs the command in its place).
# Results are printed and appended to bench/results.log.
set -euo pipefail
cd "$(dirname "$0")/.."

REFS="${BENCH_REFS:-50}"
RUNS="${BENCH_RUNS:-50}"
PORT="${BENCH_PORT_RUN:-18260}"
TOKEN=bench-run-root

command -v hyperfine >/dev/null 2>&1 || {
    apt-get update -qq >/dev/null && apt-get install -y -qq hyperfine >/dev/null
}
cargo build --release -p zafe >&2
ZAFE="$(pwd)/target/release/zafe"

work=$(mktemp -d /tmp/zafe-run-bench.XXXXXX)
server_pid=""
cleanup() {
    [ -n "$server_pid" ] && kill "$server_pid" 2>/dev/null || true
    wait 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT

env -u ZAFE_ADDR -u ZAFE_TOKEN "$ZAFE" server --dev --dev-root-token "$TOKEN" \
    --listen "127.0.0.1:$PORT" >"$work/server.log" 2>&1 &
server_pid=$!
for _ in $(seq 1 100); do
    curl -sf "http://127.0.0.1:$PORT/v1/sys/health" >/dev/null && break
    sleep 0.1
done

export ZAFE_ADDR="http://127.0.0.1:$PORT" ZAFE_TOKEN="$TOKEN" ZAFE_CONFIG_DIR="$work/client"
mkdir -p "$ZAFE_CONFIG_DIR"
: >"$work/.env.zafe"
for i in $(seq 1 "$REFS"); do
    curl -sf -H "X-Vault-Token: $TOKEN" -X POST \
        -d "{\"data\":{\"value\":\"bench-value-$i-$(head -c 12 /dev/urandom | od -An -tx1 | tr -d ' \n')\"}}" \
        "$ZAFE_ADDR/v1/secret/data/bench/dev/KEY_$i" >/dev/null
    echo "KEY_$i=zafe://bench/dev/KEY_$i" >>"$work/.env.zafe"
done
# The first run pins the server's identity; check every value arrives.
test "$("$ZAFE" run --no-mask --env-file "$work/.env.zafe" -- sh -c 'env | grep -c "^KEY_.*=bench-value-"')" = "$REFS"

{
    echo "== zafe run latency, $REFS references, $(date -u +%Y-%m-%dT%H:%MZ), $(nproc) cores"
    hyperfine -N --warmup 5 --runs "$RUNS" --export-markdown "$work/md" \
        -n "zafe run (masked) -- true" "$ZAFE run --env-file $work/.env.zafe -- true" \
        -n "zafe run --no-mask -- true" "$ZAFE run --no-mask --env-file $work/.env.zafe -- true" \
        -n "true (baseline)" "true"
    cat "$work/md"
} 2>&1 | tee -a bench/results.log
