"""`sacctmgr --json show assoc` as Slurm 24.11 prints it (captured on the dev cluster): limits read back."""

from __future__ import annotations

import json
from pathlib import Path

from bridge.adapters.runner import Completed
from bridge.adapters.slurm.accounting import CliSlurmAccounting, assoc_limits
from bridge.domain.quotas import AssocLimits

DATA = Path(__file__).resolve().parents[3] / "data" / "slurm" / "24.11"


def test_grptres_maxjobs_and_maxwall_are_read_from_the_json():
    # set with: GrpTRES=cpu=4,mem=1500,gres/gpu=2 on the account; MaxJobs=3 MaxWall=90 GrpTRES=gres/gpu=1 on alice
    found = {(a["account"], a["user"]): assoc_limits(a)
             for a in json.loads((DATA / "sacctmgr_assoc.json").read_text())["associations"]}
    assert found[("zzcap", "")] == AssocLimits({"cpu": 4, "mem": 1500, "gres/gpu": 2})
    assert found[("zzcap", "alice")] == AssocLimits({"gres/gpu": 1}, max_jobs=3, max_wall_min=90)


async def test_one_sacctmgr_call_reads_every_association_and_limits_are_stated_whole():
    calls = []

    class Runner:
        async def run(self, argv, *, user=None, stdin=None, env=None, timeout_s=None):
            calls.append(list(argv))
            out = (DATA / "sacctmgr_assoc.json").read_text() if "--json" in argv else ""
            return Completed(tuple(argv), 0, out, "", 0.1)

    acct = CliSlurmAccounting(Runner(), cluster="devcluster")  # type: ignore[arg-type]
    assert set(await acct.associations()) == {("zzcap", ""), ("zzcap", "alice")}
    assert calls == [["sacctmgr", "--json", "show", "assoc", "cluster=devcluster"]]
    await acct.set_limits("zzcap", "alice", AssocLimits({"cpu": 2}, max_jobs=4))
    assert calls[-1] == ["sacctmgr", "-i", "modify", "user", "where", "name=alice", "account=zzcap",
                         "cluster=devcluster", "set", "GrpTRES=cpu=2,gres/gpu=-1,mem=-1", "MaxJobs=4", "MaxWall=-1"]
