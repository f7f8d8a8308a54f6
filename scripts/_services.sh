# shellcheck shell=bash
# Service resolution for FlowStone's scripts. Source it from bash (not sh); do not run it.
#
#   source scripts/_services.sh
#   fs_resolve_postgres   # exports DATABASE_URL (PostgreSQL), or returns 1 with a message
#   fs_resolve_redis      # exports CELERY_BROKER_URL and FLOWSTONE_REDIS_URL, or exports
#                         # nothing when no Redis can be had (returns 0 either way, 1 when the
#                         # user's CELERY_BROKER_URL is set but unreachable)
#   fs_on_exit CMD ARG... # run CMD ARG... when the script exits (last registered runs first)
#
# Each resolver prints one line saying which service it used. Order of preference:
#   1. the user's setting (DATABASE_URL / CELERY_BROKER_URL), if it points to PostgreSQL /
#      Redis; when it is set but unreachable the resolver fails loudly instead of ignoring it;
#   2. a server on the default local port (127.0.0.1:5432 with trust auth as user postgres /
#      127.0.0.1:6379, database 15);
#   3. a private throwaway server on a free port in a temp dir, stopped and removed at exit.
# FLOWSTONE_TEST_PRIVATE_SERVICES=1 skips 1 and 2 and always starts private servers.
#
# Needs $FS_PYTHON (default: .venv/bin/python with psycopg and redis installed by install.sh).
# The composable exit handling takes over the EXIT, INT, TERM and HUP traps: scripts that source
# this file register their own cleanups with fs_on_exit instead of calling `trap ... EXIT`.

FS_ROOT="${FS_ROOT:-$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)}"
FS_PYTHON="${FS_PYTHON:-$FS_ROOT/.venv/bin/python}"

_FS_CLEANUPS=()
_FS_TRAPS_SET=0

# ---------------------------------------------------------------------------------------------
# Exit handling: one EXIT trap runs every registered cleanup, newest first.

fs_on_exit() {
    _FS_CLEANUPS+=("$(printf '%q ' "$@")")
    if [[ "$_FS_TRAPS_SET" == 0 ]]; then
        trap _fs_run_cleanups EXIT
        # A signal becomes an ordinary exit, so the EXIT trap (and the cleanups) still run.
        trap 'exit 129' HUP
        trap 'exit 130' INT
        trap 'exit 143' TERM
        _FS_TRAPS_SET=1
    fi
}

