"""The folder service's queries (visible folders, lookups by name, invitations, shares, project members, the
accounts an ACL must name, mounts) on SQLite and PostgreSQL alike. The disk is a temporary storage host;
the user switch and the ACL tools are faked as in tests/unit/api/test_folder_sharing.py."""

from __future__ import annotations

import asyncio

from bridge.adapters.db.engine import Database, upgrade
from bridge.config import BridgeSettings
from bridge.domain.auth import AuthContext
from bridge.services import accounts
from bridge.services.folders import FolderService
from tests.unit.api.test_folder_sharing import WithAcls


def _auth(kp, user, role: str = "user") -> AuthContext:
    return AuthContext(kp.access_key, user.uuid, user.email, user.username, role, "default", user.unix_user,
                       False, "default", 100)


async def test_sharing_on_each_database(db_url, tmp_path):
    await asyncio.to_thread(upgrade, db_url)
    db = Database(db_url)
    host = tmp_path / "vf"
    host.mkdir(mode=0o777)
    settings = BridgeSettings(database={"url": db_url}, storage={"hosts": {"local": str(host)},
                                                                 "default_host": "local"})
    svc = FolderService(db, WithAcls(), settings)
    try:
        async with db.unit_of_work() as s:
            await accounts.ensure_domain(s, "default")
            await accounts.ensure_policy(s, "default")
            team = await accounts.create_group(s, name="team", slurm_account="team")
            made = {}
            for who, role in (("alice", "user"), ("bob", "user"), ("carol", "user"), ("boss", "admin")):
                u = await accounts.create_user(s, email=f"{who}@x.org", unix_user=who, role=role)
                if who != "carol":
                    await accounts.add_member(s, team, u)
                made[who] = _auth(await accounts.create_keypair(s, u), u, role)
        alice, bob, carol, boss = (made[w] for w in ("alice", "bob", "carol", "boss"))

        mine = await svc.create(alice, "data")
        await svc.create(bob, "data")   # the same name, bob's own
        assert await svc.invite(alice, "data", "ro", ["bob@x.org", "carol@x.org"]) == ["bob@x.org", "carol@x.org"]
        got = await svc.invitations(bob)
        assert [(i["inviter"], i["vfolder_name"]) for i in got] == [("alice@x.org", "data")]
        assert len(await svc.invitations(alice, sent=True)) == 2
        carols = (await svc.invitations(carol))[0]["id"]
        await svc.accept(carol, carols)
        assert [a.row.name for a in await svc.visible(carol)] == ["data"]
        assert (await svc.get(carol, "data")).permission == "ro"
        assert (await svc.get(bob, "data")).is_owner   # his own comes first
        assert [(s["shared_to"]["email"], s["perm"]) for s in await svc.shared(alice)] == [("carol@x.org", "ro")]

        project = await svc.create(boss, "common", group="team", permission="rw")
        assert {a.row.name for a in await svc.visible(bob)} == {"data", "common"}
        assert [m.mode for m in await svc.mounts(bob.user_uuid, ["common"], None, project.row.group_id)] == ["rw"]
        assert await svc.share(boss, "common", "ro", ["bob@x.org"]) == ["bob@x.org"]
        assert (await svc.get(bob, "common")).permission == "ro"
        touched = await svc.touching(user_uuid=bob.user_uuid)
        assert touched == {project.row.id}
        assert await svc.touching(user_uuid=carol.user_uuid) == {mine.row.id}
        await svc.sync_many(touched | {mine.row.id})
        assert svc.runner.acls[project.row.path] == {"alice": "rw", "bob": "ro"}
        assert svc.runner.acls[mine.row.path] == {"carol": "ro"}
        await svc.leave(carol, "data")
        assert svc.runner.acls[mine.row.path] == {} and await svc.visible(carol) == []
    finally:
        await db.dispose()
