"""The REST driver's incremental job listing: slurmrestd is simulated at the HTTP boundary with the real
24.11 squeue document, answering `update_time` as slurmctld does (the whole list when a job changed since,
"No job changes" otherwise)."""

from __future__ import annotations

import copy
import json

import httpx

from bridge.adapters.slurm.base import JobState
from bridge.adapters.slurm.rest import RestSlurmClient


class Slurmrestd:
    def __init__(self, doc: dict) -> None:
        self.doc = doc
        self.now = 1_796_000_000
        self.changed = self.now          # slurmctld's last job change (whole seconds)
        self.asked: list[int | None] = []

    def change(self) -> None:
        self.changed = self.now

    def __call__(self, request: httpx.Request) -> httpx.Response:
        since = request.url.params.get("update_time")
        self.asked.append(int(since) if since is not None else None)
        if since is not None and self.changed <= int(since):
            return httpx.Response(200, json={"jobs": [], "last_update": {"set": True, "number": 0}, "warnings": [
                {"description": f"No job changes since update_time[{since}]", "source": "op_handler_jobs"}]})
        return httpx.Response(200, json={**copy.deepcopy(self.doc), "last_update": {"set": True, "number": self.now}})


async def test_listings_are_read_again_only_when_a_job_changed(slurm_data, tmp_path):
    key = tmp_path / "jwt.key"
    key.write_bytes(b"k" * 32)
    restd = Slurmrestd(json.loads((slurm_data / "squeue.json").read_text()))
    client = RestSlurmClient("http://restd", jwt_key_file=key, transport=httpx.MockTransport(restd))
    try:
        t0 = restd.now
        first = await client.job_states(["2", "4"])
        assert {j.job_id: j.state for j in first} == {"2": JobState.RUNNING, "4": JobState.PENDING}
        restd.now += 5
        await client.job_states(["2"])   # a job changed in the second of the last listing: read again
        assert client.unchanged_reads == 0 and restd.asked == [None, t0 - 1]
        again = await client.job_states(["2"])   # nothing changed since: slurmctld serialises nothing
        assert [j.job_id for j in again] == ["2"] and client.unchanged_reads == 1 and restd.asked[-1] == t0 + 4
        restd.doc["jobs"] = [j for j in restd.doc["jobs"] if j["job_id"] != 4]   # job 4 leaves the queue
        restd.change()
        assert [j.job_id for j in await client.job_states(["2", "4"])] == ["2"]
        assert client.unchanged_reads == 1
        calls = client.calls
        assert await client.jobs(["2"], user="alice") != [] and client.calls == calls + 1   # a user's own look
        assert restd.asked[-1] is None   # is never served from the gateway's listing
    finally:
        await client.aclose()
