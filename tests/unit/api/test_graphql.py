"""GraphQL permissions: users see their own objects, admins their domain, superadmins everything."""

import json

KP = "query($ak: String) { keypair(access_key: $ak) { access_key secret_key user_id is_admin } }"


def errors(res):
    return [e["message"] for e in res.get("errors", [])]


async def test_a_user_reads_their_own_keypair(gw):
    res = await gw.gql("alice", "query { keypair { user_id access_key secret_key is_active is_admin } }")
    kp = res["data"]["keypair"]
    assert kp["access_key"] == gw.keys["alice"].access and kp["secret_key"] == gw.keys["alice"].secret
    assert kp["user_id"] == "alice@x.org" and kp["is_admin"] is False


async def test_a_user_cannot_read_another_users_keypair(gw):
    res = await gw.gql("alice", KP, {"ak": gw.keys["bob"].access})
    assert res["data"]["keypair"] is None and any("Forbidden" in m for m in errors(res))
    res = await gw.gql("alice", "query { keypairs(email: \"bob@x.org\") { access_key } }")
    assert res["data"]["keypairs"] is None and errors(res)
    res = await gw.gql("alice", "query { keypair_list(limit: 10, offset: 0) { items { access_key } total_count } }")
    assert [k["access_key"] for k in res["data"]["keypair_list"]["items"]] == [gw.keys["alice"].access]


async def test_a_user_cannot_read_another_users_sessions_or_folders(gw):
    q = ("query($ak: String) { compute_session_list(limit: 5, offset: 0, access_key: $ak) "
         "{ items { id } total_count } }")
    res = await gw.gql("alice", q, {"ak": gw.keys["bob"].access})
    assert res["data"]["compute_session_list"] is None and any("Forbidden" in m for m in errors(res))
    res = await gw.gql("alice", q, {"ak": gw.keys["alice"].access})
    assert res["data"]["compute_session_list"] == {"items": [], "total_count": 0}
    res = await gw.gql("alice", "query($ak: String) { vfolder_list(limit: 5, offset: 0, access_key: $ak) "
                                "{ total_count } }", {"ak": gw.keys["bob"].access})
    assert errors(res)


async def test_users_and_groups_visibility(gw):
    res = await gw.gql("alice", "query { users { email } }")
    assert [u["email"] for u in res["data"]["users"]] == ["alice@x.org"]
    # another user and no user at all look the same: a user cannot probe which emails exist
    res = await gw.gql("alice", 'query { user(email: "bob@x.org") { email } }')
    nobody = await gw.gql("alice", 'query { user(email: "no-such@x.org") { email } }')
    assert res == nobody == {"data": {"user": None}}
    res = await gw.gql("bob", "query { groups { name slurm_account } }")
    assert sorted(g["name"] for g in res["data"]["groups"]) == ["default", "physics"]
    res = await gw.gql("alice", "query { groups { name } }")
    assert [g["name"] for g in res["data"]["groups"]] == ["default"]
    res = await gw.gql("root", "query { groups { name } }")
    assert sorted(g["name"] for g in res["data"]["groups"]) == ["default", "elsewhere", "physics"]
    res = await gw.gql("dadmin", "query { groups { name } users { email } }")  # admin of domain "other"
    assert [g["name"] for g in res["data"]["groups"]] == ["elsewhere"]
    assert [u["email"] for u in res["data"]["users"]] == ["dadmin@x.org"]


async def test_admin_listings_for_a_superadmin(gw):
    q = """query { user_list(limit: 2, offset: 1) { items { email groups { name } main_access_key } total_count }
                   domains { name scaling_groups } scaling_groups { name driver is_active }
                   keypair_resource_policies { name max_concurrent_sessions }
                   agent_list(limit: 10, offset: 0) { items { id status available_slots } total_count } }"""
    d = (await gw.gql("root", q))["data"]
    assert d["user_list"]["total_count"] == 5 and len(d["user_list"]["items"]) == 2
    assert {x["name"] for x in d["domains"]} == {"default", "other"} and d["domains"][0]["scaling_groups"]
    assert [s["name"] for s in d["scaling_groups"]] == ["debug", "gpu"]
    assert d["agent_list"]["items"][0]["available_slots"] == '{"cpu": "4", "mem": "4194304000", "cuda.device": "2"}'
    res = await gw.gql("alice", "query { agent_list(limit: 1, offset: 0) { total_count } }")
    assert errors(res)  # nodes are for superadmins


