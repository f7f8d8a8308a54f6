#!/usr/bin/env bash
# Run every quality gate and the whole test suite against real PostgreSQL (and Redis).
#
#   ./scripts/test.sh [PYTEST_ARGS...]     e.g. ./scripts/test.sh -k codec
#
# It installs .venv (scripts/install.sh), finds or starts the services (scripts/_services.sh),
# then runs these gates in order and stops at the first one that fails:
#   1. ruff format --check          6. the fault suite (tests/faults, its own private servers)
#   2. ruff check                   7. mypy (strict, pyproject)
#   3. manage.py check              8. pytest -m embedded, on SQLite
#   4. makemigrations --check       9. migrate + demo on the embedded default (DATABASE_URL unset)
#   5. pytest, on PostgreSQL, all but the fault suite, in two processes (pytest-xdist, a test
#      file per process; each has its own test database, Redis database and data directory:
#      tests/streams.py). With PYTEST_ARGS: one process, and the fault suite when they select it.
# Gates 6, 7 and 8 run in the background from before gate 3 and are reported in order after
# gate 5. mypy and the SQLite pass at nice 19 (they use only the CPU the PostgreSQL suites leave
# idle); the fault suite at normal priority, since it measures stalls. The fault suite waits on
# its worker processes most of the time, as the PostgreSQL suite does on its own.
# Services it starts itself are stopped and removed when it exits, whatever the outcome.
#
# Environment:
#   DATABASE_URL        a PostgreSQL URL to test against. When it is set but unreachable the
#                       run fails (it is never silently ignored); a non-PostgreSQL URL (such as
#                       sqlite://) is ignored. Unset: the server at 127.0.0.1:5432 (user postgres,
#                       trust auth, database "flowstone", created if missing), else a private one.
#   CELERY_BROKER_URL   a Redis URL, likewise. Unset: 127.0.0.1:6379 database 15, else a private
#                       redis-server, else none (tests that need Redis skip or fail). The
#                       second PostgreSQL stream uses database 12 of the same server (11 when
#                       12 is the one given), the SQLite pass database 14 (13).
#   FLOWSTONE_TEST_PRIVATE_SERVICES=1
#                       ignore DATABASE_URL, CELERY_BROKER_URL and the servers on the default
#                       local ports: always start private throwaway PostgreSQL and Redis servers
#                       on free ports with their data in /tmp (as root, PostgreSQL runs as the
#                       postgres or nobody user), and remove them on exit.
# FLOWSTONE_DATA_DIR is pointed at a temp dir for the whole run, so var/ is never touched.
# pytest's exit code 5 (no tests collected) fails the run unless PYTEST_ARGS were given.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

bash "$ROOT/scripts/install.sh"

# shellcheck source=scripts/_services.sh
source "$ROOT/scripts/_services.sh"

PY="$ROOT/.venv/bin/python"
WORK="$(mktemp -d "${TMPDIR:-/tmp}/flowstone-test.XXXXXX")"
fs_on_exit rm -rf "$WORK"

fs_resolve_postgres
fs_resolve_redis
fs_resolve_browser_tools
export FLOWSTONE_DATA_DIR="$WORK/data"

GATES=9
GATE=0

elapsed() { # seconds -> "1m05s" / "42s"
    if (($1 >= 60)); then
        printf '%dm%02ds' $(($1 / 60)) $(($1 % 60))
    else
        printf '%ds' "$1"
    fi
}

gate() { # gate TITLE COMMAND [ARG...]
    local title="$1" rc=0 started=$SECONDS
    shift
    GATE=$((GATE + 1))
    echo
    echo "==> [$GATE/$GATES] $title"
    "$@" || rc=$?
    if [[ "$rc" != 0 ]]; then
        echo
        echo "test.sh: FAILED at gate $GATE/$GATES ($title), exit code $rc, after $(elapsed "$SECONDS")"
        exit "$rc"
    fi
    echo "    ok ($(elapsed $((SECONDS - started))))"
}

