"""Alembic migrations and the accounts repository on SQLite and PostgreSQL alike."""

from __future__ import annotations

import asyncio

import pytest
from sqlalchemy import inspect, text

from bridge.adapters.db import engine
from bridge.adapters.db.tables import Base
from bridge.errors import InvalidAPIParameters
from bridge.services import accounts


async def tables(url: str) -> set[str]:
    e = engine.create_engine(url)
    try:
        async with e.connect() as conn:
            return set(await conn.run_sync(lambda c: inspect(c).get_table_names()))
    finally:
        await e.dispose()


async def test_upgrade_creates_every_table_and_downgrade_removes_them(db_url):
    await asyncio.to_thread(engine.upgrade, db_url)
    assert set(Base.metadata.tables) <= await tables(db_url)
    await asyncio.to_thread(engine.downgrade, db_url, "base")
    assert not (set(Base.metadata.tables) & await tables(db_url))
    await asyncio.to_thread(engine.upgrade, db_url)  # and back again
    assert set(Base.metadata.tables) <= await tables(db_url)


async def test_schema_matches_the_models(db_url):
    """No model change without a migration: autogenerate finds nothing to do after upgrade."""
    from alembic.autogenerate import compare_metadata
    from alembic.runtime.migration import MigrationContext

    await asyncio.to_thread(engine.upgrade, db_url)
    e = engine.create_engine(db_url)
    try:
        async with e.connect() as conn:
            diff = await conn.run_sync(lambda c: compare_metadata(MigrationContext.configure(c), Base.metadata))
    finally:
        await e.dispose()
    assert diff == []


async def carol_in_chem(s):
    """The default domain and policy, project chem, and carol in it with a keypair: (group, user, keypair)."""
    await accounts.ensure_domain(s, "default")
    await accounts.ensure_policy(s, "default")
    g = await accounts.create_group(s, name="chem", slurm_account="chem")
    u = await accounts.create_user(s, email="c@x.org", unix_user="carol")
    await accounts.add_member(s, g, u)
    return g, u, await accounts.create_keypair(s, u)


async def test_accounts_and_constraints(db_url):
    await asyncio.to_thread(engine.upgrade, db_url)
    db = engine.Database(db_url)
    try:
        async with db.unit_of_work() as s:
            _, _, kp = await carol_in_chem(s)
        with pytest.raises(InvalidAPIParameters):
            async with db.unit_of_work() as s:
                await accounts.create_group(s, name="chem")
        async with db.unit_of_work() as s:
            row = (await s.execute(text("SELECT user_id, is_admin FROM keypairs WHERE access_key = :k"),
                                   {"k": kp.access_key})).one()
            assert row.user_id == "c@x.org" and not row.is_admin
            n = (await s.execute(text("SELECT count(*) FROM association_groups_users"))).scalar_one()
            assert n == 1
    finally:
        await db.dispose()


