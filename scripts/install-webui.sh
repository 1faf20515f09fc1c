#!/bin/bash
# The official Backend.AI WebUI, as sites run it: the `backend.ai-webserver` package (which carries the
# compiled WebUI) in its own venv under .webui/, and Debian's redis-server for its login sessions.
# `bai-bridge dev up` starts both in front of the gateway (docs/webui.md). Idempotent.
set -euo pipefail
cd "$(dirname "$0")/.."
V=.webui/23.9.10
if ! command -v redis-server >/dev/null; then
  [ "$(id -u)" = 0 ] || { echo "scripts/install-webui.sh: redis-server is missing; run as root to install it" >&2; exit 1; }
  apt-get update -q >/dev/null
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends redis-server >/dev/null
fi
if [ ! -x $V/bin/python ] || ! $V/bin/python -c "import ai.backend.web.server" 2>/dev/null; then
  # the webserver 23.9 needs Python 3.11 exactly (Debian 12's)
  py=$(command -v python3.11 || command -v python3)
  "$py" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))' ||
    { echo "scripts/install-webui.sh: backend.ai-webserver 23.9.10 needs Python 3.11 (found $("$py" --version))" >&2; exit 1; }
  rm -rf $V
  "$py" -m venv $V
  $V/bin/pip install -q --disable-pip-version-check "backend.ai-webserver==23.9.10" "yarl<1.10"
fi
$V/bin/python -c "import ai.backend.web.server"
