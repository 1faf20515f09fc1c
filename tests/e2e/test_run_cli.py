"""`backend.ai run` (query mode) with the real CLIs: code runs in the Apptainer kernel on a Slurm node."""

from __future__ import annotations

import uuid

import pytest

from tests.e2e.test_admin_cli import ok
from tests.e2e.test_session_rest import Api, run_query

pytestmark = pytest.mark.cluster


def test_run_prints_the_result(client):
    out = ok(client.run("alice", "run", "--rm", "python", "-c", "print(40+2)"))
    assert "42" in out.splitlines() and "exit code = 0" in out


def test_a_named_session_keeps_its_state_between_runs(client):
    name = "repl-" + uuid.uuid4().hex[:6]
    ok(client.run("alice", "run", "-t", name, "python", "-c", "x = 40"))
    out = ok(client.run("alice", "run", "-t", name, "python", "-c", "print(x + 2)"))
    assert "Reusing session" in out and "42" in out.splitlines()
    out = ok(client.run("alice", "run", "-t", name, "python", "-c", "import os; print(os.getuid(), os.getcwd())"))
    assert "1001 /home/work" in out  # alice's uid, the session folder as working directory
    out = client.run("alice", "run", "-t", name, "python", "-c", "1/0")
    assert "ZeroDivisionError" in out.stdout + out.stderr and "exit code = 1" in out.stdout + out.stderr
    ok(client.run("alice", "session", "rm", name))


def test_one_fake_gpu_is_exactly_one(client):
    code = "import os; print('CVD=' + os.environ.get('CUDA_VISIBLE_DEVICES', 'none'))"
    out = ok(client.run("alice", "run", "--rm", "-r", "cuda.device=1", "python", "-c", code))
    assert "CVD=0" in out.splitlines()
    out = ok(client.run("alice", "run", "--rm", "python", "-c", code))
    assert "CVD=none" in out


OPEN_EVERY_GPU = ("import errno, os\n"
                  "for n in sorted(os.listdir('/dev')):\n"
                  "    if n.startswith('fakegpu'):\n"
                  "        try:\n"
                  "            os.close(os.open('/dev/' + n, os.O_RDWR)); print(n, 'OPEN')\n"
                  "        except OSError as e:\n"
                  "            print(n, errno.errorcode[e.errno])\n")


def test_the_container_can_open_its_own_gpu_and_no_other(gateway):
    """Device isolation, not just CUDA_VISIBLE_DEVICES: with the cluster's cgroup device constraint
    (ConstrainDevices), opening the allocated GPU reaches the (absent) driver, ENXIO, while the node's
    other GPU is refused by the cgroup, EPERM."""
    import os
    import subprocess

    root = os.environ.get("BRIDGE_DEV_ROOT", "/srv/slurmroot")
    config = subprocess.run(["chroot", root, "scontrol", "show", "config"], capture_output=True, text=True).stdout
    if "task/cgroup" not in config:
        pytest.skip("the dev cluster runs without cgroups (BRIDGE_DEV_CGROUP=off)")
    alice = Api(gateway)
    sid = alice("POST", "/session", {"name": "iso-" + uuid.uuid4().hex[:6], "image": "python",
                                     "config": {"resources": {"cuda.device": "1"}}}).json()["sessionId"]
    try:
        seen = dict(line.split() for line in run_query(alice, sid, OPEN_EVERY_GPU).splitlines())
        info = alice("GET", f"/session/{sid}").json()["slurm"]
        node, index = int(info["nodes"][0].lstrip("n")), int(info["gpus"])
        # testbed.sh: node nK holds fakegpu[2(K-1)] and fakegpu[2K-1]; the other nodes' devices are on this
        # host only because the dev cluster runs all its slurmd on one machine, so only the node's own count
        mine, other = (f"fakegpu{(node - 1) * 2 + i}" for i in (index, 1 - index))
        assert seen[mine] == "ENXIO", seen     # allowed by the cgroup; no driver behind it
        assert seen[other] == "EPERM", seen    # the node's other GPU: refused by the cgroup
    finally:
        alice("DELETE", f"/session/{sid}")


def test_a_gpu_share_is_gres_shards_on_one_gpu(client, gateway):
    """cuda.shares=0.5 with 4 shards per GPU (the dev cluster) is gres/shard:2, on one GPU of the node."""
    code = ("import os; print('CVD=' + os.environ.get('CUDA_VISIBLE_DEVICES', 'none'), "
            "'SHARDS=' + os.environ.get('SLURM_SHARDS_ON_NODE', 'none'))")
    out = ok(client.run("alice", "run", "--rm", "-r", "cuda.shares=0.5", "python", "-c", code))
    line = next(x for x in out.splitlines() if x.startswith("CVD="))
    cvd, shards = line.split()
    assert shards == "SHARDS=2" and cvd in ("CVD=0", "CVD=1")
    alice = Api(gateway)
    sid = alice("POST", "/session", {"name": "sh-" + uuid.uuid4().hex[:6], "image": "python",
                                     "config": {"resources": {"cuda.shares": "0.25"}}}).json()["sessionId"]
    try:
        alice("POST", f"/session/{sid}", {"mode": "query", "runId": "x", "code": "1"})
        assert alice("GET", f"/session/{sid}").json()["slurm"]["shards"] == "1"
    finally:
        alice("DELETE", f"/session/{sid}")


