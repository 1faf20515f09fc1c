#!/bin/bash
# README command 1: on a fresh Debian 12 machine (as root), install bridge, bring up the local real
# Slurm + Apptainer cluster and a gateway, and run a first job. Then: source .bridge-dev/env
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh
bash scripts/install-webui.sh || echo "dev-up: the WebUI is not installed (see above); the gateway comes up without it" >&2
exec .venv/bin/bai-bridge dev up "$@"