async def test_mutations_respect_roles_and_roll_back(gw):
    create = """mutation($email: String!, $input: UserInput!) { create_user(email: $email, props: $input) {
                  ok msg user { email unix_user groups { name } } } }"""
    props = {"username": "carol", "password": "pw", "need_password_change": False, "domain_name": "default",
             "role": "user", "unix_user": "carol"}
    res = await gw.gql("alice", create, {"email": "carol@x.org", "input": props})
    assert errors(res)  # a user cannot create users
    res = await gw.gql("dadmin", create, {"email": "carol@x.org", "input": props})
    assert errors(res)  # nor an admin of another domain
    bad = await gw.gql("root", create, {"email": "carol@x.org", "input": {**props, "group_ids": ["nope"]}})
    assert bad["data"]["create_user"]["ok"] is False and "nope" in bad["data"]["create_user"]["msg"]
    res = await gw.gql("root", 'query { user(email: "carol@x.org") { email } }')
    assert res["data"]["user"] is None  # the failed mutation wrote nothing
    ok = await gw.gql("root", create, {"email": "carol@x.org", "input": props})
    assert ok["data"]["create_user"]["ok"] is True
    assert ok["data"]["create_user"]["user"]["unix_user"] == "carol"
    kps = await gw.gql("root", 'query { keypairs(email: "carol@x.org") { access_key is_active } }')
    assert len(kps["data"]["keypairs"]) == 1  # a new user gets a keypair
    res = await gw.gql("root", create, {"email": "root2@x.org", "input": {**props, "username": "r2",
                                                                           "unix_user": "root"}})
    assert res["data"]["create_user"]["ok"] is False and "root" in res["data"]["create_user"]["msg"]


async def test_group_and_policy_mutations(gw):
    r = await gw.gql("root", """mutation { create_group(name: "chem", props: {domain_name: "default",
                     slurm_account: "chem01"}) { ok group { id slurm_account } } }""")
    gid = r["data"]["create_group"]["group"]["id"]
    assert r["data"]["create_group"]["group"]["slurm_account"] == "chem01"
    users = (await gw.gql("root", 'query { user(email: "alice@x.org") { uuid } }'))["data"]["user"]
    r = await gw.gql("root", """mutation($gid: UUID!, $u: [String]) { modify_group(gid: $gid,
                     props: {user_update_mode: "add", user_uuids: $u}) { ok msg } }""",
                     {"gid": gid, "u": [users["uuid"]]})
    assert r["data"]["modify_group"]["ok"] is True
    assert "chem" in [g["name"] for g in (await gw.gql("alice", "query { groups { name } }"))["data"]["groups"]]
    pol = """mutation { create_keypair_resource_policy(name: "small", props: {default_for_unspecified: "LIMITED",
             total_resource_slots: "{\\"cpu\\": \\"4\\"}", max_concurrent_sessions: 2, max_containers_per_session: 1,
             idle_timeout: 3600, max_vfolder_count: 5, max_vfolder_size: 1073741824}) { ok resource_policy {
             name total_resource_slots } } }"""
    assert errors(await gw.gql("alice", pol))
    r = await gw.gql("root", pol)
    assert r["data"]["create_keypair_resource_policy"]["resource_policy"]["total_resource_slots"] == '{"cpu": "4"}'
    r = await gw.gql("root", f'mutation {{ modify_keypair(access_key: "{gw.keys["bob"].access}", '
                             'props: {resource_policy: "small"}) { ok } }')
    assert r["data"]["modify_keypair"]["ok"] is True
    r = await gw.gql("bob", "query { keypair_resource_policy { name max_concurrent_sessions } }")
    assert r["data"]["keypair_resource_policy"] == {"name": "small", "max_concurrent_sessions": 2}


