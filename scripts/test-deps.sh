#!/bin/bash
# Host packages only the test suite needs (as root, Debian): PostgreSQL for the database tier, chromium and
# its driver for the browser test, the OpenSSH client for `backend.ai ssh`/`scp`, and Debian's OCI registry
# (docker-registry) for the image-import tests, Redis for the official webserver (the WebUI), and Lua 5.1 (the
# Lua that Debian's slurmctld embeds) to run slurm_plugins/job_submit.lua in the unit tier. Idempotent.
set -euo pipefail
[ "$(id -u)" = 0 ] || { echo "scripts/test-deps.sh: run as root" >&2; exit 1; }
need=()
for c in pg_ctlcluster:postgresql chromium:chromium chromedriver:chromium-driver ssh:openssh-client scp:openssh-client \
         docker-registry:docker-registry redis-server:redis-server lua5.1:lua5.1; do
  command -v "${c%%:*}" >/dev/null || need+=("${c##*:}")
done
if [ ${#need[@]} -gt 0 ]; then
  apt-get update -q >/dev/null
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${need[@]}" >/dev/null
fi