def test_another_user_cannot_execute_in_the_session(gateway):
    alice, bob = Api(gateway), Api(gateway, "BOB_")
    r = alice("POST", "/session", {"name": "own-" + uuid.uuid4().hex[:6], "image": "python"})
    sid = r.json()["sessionId"]
    res = alice("POST", f"/session/{sid}", {"mode": "query", "code": "print('mine')", "runId": "r1"})
    assert res.json()["result"]["console"] == [["stdout", "mine\n"]]
    denied = bob("POST", f"/session/{sid}", {"mode": "query", "code": "print('stolen')", "runId": "r2"})
    assert denied.status_code == 404 and denied.json()["type"].endswith("/session-not-found")
    res = alice("POST", f"/session/{sid}", {"mode": "query", "code": "v = input('? ')", "runId": "r3"})
    assert res.json()["result"]["status"] == "waiting-input"
    res = alice("POST", f"/session/{sid}", {"mode": "input", "code": "typed", "runId": "r3"})
    assert res.json()["result"]["status"] == "finished"
    res = alice("POST", f"/session/{sid}", {"mode": "query", "code": "v", "runId": "r4"})
    assert res.json()["result"]["console"] == [["stdout", "'typed'\n"]]
    alice("DELETE", f"/session/{sid}")


def test_images_aliases_and_minimum_resources(client, gateway):
    from tests.e2e.conftest import _bridge

    config = gateway["BRIDGE_CONFIG"]
    done = _bridge("--config", config, "admin", "image", "alias", f"cr.backend.ai/stable/py:{client.version}",
                   "python", cwd=client.cwd)
    assert done.returncode == 0, done.stderr
    out = ok(client.run("alice", "run", "--rm", f"cr.backend.ai/stable/py:{client.version}", "-c",
                        "print('via alias')"))
    assert "via alias" in out.splitlines()
    refused = client.run("alice", "session", "create", "python", "-t", "tiny-" + uuid.uuid4().hex[:6],
                         "-r", "mem=64m")
    assert "needs at least" in refused.stdout + refused.stderr and "resources.mem" in refused.stdout + refused.stderr
    listing = ok(client.run("admin", "admin", "image", "list"))
    assert "python" in listing and f"cr.backend.ai/stable/py:{client.version}" in listing


def test_interrupt_completion_and_gpu_ids(gateway):
    import time

    alice = Api(gateway)
    sid = alice("POST", "/session", {"name": "intr-" + uuid.uuid4().hex[:6], "image": "python",
                                     "config": {"resources": {"cuda.device": "2"}}}).json()["sessionId"]
    try:
        res = alice("POST", f"/session/{sid}", {"mode": "query", "runId": "loop",
                                                 "code": "import time\nwhile True: time.sleep(0.05)"}).json()
        assert res["result"]["status"] == "continued"
        assert alice("POST", f"/session/{sid}/interrupt").status_code == 204
        deadline = time.monotonic() + 10
        while res["result"]["status"] != "finished" and time.monotonic() < deadline:
            res = alice("POST", f"/session/{sid}", {"mode": "query", "runId": "loop", "code": ""}).json()
        assert "KeyboardInterrupt" in "".join(t for _, t in res["result"]["console"])
        alice("POST", f"/session/{sid}", {"mode": "query", "runId": "v", "code": "answer_value = 42"})
        done = alice("POST", f"/session/{sid}/complete", {"code": "print(answer_v"}).json()
        assert "answer_value" in done["result"]
        info = alice("GET", f"/session/{sid}").json()
        assert info["slurm"]["gpus"] in ("0,1", "2,3", "4,5", "6,7")  # the node's own two GPU indices
    finally:
        alice("DELETE", f"/session/{sid}")


def test_the_jupyterlab_image_runs_as_a_kernel(client, gateway):
    code = "import subprocess; print('lab', subprocess.check_output(['jupyter', 'lab', '--version']).decode())"
    out = ok(client.run("alice", "run", "--rm", gateway["BRIDGE_DEV_JUPYTER_IMAGE"], "-c", code))
    assert any(line.startswith("lab 4.") for line in out.splitlines())
