#!/usr/bin/env bash
# Installs the project into ./.venv (Python 3.11). Usage: scripts/install.sh [--test]
#   1. the CPU build of torch first, pinned by constraints.txt for the rest of the install;
#   2. the project (editable) with its dependencies, plus the test extras with --test;
#   3. unstructured-inference without its dependencies: unstructured imports it even for
#      strategy="fast" PDFs, but its own requirements (timm -> torchvision) break the CPU torch.
set -euo pipefail
cd "$(dirname "$0")/.."
extras=""
[ "${1:-}" = "--test" ] && extras="[test]"
python3.11 -m venv .venv
. .venv/bin/activate
export PIP_DISABLE_PIP_VERSION_CHECK=1
pip install -q "torch==2.13.0"
pip install -q -c constraints.txt -e ".${extras}"
pip install -q --no-deps "unstructured-inference==1.6.14"

# gpt-researcher pins numpy<2.3 (the project needs 2.4), so the research flow runs it in its own venv,
# one child process per query (flows/research). Only the tests and the thanos node need it.
if [ -n "$extras" ] || [ "${SWARM_WITH_GPTR:-}" = "1" ]; then
  [ -x .venv-gptr/bin/python ] || python3.11 -m venv .venv-gptr
  .venv-gptr/bin/pip install -q -r flows/research/gptr-requirements.txt
fi
