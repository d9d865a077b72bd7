#!/usr/bin/env bash
# The README's second command: install what the tests need, lint, and run the whole suite
# (slow end-to-end tests included). Needs PostgreSQL on 127.0.0.1:5432 and Redis on :6379.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install.sh --test
. .venv/bin/activate
export SWARM_GPTR_PYTHON="${SWARM_GPTR_PYTHON:-$PWD/.venv-gptr/bin/python}"
ruff check .
ruff format --check .
# pytest exits 5 when it collected nothing; with `set -e` that fails the run, as it should.
pytest -q -p no:cacheprovider --durations=15 "$@"
