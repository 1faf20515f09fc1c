#!/bin/sh
# PrologSlurmctld / EpilogSlurmctld for the bridge gateway (docs/slurm-plugins.md). The job waits for this script
# (CONFIGURING), so it only hands the notice to a process slurmctld does not wait for, and returns at once: the
# job never waits for Python or for a gateway, and never fails because of one.
# (slurmctld runs it with no PATH at all: every command by its full path)
PATH=/usr/sbin:/usr/bin:/sbin:/bin
export PATH
/usr/bin/setsid /usr/bin/python3 "${0%/*}/bridge_notify.py" "$@" </dev/null >/dev/null 2>&1 &
exit 0
