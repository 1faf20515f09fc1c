"""/resource/usage/*, /resource/stats/*, /resource/recalculate-usage: the manager 23.09 shapes, from the
sessions table and one accounting call (a stand-in for history(); the real one is in tests/e2e)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from sqlalchemy import select

from bridge.adapters.db.tables import GroupRow, KeypairRow, SessionRow, UserRow
from bridge.domain.jobs import JobInfo, JobState, JobUsage

C_INFO_KEYS = {
    "id", "session_id", "container_id", "domain_name", "group_id", "group_name", "name", "access_key", "email",
    "full_name", "agent", "cpu_allocated", "cpu_used", "mem_allocated", "mem_used", "shared_memory",
    "disk_allocated", "disk_used", "io_read", "io_write", "used_time", "used_days", "device_type", "smp",
    "gpu_mem_allocated", "gpu_allocated", "nfs", "image_id", "image_name", "created_at", "terminated_at", "status",
    "status_info", "status_changed", "status_history", "cluster_mode",
}
GROUP_KEYS = {
    "domain_name", "g_id", "g_name", "g_cpu_allocated", "g_cpu_used", "g_mem_allocated", "g_mem_used",
    "g_shared_memory", "g_disk_allocated", "g_disk_used", "g_io_read", "g_io_write", "g_device_type", "g_smp",
    "g_gpu_mem_allocated", "g_gpu_allocated", "c_infos",
}
GIB = 1024**3
AUG = datetime(2026, 8, 10, 12, tzinfo=UTC)


class Accounting:
    """history() as sacct answers: usage per job, het components under the leader; every call recorded."""

    def __init__(self):
        self.calls: list[list[str]] = []
        self.records = {
            "101": [JobInfo("101", "s", JobState.COMPLETED, usage=JobUsage(600, 1_200_000, 3 * GIB, 4096, 8192))],
            "102": [JobInfo("102", "s", JobState.COMPLETED, het_job_id="102", usage=JobUsage(60, 1000, 100, 1, 2)),
                    JobInfo("103", "s", JobState.COMPLETED, het_job_id="102", usage=JobUsage(50, 500, 300, 3, 4))],
            "104": [JobInfo("104", "s", JobState.RUNNING, usage=JobUsage(30, 70, 10, 0, 0))],
            "105": [JobInfo("105", "s", JobState.COMPLETED, usage=JobUsage(5, 5, 5, 5, 5))],
        }

    async def history(self, job_ids, *, user=None):
        self.calls.append(sorted(job_ids))
        return [r for j in job_ids for r in self.records.get(j, [])]


async def add(gw, who: str, name: str, *, group: str = "default", job_id: str | None, status: str,
              created: datetime, terminated: datetime | None, resources: dict | None = None,
              cluster_size: int = 1) -> str:
    async with gw.app.state.db.unit_of_work() as s:
        kp = await s.get(KeypairRow, gw.keys[who].access)
        user = await s.get(UserRow, kp.user)
        g = (await s.execute(select(GroupRow).where(GroupRow.name == group))).scalar_one()
        row = SessionRow(name=name, access_key=kp.access_key, user_uuid=user.uuid, domain_name=user.domain_name,
                         group_id=g.id, unix_user=user.unix_user, slurm_account=g.slurm_account, partition="debug",
                         image="python:3.12", image_path="/srv/images/python", job_tag="t", work_dir="/tmp/w",
                         status=status, job_id=job_id, created_at=created, terminated_at=terminated,
                         started_at=created if job_id else None, nodes=["n1"], cluster_size=cluster_size,
                         resources=resources or {"cpu": "2", "mem": str(GIB), "cuda.device": "0"},
                         resource_opts={"shmem": "64m"})
        s.add(row)
        await s.flush()
        return row.id


async def group_id(gw, name: str) -> str:
    async with gw.app.state.db.unit_of_work() as s:
        return (await s.execute(select(GroupRow.id).where(GroupRow.name == name))).scalar_one()


async def august(gw) -> Accounting:
    acct = Accounting()
    gw.app.state.slurm.history = acct.history
    await add(gw, "alice", "a-done", job_id="101", status="TERMINATED", created=AUG,
              terminated=AUG + timedelta(minutes=10))
    await add(gw, "bob", "b-het", group="physics", job_id="102", status="TERMINATED", created=AUG,
              terminated=AUG + timedelta(days=1, minutes=1), cluster_size=2,
              resources={"cpu": "1", "mem": str(GIB), "cuda.device": "1"})
    await add(gw, "alice", "a-running", job_id="104", status="RUNNING", created=AUG, terminated=None)
    await add(gw, "alice", "a-cancelled", job_id=None, status="CANCELLED", created=AUG, terminated=AUG)
    await add(gw, "alice", "a-july", job_id="105", status="TERMINATED", created=AUG - timedelta(days=30),
              terminated=AUG - timedelta(days=29))
    return acct


async def test_usage_per_month_has_the_manager_shape_and_one_accounting_call(gw):
    acct = await august(gw)
    r = await gw.request("GET", "/resource/usage/month?month=202608", "root")
    assert r.status_code == 200, r.text
    groups = {g["g_name"]: g for g in r.json()}
    assert set(groups) == {"default", "physics"}
    assert all(set(g) == GROUP_KEYS for g in groups.values())
    assert acct.calls == [["101", "102", "104"]]          # one call, never the cancelled or July session
    default = groups["default"]
    assert [c["name"] for c in default["c_infos"]] == ["a-done", "a-running"]   # ended first, running last
    done, running = default["c_infos"]
    assert set(done) == C_INFO_KEYS
    assert done["container_id"] == "101" and done["agent"] == "n1" and done["email"] == "alice@x.org"
    assert done["cpu_allocated"] == 2.0 and done["mem_allocated"] == GIB and done["shared_memory"] == 64 * 1024**2
    assert done["cpu_used"] == 1_200_000.0 and done["mem_used"] == 3 * GIB
    assert (done["io_read"], done["io_write"], done["disk_used"]) == (4096, 8192, 0)
    assert done["used_time"] == "0:10:00" and done["used_days"] == 1 and done["status"] == "TERMINATED"
    assert done["created_at"] == "2026-08-10 12:00:00+00:00" and done["gpu_allocated"] == 0.0
    assert running["terminated_at"] == "None" and running["used_time"] is None and running["cpu_used"] == 70.0
    assert default["g_cpu_used"] == 1_200_070.0 and default["g_cpu_allocated"] == 4.0
    het = groups["physics"]["c_infos"][0]
    assert het["cpu_used"] == 1500.0 and het["mem_used"] == 300 and (het["io_read"], het["io_write"]) == (4, 6)
    assert het["cpu_allocated"] == 2.0 and het["gpu_allocated"] == 2.0 and het["used_days"] == 2


async def test_group_ids_select_projects_in_every_form_clients_send(gw):
    await august(gw)
    phys = await group_id(gw, "physics")
    default = await group_id(gw, "default")
    for path, body in [(f"/resource/usage/month?month=202608&group_ids={phys}", None),
                       ("/resource/usage/month", {"month": "202608", "group_ids": [phys]})]:
        r = await gw.request("GET", path, "root", json=body)
        assert r.status_code == 200, r.text
        assert [g["g_name"] for g in r.json()] == ["physics"]
    r = await gw.request("GET", f"/resource/usage/month?month=202608&group_ids={phys},{default}", "root")
    assert sorted(g["g_name"] for g in r.json()) == ["default", "physics"]
    r = await gw.request("GET", "/resource/usage/month?month=202607", "root")
    assert [c["name"] for g in r.json() for c in g["c_infos"]] == ["a-july"]


async def test_usage_per_period_checks_its_dates_like_the_manager(gw):
    await august(gw)
    phys = await group_id(gw, "physics")
    r = await gw.request("GET", f"/resource/usage/period?group_id={phys}&start_date=20260811&end_date=20260811",
                         "root")
    assert r.status_code == 200, r.text
    assert [c["name"] for g in r.json() for c in g["c_infos"]] == ["b-het"]   # it ran into the 11th
    r = await gw.request("GET", "/resource/usage/period?start_date=20260812&end_date=20260830", "root")
    assert [c["name"] for g in r.json() for c in g["c_infos"]] == ["a-running"]
    for query, msg in [("start_date=20260101&end_date=20260501", "Cannot query more than 100 days"),
                       ("start_date=20260810&end_date=20260801", "end_date must be later than start_date."),
                       ("start_date=20261301&end_date=20261302", "Invalid date values"),
                       ("start_date=20260801", "Input validation error")]:
        r = await gw.request("GET", f"/resource/usage/period?{query}", "root")
        assert r.status_code == 400, query
        body = r.json()
        assert body["type"].endswith("/invalid-api-params") and msg in body.get("msg", body.get("title")), body


async def test_usage_is_for_superadmins_only(gw):
    await august(gw)
    for path in ("/resource/usage/month?month=202608", "/resource/usage/period?start_date=20260801&end_date=20260802",
                 "/resource/stats/admin/month"):
        for who in ("alice", "ladmin"):
            assert (await gw.request("GET", path, who)).status_code == 403
    assert (await gw.request("POST", "/resource/recalculate-usage", "alice")).status_code == 403
    assert (await gw.request("GET", "/resource/usage/month?month=2026-8", "root")).status_code == 400


async def test_monthly_stats_bin_the_callers_ended_sessions(gw):
    acct = Accounting()
    gw.app.state.slurm.history = acct.history
    now = datetime.now(UTC)
    await add(gw, "alice", "a-recent", job_id="101", status="TERMINATED", created=now - timedelta(hours=2),
              terminated=now - timedelta(hours=1))
    await add(gw, "bob", "b-recent", group="physics", job_id="105", status="TERMINATED",
              created=now - timedelta(hours=2), terminated=now - timedelta(hours=1, minutes=50))
    await add(gw, "alice", "a-old", job_id="102", status="TERMINATED", created=now - timedelta(days=40),
              terminated=now - timedelta(days=31))
    r = await gw.request("GET", "/resource/stats/user/month", "alice")
    assert r.status_code == 200, r.text
    bins = r.json()
    assert len(bins) == 2880 and abs(bins[0]["date"] - (now - timedelta(days=30)).timestamp()) < 60
    assert set(bins[0]) == {"date", "num_sessions", "cpu_allocated", "mem_allocated", "gpu_allocated",
                            "io_read_bytes", "io_write_bytes", "disk_used"}
    assert bins[0]["mem_allocated"] == {"value": 0, "unit_hint": "bytes"}
    busy = [b for b in bins if b["num_sessions"]["value"]]
    assert 4 <= len(busy) <= 6                                  # one hour, in 15-minute bins
    assert all(b["cpu_allocated"]["value"] == 2 and b["mem_allocated"]["value"] == GIB for b in busy)
    assert busy[0]["io_read_bytes"] == {"value": 4096, "unit_hint": "bytes"}
    assert isinstance(busy[0]["gpu_allocated"]["value"], float)
    everyone = (await gw.request("GET", "/resource/stats/admin/month", "root")).json()
    assert max(b["num_sessions"]["value"] for b in everyone) == 2
    assert acct.calls == [["101"], ["105"]]                    # 101 finished: kept from the first answer


async def test_recalculate_usage_reads_accounting_again(gw):
    acct = await august(gw)
    for _ in range(2):
        assert (await gw.request("GET", "/resource/usage/month?month=202608", "root")).status_code == 200
    assert acct.calls == [["101", "102", "104"], ["104"]]   # finished jobs are kept, the running one is not
    acct.records["101"] = [JobInfo("101", "s", JobState.COMPLETED, usage=JobUsage(cpu_time_ms=9))]
    r = await gw.request("POST", "/resource/recalculate-usage", "root")
    assert r.status_code == 200 and r.json() == {}
    r = await gw.request("GET", "/resource/usage/month?month=202608", "root")
    assert acct.calls[-1] == ["101", "102", "104"]
    assert [c["cpu_used"] for g in r.json() for c in g["c_infos"] if c["container_id"] == "101"] == [9.0]
