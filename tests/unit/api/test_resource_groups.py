"""Resource groups, quotas the gateway can know, presets and the freeze: REST, GraphQL and session creation
agree, and a refused request never reaches Slurm (gw_no_submit fails any sbatch)."""

from __future__ import annotations

import asyncio

from sqlalchemy import select

from bridge.adapters.db.tables import GroupRow, KeypairRow, SessionRow, UserRow
from bridge.errors import SlurmRejected
from bridge.services import accounts


async def _gql_ok(gw, query, variables=None):
    r = await gw.gql("root", query, variables)
    assert "errors" not in r, r
    name, out = next(iter(r["data"].items()))
    assert out["ok"], out
    return out


async def _project_id(gw, name):
    async with gw.app.state.db.unit_of_work() as s:
        return (await accounts.get_group(s, name)).id


async def _names(gw, who, group):
    r = await gw.request("GET", f"/scaling-groups?group={group}", who)
    assert r.status_code == 200, r.text
    return [g["name"] for g in r.json()["scaling_groups"]]


async def _hold(gw, who, status, resources, group="default", cluster_size=1, job_id=None):
    """An unfinished session of `who` holding `resources` (as if Slurm had it)."""
    async with gw.app.state.db.unit_of_work() as s:
        user = (await s.execute(select(UserRow).where(UserRow.username == who))).scalar_one()
        kp = (await s.execute(select(KeypairRow).where(KeypairRow.user == user.uuid))).scalars().first()
        g = (await s.execute(select(GroupRow).where(GroupRow.name == group))).scalar_one()
        s.add(SessionRow(name=f"held-{status.lower()}", access_key=kp.access_key, user_uuid=user.uuid,
                         domain_name=user.domain_name, group_id=g.id, unix_user=user.unix_user,
                         slurm_account=g.slurm_account, partition="debug", image="python", image_path="/x",
                         job_tag="t", work_dir="/tmp/w", status=status, resources=resources,
                         cluster_size=cluster_size, job_id=job_id))


async def test_partitions_become_groups_open_to_every_domain(gw):
    assert await _names(gw, "alice", "default") == ["debug", "gpu"]
    r = await gw.gql("root", 'query { scaling_groups_for_domain(domain: "other") { name slurm_state } }')
    assert [g["name"] for g in r["data"]["scaling_groups_for_domain"]] == ["debug", "gpu"]


async def test_a_group_opened_to_one_project_only_is_invisible_and_unusable_outside_it(gw_no_submit):
    gw = gw_no_submit
    physics = await _project_id(gw, "physics")   # bob is a member, alice is not
    await _gql_ok(gw, 'mutation { disassociate_scaling_group_with_domain(scaling_group: "gpu", domain: "default") '
                      '{ ok msg } }')
    await _gql_ok(gw, 'mutation($g: UUID!) { associate_scaling_group_with_user_group(scaling_group: "gpu", '
                      'user_group: $g) { ok msg } }', {"g": physics})
    # REST
    assert await _names(gw, "alice", "default") == ["debug"]
    assert await _names(gw, "bob", "physics") == ["debug", "gpu"]
    assert await _names(gw, "bob", "default") == ["debug"]           # the project decides, not the person
    r = await gw.request("GET", "/scaling-groups?group=physics", "alice")
    assert r.status_code == 403                                      # not her project: not even its list
    # GraphQL
    seen = await gw.gql("alice", "query { scaling_groups { name } scaling_group(name: \"gpu\") { name } }")
    assert [g["name"] for g in seen["data"]["scaling_groups"]] == ["debug"] and seen["data"]["scaling_group"] is None
    seen = await gw.gql("bob", "query { scaling_groups { name } }")
    assert [g["name"] for g in seen["data"]["scaling_groups"]] == ["debug", "gpu"]
    r = await gw.gql("root", "query($g: String!) { scaling_groups_for_user_group(user_group: $g) { name } }",
                     {"g": physics})
    assert [g["name"] for g in r["data"]["scaling_groups_for_user_group"]] == ["gpu"]
    # session creation: refused before Slurm is asked
    r = await gw.request("POST", "/session", "alice", json={"name": "on-gpu", "image": "python",
                                                             "config": {"scaling_group": "gpu"}})
    assert r.status_code == 403 and "gpu" in r.json()["msg"], r.text
    r = await gw.request("POST", "/session", "alice", json={"name": "on-nope", "image": "python",
                                                             "config": {"scaling_group": "nope"}})
    assert r.status_code == 400 and "nope" in r.json()["msg"]
    # a keypair association opens it to that key alone
    alice_key = gw.keys["alice"].access
    await _gql_ok(gw, 'mutation($k: String!) { associate_scaling_group_with_keypair(scaling_group: "gpu", '
                      'access_key: $k) { ok msg } }', {"k": alice_key})
    assert await _names(gw, "alice", "default") == ["debug", "gpu"]
    assert await _names(gw, "bob", "default") == ["debug"]