pytest_suite() {
    local rc=0
    "$PY" -m pytest -p no:cacheprovider "$@" || rc=$?
    if [[ "$rc" == 5 ]]; then
        if (($# == 0)); then
            echo "test.sh: pytest collected no tests; the suite must not be empty"
            return 5
        fi
        echo "test.sh: note: no tests matched the given arguments ($*)"
        return 0
    fi
    return "$rc"
}

embedded_broker() { # the broker URL with another Redis database, so no message crosses suites
    local url="${CELERY_BROKER_URL:-redis://127.0.0.1:6379/15}" db=14
    if [[ "$url" =~ ^(.*)/([0-9]+)$ ]]; then
        [[ "${BASH_REMATCH[2]}" == 14 ]] && db=13
        echo "${BASH_REMATCH[1]}/$db"
    else
        echo "${url%/}/$db"
    fi
}

stream_brokers() { # the two PostgreSQL streams' brokers: CELERY_BROKER_URL and one more database
    local url="${CELERY_BROKER_URL:-redis://127.0.0.1:6379/15}" base db embedded
    embedded="$(embedded_broker)"
    if [[ "$url" =~ ^(.*)/([0-9]+)$ ]]; then
        base="${BASH_REMATCH[1]}"
    else
        base="${url%/}"
    fi
    for db in 12 11 10 9; do
        if [[ "$base/$db" != "$url" && "$base/$db" != "$embedded" ]]; then
            echo "$url $base/$db"
            return
        fi
    done
}

pytest_streams() { # the PostgreSQL suite in two processes (tests/streams.py), a file per process
    FLOWSTONE_TEST_STREAM_BROKERS="$(stream_brokers)" pytest_suite -n 2 --dist loadfile "$@"
}

pytest_embedded() {
    local rc=0
    DATABASE_URL="sqlite:///$WORK/embedded.sqlite3" FLOWSTONE_DATA_DIR="$WORK/embedded-data" \
        CELERY_BROKER_URL="$(embedded_broker)" \
        nice -n 19 "$PY" -m pytest -p no:cacheprovider -m embedded || rc=$?
    if [[ "$rc" == 5 ]]; then
        echo "test.sh: no tests are marked 'embedded'; the embedded smoke run must run some"
    fi
    return "$rc"
}

demo_embedded() {
    env -u DATABASE_URL FLOWSTONE_DATA_DIR="$WORK/demo" "$PY" manage.py migrate --noinput -v0 \
        || return
    env -u DATABASE_URL FLOWSTONE_DATA_DIR="$WORK/demo" "$PY" manage.py demo
}

# mypy and the SQLite pass need no services and are CPU-bound; the PostgreSQL suite mostly waits
# on worker processes. So those two start in the background at the lowest CPU priority (nice 19:
# they take only what the PostgreSQL suite leaves idle, and do not disturb its timings), and their
# results are reported in gate order after it. A failure is still a failed gate.
BACKGROUND_PIDS=()
stop_background() {
    local pid
    for pid in "${BACKGROUND_PIDS[@]}"; do
        kill -- "-$pid" 2>/dev/null || kill "$pid" 2>/dev/null || true
    done
}
start_background() { # start_background LOG COMMAND... -> sets BACKGROUND_PID
    local log="$1"
    shift
    set -m
    ("$@") >"$log" 2>&1 &
    BACKGROUND_PID=$!
    set +m
    BACKGROUND_PIDS+=("$BACKGROUND_PID")
}
finish_background() { # finish_background PID LOG
    local rc=0
    wait "$1" || rc=$?
    cat "$2"
    return "$rc"
}
fs_on_exit stop_background

pytest_faults() {
    "$PY" -m pytest -p no:cacheprovider -m fault
}

gate "ruff format --check" .venv/bin/ruff format --check .
gate "ruff check" .venv/bin/ruff check .
FAULTS_PID=""
if (($# == 0)); then
    start_background "$WORK/faults.log" pytest_faults
    FAULTS_PID=$BACKGROUND_PID
fi
start_background "$WORK/mypy.log" nice -n 19 .venv/bin/mypy .
MYPY_PID=$BACKGROUND_PID
start_background "$WORK/embedded.log" pytest_embedded
EMBEDDED_PID=$BACKGROUND_PID
gate "manage.py check --fail-level WARNING" "$PY" manage.py check --fail-level WARNING
gate "manage.py makemigrations --check --dry-run" "$PY" manage.py makemigrations --check --dry-run
if [[ -n "$FAULTS_PID" ]]; then
    gate "pytest (PostgreSQL, two streams; the fault suite runs beside them)" \
        pytest_streams -m "not fault"
    gate "fault suite (ran in the background)" finish_background "$FAULTS_PID" "$WORK/faults.log"
else
    gate "pytest (PostgreSQL)${*:+ $*}" pytest_suite "$@"
    gate "fault suite (in the pytest run above when PYTEST_ARGS select it)" true
fi
gate "mypy (ran in the background)" finish_background "$MYPY_PID" "$WORK/mypy.log"
gate "pytest -m embedded (SQLite; ran in the background)" \
    finish_background "$EMBEDDED_PID" "$WORK/embedded.log"
gate "demo on the embedded default (SQLite, DATABASE_URL unset)" demo_embedded

echo
echo "test.sh: all $GATES gates passed in $(elapsed "$SECONDS")"
