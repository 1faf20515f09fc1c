#!/bin/sh
# PrologSlurmctld / EpilogSlurmctld for the bridge gateway (docs/slurm-plugins.md). The job waits for this script
# (CONFIGURING), so it only hands the notice to a process slurmctld does not wait for, and returns at once: the
# job never waits for Python or for a gateway, and never fails because of one.
setsid /usr/bin/python3 "$(dirname "$0")/bridge_notify.py" "$@" </dev/null >/dev/null 2>&1 &
exit 0
