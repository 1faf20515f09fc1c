#!/bin/bash
# README command 1: on a fresh Debian 12 machine (as root), install bridge, bring up the local real
# Slurm + Apptainer cluster and a gateway, and run a first job. Then: source .bridge-dev/env
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh
exec .venv/bin/bai-bridge dev up "$@"
