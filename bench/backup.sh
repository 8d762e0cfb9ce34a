#!/usr/bin/env bash
# Online backup and restore of 100,000 secrets (issue 12, item 8; R-OPS-8), on loopback:
# a release Zafe on SQLite with BENCH_SECRETS secrets, `zafe operator backup -o FILE` timed,
# then `zafe operator restore FILE` timed into a new, uninitialised server on SQLite and on
# PostgreSQL, each checked by reading a secret back after unsealing with the master key.
#
#   bench/backup.sh
#
# Settings (env): BENCH_SECRETS=100000, BENCH_PG_PORT=54361, BENCH_PORT_BASE=18600. Results are
# printed and appended to bench/results.log. Everything it starts is stopped when it ends.
set -euo pipefail
cd "$(dirname "$0")/.."

log() { printf 'bench-backup: %s\n' "$*" >&2; }
N="${BENCH_SECRETS:-100000}"
BASE="${BENCH_PORT_BASE:-18600}"

log "building zafe (release)"
cargo build --release --locked -q -p zafe
ZAFE=$PWD/target/release/zafe

eval "$(ZAFE_PG_PORT="${BENCH_PG_PORT:-54361}" scripts/start-postgres.sh)"
admin_url=$ZAFE_TEST_POSTGRES_URL
db="zafe_bench_backup_$$"
psql_bin=$(command -v psql || ls /usr/lib/postgresql/*/bin/psql | tail -n 1)

work=$(mktemp -d /tmp/zafe-bench-backup.XXXXXX)
pids=()
cleanup() {
    for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
    "$psql_bin" "$admin_url" -q -c "DROP DATABASE IF EXISTS \"$db\" WITH (FORCE)" >/dev/null 2>&1 || true
    ZAFE_PG_PORT="${BENCH_PG_PORT:-54361}" scripts/start-postgres.sh stop >/dev/null 2>&1 || true
    rm -rf "$work"
}
trap cleanup EXIT
umask 077

"$psql_bin" "$admin_url" -q -c "CREATE DATABASE \"$db\"" >/dev/null
python3 -c 'import sys; u, d = sys.argv[1:]; b, _, q = u.partition("?"); s = b.index("://") + 3; e = b.find("/", s); e = len(b) if e < 0 else e; print(b[:e] + "/" + d + ("?" + q if q else ""), end="")' "$admin_url" "$db" > "$work/db-url"
python3 -c 'import os; print(os.urandom(32).hex())' > "$work/master.key"

server() { # name port storage-section
    local name=$1 port=$2 storage=$3
    mkdir -p "$work/$name"
    # A new server gets the source's identity key, as a moved server would (not its anchor).
    [ "$name" = source ] || [ -f "$work/$name/identity.key" ] || cp "$work/source/identity.key" "$work/$name/"
    cat > "$work/$name.toml" <<TOML
listen = "127.0.0.1:$port"
data_dir = "$work/$name"
$storage
[seal]
master_key_file = "$work/master.key"
[identity]
key_file = "$work/$name/identity.key"
TOML
    ZAFE_LOG=warn "$ZAFE" server --config "$work/$name.toml" > "$work/$name.log" 2>&1 &
    pids+=($!)
    for _ in $(seq 1 200); do
        curl -s -o /dev/null "http://127.0.0.1:$port/v1/sys/health" && return 0
        sleep 0.1
    done
    log "$name did not start"; cat "$work/$name.log" >&2; exit 1
}

sqlite() { printf '[storage]\nkind = "sqlite"\npath = "%s/%s/zafe.db"\n' "$work" "$1"; }

src="http://127.0.0.1:$((BASE + 1))"
server source $((BASE + 1)) "$(sqlite source)"
root=$(curl -s -X PUT -d '{"secret_shares":1,"secret_threshold":1}' "$src/v1/sys/init" \
    | python3 -c 'import json,sys; print(json.load(sys.stdin)["root_token"])')

log "writing $N secrets"
start=$(date +%s.%N)
python3 - "$src" "$root" "$N" <<'PY'
import json, sys, urllib.request, concurrent.futures
addr, token, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
def put(i):
    req = urllib.request.Request(f"{addr}/v1/secret/data/bench/key-{i}", method="POST",
        data=json.dumps({"data": {"value": f"seed-{i}", "other": "payload-0123456789abcdef"}}).encode(),
        headers={"X-Vault-Token": token, "Content-Type": "application/json"})
    urllib.request.urlopen(req).read()
with concurrent.futures.ThreadPoolExecutor(32) as ex:
    list(ex.map(put, range(n)))
PY
seeded=$(python3 -c "import time; print(f'{time.time() - $start:.1f}')")

zafe() { ZAFE_CONFIG_DIR="$work/client" ZAFE_KEYRING=off "$ZAFE" "$@"; }
mkdir -p "$work/client"
timed() { local t0; t0=$(date +%s.%N); "$@" >/dev/null; python3 -c "import time; print(f'{time.time() - $t0:.2f}')"; }

backup_s=$(ZAFE_TOKEN=$root timed zafe --addr "$src" operator backup -o "$work/zafe.zbak")
size=$(stat -c %s "$work/zafe.zbak")

check() { # addr
    for _ in $(seq 1 100); do
        [ "$(curl -s -o /dev/null -w '%{http_code}' "$1/v1/sys/health")" = 200 ] && break
        sleep 0.1
    done
    curl -s -H "X-Vault-Token: $root" "$1/v1/secret/data/bench/key-$((N - 1))" \
        | python3 -c 'import json,sys; assert json.load(sys.stdin)["data"]["data"]["value"].startswith("seed-")'
}

results=()
for target in sqlite postgres; do
    if [ "$target" = sqlite ]; then
        port=$((BASE + 2))
        storage=$(sqlite restored-sqlite)
    else
        port=$((BASE + 3))
        storage=$(printf '[storage]\nkind = "postgres"\nurl_file = "%s/db-url"\n' "$work")
    fi
    server "restored-$target" "$port" "$storage"
    restore_s=$(timed zafe --addr "http://127.0.0.1:$port" operator restore "$work/zafe.zbak")
    # Sealed after a restore: restarting unseals it from the master key.
    kill "${pids[-1]}"; wait "${pids[-1]}" 2>/dev/null || true
    server "restored-$target" "$port" "$storage"
    check "http://127.0.0.1:$port"
    results+=("restore into an uninitialised server on $target: ${restore_s} s")
done

{
    echo "== backup $(date -u +%FT%TZ) secrets=$N"
    echo "seeding $N secrets (32 threads, one version each): ${seeded} s"
    echo "zafe operator backup -o (SQLite source, online): ${backup_s} s, $((size / 1024 / 1024)) MiB"
    printf '%s\n' "${results[@]}"
} | tee -a bench/results.log
