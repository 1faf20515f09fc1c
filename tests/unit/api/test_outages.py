"""Issue 19: Slurm outages. The gateway stays up and says what is wrong: a controller that does not answer
is a 503 with Retry-After (never a 4xx blaming the request); with enqueueOnly the session is accepted and
submitted once the controller answers again, exactly once; partition and node facts outlive an accounting
outage; /manager/status reports each part and never fails because one is down."""

from __future__ import annotations

from typing import Any

import pytest

from bridge.adapters.db.tables import SessionRow
from bridge.adapters.slurm.base import JobInfo, JobState
from bridge.adapters.slurm.parse import unreachable_daemon
from bridge.errors import SchedulerUnavailable
from bridge.services.health import ObservedSlurm
from bridge.services.sessions import DEFERRED, SessionService
from tests.support.fake_slurm import FakeSlurm
from tests.unit.api.test_fuzz import AgreeingRunner

DOWN = SchedulerUnavailable("slurmctld is unreachable (sbatch): Unable to contact slurm controller", daemon="slurmctld")


class FlakySlurm(FakeSlurm):
    """Slurm whose controller is down until `up` is set; records submissions."""

    def __init__(self) -> None:
        super().__init__()
        self.up = False
        self.dbd_up = True
        self.submitted: list[str] = []
        self.tagged: list[JobInfo] = []

    async def submit(self, spec: Any, *, user: str) -> str:
        if not self.up:
            raise DOWN
        self.submitted.append(spec.comment)
        return str(100 + len(self.submitted))

    async def job_states(self, ids):   # the watcher's look: the same answer here
        return await self.jobs(ids)

    async def jobs(self, job_ids: Any = None, *, user: str | None = None) -> list[JobInfo]:
        if not self.up:
            raise DOWN
        return list(self.tagged)

    async def cancel(self, job_ids: Any, *, user: str | None = None, signal: str | None = None) -> None:
        return None

    async def partitions(self):
        if not self.dbd_up:
            raise SchedulerUnavailable("partitions: Slurmdb query failed", daemon="slurmdbd")
        return await super().partitions()


@pytest.fixture
async def flaky(gw):
    from bridge.adapters.db.tables import ImageRow

    slurm = FlakySlurm()
    state = gw.app.state
    state.slurm = state.sessions.slurm = ObservedSlurm(slurm, state.health)
    state.sessions.runner = AgreeingRunner()
    async with state.db.unit_of_work() as s:   # an image the gateway knows, without a cluster to look in
        s.add(ImageRow(name="python", path="/srv/images/python", aliases=[], labels={}))
    return gw, slurm


def test_what_each_daemon_says_when_it_is_down():
    assert unreachable_daemon("sbatch: error: Batch job submission failed: Unable to contact slurm controller "
                              "(connect failure)") == "slurmctld"
    assert unreachable_daemon("partitions: Connection refused: Slurmdb query failed") == "slurmdbd"
    assert unreachable_daemon("sbatch: error: Batch job submission failed: Invalid account") is None


async def test_a_controller_outage_is_a_503_and_leaves_nothing_behind(flaky):
    gw, _ = flaky
    r = await gw.request("POST", "/session", "alice", json={"name": "during-outage", "image": "python"})
    assert r.status_code == 503 and r.json()["type"].endswith("/scheduler-unavailable"), r.text
    assert r.headers["retry-after"] and r.json()["data"]["daemon"] == "slurmctld"
    assert (await gw.request("GET", "/session/during-outage", "alice")).status_code == 404


async def test_an_enqueued_session_waits_for_the_controller_and_is_submitted_exactly_once(flaky):
    gw, slurm = flaky
    r = await gw.request("POST", "/session", "alice",
                         json={"name": "later", "image": "python", "enqueueOnly": True})
    assert r.status_code == 201 and r.json()["status"] == "PENDING", r.text
    sessions: SessionService = gw.app.state.sessions
    info = (await gw.request("GET", "/session/later", "alice")).json()
    assert "scheduler unreachable" in info["statusInfo"]
    with pytest.raises(SchedulerUnavailable):
        await sessions.submit_deferred()   # still down: nothing submitted, nothing lost
    assert len(await sessions.deferred()) == 1 and not slurm.submitted
    slurm.up = True
    assert await sessions.submit_deferred() == 1
    assert await sessions.submit_deferred() == 0   # once
    row = await sessions.resolve(await _auth(gw), "later")
    assert row.job_id == "101" and DEFERRED not in row.status_data and row.status_info is None
    assert len(slurm.submitted) == 1