async def test_legacy_endpoint_and_bad_documents(gw):
    r = await gw.request("POST", "/admin/graphql", "alice", json={"query": "query { keypair { access_key } }"})
    assert r.json() == {"keypair": {"access_key": gw.keys["alice"].access}}
    r = await gw.request("POST", "/admin/graphql", "alice", json={"query": "query { nope }"})
    assert r.status_code == 400 and r.json()["type"].endswith("/graphql-error")
    r = await gw.request("POST", "/admin/gql", "alice", json={"variables": {}})
    assert r.status_code == 400 and r.json()["type"].endswith("/invalid-api-params")
    res = await gw.gql("alice", "query { keypair { nonexistent_field } }")
    assert res["data"] is None and "nonexistent_field" in errors(res)[0]


async def test_images_and_one_image_by_name_or_alias(gw):
    from bridge.adapters.db.tables import ImageRow

    async with gw.app.state.db.unit_of_work() as s:
        s.add(ImageRow(name="127.0.0.1:5000/team/tool:2", path="/srv/images/.cache/sha256-ab", aliases=["tool"],
                       labels={"ai.backend.resource.min.mem": "1g"}, digest="sha256:" + "ab" * 32))
    listed = (await gw.gql("alice", "query { images { name tag registry aliases digest } }"))["data"]["images"]
    assert {"name": "team/tool", "tag": "2", "registry": "127.0.0.1:5000", "aliases": ["tool"],
            "digest": "sha256:" + "ab" * 32} in listed
    q = "query($r: String!) { image(reference: $r) { name resource_limits { key min } } }"
    one = (await gw.gql("alice", q, {"r": "tool"}))["data"]["image"]
    assert one["name"] == "team/tool" and {"key": "mem", "min": "1g"} in one["resource_limits"]
    assert (await gw.gql("alice", q, {"r": "nope"}))["data"]["image"] is None


async def add_session(gw, who: str, name: str, *, depends_on: str | None = None, **fields) -> str:
    """A session row as the gateway writes one (no Slurm needed to list it)."""
    from sqlalchemy import select

    from bridge.adapters.db.tables import GroupRow, KeypairRow, SessionDependencyRow, SessionRow, UserRow

    async with gw.app.state.db.unit_of_work() as s:
        kp = await s.get(KeypairRow, gw.keys[who].access)
        user = await s.get(UserRow, kp.user)
        group = (await s.execute(select(GroupRow).where(GroupRow.name == "default"))).scalar_one()
        row = SessionRow(name=name, access_key=kp.access_key, user_uuid=user.uuid, domain_name=user.domain_name,
                         group_id=group.id, unix_user=user.unix_user, slurm_account="default", partition="debug",
                         image="python", image_path="/srv/images/python", job_tag="t", work_dir="/tmp/w",
                         status="RUNNING", **fields)
        s.add(row)
        await s.flush()
        if depends_on:
            s.add(SessionDependencyRow(session_id=row.id, depends_on=depends_on))
        return row.id


SESSIONS = ("query($ak: String, $d: String, $o: String) { compute_session_list(limit: 10, offset: 0, "
            "access_key: $ak, domain_name: $d, order: $o) "
            "{ items { id name group_name user_email dependencies { name } } total_count } }")


