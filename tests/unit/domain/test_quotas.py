"""Policies as Slurm association limits: the most generous of a user's policies, and what differs."""

from __future__ import annotations

import pytest

from bridge.domain.quotas import NONE, AssocLimits, PolicyLimits, member_limits, project_limits


def test_a_project_quota_is_its_accounts_grptres():
    got = project_limits({"cpu": "8", "mem": "4g", "cuda.device": 2})
    assert got == AssocLimits(grp_tres={"cpu": 8, "mem": 4096, "gres/gpu": 2})
    assert got.sacctmgr_sets() == ["GrpTRES=cpu=8,gres/gpu=2,mem=4096", "MaxJobs=-1", "MaxWall=-1"]


def test_a_member_gets_the_most_generous_of_their_policies():
    tight = PolicyLimits({"cpu": "4", "cuda.device": "1"}, max_concurrent_sessions=2, max_session_lifetime=3600)
    wide = PolicyLimits({"cpu": "16"}, max_concurrent_sessions=5, max_session_lifetime=5401)
    got = member_limits([tight, wide])
    assert got.grp_tres == {"cpu": 16, "mem": NONE, "gres/gpu": NONE}   # wide leaves GPUs unlimited
    assert (got.max_jobs, got.max_wall_min) == (5, 91)                  # seconds up to whole minutes
    assert member_limits([tight, PolicyLimits(max_concurrent_sessions=0)]).max_jobs == NONE   # 0: none
    assert member_limits([]) == AssocLimits()


def test_differences_ignore_how_none_is_written():
    want = AssocLimits({"cpu": 2, "mem": NONE}, max_jobs=3)
    assert want.differences(AssocLimits({"cpu": 2})) == [("MaxJobs", "3", "none")]
    assert want.differences(AssocLimits({"cpu": 2, "gres/gpu": 5}, max_jobs=3, max_wall_min=60)) == [
        ("GrpTRES", "cpu=2", "cpu=2,gres/gpu=5"), ("MaxWall", "none", "60 min")]
    assert AssocLimits().differences(AssocLimits({"cpu": -1}, -1, -1)) == []


def test_a_slot_slurm_cannot_limit_is_refused():
    with pytest.raises(ValueError, match="tpu"):
        member_limits([PolicyLimits({"tpu": "1"})])
