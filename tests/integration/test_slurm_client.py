"""The SlurmClient contract, run against every implementation on the real dev cluster."""

from __future__ import annotations

import uuid

import pytest

from bridge.adapters.slurm.base import JobSpec, JobState
from bridge.errors import SlurmRejected
from tests.integration.conftest import TAG, finished, output, state_is, wait_job

pytestmark = pytest.mark.cluster


def spec(account: str, script: str, **kw) -> JobSpec:
    name = kw.pop("name", "t-" + uuid.uuid4().hex[:6])
    return JobSpec(name=name, script="#!/bin/bash\n" + script + "\n", account=account, comment=TAG,
                   stdout=f"/tmp/{name}-%j.out", **kw)


async def test_job_runs_completes_and_is_accounted(slurm, account):
    job_id = await slurm.submit(spec(account, "sleep 2; echo done-$FOO", environment={"FOO": "bar"}), user="alice")
    running = await wait_job(slurm, job_id, state_is(JobState.RUNNING))
    assert running.user == "alice" and running.nodes and running.comment == TAG
    done = await wait_job(slurm, job_id, finished)
    assert done.state is JobState.COMPLETED and done.exit_code == 0
    assert output(done.stdout).strip() == "done-bar"
    [record] = await slurm.history([job_id])
    assert record.state is JobState.COMPLETED and record.exit_code == 0
    assert record.user == "alice" and record.account == account and record.comment == TAG
    assert record.start_time and record.end_time and record.end_time >= record.start_time


async def test_exit_code_of_a_failing_job(slurm, account):
    job_id = await slurm.submit(spec(account, "exit 3"), user="bob")
    done = await wait_job(slurm, job_id, finished)
    assert done.state is JobState.FAILED and done.exit_code == 3
    [record] = await slurm.history([job_id])
    assert record.state is JobState.FAILED and record.exit_code == 3 and record.user == "bob"


async def test_cancel_a_running_job(slurm, account):
    job_id = await slurm.submit(spec(account, "sleep 300"), user="alice")
    await wait_job(slurm, job_id, state_is(JobState.RUNNING))
    await slurm.cancel([job_id], user="alice")
    done = await wait_job(slurm, job_id, finished)
    assert done.state is JobState.CANCELLED
    await slurm.cancel([job_id], user="alice")  # cancelling twice is harmless


async def test_submission_to_an_account_the_user_is_not_in_is_rejected(slurm, account):
    with pytest.raises(SlurmRejected, match="(?i)invalid account"):
        await slurm.submit(spec("no-such-account", "true"), user="bob")


async def test_apptainer_container_in_a_job_with_one_fake_gpu(slurm, account, cluster):
    code = ("import os; print(os.getuid(), os.environ.get('CUDA_VISIBLE_DEVICES'), "
            "os.environ.get('KERNEL_VAR'), open('/etc/os-release').read().split()[0])")
    script = f'apptainer -s exec --nv --env KERNEL_VAR=k1 /srv/images/python python3 -c "{code}"'
    job_id = await slurm.submit(spec(account, script, gpus_per_node=1), user="alice")
    done = await wait_job(slurm, job_id, finished)
    assert done.exit_code == 0, output(done.stdout)
    uid, cvd, var, osr = output(done.stdout).split()
    assert (uid, cvd, var) == ("1001", "0", "k1")  # alice, exactly one GPU, env passed in
    assert osr.startswith("PRETTY_NAME")
    assert done.tres_alloc.get("gres/gpu") == "1"


async def test_heterogeneous_job(slurm, account):
    # counts are explicit: sbatch exports SLURM_NTASKS-style inputs to the script, slurmrestd does not
    script = "srun --het-group=0 -n1 hostname; srun --het-group=1 -N2 -n2 hostname"
    a = spec(account, script, name="het-" + uuid.uuid4().hex[:4])
    b = JobSpec(name=a.name, script="", account=account, nodes=2, ntasks=2, comment=TAG)
    job_id = await slurm.submit([a, b], user="alice")
    done = await wait_job(slurm, job_id, finished)
    assert done.state is JobState.COMPLETED
    assert len(output(done.stdout).split()) == 3  # 1 + 2 tasks over both components
    components = [j for j in await slurm.history([job_id]) if j.het_job_id == job_id]
    assert sorted(c.het_job_offset for c in components) == [0, 1]


async def test_partitions_and_nodes(slurm):
    parts = {p.name: p for p in await slurm.partitions()}
    assert parts["debug"].state == "UP" and parts["debug"].total_nodes >= 4
    nodes = await slurm.nodes()
    assert len(nodes) >= 4 and all(n.gres.startswith("gpu:") for n in nodes)


async def test_a_node_is_drained_and_resumed(slurm):
    """What `modify_agent(schedulable)` and the scheduler's exclude/include-agents do; n4 is resumed whatever
    happens, and resuming a node that is not drained is no error."""
    try:
        await slurm.set_nodes_schedulable(["n4"], False, reason="bridge test")
        n4 = next(n for n in await slurm.nodes() if n.name == "n4")
        assert any(s.startswith("DRAIN") for s in n4.state), n4.state
    finally:
        await slurm.set_nodes_schedulable(["n4"], True)
    n4 = next(n for n in await slurm.nodes() if n.name == "n4")
    assert not any(s.startswith("DRAIN") for s in n4.state), n4.state
    await slurm.set_nodes_schedulable(["n4"], True)


async def test_the_watchers_look_agrees_with_the_full_read(slurm, account):
    """job_states (the watcher's cheap look) tells the same state, nodes and start as jobs (the full read),
    for a plain job and for a heterogeneous one, whose components' nodes come together."""
    plain = await slurm.submit(spec(account, "sleep 20"), user="alice")
    a = spec(account, "sleep 20", name="het-" + uuid.uuid4().hex[:4])
    het = await slurm.submit([a, JobSpec(name=a.name, script="", account=account, nodes=2, ntasks=2, comment=TAG)],
                             user="alice")
    try:
        for job_id in (plain, het):
            await wait_job(slurm, job_id, state_is(JobState.RUNNING))
        full = {j.job_id: j for j in await slurm.jobs([plain, het])}
        brief = {j.job_id: j for j in await slurm.job_states([plain, het])}
        assert set(brief) == {plain, het}
        for job_id in (plain, het):
            assert brief[job_id].state is JobState.RUNNING
            assert brief[job_id].nodes == full[job_id].nodes and brief[job_id].start_time == full[job_id].start_time
        assert len(brief[het].nodes) == 3
    finally:
        await slurm.cancel([plain, het], user="alice")