async def test_session_listings_show_each_caller_what_they_may_see(gw):
    first = await add_session(gw, "alice", "a1")
    await add_session(gw, "alice", "a2", depends_on=first)
    bobs = await add_session(gw, "bob", "b1")
    res = await gw.gql("alice", SESSIONS, {"o": "name"})
    page = res["data"]["compute_session_list"]
    assert page["total_count"] == 2 and [i["name"] for i in page["items"]] == ["a1", "a2"]
    a2 = page["items"][1]
    assert a2["group_name"] == "default" and a2["user_email"] == "alice@x.org"
    assert a2["dependencies"] == [{"name": "a1"}] and page["items"][0]["dependencies"] == []
    one = "query($id: UUID!) { compute_session(id: $id) { name } }"
    assert (await gw.gql("alice", one, {"id": bobs}))["data"]["compute_session"] is None   # not hers: absent
    assert (await gw.gql("bob", one, {"id": bobs}))["data"]["compute_session"] == {"name": "b1"}
    everyone = (await gw.gql("root", SESSIONS, {"o": "-name"}))["data"]["compute_session_list"]
    assert [i["name"] for i in everyone["items"]] == ["b1", "a2", "a1"]
    only_bob = (await gw.gql("root", SESSIONS, {"ak": gw.keys["bob"].access}))["data"]["compute_session_list"]
    assert [i["name"] for i in only_bob["items"]] == ["b1"]
    other = (await gw.gql("dadmin", SESSIONS, {"d": "default"}))["data"]["compute_session_list"]
    assert other == {"items": [], "total_count": 0}   # an admin of another domain sees none of these
    assert (await gw.gql("dadmin", one, {"id": bobs}))["data"]["compute_session"] is None
    bad = await gw.gql("alice", SESSIONS, {"o": "secret_column"})
    assert any("cannot order sessions" in m for m in errors(bad))


async def test_a_clusters_kernels_are_listed_and_found_by_their_own_ids(gw):
    sid = await add_session(gw, "alice", "c3", cluster_size=3, cluster_mode="multi-node", nodes=["n1", "n2", "n3"],
                            resources={"cpu": "2", "mem": "1073741824"})
    q = "query($id: UUID!) { compute_session(id: $id) { occupying_slots containers { id cluster_hostname agent } } }"
    found = (await gw.gql("alice", q, {"id": sid}))["data"]["compute_session"]
    assert [(k["cluster_hostname"], k["agent"]) for k in found["containers"]] == \
        [("main1", "n1"), ("sub1", "n2"), ("sub2", "n3")]
    assert json.loads(found["occupying_slots"]) == {"cpu": "6", "mem": str(3 * 1024 ** 3)}   # every kernel's
    sub2 = found["containers"][2]["id"]
    one = "query($id: UUID!) { compute_container(id: $id) { id cluster_hostname cluster_role session_id } }"
    got = (await gw.gql("alice", one, {"id": sub2}))["data"]["compute_container"]
    assert got == {"id": sub2, "cluster_hostname": "sub2", "cluster_role": "sub", "session_id": sid}
    assert (await gw.gql("bob", one, {"id": sub2}))["data"]["compute_container"] is None   # not his
    from bridge.domain.cluster import kernel_id

    missing = kernel_id(sid, 9)
    assert (await gw.gql("alice", one, {"id": missing}))["data"]["compute_container"] is None


class RecordingAccounting:
    """The sacctmgr boundary: records what the gateway asks of Slurm; `fail` makes the next call refuse."""

    def __init__(self, existing=()):
        self.calls, self.fail, self.existing = [], None, set(existing)

    async def account_exists(self, account):
        return account in self.existing

    async def _call(self, *call):
        if self.fail:
            from bridge.errors import SlurmError

            raise SlurmError(self.fail)
        self.calls.append(call)

    async def ensure_account(self, account, *, description="", parent=None):
        await self._call("account", account)

    async def ensure_association(self, user, account):
        await self._call("assoc", user, account)

    async def set_account_limits(self, account, *, grp_tres=None, grp_jobs=None, max_jobs=None):
        await self._call("limits", account, grp_tres)

    async def set_limits(self, account, user, limits):
        await self._call("user-limits", user, account, limits.max_jobs)

    async def associations(self):
        return {}


