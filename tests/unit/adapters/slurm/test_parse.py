import json
from datetime import UTC, datetime

import pytest

from bridge.adapters.slurm import parse
from bridge.adapters.slurm.base import JobState
from bridge.errors import SlurmError


def load(d, name):
    return json.loads((d / name).read_text())


def test_squeue_records_running_and_pending_jobs(slurm_data):
    jobs = {j.job_id: j for j in parse.jobs_from_squeue(load(slurm_data, "squeue.json"))}
    run, pend = jobs["2"], jobs["4"]
    assert run.state is JobState.RUNNING and run.nodes == ("n1",) and run.user == "alice"
    assert run.comment == "bridge:rec1" and run.account == "research" and run.reason is None
    assert run.tres_alloc["cpu"] == "1" and run.start_time == datetime.fromtimestamp(1795379416, UTC)
    assert pend.state is JobState.PENDING and pend.reason == "BeginTime" and pend.nodes == ()


def test_squeue_filters_by_id_client_side(slurm_data):
    assert [j.job_id for j in parse.jobs_from_squeue(load(slurm_data, "squeue.json"), ["4", "99"])] == ["4"]


def test_sacct_records_exit_code_and_final_state(slurm_data):
    jobs = {j.job_id: j for j in parse.jobs_from_sacct(load(slurm_data, "sacct.json"))}
    assert jobs["3"].state is JobState.FAILED and jobs["3"].exit_code == 3
    assert jobs["2"].state is JobState.RUNNING and jobs["2"].end_time is None
    assert jobs["4"].nodes == ()  # "None assigned"


def test_partitions_and_nodes(slurm_data):
    parts = {p.name: p for p in parse.partitions_from_doc(load(slurm_data, "partitions.json"))}
    assert parts["debug"].nodes == ("n1", "n2", "n3", "n4") and parts["debug"].total_cpus == 16
    assert parts["debug"].tres["gres/gpu"] == "8" and parts["debug"].max_time_min is None
    nodes = {n.name: n for n in parse.nodes_from_doc(load(slurm_data, "nodes.json"))}
    assert nodes["n1"].gres == "gpu:2" and nodes["n1"].partitions == ("debug", "gpu")
    assert nodes["n1"].cpu_load == 0.42 and nodes["n1"].free_memory_mb == 22315   # Slurm's last look at it


def test_errors_in_a_document_raise():
    with pytest.raises(SlurmError, match="Invalid job id"):
        parse.jobs_from_squeue({"jobs": [], "errors": [{"description": "Invalid job id specified"}]})


@pytest.mark.parametrize(
    ("expr", "expected"),
    [
        ("n[1-3,5]", ("n1", "n2", "n3", "n5")),
        ("gpu[01-03]", ("gpu01", "gpu02", "gpu03")),
        ("a1,b[2-3],c", ("a1", "b2", "b3", "c")),
        ("None assigned", ()),
        ("", ()),
    ],
)
def test_expand_hostlist(expr, expected):
    assert parse.expand_hostlist(expr) == expected


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (["RUNNING"], JobState.RUNNING),
        (["PENDING", "REQUEUED"], JobState.PENDING),
        ("CANCELLED by 1001", JobState.CANCELLED),
        ("COMPLETED", JobState.COMPLETED),
        ("SOMETHING_NEW", JobState.UNKNOWN),
        (None, JobState.UNKNOWN),
    ],
)
def test_job_state_parse(value, expected):
    assert JobState.parse(value) is expected


def test_numbers_in_both_shapes():
    assert parse.num(5) == 5
    assert parse.num({"set": True, "infinite": False, "number": 7}) == 7
    assert parse.num({"set": False, "infinite": False, "number": 0}) is None
    assert parse.num({"set": True, "infinite": True, "number": 0}) is None
    assert parse._exit("3:0") == (3, 0)


def test_a_heterogeneous_job_is_one_job_with_every_components_nodes():
    from bridge.adapters.slurm.base import JobInfo, JobState
    from bridge.adapters.slurm.parse import merged_components

    leader = JobInfo(job_id="50", name="bai-x", state=JobState.RUNNING, nodes=("n1",), het_job_id="50",
                     het_job_offset=0)
    workers = JobInfo(job_id="51", name="bai-x", state=JobState.RUNNING, nodes=("n2", "n3"), het_job_id="50",
                      het_job_offset=1)
    plain = JobInfo(job_id="60", name="y", state=JobState.PENDING)
    merged = merged_components([workers, plain, leader])
    assert [(j.job_id, j.nodes) for j in merged] == [("60", ()), ("50", ("n1", "n2", "n3"))]


def test_the_watchers_brief_squeue_lines():
    text = ("50|50+0|RUNNING|None|n1|1795379416\n"
            "51|50+1|RUNNING|None|n[2-3]|1795379416\n"
            "60|60|PENDING|Priority||N/A\n"
            "garbage line\n")
    jobs = {j.job_id: j for j in parse.jobs_from_brief(text)}
    assert set(jobs) == {"50", "60"}   # the heterogeneous job as one
    assert jobs["50"].nodes == ("n1", "n2", "n3") and jobs["50"].state is JobState.RUNNING
    assert jobs["50"].start_time == datetime.fromtimestamp(1795379416, UTC)
    assert jobs["60"].state is JobState.PENDING and jobs["60"].reason == "Priority" and jobs["60"].start_time is None
    assert [j.job_id for j in parse.jobs_from_brief(text, ["60"])] == ["60"]


def test_a_job_whose_prolog_still_runs_reads_running_in_both_forms():
    """squeue's %T says CONFIGURING while PrologSlurmctld runs (the notices plugin makes that window real);
    --json says ["RUNNING", "CONFIGURING"]. The watcher's brief look and the full read must agree."""
    brief = parse.jobs_from_brief("70|70|CONFIGURING|None|n1|1795379416\n")
    assert brief[0].state is JobState.RUNNING is JobState.parse(["RUNNING", "CONFIGURING"])
    assert not brief[0].state.is_finished   # no needless full read, no lost session