async def test_a_site_may_defer_every_new_session_while_the_controller_is_away(flaky, monkeypatch):
    gw, slurm = flaky
    monkeypatch.setattr(gw.app.state.sessions.settings.sessions, "defer_when_unavailable", True)
    r = await gw.request("POST", "/session", "alice", json={"name": "deferred-by-site", "image": "python"})
    assert r.status_code == 201 and r.json()["status"] == "PENDING", r.text   # answered at once, not held
    slurm.up = True
    assert await gw.app.state.sessions.submit_deferred() == 1 and len(slurm.submitted) == 1


async def test_a_job_that_went_through_after_all_is_adopted_not_submitted_again(flaky):
    gw, slurm = flaky
    r = await gw.request("POST", "/session", "alice", json={"name": "maybe", "image": "python", "enqueueOnly": True})
    sid = r.json()["sessionId"]
    sessions: SessionService = gw.app.state.sessions
    slurm.up = True
    slurm.tagged = [JobInfo("777", "bai-maybe", JobState.PENDING, comment=sessions.tag(sid, "alice"))]
    assert await sessions.submit_deferred() == 1
    assert slurm.submitted == [] and (await sessions.resolve(await _auth(gw), sid)).job_id == "777"


async def test_a_tag_copied_into_another_users_job_is_never_adopted(flaky):
    """With signed tags (slurm.notify_secret), a job is adopted as a session's only if it carries the very tag
    the gateway gave that session and is its user's job: bob's job with alice's tag copied onto it is not
    adopted (neither at the next submission nor by start-up reconciliation), alice's own is."""
    from bridge.services.sessions import reconcile

    gw, slurm = flaky
    gw.app.state.settings.slurm.notify_secret = "notify-secret-for-tests"
    r = await gw.request("POST", "/session", "alice", json={"name": "copied", "image": "python", "enqueueOnly": True})
    sid = r.json()["sessionId"]
    sessions: SessionService = gw.app.state.sessions
    tag = sessions.tag(sid, "alice")
    assert tag.startswith(sessions.settings.slurm.job_tag_prefix + sid + ".")
    slurm.up = True
    slurm.tagged = [JobInfo("666", "bai-copied", JobState.RUNNING, comment=tag, user="bob")]
    assert await sessions.submit_deferred() == 1
    assert slurm.submitted == [tag] and (await sessions.resolve(await _auth(gw), sid)).job_id == "101"
    async with gw.app.state.db.unit_of_work() as s:   # as if the gateway died before recording the job id
        (await s.get(SessionRow, sid)).job_id = None
    slurm.tagged = [JobInfo("666", "bai-copied", JobState.RUNNING, comment=tag, user="bob"),
                    JobInfo("101", "bai-copied", JobState.RUNNING, comment=tag, user="alice")]
    counts = await reconcile(sessions)
    assert counts["adopted"] == 1 and (await sessions.resolve(await _auth(gw), sid)).job_id == "101"


async def test_status_reports_each_part_and_never_fails(flaky):
    gw, slurm = flaky
    await gw.request("POST", "/session", "alice", json={"name": "x-outage", "image": "python"})   # sees it down
    r = await gw.request("GET", "/manager/status", "alice")
    assert r.status_code == 200, r.text
    status = r.json()
    assert status["health"] == "degraded" and status["dependencies"]["slurmctld"]["state"] == "down"
    assert "Unable to contact" in status["dependencies"]["slurmctld"]["last_error"]
    assert status["dependencies"]["database"]["state"] == "up" and status["active_sessions"] == 0


async def test_partitions_outlive_an_accounting_outage_even_across_a_restart(flaky):
    gw, slurm = flaky
    sessions: SessionService = gw.app.state.sessions
    assert await sessions.partitions() == {"debug", "gpu"}          # a good read, kept in the database
    slurm.dbd_up = False
    sessions.facts_partitions._at = 0                               # due for a refresh
    assert await sessions.partitions() == {"debug", "gpu"}          # the last good read serves at once,
    await sessions.facts_partitions._refresh                        # while Slurm is asked behind it
    assert gw.app.state.health.is_down("slurmdbd")
    assert sessions.facts_partitions.stale_since is not None
    restarted = SessionService(sessions.db, sessions.slurm, sessions.runner, sessions.images, sessions.events,
                               sessions.settings)
    assert await restarted.partitions() == {"debug", "gpu"}        # from the database


async def _auth(gw):
    from bridge.services.auth import load_keypair

    async with gw.app.state.db.unit_of_work() as s:
        return (await load_keypair(s, gw.keys["alice"].access))[0]