async def test_projects_changed_through_graphql_reach_slurm(gw):
    from bridge.services.project_sync import ProjectSync

    slurm = RecordingAccounting()
    gw.app.state.projects = ProjectSync(slurm, shards_per_gpu=4)
    create = """mutation($slots: JSONString) { create_group(name: "bio", props: {domain_name: "default",
                slurm_account: "bio01", total_resource_slots: $slots}) { ok msg group { id } } }"""
    r = await gw.gql("root", create, {"slots": '{"cpu": "8", "mem": "4g", "cuda.device": "1"}'})
    gid = r["data"]["create_group"]["group"]["id"]
    assert slurm.calls == [("account", "bio01"),
                           ("limits", "bio01", {"cpu": 8, "mem": 4096, "gres/gpu": 1, "gres/shard": -1})]
    alice = (await gw.gql("root", 'query { user(email: "alice@x.org") { uuid } }'))["data"]["user"]["uuid"]
    modify = """mutation($gid: UUID!, $p: ModifyGroupInput!) { modify_group(gid: $gid, props: $p) { ok msg } }"""
    slurm.calls.clear()
    r = await gw.gql("root", modify, {"gid": gid, "p": {"user_update_mode": "add", "user_uuids": [alice]}})
    # the member's association gets their keypair's policy (the default one: 30 sessions at once)
    assert r["data"]["modify_group"]["ok"] and slurm.calls == [("account", "bio01"), ("assoc", "alice", "bio01"),
                                                               ("user-limits", "alice", "bio01", 30)]
    slurm.calls.clear()   # a new quota restates the account, its limits and every member
    r = await gw.gql("root", modify, {"gid": gid, "p": {"total_resource_slots": '{"cpu": "2"}'}})
    assert r["data"]["modify_group"]["ok"] and slurm.calls == [
        ("account", "bio01"), ("limits", "bio01", {"cpu": 2, "mem": -1, "gres/gpu": -1, "gres/shard": -1}),
        ("assoc", "alice", "bio01"), ("user-limits", "alice", "bio01", 30)]
    slurm.calls.clear()   # a user joining through modify_user, with a new Unix user too
    r = await gw.gql("root", """mutation($g: [String]) { modify_user(email: "bob@x.org",
                     props: {group_ids: $g, unix_user: "bob2"}) { ok msg } }""", {"g": [gid]})
    assert r["data"]["modify_user"]["ok"] and slurm.calls == [("account", "bio01"), ("assoc", "bob2", "bio01"),
                                                              ("user-limits", "bob2", "bio01", 30)]
    # a slot Slurm cannot limit is refused before Slurm is asked, and nothing changes
    slurm.calls.clear()
    r = await gw.gql("root", modify, {"gid": gid, "p": {"total_resource_slots": '{"tpu": "2"}'}})
    assert r["data"]["modify_group"]["ok"] is False and "tpu" in r["data"]["modify_group"]["msg"]
    assert slurm.calls == []
    group = await gw.gql("root", "query($id: UUID!) { group(id: $id) { total_resource_slots } }", {"id": gid})
    assert group["data"]["group"]["total_resource_slots"] == '{"cpu": "2"}'
    # Slurm refusing the account leaves no project behind
    slurm.fail = "sacctmgr add failed (rc=1): permission denied"
    r = await gw.gql("root", create.replace('"bio"', '"geo"').replace("bio01", "geo01"), {"slots": "{}"})
    assert r["data"]["create_group"]["ok"] is False and "permission denied" in r["data"]["create_group"]["msg"]
    names = [g["name"] for g in (await gw.gql("root", "query { groups { name } }"))["data"]["groups"]]
    assert "bio" in names and "geo" not in names


async def test_without_slurm_sync_projects_stay_in_the_gateway(gw):
    assert not gw.app.state.projects.enabled   # the default: the site runs sacctmgr itself
    r = await gw.gql("root", """mutation { create_group(name: "astro", props: {domain_name: "default",
                     total_resource_slots: "{\\"tpu\\": \\"1\\"}"}) { ok } }""")
    assert r["data"]["create_group"]["ok"] is True


