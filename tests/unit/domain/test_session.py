from datetime import UTC, datetime

import pytest

from bridge.adapters.slurm.base import JobInfo, JobState
from bridge.domain.resources import parse_slots
from bridge.domain.session import SessionResult, SessionStatus, check_name, status_from_job

T = datetime(2026, 1, 1, tzinfo=UTC)


def job(state, reason=None, code=None, started=True):
    return JobInfo(job_id="1", name="x", state=state, reason=reason, exit_code=code,
                   start_time=T if started else None)


@pytest.mark.parametrize(("j", "kind", "requested", "expected"), [
    (job(JobState.PENDING, "AssocGrpCpuLimit", started=False), "interactive", False,
     (SessionStatus.PENDING, "AssocGrpCpuLimit", SessionResult.UNDEFINED)),
    (job(JobState.PENDING, "Dependency", started=False), "batch", False,
     (SessionStatus.PENDING, "Dependency", SessionResult.UNDEFINED)),
    (job(JobState.RUNNING), "interactive", False, (SessionStatus.RUNNING, None, SessionResult.UNDEFINED)),
    (job(JobState.COMPLETED, code=0), "batch", False,
     (SessionStatus.TERMINATED, "self-terminated", SessionResult.SUCCESS)),
    (job(JobState.FAILED, code=3), "batch", False,
     (SessionStatus.TERMINATED, "self-terminated", SessionResult.FAILURE)),
    (job(JobState.FAILED, code=1, started=False), "batch", False,
     (SessionStatus.TERMINATED, "failed-to-start", SessionResult.FAILURE)),
    (job(JobState.CANCELLED), "interactive", True,
     (SessionStatus.TERMINATED, "user-requested", SessionResult.UNDEFINED)),
    (job(JobState.CANCELLED, started=False), "batch", True,
     (SessionStatus.CANCELLED, "user-requested", SessionResult.FAILURE)),
    (job(JobState.CANCELLED, "DependencyNeverSatisfied", started=False), "batch", False,
     (SessionStatus.CANCELLED, "cancelled: DependencyNeverSatisfied", SessionResult.FAILURE)),
    (job(JobState.TIMEOUT), "batch", False, (SessionStatus.TERMINATED, "timeout", SessionResult.FAILURE)),
    (job(JobState.NODE_FAIL), "interactive", False,
     (SessionStatus.ERROR, "slurm: node_fail", SessionResult.UNDEFINED)),
    (job(JobState.COMPLETING), "interactive", True, (SessionStatus.TERMINATING, "user-requested",
                                                     SessionResult.UNDEFINED)),
])
def test_slurm_states_become_session_statuses(j, kind, requested, expected):
    seen = status_from_job(j, kind=kind, termination_requested=requested, ever_ran=False)
    assert (seen.status, seen.status_info, seen.result) == expected


def test_terminal_statuses():
    assert {s for s in SessionStatus if s.is_terminal} == {SessionStatus.TERMINATED, SessionStatus.CANCELLED,
                                                           SessionStatus.ERROR}


@pytest.mark.parametrize("name", ["abcd", "my-session.01", "A_b-c", "x" * 64])
def test_good_names(name):
    assert check_name(name) == name


@pytest.mark.parametrize("name", ["abc", "-abc", "abc-", "a b c d", "x" * 65, "ab/cd", "../../etc"])
def test_bad_names(name):
    with pytest.raises(ValueError):
        check_name(name)


def test_slots_from_user_strings():
    s = parse_slots({"cpu": "2", "mem": "512m", "cuda.device": "1"})
    assert (s.cpu, s.mem_mib, s.gpus) == (2, 512, 1)
    assert s.as_slots() == {"cpu": "2", "mem": str(512 * 2**20), "cuda.device": "1"}
    assert parse_slots({"cuda.devices": 2}).gpus == 2  # the docs' spelling
    assert parse_slots(None, default_mem=2**30).mem_bytes == 2**30


@pytest.mark.parametrize(("res", "field"), [({"cpu": "0"}, "cpu"), ({"cpu": "x"}, "cpu"), ({"mem": "lots"}, "mem"),
                                            ({"tpu.device": "1"}, "tpu.device"), ({"cuda.shares": "0.5"}, "shares"),
                                            ({"cuda.device": "-1"}, "cuda.device")])
def test_bad_slots_name_the_field(res, field):
    with pytest.raises(ValueError, match=field.replace(".", r"\.")):
        parse_slots(res)


def test_image_minimum_resources_from_labels():
    from bridge.errors import InvalidAPIParameters
    from bridge.services.images import Image

    img = Image("python", "/srv/images/python", {"ai.backend.resource.min.cpu": "2",
                                                 "ai.backend.resource.min.mem": "256m"})
    img.check_resources(parse_slots({"cpu": "2", "mem": "256m"}))
    with pytest.raises(InvalidAPIParameters, match="resources.mem"):
        img.check_resources(parse_slots({"cpu": "2", "mem": "128m"}))
    with pytest.raises(InvalidAPIParameters, match="resources.cpu"):
        img.check_resources(parse_slots({"cpu": "1", "mem": "1g"}))


def test_cuda_shares_become_slurm_shards_where_the_site_has_them():
    with pytest.raises(ValueError, match="not configured"):
        parse_slots({"cuda.shares": "0.5"})
    s = parse_slots({"cuda.shares": "0.5"}, shards_per_gpu=4)
    assert (s.shards, s.gpus) == (2, 0) and s.as_slots()["cuda.shares"] == "0.5"
    assert parse_slots({"cuda.shares": "0.3"}, shards_per_gpu=4).shards == 2  # rounded up
    assert parse_slots({"cuda.shares": "1"}, shards_per_gpu=4).shards == 4
    # Slurm gives a job's shards from one GPU: 6 shards of 4-shard GPUs would pend forever
    with pytest.raises(ValueError, match="more than one GPU"):
        parse_slots({"cuda.shares": "1.5"}, shards_per_gpu=4)
    with pytest.raises(ValueError, match="not both"):
        parse_slots({"cuda.shares": "1", "cuda.device": "1"}, shards_per_gpu=4)
    from bridge.adapters.slurm import argv
    from bridge.adapters.slurm.base import JobSpec

    assert "--gres=shard:2" in argv.sbatch([JobSpec(name="x", script="", gres="shard:2")])