async def test_upgrading_a_database_with_sessions_keeps_every_row(db_url):
    """0008 rebuilds `keypairs` (its secret column grows); on SQLite that is a copy, a drop and a rename,
    and with foreign keys enforced the drop failed as soon as a session referred to a keypair: a site with
    sessions could not upgrade. Rows made at 0007 (written as 0007 had them) must all be there at head."""
    await asyncio.to_thread(engine.upgrade, db_url, "0007")
    now = "CURRENT_TIMESTAMP"
    rows = [
        f"INSERT INTO domains (name, description, is_active, total_resource_slots, allowed_vfolder_hosts, "
        f"allowed_docker_registries, created_at, modified_at) VALUES ('default', '', true, '{{}}', '{{}}', '[]', "
        f"{now}, {now})",
        f"INSERT INTO keypair_resource_policies (name, default_for_unspecified, total_resource_slots, "
        f"max_session_lifetime, max_concurrent_sessions, max_containers_per_session, max_vfolder_count, "
        f"max_vfolder_size, idle_timeout, allowed_vfolder_hosts, created_at) VALUES ('default', 'UNLIMITED', "
        f"'{{}}', 0, 30, 1, 0, 0, 0, '{{}}', {now})",
        f"INSERT INTO users (uuid, username, email, need_password_change, full_name, description, status, "
        f"domain_name, role, unix_user, created_at, modified_at) VALUES ('u-1', 'old', 'old@x.org', false, '', '', "
        f"'active', 'default', 'user', 'old', {now}, {now})",
        f"INSERT INTO groups (id, name, description, is_active, domain_name, total_resource_slots, "
        f"allowed_vfolder_hosts, slurm_account, created_at, modified_at) VALUES ('g-1', 'default', '', true, "
        f"'default', '{{}}', '{{}}', 'default', {now}, {now})",
        f"INSERT INTO keypairs (access_key, secret_key, user_id, \"user\", is_active, is_admin, resource_policy, "
        f"rate_limit, num_queries, created_at, modified_at) VALUES ('AKOLD0000000000000', 'sk-old', 'old@x.org', "
        f"'u-1', true, false, 'default', 1000, 0, {now}, {now})",
        *(f"INSERT INTO sessions (id, name, access_key, user_uuid, domain_name, group_id, unix_user, "
          f"slurm_account, partition, image, image_path, architecture, type, status, status_history, environ, "
          f"mounts, resources, resource_opts, cluster_size, cluster_mode, job_tag, work_dir, status_data, "
          f"created_at, service_ports, status_changed, result, termination_requested, nodes, num_queries) "
          f"VALUES ('{sid}', 'kept', 'AKOLD0000000000000', 'u-1', 'default', 'g-1', 'old', 'default', 'debug', "
          f"'python', '/srv/images/python', 'x86_64', 'interactive', '{status}', '{{}}', '{{}}', '[]', '{{}}', "
          f"'{{}}', 1, 'single-node', 't', '/w', '{{}}', {now}, '[]', {now}, 'UNDEFINED', false, '[]', 0)"
          # two unfinished sessions of one name (possible before 0013's index) and an ended one
          for sid, status in (("s-1", "RUNNING"), ("s-2", "PENDING"), ("s-3", "TERMINATED"))),
    ]
    e = engine.create_engine(db_url)
    try:
        async with e.begin() as conn:
            for sql in rows:
                await conn.execute(text(sql))
    finally:
        await e.dispose()
    await asyncio.to_thread(engine.upgrade, db_url)
    db = engine.Database(db_url, secret="migration-test")
    try:
        async with db.unit_of_work() as s:
            assert (await s.execute(text("SELECT access_key FROM sessions WHERE id = 's-1'"))).scalar() \
                == "AKOLD0000000000000"
            assert (await s.execute(text("SELECT count(*) FROM keypairs"))).scalar() == 1
            # 0013: every session kept; the later unfinished twin renamed, the ended one left as it was
            names = dict((await s.execute(text("SELECT id, name FROM sessions"))).all())
            assert names == {"s-1": "kept", "s-2": "kept-s-2", "s-3": "kept"}
            if db_url.startswith("sqlite"):
                assert (await s.execute(text("PRAGMA foreign_key_check"))).all() == []
                assert (await s.execute(text("PRAGMA foreign_keys"))).scalar() == 1   # enforced again
    finally:
        await db.dispose()


async def test_the_database_holds_one_unfinished_session_per_name(db_url):
    """uq_sessions_active_name: a second unfinished session of one keypair and name is refused by the database
    itself; an ended one does not hold its name."""
    from sqlalchemy.exc import IntegrityError

    from bridge.adapters.db.tables import SessionRow

    await asyncio.to_thread(engine.upgrade, db_url)
    db = engine.Database(db_url, secret="constraint-test")

    def session(sid: str, status: str) -> SessionRow:
        return SessionRow(id=sid, name="twin", access_key=kp.access_key, user_uuid=u.uuid, domain_name="default",
                          group_id=g.id, unix_user="carol", slurm_account="chem", partition="debug", image="python",
                          image_path="/srv/images/python", job_tag="t", work_dir="/w", status=status)
    try:
        async with db.unit_of_work() as s:
            g, u, kp = await carol_in_chem(s)
        async with db.unit_of_work() as s:
            s.add(session("s-1", "RUNNING"))
            s.add(session("s-0", "TERMINATED"))
        with pytest.raises(IntegrityError):
            async with db.unit_of_work() as s:
                s.add(session("s-2", "PENDING"))
        async with db.unit_of_work() as s:
            (await s.get(SessionRow, "s-1")).status = "ERROR"   # type: ignore[union-attr]
        async with db.unit_of_work() as s:
            s.add(session("s-2", "PENDING"))
    finally:
        await db.dispose()
