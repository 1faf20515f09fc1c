#!/bin/bash
# Start a local PostgreSQL (Debian's packages, no systemd) for the test suite, with role and database
# `bridge_test`. Prints the DSN the tests take from BRIDGE_TEST_POSTGRES_DSN. Idempotent.
set -euo pipefail
# Only the DSN goes to stdout; whatever the tools print ("Removed stale pid file.") goes to stderr, and no
# daemon inherits the caller's pipe.
start_postgres() {
  if ! command -v pg_ctlcluster >/dev/null; then
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends postgresql >/dev/null
  fi
  ver=$(ls /usr/lib/postgresql | sort -V | tail -1)
  [ -d "/etc/postgresql/$ver/main" ] || pg_createcluster "$ver" main >/dev/null
  pg_ctlcluster "$ver" main status >/dev/null 2>&1 || pg_ctlcluster "$ver" main start
  for i in $(seq 1 100); do runuser -u postgres -- pg_isready -q && break; sleep 0.1; done
  runuser -u postgres -- psql -qtAc "SELECT 1 FROM pg_roles WHERE rolname='bridge_test'" | grep -q 1 ||
    runuser -u postgres -- psql -qc "CREATE ROLE bridge_test LOGIN PASSWORD 'bridge_test' CREATEDB"
  runuser -u postgres -- psql -qtAc "SELECT 1 FROM pg_database WHERE datname='bridge_test'" | grep -q 1 ||
    runuser -u postgres -- psql -qc "CREATE DATABASE bridge_test OWNER bridge_test"
}
start_postgres >&2
echo "postgresql+asyncpg://bridge_test:bridge_test@127.0.0.1:5432/bridge_test"
