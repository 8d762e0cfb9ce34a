#!/usr/bin/env bash
# Starts a throwaway PostgreSQL cluster for Zafe's tests (CI and developers).
#
#   scripts/start-postgres.sh [DIR]        start (installing PostgreSQL if needed)
#   scripts/start-postgres.sh start [DIR]  the same
#   scripts/start-postgres.sh stop [DIR]   stop the cluster in DIR
#
# Typical use:
#
#   eval "$(scripts/start-postgres.sh)"
#   ZAFE_REQUIRE_POSTGRES=1 cargo test -p zafe-storage
#   scripts/start-postgres.sh stop
#
# Meant for Debian, run as root. Idempotent: an existing cluster in DIR is
# reused, a running one is left running. The cluster listens only on
# 127.0.0.1:${ZAFE_PG_PORT:-54329} and trusts every loopback connection, so
# it is for tests only. DIR defaults to /tmp/zafe-postgres-PORT.
#
# Progress goes to stderr; the last line on stdout is the
# `export ZAFE_TEST_POSTGRES_URL=...` line to eval.

set -euo pipefail

PORT="${ZAFE_PG_PORT:-54329}"
PG_USER=postgres

log() { printf 'start-postgres: %s\n' "$*" >&2; }
die() {
    log "error: $*"
    exit 1
}
usage() {
    sed -n '2,6p' "$0" | sed 's/^# \{0,1\}//' >&2
    exit 2
}

action=start
case "${1:-}" in
    start | stop)
        action="$1"
        shift
        ;;
    -*) usage ;;
esac
[ $# -le 1 ] || usage

[[ "$PORT" =~ ^[0-9]+$ ]] || die "ZAFE_PG_PORT must be a port number, not '$PORT'"
[ "$(id -u)" -eq 0 ] || die "run me as root (I install packages and run PostgreSQL as '$PG_USER')"

# Absolute, because the PostgreSQL tools run from / as another user, who may
# not be allowed into the current directory.
DIR="$(realpath -m "${1:-/tmp/zafe-postgres-$PORT}")"
cd /

# The newest installed server's binaries. Debian keeps them out of PATH, in
# /usr/lib/postgresql/VERSION/bin; other installs may put initdb in PATH.
find_bindir() {
    local dir
    dir="$(find /usr/lib/postgresql -mindepth 2 -maxdepth 2 -type d -name bin 2>/dev/null |
        sort -V | tail -n 1)"
    if [ -n "$dir" ] && [ -x "$dir/initdb" ]; then
        echo "$dir"
    elif command -v initdb >/dev/null 2>&1; then
        dirname "$(readlink -f "$(command -v initdb)")"
    fi
}

# Runs a PostgreSQL tool as the cluster's owner: the server refuses to run
# as root.
as_pg() { runuser -u "$PG_USER" -- "$@"; }

is_running() {
    [ -f "$DIR/postmaster.pid" ] && as_pg "$BINDIR/pg_ctl" -D "$DIR" status >/dev/null 2>&1
}

log_tail() { tail -n 20 "$DIR/server.log" >&2 || true; }

BINDIR="$(find_bindir)"

if [ "$action" = stop ]; then
    if [ -n "$BINDIR" ] && [ -d "$DIR" ] && is_running; then
        as_pg "$BINDIR/pg_ctl" -D "$DIR" -m fast -w -t 60 stop >&2
        log "stopped the cluster in $DIR (remove the directory to discard it)"
    else
        log "no cluster running in $DIR"
    fi
    exit 0
fi

if [ -z "$BINDIR" ]; then
    log "installing PostgreSQL with apt-get"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq >&2
    apt-get install -y -qq --no-install-recommends postgresql >&2
    BINDIR="$(find_bindir)"
    [ -n "$BINDIR" ] || die "installed postgresql but found no initdb"
fi

# The Debian package creates this user; a PostgreSQL from elsewhere may not.
if ! id -u "$PG_USER" >/dev/null 2>&1; then
    log "creating system user $PG_USER"
    useradd --system --user-group --home-dir /var/lib/postgresql \
        --shell /usr/sbin/nologin "$PG_USER"
fi

mkdir -p "$DIR"
chown "$PG_USER:" "$DIR"
# The server refuses a data directory that others can read.
chmod 0700 "$DIR"
as_pg test -w "$DIR" ||
    die "$PG_USER cannot write to $DIR; choose a directory whose parents it can traverse"

if [ ! -f "$DIR/PG_VERSION" ]; then
    log "creating a cluster in $DIR with $BINDIR/initdb"
    # --no-locale: C collation and no dependency on generated locales, which
    # a minimal Debian image lacks. Zafe compares keys as bytea anyway.
    as_pg "$BINDIR/initdb" -D "$DIR" -U "$PG_USER" --encoding=UTF8 --no-locale \
        --auth=trust >&2
fi

# Rewritten on every start, so that a changed ZAFE_PG_PORT takes effect, and
# included from the postgresql.conf that initdb wrote, once.
cat >"$DIR/zafe.conf" <<CONF
# Written by scripts/start-postgres.sh; overwritten on each start.
listen_addresses = '127.0.0.1'
port = $PORT
# TCP only: no socket to place in a directory that may not exist, may belong
# to another cluster, or may exceed the socket path length limit.
unix_socket_directories = ''
# Tests must see the same durability settings as production.
fsync = on
synchronous_commit = on
full_page_writes = on
CONF
cat >"$DIR/pg_hba.conf" <<'CONF'
# Written by scripts/start-postgres.sh. Trust, but only on loopback; the
# server listens nowhere else either. For tests only.
# TYPE  DATABASE  USER  ADDRESS        METHOD
host    all       all   127.0.0.1/32   trust
CONF
chown "$PG_USER:" "$DIR/zafe.conf" "$DIR/pg_hba.conf"
grep -qx "include 'zafe.conf'" "$DIR/postgresql.conf" ||
    echo "include 'zafe.conf'" >>"$DIR/postgresql.conf"

if is_running; then
    # Line 4 of postmaster.pid is the port the server listens on.
    running_port="$(sed -n 4p "$DIR/postmaster.pid")"
    if [ "$running_port" = "$PORT" ]; then
        log "a cluster is already running in $DIR"
    else
        log "restarting the cluster in $DIR on port $PORT (it was on $running_port)"
        as_pg "$BINDIR/pg_ctl" -D "$DIR" -l "$DIR/server.log" -m fast -w -t 60 restart >&2 ||
            { log_tail; die "PostgreSQL did not restart; see $DIR/server.log"; }
    fi
else
    log "starting PostgreSQL on 127.0.0.1:$PORT"
    as_pg "$BINDIR/pg_ctl" -D "$DIR" -l "$DIR/server.log" -w -t 60 start >&2 ||
        { log_tail; die "PostgreSQL did not start; see $DIR/server.log"; }
fi

# pg_ctl -w waits for the postmaster; also wait until it accepts connections
# where the tests will connect (bounded: 60 tries, half a second apart).
for _ in $(seq 60); do
    if "$BINDIR/pg_isready" -q -h 127.0.0.1 -p "$PORT" -U "$PG_USER" -d postgres; then
        log "ready on 127.0.0.1:$PORT"
        echo "export ZAFE_TEST_POSTGRES_URL=postgres://$PG_USER@127.0.0.1:$PORT/postgres"
        exit 0
    fi
    sleep 0.5
done
log_tail
die "PostgreSQL is not accepting connections on 127.0.0.1:$PORT (another server on that port?)"
