"""Quotas and resource groups on the dev cluster: a project's GPU quota reaches Slurm's association and the
third GPU session is refused up front; a limit changed with sacctmgr behind the gateway's back is found by
`bai-bridge admin quota check` and set right by `--repair`; a group opened to one project only is closed
to everyone else; check-presets follows a partition filling up; the official client lists the groups."""

from __future__ import annotations

import json
import os
import subprocess
import time
import uuid
from pathlib import Path

import pytest

from tests.e2e.test_admin_cli import ok
from tests.e2e.test_session_rest import Api
from tests.integration.test_dev_env import bai_bridge

pytestmark = pytest.mark.cluster
ROOT = Path(os.environ.get("BRIDGE_DEV_ROOT", "/srv/slurmroot"))


def sacctmgr(*args: str) -> str:
    done = subprocess.run(["chroot", str(ROOT), "sacctmgr", *args], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return done.stdout


def gql(api: Api, query: str, variables: dict | None = None) -> dict:
    r = api("POST", "/admin/gql", {"query": query, "variables": variables or {}})
    assert r.status_code == 200 and "errors" not in r.json(), r.text
    return r.json()["data"]


def quota_check(gateway: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    config = gateway["BRIDGE_CONFIG"]
    return bai_bridge("--config", config, "admin", "quota", "check", "--json", *args, cwd=Path(config).parent)


@pytest.fixture
def gpu_project(gateway):
    """A project with a quota of 2 GPUs and alice in it, made through GraphQL as the WebUI would."""
    admin = Api(gateway, "ADMIN_")
    name = "gpuq" + uuid.uuid4().hex[:6]
    created = gql(admin, """mutation($n: String!, $p: GroupInput!) { create_group(name: $n, props: $p) {
                              ok msg group { id } } }""",
                  {"n": name, "p": {"domain_name": "default", "total_resource_slots": '{"cuda.device": "2"}'}})
    assert created["create_group"]["ok"], created
    gid = created["create_group"]["group"]["id"]
    alice = gql(admin, 'query { user(email: "alice@example.com") { uuid } }')["user"]["uuid"]
    changed = gql(admin, """mutation($g: UUID!, $p: ModifyGroupInput!) { modify_group(gid: $g, props: $p) {
                              ok msg } }""", {"g": gid, "p": {"user_update_mode": "add", "user_uuids": [alice]}})
    assert changed["modify_group"]["ok"], changed
    return name, gid


def test_a_project_gpu_quota_is_slurms_limit_and_the_third_gpu_session_is_refused(gateway, gpu_project):
    name, _ = gpu_project
    rows = sacctmgr("-n", "-P", "show", "assoc", f"accounts={name}", "format=account,user,grptres,maxjobs").split()
    # the account holds the project's quota, alice's association her keypair policy's (30 sessions at once)
    assert f"{name}||gres/gpu=2|" in rows and f"{name}|alice||30" in rows, rows
    alice = Api(gateway)
    made = []
    try:
        for i in range(2):
            r = alice("POST", "/session", {"name": f"{name}-{i}", "image": "python", "group": name,
                                           "enqueueOnly": True, "config": {"scaling_group": "gpu",
                                                                           "resources": {"cuda.device": "1"}}})
            assert r.status_code in (200, 201), r.text
            made.append(r.json()["sessionId"])
        r = alice("POST", "/session", {"name": f"{name}-2", "image": "python", "group": name, "enqueueOnly": True,
                                       "config": {"scaling_group": "gpu", "resources": {"cuda.device": "1"}}})
        assert r.status_code == 412, r.text
        assert r.json()["type"].endswith("/quota-exceeded") and f"project {name}" in r.json()["msg"]
        queued = subprocess.run(["chroot", str(ROOT), "squeue", "-h", "-A", name, "-o", "%i"],
                                capture_output=True, text=True).stdout.split()
        assert len(queued) == 2   # the refused one never reached Slurm
    finally:
        for sid in made:
            alice("DELETE", f"/session/{sid}?forced=true")


def test_quota_check_finds_and_repairs_a_limit_changed_behind_the_gateways_back(gateway, gpu_project):
    name, _ = gpu_project
    sacctmgr("-i", "modify", "account", "where", f"name={name}", "set", "GrpTRES=gres/gpu=5")
    sacctmgr("-i", "modify", "user", "where", "name=alice", f"account={name}", "set", "MaxJobs=1")
    found = quota_check(gateway)
    assert found.returncode == 1, found.stdout + found.stderr
    mine = [d for d in json.loads(found.stdout)["differences"] if d["account"] == name]
    assert {(d["user"], d["limit"], d["wanted"], d["found"]) for d in mine} == {
        ("", "GrpTRES", "gres/gpu=2", "gres/gpu=5"), ("alice", "MaxJobs", "30", "1")}, mine
    repaired = quota_check(gateway, "--repair")
    assert repaired.returncode == 0, repaired.stdout + repaired.stderr
    rows = sacctmgr("-n", "-P", "show", "assoc", f"accounts={name}", "format=account,user,grptres,maxjobs").split()
    assert f"{name}||gres/gpu=2|" in rows and f"{name}|alice||30" in rows, rows
    again = quota_check(gateway)
    assert not [d for d in json.loads(again.stdout)["differences"] if d["account"] == name]


def test_a_group_opened_to_one_project_only_and_check_presets(gateway, gpu_project, client):
    name, gid = gpu_project
    admin, alice, bob = Api(gateway, "ADMIN_"), Api(gateway), Api(gateway, "BOB_")
    try:
        gql(admin, 'mutation { disassociate_scaling_group_with_domain(scaling_group: "gpu", domain: "default") '
                   '{ ok } }')
        gql(admin, 'mutation($g: UUID!) { associate_scaling_group_with_user_group(scaling_group: "gpu", '
                   'user_group: $g) { ok } }', {"g": gid})
        assert alice("GET", f"/scaling-groups?group={name}").json()["scaling_groups"] == [
            {"name": "debug"}, {"name": "gpu"}]
        assert bob("GET", "/scaling-groups?group=default").json()["scaling_groups"] == [{"name": "debug"}]
        assert [g["name"] for g in gql(bob, "query { scaling_groups { name } }")["scaling_groups"]] == ["debug"]
        r = bob("POST", "/session", {"name": "bob-gpu", "image": "python", "enqueueOnly": True,
                                     "config": {"scaling_group": "gpu"}})
        assert r.status_code == 403, r.text
        # the official client's listing shows the groups with their Slurm state
        out = ok(client.run("admin", "admin", "scaling-group", "list"))
        assert "gpu" in out and "debug" in out
        # check-presets: the gpu group's free CPUs drop while a job holds a whole node
        gql(admin, 'mutation { create_resource_preset(name: "e2e-cpu1", props: {resource_slots: '
                   '"{\\"cpu\\": \\"1\\", \\"mem\\": \\"256m\\"}"}) { ok } }')
        nodes = subprocess.run(["chroot", str(ROOT), "sinfo", "-h", "-N", "-p", "gpu", "-o", "%N %c"],
                               capture_output=True, text=True).stdout.split("\n")
        total = sum(int(line.split()[1]) for line in set(nodes) if line.strip())
        job = subprocess.run(["chroot", str(ROOT), "runuser", "-u", "alice", "--", "sbatch", "--parsable",
                              "-p", "gpu", "-A", name, "-c", "2", "-o", "/dev/null", "--chdir", "/tmp",
                              "--wrap", "sleep 120"], capture_output=True, text=True)
        assert job.returncode == 0, job.stderr
        try:   # while it runs, at most total - 2 CPUs are free (other tests' jobs may take more, never fewer)
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                state = subprocess.run(["chroot", str(ROOT), "squeue", "-h", "-j", job.stdout.strip(), "-o", "%t"],
                                       capture_output=True, text=True).stdout.strip()
                body = alice("POST", "/resource/check-presets", {"group": name, "scaling_group": "gpu"}).json()
                if state == "R" and int(body["scaling_group_remaining"]["cpu"]) <= total - 2:
                    break
                time.sleep(0.5)
            else:
                raise AssertionError(f"check-presets never saw the job: {state} {body}")
            assert {p["name"] for p in body["presets"]} >= {"e2e-cpu1"}
        finally:
            subprocess.run(["chroot", str(ROOT), "scancel", job.stdout.strip()], capture_output=True)
    finally:
        gql(admin, 'mutation { associate_scaling_group_with_domain(scaling_group: "gpu", domain: "default") '
                   '{ ok } }')
        admin("POST", "/admin/gql", {"query": 'mutation { delete_resource_preset(name: "e2e-cpu1") { ok } }'})


def test_the_official_clients_check_presets_call(client):
    """`Resource.check_presets()` of the SDK, as the client ships it (a POST with no body: project default)."""
    code = ("import json\nfrom ai.backend.client.session import Session\n"
            "with Session() as s:\n    print(json.dumps(s.Resource.check_presets()))\n")
    python = str(Path(client.exe).parent / "python")
    done = subprocess.run([python, "-c", code], cwd=client.cwd, env=client.env_for("alice"), text=True,
                          capture_output=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    body = json.loads(done.stdout.strip().splitlines()[-1])
    assert body["keypair_limits"] and "cpu" in body["scaling_group_remaining"]
    assert int(body["scaling_group_remaining"]["cpu"]) > 0 and isinstance(body["presets"], list)
