#!/bin/bash
# Install what bridge needs on a fresh Debian 12 machine: host packages (as root) and the Python venv.
# Idempotent and quick on a second run. Usage: bash scripts/install.sh
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "$(id -u)" = 0 ]; then
  need=()
  for c in debootstrap:debootstrap bc:bc unshare:util-linux ssh-keygen:openssh-client curl:curl; do
    command -v "${c%%:*}" >/dev/null || need+=("${c##*:}")
  done
  python3 -c 'import venv, ensurepip' 2>/dev/null || need+=(python3-venv)
  if [ ${#need[@]} -gt 0 ]; then
    apt-get update -q >/dev/null
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${need[@]}" >/dev/null
  fi
fi
python3 -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "bridge needs Python >= 3.11")'
[ -x .venv/bin/python ] || python3 -m venv .venv
.venv/bin/pip install -q --disable-pip-version-check -e '.[test]'
