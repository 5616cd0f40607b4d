#!/usr/bin/env bash
# Throwaway Redis server (the Celery broker of the real-worker tests).
#
#   bash scripts/redis.sh start   # install if needed, start; prints REDIS_URL=...
#   bash scripts/redis.sh env     # print REDIS_URL=... of the running server
#   bash scripts/redis.sh url     # print the bare URL
#   bash scripts/redis.sh status  # exit 0 when running
#   bash scripts/redis.sh stop    # stop it and delete its directory
#
# Typical use:   export "$(bash scripts/redis.sh start)"
#
# Like scripts/pg.sh: the server lives in $PROJECT/.redis/ (gitignored),
# listens on 127.0.0.1 only, keeps nothing on disk (no RDB, no AOF) and has no
# password: it is for tests only. Port: ESCROW_REDIS_PORT (default 56379);
# if that port is taken, the next free one is used. Only stdout carries the
# REDIS_URL line; messages go to stderr.
#
# The server binary: ESCROW_REDIS_SERVER, else redis-server on PATH; when
# missing and run as root on Debian/Ubuntu, Debian's redis-server package is
# installed (apt-get). Exit 3 means it could not be found or installed.
set -euo pipefail

PROJECT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
STATE="$PROJECT/.redis"
DEFAULT_PORT="${ESCROW_REDIS_PORT:-56379}"

log() { printf 'redis.sh: %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

find_server() {
    if [[ -n "${ESCROW_REDIS_SERVER:-}" ]]; then
        printf '%s\n' "$ESCROW_REDIS_SERVER"
        return 0
    fi
    command -v redis-server 2>/dev/null && return 0
    [[ -x /usr/bin/redis-server ]] && { printf '%s\n' /usr/bin/redis-server; return 0; }
    return 1
}

install_server() {
    if [[ "$(id -u)" != 0 ]] || ! command -v apt-get >/dev/null; then
        return 1
    fi
    log "installing Debian's redis-server package"
    # Never start the packaged service: this script runs its own server.
    local rc=0
    export DEBIAN_FRONTEND=noninteractive
    (timeout 300 apt-get install -y -q --no-install-recommends redis-server >/dev/null 2>&1 \
        || { timeout 300 apt-get update -q >/dev/null 2>&1 \
            && timeout 300 apt-get install -y -q --no-install-recommends redis-server >/dev/null 2>&1; }) \
        || rc=$?
    return "$rc"
}

port_in_use() {
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

pick_port() {
    local port="$DEFAULT_PORT" tries=0
    [[ "$port" =~ ^[0-9]+$ ]] || die "ESCROW_REDIS_PORT must be a number, got '$port'"
    while port_in_use "$port"; do
        tries=$((tries + 1))
        ((tries < 200)) || die "no free port found from $DEFAULT_PORT"
        port=$((port + 1))
    done
    printf '%s\n' "$port"
}

is_running() {
    local pid
    pid="$(cat "$STATE/redis.pid" 2>/dev/null || true)"
    [[ "$pid" =~ ^[0-9]+$ ]] && kill -0 "$pid" 2>/dev/null
}

print_url() {
    printf 'REDIS_URL=redis://127.0.0.1:%s/0\n' "$(cat "$STATE/port")"
}

do_start() {
    mkdir -p "$STATE"
    if is_running; then
        log "already running on 127.0.0.1:$(cat "$STATE/port")"
        print_url
        return
    fi
    local server
    if ! server="$(find_server)"; then
        install_server || { log "redis-server not found and could not be installed"; exit 3; }
        server="$(find_server)" || { log "redis-server still not found"; exit 3; }
    fi
    local port attempt
    for attempt in 1 2 3; do
        port="$(pick_port)"
        log "starting $server on 127.0.0.1:$port"
        rm -f "$STATE/redis.pid"
        if "$server" --port "$port" --bind 127.0.0.1 --protected-mode yes \
            --dir "$STATE" --pidfile "$STATE/redis.pid" --logfile "$STATE/redis.log" \
            --save "" --appendonly no --daemonize yes >/dev/null 9>&-; then
            local i
            for i in $(seq 50); do
                if is_running && port_in_use "$port"; then
                    printf '%s\n' "$port" >"$STATE/port"
                    print_url
                    return
                fi
                sleep 0.1
            done
        fi
        log "start attempt $attempt failed; last log lines:"
        tail -n 5 "$STATE/redis.log" >&2 || true
        DEFAULT_PORT=$((port + 1))
    done
    die "could not start Redis (log: $STATE/redis.log)"
}

do_stop() {
    [[ -d "$STATE" ]] || { log "no server"; return; }
    if is_running; then
        local pid i
        pid="$(cat "$STATE/redis.pid")"
        log "stopping"
        kill "$pid" 2>/dev/null || true
        for i in $(seq 50); do
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.1
        done
    fi
    rm -rf "$STATE"
    log "stopped and removed"
}

main() {
    local cmd="${1:-}"
    case "$cmd" in
        start) ;;
        stop) ;;
        env | url | status) ;;
        -h | --help | help)
            # The opening comment up to the first line of code (no line numbers to go stale).
            sed -n '2,/^[^#]/s/^# \{0,1\}//p' "${BASH_SOURCE[0]}"
            return
            ;;
        *)
            echo "usage: bash scripts/redis.sh {start|stop|env|url|status}" >&2
            exit 2
            ;;
    esac
    mkdir -p "$STATE"
    exec 9>"$STATE/.lock"
    flock -w 120 9 || die "another redis.sh is busy (lock $STATE/.lock)"
    case "$cmd" in
        start) do_start ;;
        stop) exec 9>&-; do_stop ;;
        env) is_running || die "not running"; print_url ;;
        url) is_running || die "not running"; print_url | sed 's/^REDIS_URL=//' ;;
        status)
            if is_running; then
                log "running on 127.0.0.1:$(cat "$STATE/port")"
                return 0
            fi
            log "not running"
            return 1
            ;;
    esac
}

main "$@"
