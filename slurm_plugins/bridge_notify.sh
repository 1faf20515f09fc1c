#!/bin/sh
# PrologSlurmctld / EpilogSlurmctld for the bridge gateway (docs/slurm-plugins.md): bridge_notify.py detaches
# the notices into a session of its own and returns (slurmctld runs this with no PATH: full paths only).
exec /usr/bin/python3 "${0%/*}/bridge_notify.py" "$@"
