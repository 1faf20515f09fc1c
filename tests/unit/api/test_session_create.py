"""Session creation refuses bad input before anything reaches Slurm, with the field named."""

import pytest

from bridge.adapters.db.tables import SessionRow


@pytest.mark.parametrize(("body", "needle"), [
    ({"name": "ab", "image": "python"}, "name"),
    ({"name": "good-name"}, "image"),
    ({"name": "good-name", "image": "python", "type": "weird"}, "type"),
    ({"name": "good-name", "image": "python", "type": "batch"}, "startupCommand"),
    ({"name": "good-name", "image": "python", "config": {"resources": {"cpu": "many"}}}, "resources.cpu"),
    ({"name": "good-name", "image": "python", "config": {"resources": {"gpu": "1"}}}, "resources.gpu"),
    ({"name": "good-name", "image": "python", "config": {"environ": {"BAD NAME": "1"}}}, "config.environ"),
    ({"name": "good-name", "image": "python", "config": {"environ": "notadict"}}, "config.environ"),
    ({"name": "good-name", "image": "python", "group": "nope"}, "group"),
    ({"name": "good-name", "image": "python", "domain": "other"}, "domain"),
    ({"name": "good-name", "image": "python", "config": {"scaling_group": "nope"}}, "scaling_group"),
    ({"name": "good-name", "image": "python", "starts_at": "tomorrow-ish"}, "starts_at"),
    ({"name": "good-name", "image": "python", "dependencies": ["nonexistent"]}, "dependencies"),
    ({"name": "good-name", "image": "python", "batch_timeout": -5}, "batch_timeout"),
    ({"name": "good-name", "image": "python", "callback_url": "ftp://x"}, "callback_url"),
    ({"name": "good-name", "image": "/no/such/image"}, "unknown image"),
    ({"name": "good-name", "image": "python", "maxWaitSeconds": -1}, "maxWaitSeconds"),
    # larger than any node of the resource group (FakeSlurm's n1: 4 CPUs, 4000 MB, 2 GPUs): Slurm would only
    # say "Requested node configuration is not available"
    ({"name": "good-name", "image": "python", "config": {"resources": {"cpu": "8"}}},
     "resources.cpu: no node of resource group debug has 8 CPUs (the largest has 4)"),
    ({"name": "good-name", "image": "python", "config": {"resources": {"mem": "8g"}}}, "resources.mem"),
    ({"name": "good-name", "image": "python", "config": {"resources": {"cuda.device": "3"}}},
     "resources.cuda.device"),
])
async def test_bad_creation_is_a_400_naming_the_field_and_writes_nothing(gw_no_submit, body, needle):
    r = await gw_no_submit.request("POST", "/session", "alice", json=body)
    assert r.status_code == 400, r.text
    problem = r.json()
    assert problem["type"].endswith("/invalid-api-params") and needle in problem["msg"]
    async with gw_no_submit.app.state.db.unit_of_work() as s:
        assert (await s.get(SessionRow, "x")) is None
        from sqlalchemy import func, select

        assert (await s.execute(select(func.count()).select_from(SessionRow))).scalar() == 0


async def test_policy_limits_refuse_before_slurm(gw_no_submit):
    q = """mutation { create_keypair_resource_policy(name: "tiny", props: {default_for_unspecified: "LIMITED",
           total_resource_slots: "{\\"cpu\\": \\"2\\", \\"mem\\": \\"1g\\"}", max_concurrent_sessions: 1}) { ok } }"""
    assert (await gw_no_submit.gql("root", q))["data"]["create_keypair_resource_policy"]["ok"]
    bob = gw_no_submit.keys["bob"].access
    m = f'mutation {{ modify_keypair(access_key: "{bob}", props: {{resource_policy: "tiny"}}) {{ ok }} }}'
    assert (await gw_no_submit.gql("root", m))["data"]["modify_keypair"]["ok"]
    r = await gw_no_submit.request("POST", "/session", "bob", json={
        "name": "too-big", "image": "python", "config": {"resources": {"cpu": "4"}}})
    assert r.status_code == 406 and "resources.cpu" in r.json()["msg"]
    r = await gw_no_submit.request("POST", "/session", "bob", json={
        "name": "too-big", "image": "python", "config": {"resources": {"mem": "2g"}}})
    assert r.status_code == 406 and "resources.mem" in r.json()["msg"]


async def test_admins_only_act_for_others(gw_no_submit):
    r = await gw_no_submit.request("POST", "/session", "alice", json={
        "name": "for-bob", "image": "python", "owner_access_key": gw_no_submit.keys["bob"].access})
    assert r.status_code == 403


async def test_unknown_sessions_are_404_problems(gw):
    for path in ("/session/nosuch", "/session/nosuch/logs", "/session/00000000-0000-0000-0000-000000000000"):
        r = await gw.request("GET", path, "alice")
        assert r.status_code == 404 and r.json()["type"].endswith("/session-not-found")
    r = await gw.request("DELETE", "/session/nosuch", "alice")
    assert r.status_code == 404