_fs_run_cleanups() {
    local rc=$? i
    set +e
    trap '' HUP INT TERM # let the cleanups finish even if Ctrl-C is pressed again
    for ((i = ${#_FS_CLEANUPS[@]} - 1; i >= 0; i--)); do
        eval "${_FS_CLEANUPS[i]}"
    done
    _FS_CLEANUPS=()
    exit "$rc"
}

# ---------------------------------------------------------------------------------------------
# Small helpers.

_fs_err() {
    echo "$*" >&2
}

_fs_truthy() {
    case "${1:-}" in
        1 | [Tt][Rr][Uu][Ee] | [Yy][Ee][Ss] | [Oo][Nn]) return 0 ;;
        *) return 1 ;;
    esac
}

_fs_private_only() {
    _fs_truthy "${FLOWSTONE_TEST_PRIVATE_SERVICES:-}"
}

_fs_now() {
    if [[ -n "${EPOCHREALTIME:-}" ]]; then
        echo "${EPOCHREALTIME/,/.}"
    else
        date +%s
    fi
}

_fs_elapsed() { # seconds since $1 (from _fs_now), one decimal
    awk -v a="$1" -v b="$(_fs_now)" 'BEGIN { printf "%.1f", b - a }'
}

# Python helpers (psycopg and redis come from the venv). Usage: _fs_py COMMAND ARG...
_fs_py() {
    if [[ ! -x "$FS_PYTHON" ]]; then
        _fs_err "services: $FS_PYTHON not found; run scripts/install.sh first"
        return 2
    fi
    "$FS_PYTHON" - "$@" <<'PY'
import socket
import sys
from urllib.parse import urlsplit, urlunsplit


def libpq_url(url: str) -> str:
    # dj-database-url also accepts pgsql:// and postgis://; libpq knows only these two.
    scheme, rest = url.split("://", 1)
    return url if scheme in ("postgres", "postgresql") else "postgresql://" + rest


def first_line(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0]


def main(cmd: str, *args: str) -> int:
    if cmd == "free-port":
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.bind(("127.0.0.1", 0))
            print(s.getsockname()[1])
        return 0
    if cmd == "redact":
        parts = urlsplit(args[0])
        userinfo, at, hostinfo = parts.netloc.rpartition("@")
        if at and ":" in userinfo:
            netloc = userinfo.split(":", 1)[0] + ":***@" + hostinfo
            print(urlunsplit(parts._replace(netloc=netloc)))
        else:
            print(args[0])
        return 0
    if cmd == "pg-probe":
        import psycopg

        try:
            psycopg.connect(libpq_url(args[0]), connect_timeout=3).close()
        except Exception as exc:  # any failure means "not usable"
            print(first_line(exc), file=sys.stderr)
            return 1
        return 0
    if cmd == "pg-ensure-db":  # pg-ensure-db MAINTENANCE_URL DBNAME
        import psycopg
        from psycopg import errors, sql

        with psycopg.connect(libpq_url(args[0]), connect_timeout=3, autocommit=True) as conn:
            exists = conn.execute(
                "SELECT 1 FROM pg_database WHERE datname = %s", (args[1],)
            ).fetchone()
            if not exists:
                try:
                    conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(args[1])))
                except errors.DuplicateDatabase:
                    pass
        return 0
    if cmd == "redis-probe":
        try:
            import redis
        except ImportError:
            return 3  # caller falls back to redis-cli
        try:
            client = redis.Redis.from_url(args[0], socket_connect_timeout=3, socket_timeout=3)
            client.ping()
            client.close()
        except Exception as exc:
            print(first_line(exc), file=sys.stderr)
            return 1
        return 0
    print(f"unknown command {cmd}", file=sys.stderr)
    return 2


sys.exit(main(*sys.argv[1:]))
PY
}

_fs_redis_ping() { # URL -> 0 if it answers PING; reason on stderr otherwise
    local rc=0
    _fs_py redis-probe "$1" || rc=$?
    if [[ "$rc" == 3 ]]; then
        if command -v redis-cli >/dev/null 2>&1; then
            [[ "$(redis-cli -u "$1" ping 2>&1)" == PONG ]]
            return
        fi
        _fs_err "services: neither the redis Python package nor redis-cli is available"
        return 1
    fi
    return "$rc"
}

# Run "$@" as USER ($1; empty means the current user) from DIR ($2), for PostgreSQL's tools,
# which refuse to run as root.
_fs_as_user() {
    local user="$1" dir="$2"
    shift 2
    (
        cd "$dir" || exit 1
        if [[ -z "$user" ]]; then
            "$@"
        elif command -v runuser >/dev/null 2>&1; then
            runuser -u "$user" -- "$@"
        else
            su -s /bin/sh "$user" -c "$(printf '%q ' "$@")"
        fi
    )
}

# ---------------------------------------------------------------------------------------------
# PostgreSQL

_fs_find_pg_tools() { # prints "INITDB PG_CTL" from PATH, else the newest known install
    local initdb pg_ctl dir
    initdb="$(command -v initdb 2>/dev/null || true)"
    pg_ctl="$(command -v pg_ctl 2>/dev/null || true)"
    if [[ -n "$initdb" && -n "$pg_ctl" ]]; then
        echo "$initdb $pg_ctl"
        return 0
    fi
    dir="$(
        for d in /usr/lib/postgresql/*/bin /usr/pgsql-*/bin /usr/local/pgsql/bin \
            /opt/homebrew/opt/postgresql@*/bin /usr/local/opt/postgresql@*/bin; do
            if [[ -x "$d/initdb" && -x "$d/pg_ctl" ]]; then echo "$d"; fi
        done | sort -V | tail -n 1
    )"
    if [[ -n "$dir" ]]; then
        echo "$dir/initdb $dir/pg_ctl"
        return 0
    fi
    return 1
}

