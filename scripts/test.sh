#!/bin/bash
# README command 2: the whole test suite. Installs what it needs, brings up the dev cluster and a
# PostgreSQL, then runs the fast unit tier first and the integration tier against the real cluster.
set -euo pipefail
cd "$(dirname "$0")/.."
t0=$(date +%s)
bash scripts/install.sh
bash scripts/test-deps.sh
export PYTHONDONTWRITEBYTECODE=1

tier() {  # run one tier; a tier that ran no test is a failure (pytest exit 5)
  local name=$1; shift
  echo "=== $name tests"
  set +e; .venv/bin/pytest "$@"; local rc=$?; set -e
  if [ $rc = 5 ]; then echo "the $name tier ran no test"; exit 1; fi
  [ $rc = 0 ] || exit $rc
}

echo "=== lint"; .venv/bin/ruff check bridge tests; .venv/bin/mypy
tier unit tests/unit -q
bash scripts/install-clients.sh &   # the official backend.ai clients for the e2e tier, meanwhile
clients=$!
bash scripts/install-webui.sh &     # and the official webserver (the WebUI) with Redis
webui=$!
.venv/bin/bai-bridge dev-cluster up
.venv/bin/bai-bridge dev-cluster reset >/dev/null   # no job of an earlier run holds resources
BRIDGE_TEST_POSTGRES_DSN=$(bash scripts/postgres.sh)
case "$BRIDGE_TEST_POSTGRES_DSN" in
  postgresql+asyncpg://*) ;;
  *) echo "scripts/postgres.sh gave no DSN: '$BRIDGE_TEST_POSTGRES_DSN'" >&2; exit 1 ;;
esac
export BRIDGE_TEST_POSTGRES_DSN BRIDGE_TEST_REQUIRE_CLUSTER=1 BRIDGE_TEST_REQUIRE_POSTGRES=1
tier integration tests/integration -q --timeout=600
wait $clients
wait $webui
tier e2e tests/e2e -q --timeout=600
echo "whole suite took $(( $(date +%s) - t0 )) s"