async def test_only_empty_domains_and_unused_policies_are_deleted(gw):
    r = await gw.gql("root", 'mutation { create_domain(name: "lab", props: {description: "x"}) { ok } }')
    assert r["data"]["create_domain"]["ok"]
    r = await gw.gql("root", 'mutation { purge_domain(name: "other") { ok msg } }')   # has dadmin and a project
    assert r["data"]["purge_domain"] == {"ok": False, "msg": "domain other still has 1 users and 1 projects"}
    r = await gw.gql("root", 'mutation { purge_domain(name: "lab") { ok msg } }')
    assert r["data"]["purge_domain"]["ok"] is True
    assert "lab" not in [d["name"] for d in (await gw.gql("root", "query { domains { name } }"))["data"]["domains"]]
    r = await gw.gql("root", 'mutation { delete_keypair_resource_policy(name: "default") { ok msg } }')
    assert r["data"]["delete_keypair_resource_policy"]["ok"] is False
    assert "is used by" in r["data"]["delete_keypair_resource_policy"]["msg"]
    pol = """mutation { create_keypair_resource_policy(name: "spare", props: {default_for_unspecified: "LIMITED",
             total_resource_slots: "{}", max_concurrent_sessions: 1, max_containers_per_session: 1,
             idle_timeout: 0, max_vfolder_count: 0, max_vfolder_size: 0}) { ok } }"""
    assert (await gw.gql("root", pol))["data"]["create_keypair_resource_policy"]["ok"]
    r = await gw.gql("root", 'mutation { delete_keypair_resource_policy(name: "spare") { ok } }')
    assert r["data"]["delete_keypair_resource_policy"]["ok"] is True


async def test_a_domain_admin_cannot_charge_jobs_to_another_domains_slurm_account(gw):
    from bridge.services.project_sync import ProjectSync

    create = """mutation($n: String!, $a: String) { create_group(name: $n, props: {domain_name: "other",
                slurm_account: $a}) { ok msg } }"""
    # "default" is the account of the default domain's project: not dadmin's to use, sync or not
    r = (await gw.gql("dadmin", create, {"n": "mine", "a": "default"}))["data"]["create_group"]
    assert r["ok"] is False and "another domain" in r["msg"]
    slurm = RecordingAccounting(existing={"hpc-physics"})
    gw.app.state.projects = ProjectSync(slurm)
    # an account that exists in Slurm but is no project's here: a superadmin's call, not a domain admin's
    r = (await gw.gql("dadmin", create, {"n": "mine", "a": "hpc-physics"}))["data"]["create_group"]
    assert r["ok"] is False and "only a superadmin" in r["msg"] and slurm.calls == []
    r = (await gw.gql("dadmin", create, {"n": "mine", "a": "other-mine"}))["data"]["create_group"]
    assert r["ok"] is True and ("account", "other-mine") in slurm.calls
    r = (await gw.gql("root", create, {"n": "adopted", "a": "hpc-physics"}))["data"]["create_group"]
    assert r["ok"] is True
    # with the sync on, one account is one project's: two quotas would overwrite each other
    r = (await gw.gql("root", create, {"n": "twin", "a": "hpc-physics"}))["data"]["create_group"]
    assert r["ok"] is False and "already the account of project adopted" in r["msg"]
    gid = next(g["id"] for g in (await gw.gql("dadmin", "query { groups { id name } }"))["data"]["groups"]
               if g["name"] == "mine")
    r = await gw.gql("dadmin", """mutation($gid: UUID!) { modify_group(gid: $gid,
                     props: {slurm_account: "hpc-physics"}) { ok msg } }""", {"gid": gid})
    assert r["data"]["modify_group"]["ok"] is False


