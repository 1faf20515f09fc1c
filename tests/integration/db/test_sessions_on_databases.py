"""The session service and the watcher on SQLite and PostgreSQL alike, against the real cluster."""

from __future__ import annotations

import asyncio
import uuid

import pytest

from bridge.adapters.db.engine import Database, upgrade
from bridge.adapters.slurm.factory import build_runner, build_slurm_client
from bridge.config import BridgeSettings, dev_cluster_overrides
from bridge.domain.auth import AuthContext
from bridge.domain.session import SessionRequest
from bridge.services import accounts
from bridge.services.events import EventBus
from bridge.services.images import ImageResolver
from bridge.services.sessions import SessionService
from bridge.services.watcher import SessionWatcher

pytestmark = pytest.mark.cluster


async def test_batch_session_lifecycle(db_url, cluster, account):
    """`account` is this test run's own Slurm account (alice and bob are in it), `cluster` the dev root."""
    settings = BridgeSettings(**{**dev_cluster_overrides(cluster), "database": {"url": db_url}})
    settings.slurm.job_tag_prefix = f"dbtest-{uuid.uuid4().hex[:6]}:"
    await asyncio.to_thread(upgrade, db_url)
    db = Database(db_url)
    slurm = build_slurm_client(settings)
    runner = build_runner(settings)
    try:
        async with db.unit_of_work() as s:
            await accounts.ensure_domain(s, "default")
            await accounts.ensure_policy(s, "default")
            g = await accounts.create_group(s, name="default", slurm_account=account)
            u = await accounts.create_user(s, email="db@x.org", unix_user="alice")
            await accounts.add_member(s, g, u)
            kp = await accounts.create_keypair(s, u)
        auth = AuthContext(kp.access_key, u.uuid, u.email, u.username, "user", "default", "alice", False,
                           "default", 100)
        events = EventBus()
        service = SessionService(db, slurm, runner, ImageResolver(runner, "/srv/images", {}, db), events, settings)
        watcher = SessionWatcher(db, slurm, service, floor_s=0.2, max_s=1, lost_after_s=60)
        async with events.subscribe() as q:
            body, created = await service.create(auth, SessionRequest(
                image="python", name="dbs-" + uuid.uuid4().hex[:4], kind="batch", enqueue_only=True,
                startup_command="exit 0", resources={"mem": "256m"}))
            assert created and body["status"] == "PENDING"
            names = []
            async with asyncio.timeout(60):
                while "session_terminated" not in names:
                    await watcher.tick()
                    while not q.empty():
                        names.append(q.get_nowait().name)
                    await asyncio.sleep(0.2)
        row = await service.resolve(auth, body["sessionId"])
        assert (row.status, row.result, row.exit_code) == ("TERMINATED", "SUCCESS", 0)
        assert list(row.status_history)[0] == "PENDING" and "TERMINATED" in row.status_history
        assert names[0] == "session_enqueued" and "session_success" in names
    finally:
        await slurm.aclose()
        await db.dispose()
