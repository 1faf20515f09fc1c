"""Folders over the SSH command transport, against the dev cluster's real login node: the file helper runs
as the user over an SSH login, and transfers stream through its standard input and output (an open file
cannot be handed over a network)."""

from __future__ import annotations

import asyncio
import os
import uuid
from pathlib import Path

import pytest

from bridge.adapters.db.engine import Database, upgrade
from bridge.adapters.slurm.factory import build_runner
from bridge.domain.auth import AuthContext
from bridge.services import accounts
from bridge.services.folders import FolderService

pytestmark = pytest.mark.cluster


async def _chunks(data: bytes, size: int = 1 << 16):
    for i in range(0, len(data), size):
        yield data[i:i + size]


def test_upload_list_and_download_over_ssh(settings, cluster, tmp_path):
    async def main() -> None:
        url = f"sqlite+aiosqlite:///{tmp_path}/f.db"
        await asyncio.to_thread(upgrade, url)
        db = Database(url)
        runner = build_runner(settings, "ssh")
        svc = FolderService(db, runner, settings)
        assert not svc.disk.hands_over
        try:
            async with db.unit_of_work() as s:
                await accounts.ensure_domain(s, "default")
                await accounts.ensure_policy(s, "default")
                u = await accounts.create_user(s, email=f"ssh-{uuid.uuid4().hex[:6]}@x.org", unix_user="alice")
                kp = await accounts.create_keypair(s, u)
            auth = AuthContext(kp.access_key, u.uuid, u.email, u.username, "user", "default", "alice", False,
                               "default", 100)
            made = await svc.create(auth, "over-ssh")
            payload = os.urandom(5 << 20)
            token = await svc.request_upload(auth, "over-ssh", "data.bin", len(payload))
            assert await svc.upload_chunk(token, 0, _chunks(payload[:3 << 20])) == 3 << 20
            assert await svc.upload_state(token) == (3 << 20, len(payload))
            assert await svc.upload_chunk(token, 3 << 20, _chunks(payload[3 << 20:])) == len(payload)
            on_disk = Path(cluster) / made.row.path.lstrip("/") / "data.bin"
            assert on_disk.read_bytes() == payload
            passwd = (Path(cluster) / "etc/passwd").read_text().splitlines()
            assert on_disk.stat().st_uid == int(next(x.split(":")[2] for x in passwd if x.startswith("alice:")))
            _, entries = await svc.files(auth, "over-ssh")
            assert [e["name"] for e in entries] == ["data.bin"]
            got = await svc.download(await svc.request_download(auth, "over-ssh", "data.bin"), 1000)
            assert got.size == len(payload)
            assert b"".join([c async for c in got.chunks]) == payload[1000:]
            await svc.delete(auth, "over-ssh")
            assert not on_disk.exists()
        finally:
            close = getattr(runner, "close", None)
            if close:
                close()
            await db.dispose()

    asyncio.run(main())