async def test_no_admin_can_map_a_user_to_someone_elses_or_a_system_unix_account(gw):
    from bridge.errors import CommandFailed
    from bridge.services.unix_users import UnixUsers

    passwd = {"alice": 1001, "slurm": 64030, "daemon": 1, "dave": 1500}

    async def lookup(name):   # the cluster's passwd, as getent would answer
        if name == "broken":
            raise CommandFailed("ssh: connection refused")
        return passwd.get(name)

    async def member(user, group):   # the site lets domain "other"'s admins map to Unix group other-users
        return group == "other-users" and user in ("alice", "dave")

    gw.app.state.unix_users = UnixUsers(lookup, uid_min=1000, uid_max=59999, membership=member,
                                        domain_groups={"other": "other-users"})
    create = """mutation($email: String!, $u: String!, $d: String!) { create_user(email: $email, props: {
                username: $email, password: "pw", need_password_change: false, domain_name: $d, role: "user",
                unix_user: $u}) { ok msg } }"""

    async def make(who, email, unix_user, domain="default"):
        r = await gw.gql(who, create, {"email": email, "u": unix_user, "d": domain})
        return r["data"]["create_user"]

    r = await make("dadmin", "mallory@other.org", "alice", "other")   # another domain's user's identity
    assert r["ok"] is False and "already the Unix identity of alice@x.org" in r["msg"]
    r = await make("root", "svc@x.org", "slurm")                       # Slurm's own user: its admin
    assert r["ok"] is False and "uid 64030" in r["msg"] and "system account" in r["msg"]
    assert (await make("root", "d@x.org", "daemon"))["ok"] is False
    r = await make("root", "b@x.org", "broken")
    assert r["ok"] is False and "could not be read" in r["msg"]
    assert (await make("dadmin", "dave@other.org", "dave", "other"))["ok"] is True
    assert (await make("root", "new@x.org", "newcomer"))["ok"] is True   # not on the cluster yet: allowed
    modify = """mutation($u: String!) { modify_user(email: "bob@x.org", props: {unix_user: $u}) { ok msg } }"""
    r = (await gw.gql("root", modify, {"u": "dave"}))["data"]["modify_user"]
    assert r["ok"] is False and "dave@other.org" in r["msg"]
    res = await gw.gql("root", 'query { user(email: "bob@x.org") { unix_user } }')
    assert res["data"]["user"]["unix_user"] == "bob"


async def test_a_domain_admin_maps_users_only_within_the_sites_unix_group_for_the_domain(gw):
    """Issue 12.5: without a site rule a domain admin could map a new or existing user to any unmapped Unix
    account of the site (people of other domains who never used the gateway)."""
    from bridge.services.unix_users import UnixUsers

    async def lookup(name):
        return {"eve": 1600, "dave": 1500, "frank": 1700}.get(name)

    async def member(user, group):
        return group == "other-users" and user == "dave"

    create = """mutation($email: String!, $u: String!, $d: String!) { create_user(email: $email, props: {
                username: $email, password: "pw", need_password_change: false, domain_name: $d, role: "user",
                unix_user: $u}) { ok msg } }"""
    gw.app.state.unix_users = UnixUsers(lookup, uid_min=1000, uid_max=59999, membership=member)
    r = (await gw.gql("dadmin", create, {"email": "e@other.org", "u": "eve", "d": "other"}))["data"]["create_user"]
    assert r["ok"] is False and "only a superadmin maps users to Unix accounts" in r["msg"]
    gw.app.state.unix_users = UnixUsers(lookup, uid_min=1000, uid_max=59999, membership=member,
                                        domain_groups={"other": "other-users"})
    r = (await gw.gql("dadmin", create, {"email": "e@other.org", "u": "eve", "d": "other"}))["data"]["create_user"]
    assert r["ok"] is False and "not in Unix group other-users" in r["msg"]
    r = (await gw.gql("dadmin", create, {"email": "d@other.org", "u": "dave", "d": "other"}))["data"]["create_user"]
    assert r["ok"] is True, r
    modify = """mutation { modify_user(email: "d@other.org", props: {unix_user: "frank"}) { ok msg } }"""
    r = (await gw.gql("dadmin", modify))["data"]["modify_user"]
    assert r["ok"] is False and "not in Unix group" in r["msg"]
    assert (await gw.gql("root", modify))["data"]["modify_user"]["ok"] is True   # a superadmin may


