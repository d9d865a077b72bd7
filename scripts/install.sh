#!/usr/bin/env bash
# Installs the project into ./.venv (Python 3.11). Usage: [PYTHON=/usr/bin/python3.11] scripts/install.sh [--test]
# PYTHON is the interpreter of both venvs (default: python3.11 on PATH; Debian 12's own 3.11.2 works).
#   1. the CPU build of torch first, pinned by constraints.txt for the rest of the install;
#   2. the project (editable) with its dependencies, plus the test extras with --test;
#   3. unstructured-inference without its dependencies: unstructured imports it even for
#      strategy="fast" PDFs, but its own requirements (timm -> torchvision) break the CPU torch.
set -euo pipefail
cd "$(dirname "$0")/.."
extras=""
[ "${1:-}" = "--test" ] && extras="[test]"
PYTHON="${PYTHON:-python3.11}"
"$PYTHON" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))' 2>/dev/null \
  || { echo "error: PYTHON=$PYTHON is not a Python 3.11 interpreter" >&2; exit 2; }
# Debian ships venv's pip bootstrap (ensurepip) in a package of its own.
if ! "$PYTHON" -c 'import ensurepip' 2>/dev/null; then
  sudo=""
  [ "$(id -u)" = 0 ] || sudo=sudo
  apt="$sudo env DEBIAN_FRONTEND=noninteractive apt-get -qq -y install python3.11-venv"
  $apt || { $sudo apt-get -qq update && $apt; } \
    || { echo "error: $PYTHON cannot make a venv; install Debian's python3.11-venv" >&2; exit 2; }
fi
"$PYTHON" -m venv .venv
. .venv/bin/activate
export PIP_DISABLE_PIP_VERSION_CHECK=1
pip install -q "torch==2.13.0"
pip install -q -c constraints.txt -e ".${extras}"
pip install -q --no-deps "unstructured-inference==1.6.14"

# gpt-researcher pins numpy<2.3 (the project needs 2.4), so the research flow runs it in its own venv,
# one child process per query (flows/research). Only the tests and the thanos node need it.
if [ -n "$extras" ] || [ "${SWARM_WITH_GPTR:-}" = "1" ]; then
  [ -x .venv-gptr/bin/python ] || "$PYTHON" -m venv .venv-gptr
  .venv-gptr/bin/pip install -q -r flows/research/gptr-requirements.txt
fi

# The LiteLLM gateway is a service of its own (oracle), in a venv of its own; the tests start it from there in front
# of `transformers serve` (testkit/gateway.py).
if [ -n "$extras" ] || [ "${SWARM_WITH_GATEWAY:-}" = "1" ]; then
  [ -x .venv-gateway/bin/python ] || "$PYTHON" -m venv .venv-gateway
  .venv-gateway/bin/pip install -q -r deployments/litellm/requirements.txt
fi

# The alerting tests run Debian's monitoring stack, each server on a free loopback port with its own data
# folder; the packages' own services must not start and take ports 9090-9100, now or at boot.
install_monitoring() {
  local pkgs="prometheus prometheus-alertmanager prometheus-node-exporter prometheus-pushgateway"
  local p missing="" sudo="" policy=/usr/sbin/policy-rc.d own_policy="" rc=0
  for p in $pkgs; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q " installed$" || missing="$missing $p"
  done
  [ -n "$missing" ] || return 0
  [ "$(id -u)" = 0 ] || sudo=sudo
  if [ ! -e "$policy" ]; then  # exit 101: "do not start services" to every postinst
    printf '#!/bin/sh\nexit 101\n' | $sudo tee "$policy" >/dev/null && $sudo chmod 755 "$policy" && own_policy=1
  fi
  local apt="$sudo env DEBIAN_FRONTEND=noninteractive apt-get -qq -y --no-install-recommends"
  # shellcheck disable=SC2086
  $apt install $missing || { $apt update && $apt install $missing; } || rc=$?
  [ -z "$own_policy" ] || $sudo rm -f "$policy"
  # shellcheck disable=SC2086
  [ "$rc" != 0 ] || [ ! -d /run/systemd/system ] || $sudo systemctl disable --now $missing 2>/dev/null || true
  return "$rc"
}
[ -z "$extras" ] || install_monitoring

# Parsing runs Debian's document tools: tesseract (OCR), LibreOffice (doc/ppt/xls/odp/ods), pandoc (odt/rtf/epub),
# poppler (renders scanned pages). Both modes install them: every node that parses needs them, and a node without
# them records the affected files as failed, naming the package. Only a failed install with --test stops here (the
# tests need them); otherwise it warns and the rest goes on. bzip2-doc's manual is the tests' scanned-page source,
# texlive-latex-base-doc's manuals their real PDFs.
install_doc_tools() {
  local pkgs="tesseract-ocr tesseract-ocr-eng poppler-utils pandoc libreoffice-core libreoffice-writer"
  pkgs="$pkgs libreoffice-calc libreoffice-impress"
  [ -z "$extras" ] || pkgs="$pkgs bzip2-doc texlive-latex-base-doc"
  local p missing="" sudo=""
  for p in $pkgs; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q " installed$" || missing="$missing $p"
  done
  [ -n "$missing" ] || return 0
  [ "$(id -u)" = 0 ] || sudo=sudo
  local apt="$sudo env DEBIAN_FRONTEND=noninteractive apt-get -qq -y --no-install-recommends"
  # shellcheck disable=SC2086
  $apt install $missing >/dev/null || { $apt update && $apt install $missing >/dev/null; }
}
if ! install_doc_tools; then
  [ -z "$extras" ] || { echo "error: cannot install Debian's document tools (apt-get)" >&2; exit 2; }
  echo "warning: Debian's document tools are not installed: scans, images and legacy Office files will be recorded as failed" >&2
fi