_fs_stop_private_postgres() { # DIR USER PG_CTL PORT
    local dir="$1" user="$2" pg_ctl="$3" port="$4" pid
    if [[ -f "$dir/data/postmaster.pid" ]]; then
        if ! _fs_as_user "$user" "$dir" "$pg_ctl" -D "$dir/data" -m immediate -w -t 30 stop \
            >/dev/null 2>&1; then
            pid="$(head -n 1 "$dir/data/postmaster.pid" 2>/dev/null || true)"
            if [[ -n "$pid" ]]; then kill -KILL "$pid" 2>/dev/null || true; fi
        fi
    fi
    rm -rf "$dir"
    echo "PostgreSQL: stopped the private server on 127.0.0.1:$port and removed $dir"
}

_fs_start_private_postgres() {
    local tools initdb pg_ctl started dir user="" candidate port="" attempt ok=0
    if ! tools="$(_fs_find_pg_tools)"; then
        _fs_err "PostgreSQL: no server reachable and no initdb/pg_ctl found to start a private one."
        _fs_err "  Install the PostgreSQL server (Debian/Ubuntu: apt-get install postgresql; macOS:"
        _fs_err "  brew install postgresql), or set DATABASE_URL=postgres://USER@HOST:PORT/DBNAME."
        return 1
    fi
    initdb="${tools% *}"
    pg_ctl="${tools#* }"
    started="$(_fs_now)"
    dir="$(mktemp -d /tmp/flowstone-pg.XXXXXX)"
    if [[ "$(id -u)" == 0 ]]; then # PostgreSQL refuses to run as root
        for candidate in postgres nobody; do
            if id -u "$candidate" >/dev/null 2>&1; then
                user="$candidate"
                break
            fi
        done
        if [[ -z "$user" ]]; then
            rm -rf "$dir"
            _fs_err "PostgreSQL: running as root and no unprivileged user (postgres, nobody) to run a private server as"
            return 1
        fi
        chown "$user" "$dir"
    fi
    # Registered before initdb so that a half-started server is cleaned up too; the cleanup
    # reads these globals when it runs, by which time the port is known.
    _FS_PG_DIR="$dir"
    _FS_PG_USER="$user"
    _FS_PG_CTL="$pg_ctl"
    _FS_PG_PORT="?"
    fs_on_exit _fs_stop_private_postgres_registered

    if ! _fs_as_user "$user" "$dir" "$initdb" -D "$dir/data" -A trust -U postgres -E UTF8 \
        --no-locale --no-sync >"$dir/initdb.log" 2>&1; then
        _fs_err "PostgreSQL: initdb failed:"
        cat "$dir/initdb.log" >&2
        return 1
    fi
    for attempt in 1 2 3; do # the free port could be taken between probing and binding
        port="$(_fs_py free-port)" || return 1
        if _fs_as_user "$user" "$dir" "$pg_ctl" -D "$dir/data" -l "$dir/postgres.log" -w -t 60 \
            -o "-h 127.0.0.1 -p $port -k $dir -F -c synchronous_commit=off -c full_page_writes=off" \
            start >/dev/null 2>&1; then
            ok=1
            break
        fi
        _fs_err "PostgreSQL: private server did not start on port $port (attempt $attempt)"
    done
    _FS_PG_PORT="$port"
    if [[ "$ok" != 1 ]]; then
        _fs_err "PostgreSQL: could not start a private server; its log ($dir/postgres.log):"
        tail -n 20 "$dir/postgres.log" >&2 || true
        return 1
    fi
    if ! _fs_py pg-ensure-db "postgres://postgres@127.0.0.1:$port/postgres" flowstone; then
        _fs_err "PostgreSQL: the private server on port $port started but does not accept connections"
        return 1
    fi
    export DATABASE_URL="postgres://postgres@127.0.0.1:$port/flowstone"
    echo "PostgreSQL: started a private server on 127.0.0.1:$port (data in $dir; ready in $(_fs_elapsed "$started")s)"
}

