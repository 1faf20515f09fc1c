#!/bin/bash
# Install the official Backend.AI clients the e2e tests drive, each in its own venv under .clients/
# (client-compat.md §0 has why each workaround is needed). Idempotent.
set -euo pipefail
cd "$(dirname "$0")/.."
mkdir -p .clients
install_22() {
  local v=.clients/22.3.2
  [ -x $v/bin/backend.ai ] && return 0
  python3 -m venv $v
  $v/bin/pip install -q --disable-pip-version-check "cython<3" wheel setuptools
  $v/bin/pip install -q --disable-pip-version-check --no-build-isolation "PyYAML==5.4.1"
  $v/bin/pip install -q --disable-pip-version-check "backend.ai-client==22.3.2" "yarl<1.10"
}
install_23() {
  local v=.clients/23.9.10
  [ -x $v/bin/backend.ai ] && return 0
  python3 -m venv $v
  $v/bin/pip install -q --disable-pip-version-check "backend.ai-client==23.9.10" "yarl<1.10"
}
install_22 & p22=$!
install_23 & p23=$!
wait $p22; wait $p23
for v in 22.3.2 23.9.10; do .clients/$v/bin/backend.ai --help >/dev/null; done
