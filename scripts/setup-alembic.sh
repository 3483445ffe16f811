#!/usr/bin/env bash
# Create (or reuse) a Python venv with the pinned alembic + SQLAlchemy used by the
# interop tests and benchmarks (tests/alembic_env). Idempotent.
#
#   ALEMBIC_VENV   venv location (default: <repo>/.venv)
#   PYTHON         interpreter used to create the venv (default: python3)
#
# Prints the absolute path of the alembic executable on the last line of stdout.
set -euo pipefail

ALEMBIC_VERSION="1.20.1"
SQLALCHEMY_VERSION="2.1.9"

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="${ALEMBIC_VENV:-$repo/.venv}"
python="${PYTHON:-python3}"

die() { echo "setup-alembic: error: $*" >&2; exit 1; }

command -v "$python" >/dev/null 2>&1 || die "'$python' not found; install Python 3 (>= 3.9)"

if [ ! -x "$venv/bin/python" ]; then
    echo "setup-alembic: creating venv at $venv" >&2
    if ! "$python" -m venv "$venv" >&2; then
        die "'$python -m venv $venv' failed (on Debian/Ubuntu install the python3-venv package)"
    fi
fi

vpy="$venv/bin/python"

# Already installed at the pinned versions? Then nothing to do.
installed="$("$vpy" - <<'PY' 2>/dev/null || true
from importlib.metadata import version
print(version("alembic"), version("SQLAlchemy"))
PY
)"
if [ "$installed" != "$ALEMBIC_VERSION $SQLALCHEMY_VERSION" ] || [ ! -x "$venv/bin/alembic" ]; then
    echo "setup-alembic: installing alembic==$ALEMBIC_VERSION SQLAlchemy==$SQLALCHEMY_VERSION" >&2
    "$vpy" -m pip install --quiet --disable-pip-version-check \
        "alembic==$ALEMBIC_VERSION" "SQLAlchemy==$SQLALCHEMY_VERSION" >&2 \
        || die "pip install of alembic==$ALEMBIC_VERSION SQLAlchemy==$SQLALCHEMY_VERSION failed"
fi

[ -x "$venv/bin/alembic" ] || die "alembic executable missing at $venv/bin/alembic"
"$venv/bin/alembic" --version >/dev/null 2>&1 || die "$venv/bin/alembic does not run"

echo "$venv/bin/alembic"