async def test_what_the_webui_selects_validates(gw):
    """Fields and operations the WebUI 23.09 selects on its pages (its queries are validated whole: one
    unknown field fails the page). Selections taken from the WebUI's own queries."""
    q = """query { projects: groups(domain_name: "default", is_active: true) { id is_active name resource_policy }
                   keypair { id resource_policy concurrency_used }
                   storage_volume_list(limit: 10, offset: 0) { items { id backend capabilities path fsprefix
                                                                         performance_metric usage } total_count }
                   agent_summary_list(limit: 10, offset: 0, status: "ALIVE") { items { id status scaling_group
                       schedulable available_slots occupied_slots architecture } total_count } }"""
    r = await gw.gql("root", q)
    assert "errors" not in r, r
    assert r["data"]["keypair"]["id"] == gw.keys["root"].access and r["data"]["projects"][0]["resource_policy"] is None
    vols = r["data"]["storage_volume_list"]
    assert vols["total_count"] >= 1 and json.loads(vols["items"][0]["usage"]).get("capacity_bytes", 0) >= 0
    m = """mutation($name: String!, $input: CreateScalingGroupInput!) { create_scaling_group(name: $name,
             props: $input) { ok msg } }"""
    r = await gw.gql("root", m, {"name": "nope", "input": {"description": "x", "is_active": True, "driver": "static",
                                                          "scheduler": "fifo", "driver_opts": "{}",
                                                          "scheduler_opts": "{}"}})
    assert "errors" not in r and r["data"]["create_scaling_group"]["ok"] is False   # no such partition
    drained = []

    async def set_nodes_schedulable(nodes, schedulable, *, reason=""):
        drained.append((list(nodes), schedulable))
    gw.app.state.slurm.set_nodes_schedulable = set_nodes_schedulable
    r = await gw.gql("root", 'mutation { modify_agent(id: "n1", props: {schedulable: false}) { ok msg } }')
    assert r["data"]["modify_agent"]["ok"] and drained == [(["n1"], False)]
    r = await gw.gql("root", 'mutation { modify_agent(id: "n1", props: {scaling_group: "gpu"}) { ok msg } }')
    assert r["data"]["modify_agent"]["ok"] is False and "slurm.conf" in r["data"]["modify_agent"]["msg"]
    r = await gw.gql("root", 'mutation { modify_agent(id: "n9", props: {schedulable: true}) { ok msg } }')
    assert r["data"]["modify_agent"] == {"ok": False, "msg": "no Slurm node n9"} and len(drained) == 1
    r = await gw.request("POST", "/manager/scheduler/operation", "root",
                         json={"op": "include-agents", "args": {"agent_ids": ["n1"]}})
    assert r.status_code == 204 and drained[-1] == (["n1"], True)
    r = await gw.request("POST", "/manager/scheduler/operation", "alice",
                         json={"op": "exclude-agents", "args": {"agent_ids": ["n1"]}})
    assert r.status_code == 403 and len(drained) == 2
    alice = (await gw.gql("alice", "query { user { id } }"))["data"]["user"]["id"]
    r = await gw.gql("alice", 'query($q: String!) { quota_scope(quota_scope_id: $q, storage_host_name: "local") '
                              '{ id details { usage_bytes hard_limit_bytes } } }', {"q": f"user:{alice}"})
    assert "errors" not in r and r["data"]["quota_scope"]["details"]["hard_limit_bytes"] is None
    bob = (await gw.gql("bob", "query { user { id } }"))["data"]["user"]["id"]
    r = await gw.gql("alice", 'query($q: String!) { quota_scope(quota_scope_id: $q, storage_host_name: "local") '
                              '{ id } }', {"q": f"user:{bob}"})
    assert r["data"]["quota_scope"] is None and "Forbidden" in r["errors"][0]["message"]


def test_an_agents_live_stat_is_slurms_look_at_the_node():
    from bridge.adapters.slurm.base import NodeInfo
    from bridge.api.graphql.wire import agent_live_stat

    n = NodeInfo("n1", ("IDLE",), 4, 0, 4000, 0, "gpu:2", "gpu:0", ("debug",), cpu_load=1.0, free_memory_mb=3000)
    stat = agent_live_stat(n)
    assert stat["node"]["cpu_util"]["pct"] == "25.00" and stat["node"]["mem"]["current"] == f"{1000 * 1024**2:.3f}"
    assert stat["devices"]["cpu_util"] == {"n1": stat["node"]["cpu_util"]}
    unknown = NodeInfo("n2", ("IDLE",), 4, 0, 4000, 0, "", "", ("debug",))
    assert agent_live_stat(unknown) == {"node": {}, "devices": {}}
