"""The SlurmClient contract, written once against the Protocol (bridge/adapters/slurm/base.py).

A tier subclasses `SlurmContract` (pytest collects only `Test*` classes, so this one never runs alone) and
provides two fixtures: `slurm`, the client under test, and `steer`, how that tier moves a job on (the fake
Slurm is told; the real cluster is waited for). tests/unit/test_slurm_contract.py runs it against the fake
Slurm, tests/integration/test_slurm_contract.py against the CLI (local, SSH) and REST adapters on the dev
cluster. Only what every implementation must do belongs here; what only a real cluster does (running the
script, exit codes, containers, GPUs) stays in tests/integration/test_slurm_client.py.
"""

from __future__ import annotations

import uuid
from typing import Any, Protocol

import pytest

from bridge.adapters.slurm.base import JobInfo, JobSpec, JobState, SlurmClient
from bridge.errors import CommandFailed, SlurmError, SlurmRejected

UNKNOWN_JOB = "2147480000"   # an id no test cluster reaches


class Steer(Protocol):
    account: str                 # an account alice and bob may charge
    node: str                    # a node that may be drained and resumed
    tag: str                     # the comment every job of the run carries

    async def running(self, slurm: SlurmClient, job_id: str) -> JobInfo: ...

    async def finished(self, slurm: SlurmClient, job_id: str) -> JobInfo: ...

    async def accounted(self, slurm: SlurmClient, job_id: str) -> list[JobInfo]: ...


def spec(steer: Steer, script: str = "sleep 1", **kw: Any) -> JobSpec:
    name = kw.pop("name", "c-" + uuid.uuid4().hex[:6])
    return JobSpec(name=name, script="#!/bin/bash\n" + script + "\n", account=kw.pop("account", steer.account),
                   comment=steer.tag, stdout=f"/tmp/{name}-%j.out", **kw)


class SlurmContract:
    async def test_submit_gives_a_job_id_that_the_queue_lists(self, slurm: SlurmClient, steer: Steer) -> None:
        s = spec(steer, "sleep 30")
        first = await slurm.submit(s, user="alice")
        second = await slurm.submit(spec(steer, "sleep 30"), user="alice")
        try:
            assert first.isdigit() and second.isdigit() and int(second) > int(first)
            [j] = await slurm.jobs([first])
            assert (j.job_id, j.name, j.user, j.account, j.comment) == (first, s.name, "alice", steer.account,
                                                                         steer.tag)
            assert not j.state.is_finished
            assert {b.job_id for b in await slurm.job_states([first, second])} == {first, second}
            assert first in {j.job_id for j in await slurm.jobs(None)}
            assert first in {j.job_id for j in await slurm.jobs(None, user="alice")}
            assert first not in {j.job_id for j in await slurm.jobs(None, user="bob")}
        finally:
            await slurm.cancel([first, second], user="alice")

    async def test_nothing_asked_nothing_answered(self, slurm: SlurmClient, steer: Steer) -> None:
        assert await slurm.jobs([]) == []
        assert await slurm.job_states([]) == []
        assert await slurm.history([]) == []
        await slurm.cancel([])

    async def test_an_unknown_job_is_absent_not_an_error(self, slurm: SlurmClient, steer: Steer) -> None:
        assert await slurm.jobs([UNKNOWN_JOB]) == []
        assert await slurm.job_states([UNKNOWN_JOB]) == []
        assert await slurm.history([UNKNOWN_JOB]) == []
        await slurm.cancel([UNKNOWN_JOB])

    async def test_refusals(self, slurm: SlurmClient, steer: Steer) -> None:
        with pytest.raises(SlurmRejected):
            await slurm.submit([], user="alice")
        with pytest.raises(SlurmRejected, match="(?i)invalid account"):
            await slurm.submit(spec(steer, "true", account="no-such-account"), user="bob")

    async def test_cancel_ends_the_job_and_twice_is_harmless(self, slurm: SlurmClient, steer: Steer) -> None:
        job_id = await slurm.submit(spec(steer, "sleep 300"), user="alice")
        await steer.running(slurm, job_id)
        await slurm.cancel([job_id], user="alice")
        done = await steer.finished(slurm, job_id)
        assert done.state is JobState.CANCELLED
        await slurm.cancel([job_id], user="alice")

    async def test_the_watchers_look_agrees_with_the_full_read(self, slurm: SlurmClient, steer: Steer) -> None:
        job_id = await slurm.submit(spec(steer, "sleep 30"), user="alice")
        try:
            await steer.running(slurm, job_id)
            [full] = await slurm.jobs([job_id])
            [brief] = await slurm.job_states([job_id])
            assert brief.job_id == job_id and brief.state is full.state is JobState.RUNNING
            assert brief.nodes == full.nodes and brief.nodes and brief.start_time == full.start_time
        finally:
            await slurm.cancel([job_id], user="alice")

    async def test_a_finished_job_is_accounted(self, slurm: SlurmClient, steer: Steer) -> None:
        s = spec(steer, "true")
        job_id = await slurm.submit(s, user="bob")
        done = await steer.finished(slurm, job_id)
        assert done.state is JobState.COMPLETED and done.exit_code == 0
        [record] = await steer.accounted(slurm, job_id)
        assert (record.job_id, record.name, record.user, record.account, record.comment) == (
            job_id, s.name, "bob", steer.account, steer.tag)
        assert record.state is JobState.COMPLETED and record.exit_code == 0 and record.het_job_id is None

    async def test_a_heterogeneous_job_is_one_job_of_components(self, slurm: SlurmClient, steer: Steer) -> None:
        a = spec(steer, "true", name="het-" + uuid.uuid4().hex[:4])
        b = JobSpec(name=a.name, script="", account=steer.account, comment=steer.tag)
        job_id = await slurm.submit([a, b], user="alice")
        listed = [j for j in await slurm.jobs(None, user="alice") if j.job_id == job_id or j.het_job_id == job_id]
        assert [j.job_id for j in listed] in ([job_id], [])   # one entry (or already gone)
        await steer.finished(slurm, job_id)
        components = [j for j in await steer.accounted(slurm, job_id) if j.het_job_id == job_id]
        assert sorted(c.het_job_offset for c in components) == [0, 1]
        assert {c.job_id for c in components if c.het_job_offset == 0} == {job_id}

    async def test_partitions_and_nodes(self, slurm: SlurmClient, steer: Steer) -> None:
        parts = await slurm.partitions()
        nodes = await slurm.nodes()
        assert parts and nodes and steer.node in {n.name for n in nodes}
        names = {p.name for p in parts}
        assert all(set(n.partitions) <= names for n in nodes)

    async def test_a_node_is_drained_and_resumed(self, slurm: SlurmClient, steer: Steer) -> None:
        async def state() -> tuple[str, ...]:
            return next(n for n in await slurm.nodes() if n.name == steer.node).state

        try:
            await slurm.set_nodes_schedulable([steer.node], False, reason="bridge contract test")
            assert any(s.startswith("DRAIN") for s in await state())
        finally:
            await slurm.set_nodes_schedulable([steer.node], True)
        assert not any(s.startswith("DRAIN") for s in await state())
        await slurm.set_nodes_schedulable([steer.node], True)   # resuming a node that is not drained: no error
        await slurm.set_nodes_schedulable([], False)
        with pytest.raises((SlurmError, CommandFailed)):
            await slurm.set_nodes_schedulable(["no-such-node"], False, reason="bridge contract test")
