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
    ({"name": "good-name", "image": "python", "clusterSize": 2, "clusterMode": "star"}, "clusterMode"),
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


@pytest.mark.parametrize(("body", "needle"), [
    # a multi-node cluster needs as many nodes (FakeSlurm has one); a single-node one, all its kernels on one
    ({"clusterSize": 2, "clusterMode": "multi-node"},
     "a multi-node cluster of 2 kernels needs 2 nodes; resource group debug has 1"),
    ({"clusterSize": 2, "config": {"resources": {"cpu": "3"}}},
     "no node of resource group debug has 6 CPUs (2 kernels of 3"),
])
async def test_clusters_larger_than_the_resource_group_are_refused_before_slurm(gw_no_submit, body, needle):
    from sqlalchemy import select

    from bridge.adapters.db.tables import KeypairResourcePolicyRow

    async with gw_no_submit.app.state.db.unit_of_work() as s:
        for policy in (await s.execute(select(KeypairResourcePolicyRow))).scalars():
            policy.max_containers_per_session = 8
    r = await gw_no_submit.request("POST", "/session", "alice", json={"name": "good-name", "image": "python", **body})
    assert r.status_code == 400 and needle in r.json()["msg"], r.text


async def test_interactive_clusters_are_refused_where_kernels_have_private_networks(gw_no_submit):
    gw_no_submit.app.state.settings.sessions.kernel_network = "private"
    body = {"name": "good-name", "image": "python", "clusterSize": 2}
    r = await gw_no_submit.request("POST", "/session", "alice", json=body)
    assert r.status_code == 400 and "kernel_network = private" in r.json()["msg"], r.text


async def _templates(gw, main_image: str, worker_resources: dict, mode: str = "multi-node") -> str:
    import json

    async def made(path, template):
        r = await gw.request("POST", path, "alice", json={"payload": json.dumps(template)})
        assert r.status_code == 200, r.text
        return r.json()[0]["id"]

    main = await made("/template/session", {"api_version": "v1", "kind": "taskTemplate", "metadata": {"name": "m"},
                                            "spec": {"type": "batch", "kernel": {"image": main_image,
                                                                                  "run": {"startup": "true"}}}})
    worker = await made("/template/session", {"api_version": "v1", "kind": "taskTemplate", "metadata": {"name": "w"},
                                              "spec": {"kernel": {"image": "python"}, "resources": worker_resources}})
    return await made("/template/cluster", {
        "api_version": "v1", "kind": "clusterTemplate", "mode": mode, "metadata": {"name": "c"},
        "spec": {"nodes": [{"role": "main", "session_template": main},
                           {"role": "worker", "session_template": worker}]}})


@pytest.mark.parametrize(("image", "worker", "mode", "needle"), [
    ("docker://127.0.0.1:5000/x:1", {}, "multi-node", "is a registry image"),
    ("python", {"cpu": "2"}, "single-node", "the mode must be multi-node"),
])
async def test_cluster_templates_that_cannot_run_are_refused_before_slurm(gw_no_submit, image, worker, mode, needle):
    tid = await _templates(gw_no_submit, image, worker, mode)
    r = await gw_no_submit.request("POST", "/session/_/create-cluster", "alice",
                                   json={"clientSessionToken": "good-name", "template_id": tid, "type": "batch"})
    assert r.status_code == 400 and needle in r.json()["msg"], r.text


async def test_the_database_keeps_one_active_session_per_name_when_processes_race(gw, monkeypatch):
    """Two gateway processes each hold only their own admission lock: both may pass the name check before
    either inserts. The database's partial unique index (uq_sessions_active_name) refuses the second insert,
    which answers as the check would have (400, the holder's id), submits nothing and leaves no row."""
    from sqlalchemy import func, select

    from bridge.adapters.db.tables import ImageRow
    from bridge.services import session_launch
    from tests.unit.api.test_fuzz import AgreeingRunner

    gw.app.state.sessions.runner = AgreeingRunner()   # the session folder's commands, without a cluster
    async with gw.app.state.db.unit_of_work() as s:   # an image the gateway knows, without a cluster to look in
        s.add(ImageRow(name="python", path="/srv/images/python", aliases=[], labels={}))
    first = await gw.request("POST", "/session", "alice", json={"name": "twin", "image": "python",
                                                                 "enqueueOnly": True})
    assert first.status_code == 201, first.text
    submitted = dict(gw.app.state.slurm.job_table)

    async def raced(*_a, **_kw):   # the other process's row landed after this one's checks
        return None

    monkeypatch.setattr(session_launch, "_admit", raced)
    second = await gw.request("POST", "/session", "alice", json={"name": "twin", "image": "python",
                                                                  "enqueueOnly": True, "reuseIfExists": False})
    assert second.status_code == 400, second.text
    assert second.json()["type"].endswith("/session-already-exists")
    assert second.json()["data"]["existingSessionId"] == first.json()["sessionId"]
    reused = await gw.request("POST", "/session", "alice", json={"name": "twin", "image": "python",
                                                                  "enqueueOnly": True})   # reuseIfExists: true
    assert reused.status_code == 200 and reused.json()["sessionId"] == first.json()["sessionId"], reused.text
    assert gw.app.state.slurm.job_table == submitted
    async with gw.app.state.db.unit_of_work() as s:
        assert (await s.execute(select(func.count()).select_from(SessionRow))).scalar() == 1
    # once the first has ended, the name is free again
    async with gw.app.state.db.unit_of_work() as s:
        row = await s.get(SessionRow, first.json()["sessionId"])
        row.status = "TERMINATED"
    third = await gw.request("POST", "/session", "alice", json={"name": "twin", "image": "python",
                                                                 "enqueueOnly": True})
    assert third.status_code == 201, third.text
