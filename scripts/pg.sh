#!/usr/bin/env bash
# Throwaway PostgreSQL cluster for the test suite.
#
#   bash scripts/pg.sh start   # create (if needed) and start; prints DATABASE_URL=...
#   bash scripts/pg.sh env     # print DATABASE_URL=... of the running cluster
#   bash scripts/pg.sh url     # print the bare URL
#   bash scripts/pg.sh status  # exit 0 when running
#   bash scripts/pg.sh stop    # stop it and delete its data
#
# Typical use:   export "$(bash scripts/pg.sh start)"
#
# The cluster lives in $PROJECT/.pg/ (gitignored), listens on 127.0.0.1 only,
# trusts every local connection (user "postgres", no password) and runs with
# fsync off: it is for tests, never for data you want to keep.
# ESCROW_PG_DURABLE=1 starts it with production durability instead (fsync,
# synchronous_commit and full_page_writes on): the benchmark uses that.
#
# Port: ESCROW_PG_PORT (default 55432); if that port is taken, the next free
# one is used. Only stdout carries the DATABASE_URL line; messages go to stderr.
#
# initdb refuses to run as root, so as root the cluster runs as an unprivileged
# system user (ESCROW_PG_USER, default "escrowpg", created on first use).
# Run as any other user, it simply runs as that user.
#
# Server binaries: ESCROW_PG_BINDIR, else initdb/pg_ctl on PATH, else
# /usr/local/bin, else the newest /usr/lib/postgresql/*/bin.
set -euo pipefail

PROJECT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
STATE="$PROJECT/.pg"
DEFAULT_PORT="${ESCROW_PG_PORT:-55432}"
PG_USER="${ESCROW_PG_USER:-escrowpg}"