async def test_only_superadmins_change_groups_and_deleted_ones_stay_deleted(gw):
    r = await gw.gql("ladmin", 'mutation { delete_scaling_group(name: "gpu") { ok msg } }')
    assert r["data"]["delete_scaling_group"] is None and "Forbidden" in r["errors"][0]["message"]
    await _gql_ok(gw, 'mutation { delete_scaling_group(name: "gpu") { ok msg } }')
    gw.app.state.sessions.resource_groups._known = frozenset()   # as after a restart: partitions read again
    assert await _names(gw, "alice", "default") == ["debug"]
    r = await gw.gql("root", 'mutation { create_scaling_group(name: "tpu", props: {description: "x"}) { ok msg } }')
    assert r["data"]["create_scaling_group"]["ok"] is False and "partition" in r["data"]["create_scaling_group"]["msg"]
    out = await _gql_ok(gw, 'mutation { create_scaling_group(name: "gpu", props: {description: "GPUs", '
                            'driver: "static", scheduler: "fifo"}) { ok msg scaling_group { name description } } }')
    assert out["scaling_group"] == {"name": "gpu", "description": "GPUs"}
    assert await _names(gw, "alice", "default") == ["debug"]          # created again, but open to nobody yet
    await _gql_ok(gw, 'mutation { associate_scaling_group_with_domain(scaling_group: "gpu", domain: "default") '
                      '{ ok msg } }')
    assert await _names(gw, "alice", "default") == ["debug", "gpu"]


async def test_a_new_domain_gets_the_public_groups(gw):
    await _gql_ok(gw, 'mutation { modify_scaling_group(name: "gpu", props: {is_public: false}) { ok msg } }')
    await _gql_ok(gw, 'mutation { create_domain(name: "fresh", props: {}) { ok msg } }')
    r = await gw.gql("root", 'query { domain(name: "fresh") { scaling_groups } }')
    assert r["data"]["domain"]["scaling_groups"] == ["debug"]


async def test_a_project_gpu_quota_counts_every_unfinished_session(gw_no_submit):
    gw = gw_no_submit
    gid = await _project_id(gw, "default")
    await _gql_ok(gw, 'mutation($g: UUID!) { modify_group(gid: $g, props: {total_resource_slots: '
                      '"{\\"cuda.device\\": \\"2\\"}"}) { ok msg } }', {"g": gid})
    await _hold(gw, "alice", "RUNNING", {"cpu": "1", "mem": "1073741824", "cuda.device": "1"})
    await _hold(gw, "bob", "PENDING", {"cpu": "1", "mem": "1073741824", "cuda.device": "1"})
    await _hold(gw, "alice", "TERMINATED", {"cpu": "1", "mem": "1073741824", "cuda.device": "4"})   # ended: free
    r = await gw.request("POST", "/session", "alice", json={
        "name": "third", "image": "python", "config": {"resources": {"cuda.device": "1"}}})
    assert r.status_code == 412, r.text
    body = r.json()
    assert body["type"].endswith("/quota-exceeded") and "project default" in body["msg"]
    assert "2 cuda.device" in body["msg"] and body["data"]["slot"] == "cuda.device"
    # more than the whole quota on its own: a request that could never start
    r = await gw.request("POST", "/session", "alice", json={
        "name": "huge", "image": "python", "config": {"resources": {"cuda.device": "3"}}})
    assert r.status_code == 406 and "project default" in r.json()["msg"]


async def test_check_presets_reflects_quotas_and_free_nodes(gw):
    for name, slots in (("small", '{\\"cpu\\": \\"1\\", \\"mem\\": \\"1g\\"}'),
                        ("two-gpus", '{\\"cpu\\": \\"1\\", \\"mem\\": \\"1g\\", \\"cuda.device\\": \\"2\\"}'),
                        ("big", '{\\"cpu\\": \\"8\\", \\"mem\\": \\"1g\\"}')):
        await _gql_ok(gw, f'mutation {{ create_resource_preset(name: "{name}", props: {{resource_slots: "{slots}"}}) '
                          '{ ok msg } }')
    r = await gw.request("GET", "/resource/presets", "alice")
    assert {p["name"] for p in r.json()["presets"]} == {"small", "two-gpus", "big"}
    r = await gw.request("POST", "/resource/check-presets", "alice", json={"group": "default"})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["keypair_limits"]["cpu"] == "Infinity" and body["keypair_using"]["cpu"] == "0"
    assert body["scaling_group_remaining"] == {"cpu": "4", "mem": str(4000 * 1024**2), "cuda.device": "2"}
    assert set(body["scaling_groups"]) == {"debug", "gpu"}
    fits = {p["name"]: p["allocatable"] for p in body["presets"]}
    assert fits == {"small": True, "two-gpus": True, "big": False}   # n1 has 4 CPUs
    # the project's quota, with one GPU held, leaves one: two-gpus no longer fits
    gid = await _project_id(gw, "default")
    await _gql_ok(gw, 'mutation($g: UUID!) { modify_group(gid: $g, props: {total_resource_slots: '
                      '"{\\"cuda.device\\": \\"2\\"}"}) { ok msg } }', {"g": gid})
    await _hold(gw, "bob", "RUNNING", {"cpu": "1", "mem": "1073741824", "cuda.device": "1"})
    body = (await gw.request("POST", "/resource/check-presets", "alice", json={"group": "default"})).json()
    assert body["group_remaining"]["cuda.device"] == "1" and body["keypair_using"]["cuda.device"] == "0"
    assert {p["name"]: p["allocatable"] for p in body["presets"]}["two-gpus"] is False
    # a node filling up (Slurm's view) is seen too
    from bridge.adapters.slurm.base import NodeInfo

    async def busy():
        return [NodeInfo("n1", ("MIXED",), 4, 4, 4000, 1000, "gpu:2", "gpu:0", ("debug",), "127.0.0.1")]
    gw.app.state.sessions.facts_nodes.fetch = busy
    gw.app.state.sessions.facts_nodes._value = []
    body = (await gw.request("POST", "/resource/check-presets", "alice", json={"group": "default"})).json()
    assert body["scaling_group_remaining"]["cpu"] == "0" and not any(p["allocatable"] for p in body["presets"])
    r = await gw.request("POST", "/resource/check-presets", "alice", json={"group": "physics"})
    assert r.status_code == 403


