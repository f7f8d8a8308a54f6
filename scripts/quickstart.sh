#!/usr/bin/env bash
# Install FlowStone into .venv and run the demo pipeline on the embedded default: SQLite under
# FLOWSTONE_DATA_DIR (default var/), in-process execution, no other services needed.
#
#   ./scripts/quickstart.sh [DEMO_ARGS...]
#
# DATABASE_URL is unset for this run even if your shell has one, so the demo always uses the
# embedded SQLite database. Extra arguments are passed to `manage.py demo`.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

bash "$ROOT/scripts/install.sh"

if [[ -n "${DATABASE_URL:-}" ]]; then
    echo "quickstart: ignoring DATABASE_URL from your shell; the quickstart uses the embedded SQLite database"
fi
unset DATABASE_URL

echo "quickstart: migrating the embedded database"
.venv/bin/python manage.py migrate --noinput -v0
echo "quickstart: running the demo"
.venv/bin/python manage.py demo "$@"
