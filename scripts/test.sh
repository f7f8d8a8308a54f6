#!/usr/bin/env bash
# Run every quality gate and the whole test suite against real PostgreSQL (and Redis).
#
#   ./scripts/test.sh [PYTEST_ARGS...]     e.g. ./scripts/test.sh -k codec
#
# It installs .venv (scripts/install.sh), finds or starts the services (scripts/_services.sh),
# then runs these gates in order and stops at the first one that fails:
#   1. ruff format --check          5. manage.py makemigrations --check --dry-run
#   2. ruff check                   6. pytest, on PostgreSQL (PYTEST_ARGS go here only)
#   3. mypy (strict, pyproject)     7. pytest -m embedded, on SQLite
#   4. manage.py check              8. migrate + demo on the embedded default (DATABASE_URL unset)
# Services it starts itself are stopped and removed when it exits, whatever the outcome.
#
# Environment:
#   DATABASE_URL        a PostgreSQL URL to test against. When it is set but unreachable the
#                       run fails (it is never silently ignored); a non-PostgreSQL URL (such as
#                       sqlite://) is ignored. Unset: the server at 127.0.0.1:5432 (user postgres,
#                       trust auth, database "flowstone", created if missing), else a private one.
#   CELERY_BROKER_URL   a Redis URL, likewise. Unset: 127.0.0.1:6379 database 15, else a private
#                       redis-server, else none (tests that need Redis skip or fail).
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

GATES=8
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

pytest_embedded() {
    local rc=0
    DATABASE_URL="sqlite:///$WORK/embedded.sqlite3" FLOWSTONE_DATA_DIR="$WORK/embedded-data" \
        "$PY" -m pytest -p no:cacheprovider -m embedded || rc=$?
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

gate "ruff format --check" .venv/bin/ruff format --check .
gate "ruff check" .venv/bin/ruff check .
gate "mypy" .venv/bin/mypy .
gate "manage.py check --fail-level WARNING" "$PY" manage.py check --fail-level WARNING
gate "manage.py makemigrations --check --dry-run" "$PY" manage.py makemigrations --check --dry-run
gate "pytest (PostgreSQL)${*:+ $*}" pytest_suite "$@"
gate "pytest -m embedded (SQLite)" pytest_embedded
gate "demo on the embedded default (SQLite, DATABASE_URL unset)" demo_embedded

echo
echo "test.sh: all $GATES gates passed in $(elapsed "$SECONDS")"