log() { printf 'pg.sh: %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

find_bindir() {
    if [[ -n "${ESCROW_PG_BINDIR:-}" ]]; then
        printf '%s\n' "$ESCROW_PG_BINDIR"
        return
    fi
    local initdb
    if initdb="$(command -v initdb 2>/dev/null)" && [[ -x "$(dirname "$initdb")/pg_ctl" ]]; then
        dirname "$initdb"
        return
    fi
    if [[ -x /usr/local/bin/initdb && -x /usr/local/bin/pg_ctl ]]; then
        printf '%s\n' /usr/local/bin
        return
    fi
    local dir
    dir="$(printf '%s\n' /usr/lib/postgresql/*/bin | sort -V | tail -n 1)"
    if [[ -n "$dir" && -x "$dir/initdb" ]]; then
        printf '%s\n' "$dir"
        return
    fi
    die "PostgreSQL server binaries (initdb, pg_ctl) not found; set ESCROW_PG_BINDIR"
}

IS_ROOT=0
if [[ "$(id -u)" == 0 ]]; then IS_ROOT=1; fi

# Run a command as the cluster's owner (from / so its cwd is always readable).
# fd 9 (our lock) is closed so the postmaster does not inherit and hold it.
as_owner() {
    if ((IS_ROOT)); then
        (cd / && runuser -u "$PG_USER" -- "$@") 9>&-
    else
        (cd / && "$@") 9>&-
    fi
}

ensure_user() {
    ((IS_ROOT)) || return 0
    if ! id -u "$PG_USER" >/dev/null 2>&1; then
        log "creating system user $PG_USER"
        local nologin=/usr/sbin/nologin
        [[ -x "$nologin" ]] || nologin=/bin/false
        useradd -r -M -d /nonexistent -s "$nologin" "$PG_USER" 2>/dev/null \
            || id -u "$PG_USER" >/dev/null 2>&1 \
            || die "could not create user $PG_USER"
    fi
}

# Where the data and the socket go. Normally $PROJECT/.pg/; when the owner
# cannot reach that path (e.g. a checkout under /root, mode 0700) or the
# socket path would be too long, a private directory under /tmp is used and
# recorded in $STATE/location.
choose_location() {
    if [[ -f "$STATE/location" ]]; then
        BASE="$(cat "$STATE/location")"
        [[ -n "$BASE" ]] && return
    fi
    BASE="$STATE/cluster"
    local reachable=1
    if ((IS_ROOT)); then
        # The owner must be able to traverse every directory down to $STATE.
        runuser -u "$PG_USER" -- test -x "$STATE" 2>/dev/null || reachable=0
    fi
    # Unix socket paths are limited to 107 bytes (".../sock/.s.PGSQL.NNNNN").
    if ((reachable == 0)) || ((${#BASE} > 80)); then
        BASE="$(mktemp -d "${TMPDIR:-/tmp}/escrow-pg.XXXXXX")"
        log "using $BASE (project path not usable for the cluster)"
    fi
    printf '%s\n' "$BASE" >"$STATE/location"
}

port_in_use() {
    # True when 127.0.0.1:$1 cannot be bound (something listens there).
    local rc=2
    if command -v python3 >/dev/null 2>&1; then
        python3 - "$1" <<'EOF' 2>/dev/null && rc=0 || rc=$?
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
try:
    s.bind(("127.0.0.1", int(sys.argv[1])))
except OSError:
    sys.exit(0)
finally:
    s.close()
sys.exit(1)
EOF
    fi
    case "$rc" in
        0) return 0 ;;
        1) return 1 ;;
    esac
    # No usable python3: does anything accept connections there?
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

pick_port() {
    local port="$DEFAULT_PORT" tries=0
    [[ "$port" =~ ^[0-9]+$ ]] || die "ESCROW_PG_PORT must be a number, got '$port'"
    while port_in_use "$port"; do
        tries=$((tries + 1))
        ((tries < 200)) || die "no free port found from $DEFAULT_PORT"
        port=$((port + 1))
        ((port <= 65535)) || port=20000
    done
    if [[ "$port" != "$DEFAULT_PORT" ]]; then
        log "port $DEFAULT_PORT is taken; using $port"
    fi
    printf '%s\n' "$port"
}

is_running() {
    [[ -n "${BASE:-}" && -f "$BASE/data/PG_VERSION" ]] || return 1
    as_owner "$BINDIR/pg_ctl" -D "$BASE/data" status >/dev/null 2>&1 || return 1
    # pg_ctl only checks that the PID exists; a killed postmaster that nobody
    # reaped yet is a zombie, which is not running.
    local pid state
    pid="$(head -n 1 "$BASE/data/postmaster.pid" 2>/dev/null || true)"
    [[ "$pid" =~ ^[0-9]+$ ]] || return 1
    state="$(sed -E 's/^[0-9]+ \(.*\) ([A-Za-z]).*/\1/' "/proc/$pid/stat" 2>/dev/null || true)"
    [[ -z "$state" || "$state" != Z ]]
}

running_port() {
    # Line 4 of postmaster.pid is the port.
    sed -n 4p "$BASE/data/postmaster.pid" 2>/dev/null
}

print_url() {
    printf 'DATABASE_URL=postgres://postgres@127.0.0.1:%s/postgres\n' "$1"
}

do_start() {
    mkdir -p "$STATE"
    ensure_user
    choose_location
    mkdir -p "$BASE"
    if is_running; then
        local port
        port="$(running_port)"
        log "already running on 127.0.0.1:$port ($BASE)"
        print_url "$port"
        return
    fi
    if [[ ! -f "$BASE/data/PG_VERSION" ]]; then
        rm -rf "$BASE/data"
        mkdir -p "$BASE/data" "$BASE/sock" "$BASE/log"
        if ((IS_ROOT)); then chown -R "$PG_USER": "$BASE"; fi
        chmod 700 "$BASE/data"
        log "initdb in $BASE/data"
        if ! as_owner "$BINDIR/initdb" -D "$BASE/data" -A trust -U postgres \
            -E UTF8 --locale=C.UTF-8 >"$BASE/log/initdb.log" 2>&1; then
            # Older or minimal systems may lack C.UTF-8: retry with plain C.
            rm -rf "$BASE/data" && mkdir -p "$BASE/data"
            if ((IS_ROOT)); then chown "$PG_USER": "$BASE/data"; fi
            chmod 700 "$BASE/data"
            as_owner "$BINDIR/initdb" -D "$BASE/data" -A trust -U postgres \
                -E UTF8 --locale=C >"$BASE/log/initdb.log" 2>&1 \
                || { cat "$BASE/log/initdb.log" >&2; die "initdb failed"; }
        fi
    fi
    mkdir -p "$BASE/sock" "$BASE/log"
    if ((IS_ROOT)); then chown "$PG_USER": "$BASE" "$BASE/sock" "$BASE/log"; fi
    # Clear a stale lock left by a killed postmaster (pg_ctl status said no).
    rm -f "$BASE/data/postmaster.pid"
    local port attempt durability="-c fsync=off -c synchronous_commit=off -c full_page_writes=off"
    if [[ "${ESCROW_PG_DURABLE:-0}" == 1 ]]; then
        durability="-c fsync=on -c synchronous_commit=on -c full_page_writes=on"
    fi
    for attempt in 1 2 3; do
        port="$(pick_port)"
        log "starting on 127.0.0.1:$port"
        if as_owner "$BINDIR/pg_ctl" -D "$BASE/data" -l "$BASE/log/postgres.log" -w -t 60 \
            -o "-p $port -k $BASE/sock -c listen_addresses=127.0.0.1 $durability -c max_connections=100" \
            start >/dev/null; then
            printf '%s\n' "$port" >"$STATE/port"
            print_url "$port"
            return
        fi
        # Lost a race for the port, most likely: try the next free one.
        log "start attempt $attempt failed; last log lines:"
        tail -n 5 "$BASE/log/postgres.log" >&2 || true
        DEFAULT_PORT=$((port + 1))
    done
    die "could not start PostgreSQL (log: $BASE/log/postgres.log)"
}

do_stop() {
    [[ -d "$STATE" ]] || { log "no cluster"; return; }
    if [[ -f "$STATE/location" ]]; then
        BASE="$(cat "$STATE/location")"
    else
        BASE="$STATE/cluster"
    fi
    if [[ -f "$BASE/data/PG_VERSION" ]] && is_running; then
        log "stopping"
        as_owner "$BINDIR/pg_ctl" -D "$BASE/data" -m fast -w -t 60 stop >/dev/null \
            || as_owner "$BINDIR/pg_ctl" -D "$BASE/data" -m immediate -w stop >/dev/null \
            || log "pg_ctl stop failed"
    fi
    # Only ever delete the cluster's own directories.
    case "$BASE" in
        "$STATE"/* | "${TMPDIR:-/tmp}"/escrow-pg.*) rm -rf "$BASE" ;;
        *) log "not removing unexpected location $BASE" ;;
    esac
    rm -f "$STATE/location" "$STATE/port"
    log "stopped and removed"
}

do_env() {
    [[ -f "$STATE/location" ]] || die "not running (bash scripts/pg.sh start)"
    BASE="$(cat "$STATE/location")"
    is_running || die "not running (bash scripts/pg.sh start)"
    print_url "$(running_port)"
}

main() {
    local cmd="${1:-}"
    case "$cmd" in
        start | stop | env | url | status) ;;
        -h | --help | help)
            # The opening comment up to the first line of code (no line numbers to go stale).
            sed -n '2,/^[^#]/s/^# \{0,1\}//p' "${BASH_SOURCE[0]}"
            return
            ;;
        *)
            echo "usage: bash scripts/pg.sh {start|stop|env|url|status}" >&2
            exit 2
            ;;
    esac
    BINDIR="$(find_bindir)"
    mkdir -p "$STATE"
    # One invocation at a time per checkout.
    exec 9>"$STATE/.lock"
    flock -w 120 9 || die "another pg.sh is busy (lock $STATE/.lock)"
    case "$cmd" in
        start) do_start ;;
        stop) do_stop ;;
        env) do_env ;;
        url) do_env | sed 's/^DATABASE_URL=//' ;;
        status)
            if [[ -f "$STATE/location" ]]; then
                BASE="$(cat "$STATE/location")"
                if is_running; then
                    log "running on 127.0.0.1:$(running_port) ($BASE)"
                    return 0
                fi
            fi
            log "not running"
            return 1
            ;;
    esac
}

main "$@"