_fs_stop_private_postgres_registered() {
    _fs_stop_private_postgres "$_FS_PG_DIR" "$_FS_PG_USER" "$_FS_PG_CTL" "$_FS_PG_PORT"
}

fs_resolve_postgres() {
    local url="${DATABASE_URL:-}" shown reason local_url="postgres://postgres@127.0.0.1:5432"
    if _fs_private_only; then
        if [[ -n "$url" ]]; then
            echo "PostgreSQL: FLOWSTONE_TEST_PRIVATE_SERVICES=1, ignoring DATABASE_URL" >&2
        fi
        _fs_start_private_postgres
        return
    fi
    if [[ -n "$url" ]]; then
        case "$url" in
            postgres://* | postgresql://* | pgsql://* | postgis://*)
                shown="$(_fs_py redact "$url")" || return 1
                if reason="$(_fs_py pg-probe "$url" 2>&1)"; then
                    echo "PostgreSQL: using DATABASE_URL=$shown"
                    return 0
                fi
                _fs_err "PostgreSQL: DATABASE_URL=$shown is set but not reachable: $reason"
                _fs_err "  Start that server, or unset DATABASE_URL to use a local server at"
                _fs_err "  127.0.0.1:5432 or a private one (FLOWSTONE_TEST_PRIVATE_SERVICES=1 forces the latter)."
                return 1
                ;;
            *)
                echo "PostgreSQL: DATABASE_URL is not a PostgreSQL URL (${url%%:*}:...); ignoring it for the test run" >&2
                ;;
        esac
    fi
    if _fs_py pg-probe "$local_url/postgres" 2>/dev/null \
        && _fs_py pg-ensure-db "$local_url/postgres" flowstone; then
        export DATABASE_URL="$local_url/flowstone"
        echo "PostgreSQL: using local server at 127.0.0.1:5432 (DATABASE_URL=$DATABASE_URL)"
        return 0
    fi
    _fs_start_private_postgres
}

# ---------------------------------------------------------------------------------------------
# Redis

_fs_stop_private_redis() { # DIR PORT
    local dir="$1" port="$2" pid i
    pid="$(cat "$dir/redis.pid" 2>/dev/null || true)"
    if [[ -n "$pid" ]] && kill -TERM "$pid" 2>/dev/null; then
        for ((i = 0; i < 50; i++)); do
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.1
        done
        kill -KILL "$pid" 2>/dev/null || true
    fi
    rm -rf "$dir"
    echo "Redis: stopped the private server on 127.0.0.1:$port and removed $dir"
}

_fs_stop_private_redis_registered() {
    _fs_stop_private_redis "$_FS_REDIS_DIR" "$_FS_REDIS_PORT"
}

_fs_start_private_redis() { # needs redis-server on PATH
    local started dir port attempt i ok=0
    started="$(_fs_now)"
    dir="$(mktemp -d /tmp/flowstone-redis.XXXXXX)"
    _FS_REDIS_DIR="$dir"
    _FS_REDIS_PORT="?"
    fs_on_exit _fs_stop_private_redis_registered
    for attempt in 1 2 3; do
        port="$(_fs_py free-port)" || return 1
        _FS_REDIS_PORT="$port"
        if redis-server --bind 127.0.0.1 --port "$port" --save "" --appendonly no \
            --dir "$dir" --daemonize yes --pidfile "$dir/redis.pid" \
            --logfile "$dir/redis.log" >/dev/null 2>&1; then
            for ((i = 0; i < 50; i++)); do
                if _fs_redis_ping "redis://127.0.0.1:$port/0" 2>/dev/null; then
                    ok=1
                    break 2
                fi
                sleep 0.1
            done
        fi
        _fs_err "Redis: private server did not start on port $port (attempt $attempt)"
        _fs_stop_private_redis "$dir" "$port" >/dev/null
        mkdir -p "$dir"
    done
    if [[ "$ok" != 1 ]]; then
        _fs_err "Redis: could not start a private server; its log ($dir/redis.log):"
        tail -n 20 "$dir/redis.log" >&2 || true
        return 1
    fi
    export CELERY_BROKER_URL="redis://127.0.0.1:$port/0"
    export FLOWSTONE_REDIS_URL="$CELERY_BROKER_URL"
    echo "Redis: started a private server on 127.0.0.1:$port (data in $dir; ready in $(_fs_elapsed "$started")s)"
}

