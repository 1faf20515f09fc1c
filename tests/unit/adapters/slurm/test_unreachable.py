"""Issue 19: a Slurm daemon that does not answer is SchedulerUnavailable naming the daemon (a 503 to
clients), from either driver; a request Slurm refuses stays a refusal."""

from __future__ import annotations

import socket

import httpx
import pytest

from bridge.adapters.slurm.rest import RestSlurmClient
from bridge.errors import SchedulerUnavailable, SlurmError


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def test_slurmrestd_down_is_the_scheduler_unavailable(tmp_path):
    key = tmp_path / "jwt.key"
    key.write_bytes(b"k" * 32)
    client = RestSlurmClient(f"http://127.0.0.1:{_closed_port()}", jwt_key_file=key)
    try:
        with pytest.raises(SchedulerUnavailable) as e:
            await client.jobs()
        assert e.value.daemon == "slurmrestd" and e.value.status == 503
    finally:
        await client.aclose()


async def test_what_slurmrestd_cannot_reach_behind_it_is_named(tmp_path):
    key = tmp_path / "jwt.key"
    key.write_bytes(b"k" * 32)

    def answer(request: httpx.Request) -> httpx.Response:
        if "partitions" in request.url.path:
            return httpx.Response(500, json={"errors": [{"error": "Connection refused",
                                                         "description": "Slurmdb query failed"}]})
        return httpx.Response(500, json={"errors": [{"error": "Invalid account", "description": "no such account"}]})

    client = RestSlurmClient("http://restd", jwt_key_file=key, transport=httpx.MockTransport(answer))
    try:
        with pytest.raises(SchedulerUnavailable) as e:
            await client.partitions()
        assert e.value.daemon == "slurmdbd"
        with pytest.raises(SlurmError) as refused:
            await client.jobs()
        assert not isinstance(refused.value, SchedulerUnavailable)
    finally:
        await client.aclose()


async def test_slurmrestd_down_is_retried_with_backoff_and_calls_meanwhile_fail_at_once(tmp_path):
    """A slurmrestd on a host that drops packets made every call wait for its own connect timeout."""
    key = tmp_path / "jwt.key"
    key.write_bytes(b"k" * 32)
    now = [1000.0]
    attempts = []
    up = [False]

    def answer(request: httpx.Request) -> httpx.Response:
        attempts.append(now[0])
        if not up[0]:
            raise httpx.ConnectError("Connection refused", request=request)
        return httpx.Response(200, json={"jobs": []})

    client = RestSlurmClient("http://restd", jwt_key_file=key, transport=httpx.MockTransport(answer),
                             clock=lambda: now[0])
    try:
        for step, wait in ((0.0, "refused"), (0.5, "next try in 1 s"), (0.6, "refused"), (0.5, "next try in 2 s")):
            now[0] += step
            with pytest.raises(SchedulerUnavailable, match=wait):
                await client.jobs()
        assert attempts == [1000.0, 1001.1]          # one attempt per backoff step, not one per call
        now[0] += 1.5
        up[0] = True
        assert await client.jobs() == []
        assert await client.jobs() == []              # answered: no backoff any more
        assert len(attempts) == 4
    finally:
        await client.aclose()
