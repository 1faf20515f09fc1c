"""The SlurmClient contract (tests/support/slurm_contract.py) against the fake Slurm, and the fake's own checks:
that it has every method of the Protocol with the Protocol's signature, and what its test handles do. The same
contract runs against the real adapters in tests/integration/test_slurm_contract.py."""

from __future__ import annotations

import inspect

import pytest

from bridge.adapters.slurm.base import JobInfo, JobSpec, JobState, SlurmClient
from bridge.errors import SlurmError
from tests.support.fake_slurm import FakeSlurm
from tests.support.slurm_contract import SlurmContract


class FakeSteer:
    account, node, tag = "acct", "n1", "bridge-test:fake"

    async def running(self, slurm: SlurmClient, job_id: str) -> JobInfo:
        assert isinstance(slurm, FakeSlurm)
        slurm.set_state(job_id, JobState.RUNNING)
        [j] = await slurm.jobs([job_id])
        return j

    async def finished(self, slurm: SlurmClient, job_id: str) -> JobInfo:
        assert isinstance(slurm, FakeSlurm)
        if not slurm.job(job_id).state.is_finished:
            slurm.set_state(job_id, JobState.COMPLETED)
        [j] = await slurm.history([job_id]) if len(slurm.job(job_id).specs) == 1 else await slurm.jobs([job_id])
        return j

    async def accounted(self, slurm: SlurmClient, job_id: str) -> list[JobInfo]:
        return await slurm.history([job_id])


class TestFakeSlurm(SlurmContract):
    @pytest.fixture
    def slurm(self) -> FakeSlurm:
        return FakeSlurm(accounts={"acct"})

    @pytest.fixture
    def steer(self) -> FakeSteer:
        return FakeSteer()


def public_methods(cls: type) -> dict[str, inspect.Signature]:
    return {name: inspect.signature(fn) for name, fn in vars(cls).items()
            if not name.startswith("_") and inspect.isfunction(fn)}


def test_the_fake_has_every_method_of_the_protocol_with_its_signature():
    protocol = public_methods(SlurmClient)
    fake = {name: inspect.signature(getattr(FakeSlurm, name)) for name in protocol if hasattr(FakeSlurm, name)}
    assert set(fake) == set(protocol)
    for name, sig in protocol.items():
        assert str(fake[name]) == str(sig), name
        assert inspect.iscoroutinefunction(getattr(FakeSlurm, name)), name


async def test_the_test_steers_the_fake():
    slurm = FakeSlurm()
    a = JobSpec(name="x", script="", comment="tag", stdout="/tmp/x-%j.out")
    job_id = await slurm.submit([a, a, a], user="alice")
    assert await slurm.submit(a, user="bob") == str(int(job_id) + 3)   # components take consecutive ids
    assert slurm.submissions[0].specs == [a, a, a] and slurm.submissions[0].user == "alice"
    j = slurm.set_state(job_id, JobState.RUNNING, nodes=["n1"])
    assert j.start_time and (await slurm.jobs([job_id]))[0].stdout == f"/tmp/x-{job_id}.out"
    await slurm.cancel([job_id], signal="TERM")
    assert slurm.job(job_id).signals == ["TERM"] and slurm.job(job_id).state is JobState.RUNNING
    slurm.set_state(job_id, JobState.FAILED, exit_code=3)
    slurm.forget(job_id)
    assert await slurm.jobs([job_id]) == []
    assert [(r.job_id, r.exit_code) for r in await slurm.history([job_id])] == [
        (str(int(job_id) + i), 3) for i in range(3)]
    with pytest.raises(SlurmError, match="Invalid job id"):
        slurm.job("1")
    await slurm.aclose()
    assert slurm.closed
