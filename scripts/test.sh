#!/usr/bin/env bash
# The README's second command: install what the tests need, lint, and run the whole suite
# (slow end-to-end tests included). Needs PostgreSQL on 127.0.0.1:5432 and Redis on :6379.
# PYTHON=/usr/bin/python3.11 scripts/test.sh builds the venvs with Debian's own interpreter (scripts/install.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install.sh --test
. .venv/bin/activate
export SWARM_GPTR_PYTHON="${SWARM_GPTR_PYTHON:-$PWD/.venv-gptr/bin/python}"

# The whole suite also proves that every requirement set resolves on Debian 12's /usr/bin/python3.11 (3.11.2)
# and on the python3.11 of PATH, whichever built the venvs. pip resolves them from PyPI, installing nothing;
# it waits on downloads, not on the CPU, so it runs beside the tests (in its own process group, stopped on exit).
resolver=""
if [ $# -eq 0 ]; then
  resolve_log="$(mktemp)"
  setsid python -m tests.deploy.resolve_requirements /usr/bin/python3.11 python3.11 >"$resolve_log" 2>&1 &
  resolver=$!
  trap 'kill -- "-$resolver" 2>/dev/null || true; rm -f "$resolve_log"' EXIT
fi
ruff check .
ruff format --check .
# pytest exits 5 when it collected nothing; with `set -e` that fails the run, as it should.
if [ $# -eq 0 ]; then
  # The quick tests on two workers (most of them wait on subprocesses and servers, not on the CPU), then the slow
  # end-to-end ones one at a time: each of those fills the machine by itself.
  pytest -q -p no:cacheprovider -n "${SWARM_TEST_WORKERS:-2}" --dist loadgroup -m "not slow" --durations=15
  pytest -q -p no:cacheprovider -m slow --durations=15
else
  pytest -q -p no:cacheprovider --durations=15 "$@"
fi
if [ -n "$resolver" ]; then
  status=0
  wait "$resolver" || status=$?
  cat "$resolve_log"
  exit "$status"
fi
