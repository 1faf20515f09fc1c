from datetime import UTC, datetime

from bridge.adapters.slurm import argv
from bridge.adapters.slurm.base import JobSpec
from bridge.adapters.slurm.rest import job_desc


def spec(**kw):
    base = dict(name="s1", script="#!/bin/bash\ntrue\n", account="proj", partition="gpu", cpus_per_task=2,
                mem_per_node_mb=1024, gpus_per_node=1, time_limit_min=30, comment="bridge:abc",
                stdout="/tmp/o-%j", workdir="/home/alice")
    base.update(kw)
    return JobSpec(**base)


def test_sbatch_argv_for_one_job():
    assert argv.sbatch([spec()]) == [
        "sbatch", "--parsable", "--export=ALL",
        "--job-name=s1", "--nodes=1", "--ntasks=1", "--cpus-per-task=2", "--chdir=/home/alice",
        "--account=proj", "--partition=gpu", "--mem=1024M", "--gres=gpu:1", "--time=30",
        "--comment=bridge:abc", "--output=/tmp/o-%j",
    ]


def test_sbatch_argv_for_a_heterogeneous_job_separates_components():
    a = argv.sbatch([spec(), spec(name="s1", gpus_per_node=0, nodes=2)], bin_dir="/opt/slurm/bin/")
    assert a[0] == "/opt/slurm/bin/sbatch" and a.count(":") == 1
    second = a[a.index(":") + 1:]
    assert "--nodes=2" in second and not any(x.startswith("--gres") for x in second)


def test_dependency_kills_on_invalid_dependency_by_default():
    a = argv.sbatch([spec(dependency="afterok:12:13")])
    assert "--dependency=afterok:12:13" in a and "--kill-on-invalid-dep=yes" in a


def test_begin_is_absolute_local_time():
    a = argv.sbatch([spec(begin=datetime(2030, 1, 2, 3, 4, 5, tzinfo=UTC))])
    local = datetime(2030, 1, 2, 3, 4, 5, tzinfo=UTC).astimezone().strftime("%Y-%m-%dT%H:%M:%S")
    assert f"--begin={local}" in a


def test_raw_gres_joins_gpus():
    assert "--gres=gpu:2,shard:1" in argv.sbatch([spec(gpus_per_node=2, gres="shard:1")])
    assert spec(gpus_per_node=2, gres="shard:1").tres_per_node() == "gres/gpu:2,gres/shard:1"


def test_squeue_and_sacct_are_single_batched_calls():
    assert argv.squeue() == ["squeue", "--json", "--states=all"]
    assert argv.squeue(job_ids=["1", "2"]) == ["squeue", "--json", "--states=all", "--jobs=1,2"]
    assert argv.sacct(["1", "2"]) == ["sacct", "--json", "--allusers", "--jobs=1,2"]
    assert argv.scancel(["5"], signal="TERM") == ["scancel", "--signal", "TERM", "--full", "5"]


def test_rest_job_desc_v0042_shapes():
    d = job_desc(spec(environment={"A": "1"}, begin=datetime(2030, 1, 1, tzinfo=UTC)), with_script=True)
    assert d["environment"] == ["A=1"] and d["tres_per_node"] == "gres/gpu:1"
    assert d["memory_per_node"] == {"set": True, "number": 1024}
    assert d["time_limit"] == {"set": True, "number": 30}
    assert d["begin_time"]["number"] == int(datetime(2030, 1, 1, tzinfo=UTC).timestamp())
    assert d["script"].startswith("#!/bin/bash") and d["comment"] == "bridge:abc"
    assert "script" not in job_desc(spec(), with_script=False)


def test_drain_and_resume():
    assert argv.scontrol_node_state(["n1", "n2"], False, "maintenance", "/opt/slurm/bin") == [
        "/opt/slurm/bin/scontrol", "update", "nodename=n1,n2", "state=drain", "reason=maintenance"]
    assert argv.scontrol_node_state(["n1"], True, "") == ["scontrol", "update", "nodename=n1", "state=resume"]