async def test_a_frozen_gateway_refuses_new_sessions(gw_no_submit):
    gw = gw_no_submit
    r = await gw.request("PUT", "/manager/status", "root", json={"status": "frozen"})
    assert r.status_code == 204
    r = await gw.request("POST", "/session", "alice", json={"name": "during", "image": "python"})
    assert r.status_code == 503 and r.json()["type"].endswith("/server-frozen")
    assert (await gw.request("GET", "/manager/status", "alice")).json()["status"] == "frozen"


async def test_a_forced_freeze_ends_every_session_in_one_cancel(gw):
    cancelled = []

    async def cancel(job_ids, *, user=None, signal=None):
        cancelled.append((list(job_ids), user))
    gw.app.state.sessions.slurm.cancel = cancel
    await _hold(gw, "alice", "RUNNING", {"cpu": "1"}, job_id="77")
    await _hold(gw, "bob", "PENDING", {"cpu": "1"}, job_id="78")
    r = await gw.request("PUT", "/manager/status", "root", json={"status": "frozen", "force_kill": True})
    assert r.status_code == 204
    assert cancelled == [(["77", "78"], None)] or cancelled == [(["78", "77"], None)]
    async with gw.app.state.db.unit_of_work() as s:
        rows = (await s.execute(select(SessionRow))).scalars().all()
    assert {r.status for r in rows} == {"TERMINATING"} and all("frozen" in r.status_info for r in rows)


async def test_a_keypairs_concurrency_is_its_unfinished_sessions_and_its_policys_limit(gw):
    await _hold(gw, "alice", "RUNNING", {"cpu": "1"})
    await _hold(gw, "alice", "PENDING", {"cpu": "1"})
    await _hold(gw, "alice", "TERMINATED", {"cpu": "1"})
    r = await gw.gql("alice", "query { keypair { concurrency_used concurrency_limit } }")
    assert r["data"]["keypair"] == {"concurrency_used": 2, "concurrency_limit": 30}
    key = gw.keys["alice"].access
    r = await gw.gql("root", 'mutation($k: String!) { modify_keypair(access_key: $k, props: {concurrency_limit: 5}) '
                     '{ ok msg } }', {"k": key})
    refused = r["data"]["modify_keypair"]
    assert refused["ok"] is False and "max_concurrent_sessions" in refused["msg"]


async def test_two_creations_at_once_do_not_both_fit_under_a_quota_for_one(gw_no_submit):
    gw = gw_no_submit
    gid = await _project_id(gw, "default")
    await _gql_ok(gw, 'mutation($g: UUID!) { modify_group(gid: $g, props: {total_resource_slots: '
                      '"{\\"cpu\\": \\"1\\"}"}) { ok msg } }', {"g": gid})
    sessions = gw.app.state.sessions
    real_mounts = sessions.folders.mounts

    async def slow_mounts(*a, **kw):   # both are past the first look before either is added
        await asyncio.sleep(0.3)
        return await real_mounts(*a, **kw)
    sessions.folders.mounts = slow_mounts
    submitted = []

    async def submit(spec, *, user):
        submitted.append(spec.name)
        await asyncio.sleep(0.5)   # still held while the other is looked at
        raise SlurmRejected("stop here: admitted")
    sessions._submit = lambda row, *a, **kw: submit(row, user=row.unix_user)
    from bridge.adapters.db.tables import ImageRow
    from bridge.services.images import Image

    async def lookup(ref, user=None):   # a registered image, as the site's would be
        return Image.from_row(ImageRow(name="python", path="/srv/images/python.sif", labels={}, aliases=[]))
    sessions.images.lookup = lookup
    one, two = await asyncio.gather(*(gw.request("POST", "/session", who, json={
        "name": f"race-{who}", "image": "python", "config": {"resources": {"cpu": "1"}}}) for who in ("alice", "bob")))
    statuses = sorted([one.status_code, two.status_code])
    assert statuses == [400, 412] and len(submitted) == 1, (one.text, two.text)   # one admitted, one refused
