"""Upgrading from each release (CHANGELOG.md), on SQLite and PostgreSQL, with a session running in Slurm.

The database is made as the release left it: its schema (the Alembic head it shipped) and rows written with
that schema's SQL (a user, a project, a sealed keypair, a folder, an ended session and a batch session whose
job runs in Slurm at that moment). It is then migrated to head, down to the release's schema where Alembic
allows, and up again; the gateway of this version starts on it with its watcher and reconciliation, still
sees the running session as RUNNING, and ends it through the API, job included.
"""

from __future__ import annotations

import asyncio
import uuid

import httpx
import pytest
from sqlalchemy import text

from bridge.adapters.db import engine, sealed
from bridge.adapters.slurm.base import JobState
from bridge.adapters.slurm.factory import build_slurm_client
from bridge.api import signing
from bridge.api.app import create_app
from bridge.config import BridgeSettings, dev_cluster_overrides
from tests.integration.conftest import finished, state_is, wait_job

pytestmark = pytest.mark.cluster

RELEASES = {"0.1.0": "0012"}   # each release and the schema it shipped (CHANGELOG.md)
SECRET = "upgrade-test-secret"
USER, GROUP, FOLDER = str(uuid.uuid4()), str(uuid.uuid4()), uuid.uuid4().hex
ACCESS, SECRET_KEY = "AKUPGRADE000000000", "sk-upgrade-0123456789abcdef0123456789abcd"


def rows_of_0012(account: str, running: tuple[str, str, str], ended: str, folder: str) -> list[str]:
    """What 0.1.0 (schema 0012) wrote for a user with a project, a key, a folder and two sessions."""
    now = "CURRENT_TIMESTAMP"
    sid, job_id, tag = running
    session_cols = ("id, name, access_key, user_uuid, domain_name, group_id, unix_user, slurm_account, partition, "
                    "image, image_path, architecture, type, environ, mounts, resources, resource_opts, cluster_size, "
                    "cluster_mode, status, status_data, status_changed, status_history, result, "
                    "termination_requested, job_id, job_tag, work_dir, nodes, service_ports, num_queries, "
                    "created_at, started_at, startup_command")
    return [
        f"INSERT INTO domains (name, description, is_active, total_resource_slots, allowed_vfolder_hosts, "
        f"allowed_docker_registries, dotfiles, created_at, modified_at) VALUES ('default', '', true, '{{}}', "
        f"'{{}}', '[]', '[]', {now}, {now})",
        f"INSERT INTO keypair_resource_policies (name, default_for_unspecified, total_resource_slots, "
        f"max_session_lifetime, max_concurrent_sessions, max_concurrent_sftp_sessions, max_containers_per_session, "
        f"max_vfolder_count, max_vfolder_size, idle_timeout, allowed_vfolder_hosts, created_at) VALUES ('default', "
        f"'UNLIMITED', '{{}}', 0, 30, 1, 1, 0, 0, 0, '{{}}', {now})",
        f"INSERT INTO users (uuid, username, email, need_password_change, full_name, description, status, "
        f"domain_name, role, unix_user, created_at, modified_at) VALUES ('{USER}', 'alice', 'alice@x.org', false, '', "
        f"'', 'active', 'default', 'user', 'alice', {now}, {now})",
        f"INSERT INTO groups (id, name, description, is_active, domain_name, total_resource_slots, "
        f"allowed_vfolder_hosts, slurm_account, dotfiles, created_at, modified_at) VALUES ('{GROUP}', 'default', '', "
        f"true, 'default', '{{}}', '{{}}', '{account}', '[]', {now}, {now})",
        f"INSERT INTO association_groups_users (group_id, user_id) VALUES ('{GROUP}', '{USER}')",
        f"INSERT INTO keypairs (access_key, secret_key, user_id, \"user\", is_active, is_admin, resource_policy, "
        f"rate_limit, num_queries, dotfiles, bootstrap_script, created_at, modified_at) VALUES ('{ACCESS}', "
        f"'{sealed.seal(SECRET_KEY)}', 'alice@x.org', '{USER}', true, false, 'default', 1000, 7, '[]', '', {now}, "
        f"{now})",
        f"INSERT INTO vfolders (id, name, host, domain_name, unix_user, path, creator, usage_mode, permission, "
        f"cloneable, status, created_at, user_uuid) VALUES ('{FOLDER}', 'data', 'local', 'default', 'alice', "
        f"'{folder}', 'alice@x.org', 'general', 'rw', false, 'ready', {now}, '{USER}')",
        f"INSERT INTO sessions ({session_cols}) VALUES ('{sid}', 'upgraded', '{ACCESS}', '{USER}', 'default', "
        f"'{GROUP}', 'alice', '{account}', 'debug', 'python', '/srv/images/python', 'x86_64', 'batch', '{{}}', '[]', "
        f"'{{\"cpu\": 1, \"mem\": 268435456}}', '{{}}', 1, 'single-node', 'RUNNING', '{{}}', {now}, '{{}}', "
        f"'UNDEFINED', false, '{job_id}', '{tag}', '/w/{sid}', '[]', '[]', 0, {now}, {now}, 'sleep 300')",
        f"INSERT INTO sessions ({session_cols}) VALUES ('{ended}', 'old', '{ACCESS}', '{USER}', 'default', '{GROUP}', "
        f"'alice', '{account}', 'debug', 'python', '/srv/images/python', 'x86_64', 'batch', '{{}}', '[]', '{{}}', "
        f"'{{}}', 1, 'single-node', 'TERMINATED', '{{}}', {now}, '{{}}', 'SUCCESS', false, '1', 'old:{ended}', "
        f"'/w/{ended}', '[]', '[]', 0, {now}, {now}, 'true')",
    ]


