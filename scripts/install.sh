#!/usr/bin/env bash
# Install FlowStone and its development tools into .venv at the repository root.
#
#   ./scripts/install.sh
#
# - Finds a Python >= 3.11: $PYTHON if set, else python3.13, python3.12, python3.11, python3.
# - Creates .venv if it is missing (an existing .venv is kept; it must be Python >= 3.11).
# - Runs `pip install -r requirements.txt`, unless .venv/.requirements.sha256 already holds
#   the sha256 of the current requirements.txt (delete that file to force a reinstall).
# Idempotent and quiet: it prints one status line, plus whatever pip reports as an error.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

VENV="$ROOT/.venv"
REQUIREMENTS="$ROOT/requirements.txt"
STAMP="$VENV/.requirements.sha256"
MIN_VERSION_CHECK='import sys; raise SystemExit(0 if sys.version_info >= (3, 11) else 1)'

die() {
    echo "install.sh: error: $*" >&2
    exit 1
}

python_ok() {
    "$1" -c "$MIN_VERSION_CHECK" >/dev/null 2>&1
}

find_python() {
    if [[ -n "${PYTHON:-}" ]]; then
        python_ok "$PYTHON" || die "PYTHON=$PYTHON is not a working Python >= 3.11"
        echo "$PYTHON"
        return
    fi
    local candidate
    for candidate in python3.13 python3.12 python3.11 python3; do
        if command -v "$candidate" >/dev/null 2>&1 && python_ok "$candidate"; then
            echo "$candidate"
            return
        fi
    done
    die "no Python >= 3.11 found (tried python3.13, python3.12, python3.11, python3); install one or set PYTHON=/path/to/python3.11+"
}

[[ -f "$REQUIREMENTS" ]] || die "requirements.txt not found in $ROOT"

if [[ -x "$VENV/bin/python" ]]; then
    python_ok "$VENV/bin/python" \
        || die ".venv exists but its Python is not a working Python >= 3.11; remove it (rm -rf .venv) and run again"
else
    python="$(find_python)"
    "$python" -c 'import venv, ensurepip' >/dev/null 2>&1 \
        || die "$python cannot create virtual environments (on Debian/Ubuntu: apt-get install python3-venv)"
    echo "install.sh: creating .venv with $("$python" -c 'import sys; print(sys.executable, sys.version.split()[0])')"
    "$python" -m venv "$VENV"
    rm -f "$STAMP"
fi

# sha256 via Python: portable (no sha256sum on macOS), and the venv's Python is known to work.
wanted="$("$VENV/bin/python" -c 'import hashlib, sys; print(hashlib.sha256(open(sys.argv[1], "rb").read()).hexdigest())' "$REQUIREMENTS")"
if [[ -f "$STAMP" && "$(cat "$STAMP")" == "$wanted" ]]; then
    echo "install.sh: .venv is up to date with requirements.txt"
    exit 0
fi

echo "install.sh: installing requirements.txt into .venv (this can take a minute the first time)"
PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_ROOT_USER_ACTION=ignore \
    "$VENV/bin/python" -m pip install -qq --requirement "$REQUIREMENTS" \
    || die "pip install -r requirements.txt failed (see the errors above)"
echo "$wanted" >"$STAMP"
echo "install.sh: done"