fs_resolve_redis() {
    local url="${CELERY_BROKER_URL:-}" shown reason local_url="redis://127.0.0.1:6379/15"
    if _fs_private_only; then
        if [[ -n "$url" ]]; then
            echo "Redis: FLOWSTONE_TEST_PRIVATE_SERVICES=1, ignoring CELERY_BROKER_URL" >&2
        fi
    else
        if [[ -n "$url" ]]; then
            case "$url" in
                redis://* | rediss://* | unix://*)
                    shown="$(_fs_py redact "$url")" || return 1
                    if reason="$(_fs_redis_ping "$url" 2>&1)"; then
                        export FLOWSTONE_REDIS_URL="$url"
                        echo "Redis: using CELERY_BROKER_URL=$shown"
                        return 0
                    fi
                    _fs_err "Redis: CELERY_BROKER_URL=$shown is set but not reachable: $reason"
                    _fs_err "  Start that server, or unset CELERY_BROKER_URL to use a local server at"
                    _fs_err "  127.0.0.1:6379 or a private one (FLOWSTONE_TEST_PRIVATE_SERVICES=1 forces the latter)."
                    return 1
                    ;;
                *)
                    echo "Redis: CELERY_BROKER_URL is not a Redis URL (${url%%:*}:...); ignoring it for the test run" >&2
                    ;;
            esac
        fi
        if _fs_redis_ping "$local_url" 2>/dev/null; then
            export CELERY_BROKER_URL="$local_url"
            export FLOWSTONE_REDIS_URL="$local_url"
            echo "Redis: using local server at 127.0.0.1:6379 (database 15)"
            return 0
        fi
    fi
    if command -v redis-server >/dev/null 2>&1; then
        _fs_start_private_redis
        return
    fi
    unset CELERY_BROKER_URL FLOWSTONE_REDIS_URL
    if _fs_private_only; then
        reason="there is no redis-server to start a private one"
    else
        reason="nothing answers at 127.0.0.1:6379 and there is no redis-server to start"
    fi
    echo "Redis: not available ($reason); CELERY_BROKER_URL is not set, so tests that need" \
        "Redis will skip or fail. Install Redis (Debian/Ubuntu: apt-get install redis-server)."
}

# Debian packages some tests use: Chromium (the admin end-to-end tests, driven by Playwright, which
# downloads no browser), Graphviz (the admin's asset graph) and faketime (a worker whose clock is
# off, for the clock-skew test). Missing ones are installed with
# apt-get when running as root; otherwise the affected tests skip or check the fallback.
fs_resolve_browser_tools() {
    local missing=()
    [[ -z "${FLOWSTONE_TEST_CHROMIUM:-}" ]] && ! command -v chromium >/dev/null 2>&1 && missing+=(chromium)
    ! command -v dot >/dev/null 2>&1 && missing+=(graphviz)
    ! command -v faketime >/dev/null 2>&1 && missing+=(faketime)
    if ((${#missing[@]})) && [[ "$(id -u)" == "0" ]] && command -v apt-get >/dev/null 2>&1; then
        echo "Debian packages: installing ${missing[*]} (apt-get)..."
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null 2>&1 ||
            { apt-get update -qq >/dev/null 2>&1 &&
                DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null 2>&1; } ||
            echo "Debian packages: could not install ${missing[*]}"
    fi
    local found="${FLOWSTONE_TEST_CHROMIUM:-}"
    [[ -z "$found" ]] && found="$(command -v chromium || true)"
    if [[ -n "$found" ]]; then
        export FLOWSTONE_TEST_CHROMIUM="$found"
        echo "Chromium: using $found"
    else
        echo "Chromium: not available; the admin browser tests will be skipped"
    fi
    if command -v dot >/dev/null 2>&1; then
        echo "Graphviz: using $(command -v dot)"
    else
        echo "Graphviz: not available; the asset graph page shows its edge list instead"
    fi
}
