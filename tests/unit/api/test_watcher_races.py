"""The shared watcher against writers that race it: what it saw of a job is written only if the session
still runs that job. Slurm is the boundary faked here; the watcher, the session service and the database
(SQLite) are real."""

from __future__ import annotations

from bridge.adapters.db.tables import SessionRow
from bridge.adapters.slurm.base import JobInfo, JobState
from bridge.services.sessions import SessionStatus, set_status
from bridge.services.watcher import SessionWatcher
from tests.unit.api.test_graphql import add_session


class RacingSlurm:
    """squeue that answers about the old job while, meanwhile, a restart records the session's new job."""

    def __init__(self, db, session_id: str) -> None:
        self.db, self.session_id, self.asked = db, session_id, []

    async def job_states(self, ids):   # the watcher's look
        self.asked.append(list(ids))
        async with self.db.unit_of_work() as s:   # the restart commits between the look and the write
            row = await s.get(SessionRow, self.session_id)
            row.job_id = "73"
            set_status(row, SessionStatus.RESTARTING, "user-requested")
        return await self.jobs(ids)

    async def jobs(self, ids):   # the full read of an ended job: the same answer
        return [JobInfo(job_id="72", name="bai-x", state=JobState.CANCELLED, exit_code=0, signal=15)]

    async def history(self, ids):
        return []


async def test_the_old_jobs_end_does_not_end_a_restarted_session(gw):
    db = gw.app.state.db
    sid = await add_session(gw, "alice", "restarted")
    async with db.unit_of_work() as s:
        (await s.get(SessionRow, sid)).job_id = "72"
    slurm = RacingSlurm(db, sid)
    watcher = SessionWatcher(db, slurm, gw.app.state.sessions, floor_s=0.1, max_s=1, lost_after_s=60)
    await watcher.tick()
    assert slurm.asked == [["72"]]
    async with db.unit_of_work() as s:
        row = await s.get(SessionRow, sid)
    assert (row.status, row.job_id) == ("RESTARTING", "73")   # not TERMINATED by job 72's cancellation


async def test_a_job_unknown_to_slurm_is_lost_only_while_the_session_still_runs_it(gw):
    db = gw.app.state.db
    sid = await add_session(gw, "alice", "lostjob")
    async with db.unit_of_work() as s:
        (await s.get(SessionRow, sid)).job_id = "80"
    now = [0.0]

    class Silent:
        async def job_states(self, ids):   # the watcher's look: the same answer here
            return await self.jobs(ids)

        async def jobs(self, ids):
            return []

        async def history(self, ids):
            return []

    watcher = SessionWatcher(db, Silent(), gw.app.state.sessions, floor_s=0.1, max_s=1, lost_after_s=5,
                             clock=lambda: now[0])
    await watcher.tick()          # first miss: not lost yet
    now[0] = 10.0
    async with db.unit_of_work() as s:
        (await s.get(SessionRow, sid)).job_id = "81"   # a restart: the new job's clock starts afresh
    await watcher.tick()
    async with db.unit_of_work() as s:
        assert (await s.get(SessionRow, sid)).status == "RUNNING"
    now[0] = 16.0
    await watcher.tick()
    async with db.unit_of_work() as s:
        row = await s.get(SessionRow, sid)
    assert row.status == "ERROR" and row.status_info.startswith("lost")


async def test_a_job_is_not_lost_while_accounting_cannot_say(gw):
    """Issue 19: with slurmdbd down, a job that left squeue is unknown, not lost; the watcher writes nothing
    and its lost clock starts only once accounting answers again."""
    from bridge.errors import SchedulerUnavailable

    db = gw.app.state.db
    sid = await add_session(gw, "alice", "dbdout")
    async with db.unit_of_work() as s:
        (await s.get(SessionRow, sid)).job_id = "90"
    now = [0.0]

    class NoAccounting:
        down = True

        async def job_states(self, ids):   # the watcher's look: the same answer here

            return await self.jobs(ids)


        async def jobs(self, ids):
            return []

        async def history(self, ids):
            if self.down:
                raise SchedulerUnavailable("sacct: Slurmdb query failed", daemon="slurmdbd")
            return []

    slurm = NoAccounting()
    watcher = SessionWatcher(db, slurm, gw.app.state.sessions, floor_s=0.1, max_s=1, lost_after_s=5,
                             clock=lambda: now[0])
    for t in (0.0, 10.0, 100.0):   # far past lost_after_s
        now[0] = t
        await watcher.tick()
        async with db.unit_of_work() as s:
            assert (await s.get(SessionRow, sid)).status == "RUNNING"
    slurm.down = False
    await watcher.tick()           # accounting answers (and knows nothing): the clock starts now
    now[0] = 106.0
    await watcher.tick()
    async with db.unit_of_work() as s:
        assert (await s.get(SessionRow, sid)).status == "ERROR"


async def test_a_terminate_does_not_write_over_an_end_the_watcher_saw_meanwhile(gw, monkeypatch):
    """destroy looks at the session, then locks it: if its job ended in between (the watcher wrote
    TERMINATED), the end stands: no TERMINATING over it, no scancel of a job that is gone."""
    db, sessions = gw.app.state.db, gw.app.state.sessions
    sid = await add_session(gw, "alice", "ending", job_id="90")
    look = sessions.resolve

    async def look_then_end(*a, **kw):
        row = await look(*a, **kw)
        async with db.unit_of_work() as s:   # the watcher's write lands between the look and the lock
            set_status(await s.get(SessionRow, sid), SessionStatus.TERMINATED, "job-finished")
        return row

    monkeypatch.setattr(sessions, "resolve", look_then_end)
    cancelled = []

    async def cancel(ids, **kw):
        cancelled.extend(ids)

    monkeypatch.setattr(sessions.slurm, "cancel", cancel)
    r = await gw.request("DELETE", f"/session/{sid}", "alice")
    assert r.status_code == 200 and r.json()["status"] == "TERMINATED", r.text
    async with db.unit_of_work() as s:
        row = await s.get(SessionRow, sid)
    assert (row.status, row.status_info, row.termination_requested) == ("TERMINATED", "job-finished", False)
    assert cancelled == []


async def test_a_restart_that_an_end_overtakes_leaves_no_job_behind(gw, monkeypatch):
    """restart submits the new job, then records it: if the session ended while sbatch ran, the end stands,
    the request is refused, and the new job is cancelled (no orphan job)."""
    from tests.unit.api.test_fuzz import AgreeingRunner

    db, sessions = gw.app.state.db, gw.app.state.sessions
    sessions.runner = AgreeingRunner()
    sid = await add_session(gw, "alice", "restarting", job_id="91", resources={"cpu": 1, "mem": "1g"})

    async def submit_while_it_ends(*a, **kw):
        async with db.unit_of_work() as s:
            set_status(await s.get(SessionRow, sid), SessionStatus.TERMINATED, "job-finished")
        return "92"

    cancelled = []

    async def cancel(ids, **kw):
        cancelled.extend(ids)

    monkeypatch.setattr(sessions, "_submit", submit_while_it_ends)
    monkeypatch.setattr(sessions.slurm, "cancel", cancel)
    r = await gw.request("PATCH", f"/session/{sid}", "alice")
    assert r.status_code == 400 and "changed while it was restarting" in r.json()["msg"], r.text
    async with db.unit_of_work() as s:
        row = await s.get(SessionRow, sid)
    assert (row.status, row.job_id) == ("TERMINATED", "91")
    assert cancelled == ["92"]