@pytest.mark.parametrize("release", sorted(RELEASES))
async def test_a_release_database_with_a_running_session_upgrades_to_head(db_url, cluster, account, admin_runner,
                                                                          release):
    schema = RELEASES[release]
    prefix = f"upg-{uuid.uuid4().hex[:6]}:"
    sid, ended = str(uuid.uuid4()), str(uuid.uuid4())
    submitted = await admin_runner.run(
        ["sbatch", "--parsable", f"--account={account}", "--partition=debug", "--mem=64M", "--job-name=upgrade",
         f"--comment={prefix}{sid}", "--output=/dev/null", "--chdir=/tmp", "--wrap=sleep 300"], user="alice")
    assert submitted.ok, submitted.stderr
    job_id = submitted.stdout.strip().split(";")[0]
    settings = BridgeSettings(**{**dev_cluster_overrides(cluster), "database": {"url": db_url}, "secret": SECRET})
    settings.slurm.job_tag_prefix = prefix
    slurm = build_slurm_client(settings)
    try:
        await wait_job(slurm, job_id, state_is(JobState.RUNNING), timeout_s=300)   # a busy cluster starts it later
        await asyncio.to_thread(engine.upgrade, db_url, schema)
        sealed.use_secret(SECRET)
        e = engine.create_engine(db_url)
        try:
            async with e.begin() as conn:
                folder = f"{settings.storage.hosts['local']}/alice/{FOLDER}"
                for sql in rows_of_0012(account, (sid, job_id, f"{prefix}{sid}"), ended, folder):
                    await conn.execute(text(sql))
        finally:
            await e.dispose()

        await asyncio.to_thread(engine.upgrade, db_url)
        await asyncio.to_thread(engine.downgrade, db_url, schema)   # where Alembic allows: back, and up again
        await asyncio.to_thread(engine.upgrade, db_url)

        app = create_app(settings)   # its watcher and start-up reconciliation run against the real cluster
        async with app.router.lifespan_context(app), httpx.AsyncClient(
                transport=httpx.ASGITransport(app=app), base_url="http://upgrade") as http:
            async def call(method: str, path: str) -> httpx.Response:
                headers = signing.auth_headers(ACCESS, SECRET_KEY, method=method, path_qs=path, host="upgrade",
                                               content_type="application/json", version="v6.20220615")
                return await http.request(method, path, headers=headers)

            info = await call("GET", f"/session/{sid}")
            assert info.status_code == 200 and info.json()["status"] == "RUNNING", info.text
            assert (await call("GET", f"/session/{ended}")).json()["status"] == "TERMINATED"
            assert (await slurm.jobs([job_id]))[0].state is JobState.RUNNING   # reconciliation left it alone
            folders = await call("GET", "/folders")
            assert [f["name"] for f in folders.json()] == ["data"], folders.text
            assert (await call("DELETE", f"/session/{sid}")).status_code == 200
            await wait_job(slurm, job_id, finished)
            for _ in range(120):   # the watcher's next look after the job's end
                if (await call("GET", f"/session/{sid}")).json()["status"] in ("TERMINATED", "CANCELLED"):
                    break
                await asyncio.sleep(0.5)
            else:
                pytest.fail("the upgraded gateway never saw the session end")
    finally:
        await admin_runner.run(["scancel", job_id])
        await slurm.aclose()
