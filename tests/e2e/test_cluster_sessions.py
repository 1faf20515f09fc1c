"""Cluster sessions with the real CLIs: one Slurm job whose kernels (main1, sub1, ...) each run in an Apptainer
container of their own, on separate nodes (multi-node) or together (single-node), reaching each other by name
over the session's own SSH; MPI across them; per-kernel logs."""

from __future__ import annotations

import json
import os
import re
import subprocess
import time
import uuid

import pytest

from tests.e2e.test_admin_cli import ok
from tests.e2e.test_session_rest import Api, wait_status

pytestmark = pytest.mark.cluster

# main1 reaches each sub kernel with `ssh subN` (no prompt, no password) and prints what that kernel says
SSH_AROUND = ('echo "on $BACKENDAI_CLUSTER_HOST: hosts=$BACKENDAI_CLUSTER_HOSTS size=$BACKENDAI_CLUSTER_SIZE '
              'replicas=$BACKENDAI_CLUSTER_REPLICAS node=$SLURMD_NODENAME"; '
              'for h in $(echo $BACKENDAI_CLUSTER_HOSTS | tr , " "); do [ $h = main1 ] && continue; '
              'ssh -o BatchMode=yes $h \'echo "from $BACKENDAI_CLUSTER_HOST role=$BACKENDAI_CLUSTER_ROLE '
              'idx=$BACKENDAI_CLUSTER_IDX rank=$BACKENDAI_CLUSTER_LOCAL_RANK node=$SLURMD_NODENAME '
              'kernel=$BACKENDAI_KERNEL_ID"\' || exit 9; done')


@pytest.fixture
def clusters_allowed(client):
    """The default keypair policy allows one container per session; the cluster tests raise it (an admin,
    through the official CLI), which no other test depends on."""
    ok(client.run("admin", "admin", "keypair-resource-policy", "update", "default",
                  "--max-containers-per-session", "8"))
    return client


def _batch(client, name: str, size: int, mode: str, command: str, image: str = "python") -> str:
    ok(client.run("alice", "session", "create", "--type", "batch", "--cluster-size", str(size), "--cluster-mode",
                  mode, "--name", name, "-c", command, image, timeout=180))
    return name


def _ended(gateway, name: str, timeout: float = 150) -> dict:
    return wait_status(Api(gateway), name, {"TERMINATED", "CANCELLED", "ERROR"}, timeout=timeout)


def _kernel_lines(log: str) -> dict[str, dict[str, str]]:
    found = {}
    for line in log.splitlines():
        m = re.match(r"from (\S+) (.*)", line.strip())
        if m:
            found[m.group(1)] = dict(kv.split("=", 1) for kv in m.group(2).split())
    return found


def test_multi_node_batch_session_spans_three_nodes_and_ssh_works(clusters_allowed, gateway):
    client = clusters_allowed
    name = _batch(client, "mn-" + uuid.uuid4().hex[:6], 3, "multi-node", SSH_AROUND)
    info = _ended(gateway, name)
    log = ok(client.run("alice", "session", "logs", name))
    assert info["status"] == "TERMINATED" and info["result"] == "SUCCESS", (info, log)
    assert "on main1: hosts=main1,sub1,sub2 size=3 replicas=main:1,sub:2" in log, log
    subs = _kernel_lines(log)
    assert set(subs) == {"sub1", "sub2"}, log
    assert [subs["sub1"]["role"], subs["sub2"]["role"]] == ["sub", "sub"]
    assert [subs["sub1"]["idx"], subs["sub2"]["idx"]] == ["1", "2"]
    main_node = re.search(r"on main1: .* node=(\S+)", log).group(1)
    nodes = {main_node, subs["sub1"]["node"], subs["sub2"]["node"]}
    assert len(nodes) == 3, f"three kernels on three nodes: {nodes}"
    # the kernels are tracked one by one: GraphQL lists them with their own ids and nodes
    kernels = _graphql_kernels(gateway, name)
    assert [k["cluster_hostname"] for k in kernels] == ["main1", "sub1", "sub2"]
    assert len({k["id"] for k in kernels}) == 3 and {k["agent"] for k in kernels} == nodes, kernels
    assert kernels[0]["id"] == info["sessionId"] and kernels[1]["id"] == subs["sub1"]["kernel"], kernels
    # each kernel's own log: by kernel id (as `session logs` takes it) or through ?kernel_id=
    sub_log = ok(client.run("alice", "session", "logs", kernels[2]["id"]))
    assert "kernel sub2" in sub_log and "kernel main1" not in sub_log, sub_log
    by_query = Api(gateway)("GET", f"/session/{name}/logs?kernel_id=sub1").json()["result"]["logs"]
    assert "kernel sub1" in by_query


def test_single_node_batch_session_runs_its_kernels_on_one_node(clusters_allowed, gateway):
    client = clusters_allowed
    name = _batch(client, "sn-" + uuid.uuid4().hex[:6], 3, "single-node", SSH_AROUND)
    info = _ended(gateway, name)
    log = ok(client.run("alice", "session", "logs", name))
    assert info["status"] == "TERMINATED", (info, log)
    subs = _kernel_lines(log)
    main_node = re.search(r"on main1: .* node=(\S+)", log).group(1)
    assert set(subs) == {"sub1", "sub2"} and {s["node"] for s in subs.values()} == {main_node}, log
    assert [subs["sub1"]["rank"], subs["sub2"]["rank"]] == ["1", "2"]   # local ranks on the shared node


def test_interactive_cluster_answers_run_on_main1_and_reaches_sub1(clusters_allowed, gateway):
    client = clusters_allowed
    name = "ic-" + uuid.uuid4().hex[:6]
    ok(client.run("alice", "session", "create", "--cluster-size", "2", "--cluster-mode", "multi-node",
                  "--name", name, "python", timeout=180))
    try:
        code = ("import os, subprocess; print('at', os.environ['BACKENDAI_CLUSTER_HOST']); "
                "print(subprocess.run(['ssh', 'sub1', 'echo reached $BACKENDAI_CLUSTER_HOST'], capture_output=True, "
                "text=True, timeout=60).stdout)")
        out = ok(client.run("alice", "run", "-t", name, "python", "-c", code, timeout=180))
        assert "at main1" in out and "reached sub1" in out, out
        main_log = ok(client.run("alice", "session", "logs", name))
        kernels = _graphql_kernels(gateway, name)
        sub_log = ok(client.run("alice", "session", "logs", kernels[1]["id"]))
        assert "kernel main1" in main_log and "kernel runner listening" in main_log, main_log
        assert "kernel sub1" in sub_log and "kernel runner" not in sub_log, sub_log
        assert all(k["status"] == "RUNNING" for k in kernels)
    finally:
        ok(client.run("alice", "session", "rm", name))


MPI_HELLO = ("mpirun -np $BACKENDAI_CLUSTER_SIZE --host $BACKENDAI_CLUSTER_HOSTS python3 -c "
             "'from mpi4py import MPI; import os; c = MPI.COMM_WORLD; "
             "print(\"rank\", c.Get_rank(), \"of\", c.Get_size(), \"node\", os.environ[\"SLURMD_NODENAME\"], "
             "\"sum\", c.allreduce(c.Get_rank() + 1))'")


def test_mpi_hello_world_across_three_kernels_on_three_nodes(clusters_allowed, gateway):
    client = clusters_allowed
    # the dev cluster's nodes are one machine: Open MPI's TCP transport must be allowed the loopback, which it
    # leaves out by default (on a real cluster the nodes' own interfaces carry it)
    name = _batch(client, "mpi-" + uuid.uuid4().hex[:6], 3, "multi-node",
                  "export OMPI_MCA_btl_tcp_if_include=lo; " + MPI_HELLO, image="python-mpi")
    info = _ended(gateway, name, timeout=200)
    log = ok(client.run("alice", "session", "logs", name))
    assert info["status"] == "TERMINATED", (info, log)
    ranks = re.findall(r"rank (\d) of 3 node (\S+) sum 6", log)
    assert sorted(r for r, _ in ranks) == ["0", "1", "2"], log
    assert len({n for _, n in ranks}) == 3, f"3 ranks from 3 nodes: {ranks}"


def test_a_failing_sub_kernel_ends_a_batch_session_at_once_and_is_named(clusters_allowed, gateway):
    """One sub kernel of three dies (its sshd listener is killed, from main1 over ssh) while the other lives:
    the batch session ends at once as a failure, not when main1's two minutes are up, and names the kernel."""
    client = clusters_allowed
    # from the shell sub1's sshd gives, up its ancestors to sub1's sshd listener (runner.py --cluster-sshd)
    kill_sub1 = ("ssh sub1 'p=$PPID; while [ \"$p\" -gt 1 ]; do "
                 "if tr \"\\0\" \" \" < /proc/$p/cmdline | grep -q cluster-sshd; then kill -KILL $p; break; fi; "
                 "p=$(cut -d\" \" -f4 /proc/$p/stat); done'; echo killed; sleep 120")
    started = time.monotonic()
    name = _batch(client, "fail-" + uuid.uuid4().hex[:6], 3, "multi-node", kill_sub1)
    info = _ended(gateway, name)
    assert time.monotonic() - started < 90, "the session waited for main1's command"
    assert info["status"] == "TERMINATED" and info["result"] == "FAILURE", info
    # the job leaves the kernel's name in the session's folder; the gateway reads it as it scrubs the folder,
    # a moment after the end
    api, deadline = Api(gateway), time.monotonic() + 30
    while "kernel sub1 failed" not in (info.get("statusInfo") or "") and time.monotonic() < deadline:
        time.sleep(0.3)
        info = api("GET", f"/session/{name}").json()
    assert "kernel sub1 failed" in (info.get("statusInfo") or ""), info
    log = ok(client.run("alice", "session", "logs", name))
    assert "kernel(s) sub1: failed" in log, log


def test_a_cluster_larger_than_the_resource_group_is_refused_up_front(clusters_allowed, gateway):
    client = clusters_allowed
    out = client.run("alice", "session", "create", "--type", "batch", "--cluster-size", "4", "--cluster-mode",
                     "single-node", "-r", "cpu=2", "--name", "big-" + uuid.uuid4().hex[:6], "-c", "true", "python")
    assert "single-node cluster" in out.stdout + out.stderr, out.stdout + out.stderr
    out = client.run("alice", "session", "create", "--type", "batch", "--cluster-size", "5", "--cluster-mode",
                     "multi-node", "--name", "wide-" + uuid.uuid4().hex[:6], "-c", "true", "python")
    assert "needs 5 nodes" in out.stdout + out.stderr, out.stdout + out.stderr   # the debug group has 4
    out = client.run("alice", "session", "create", "--type", "batch", "--cluster-size", "9", "--cluster-mode",
                     "multi-node", "--name", "many-" + uuid.uuid4().hex[:6], "-c", "true", "python")
    assert "containers per session" in out.stdout + out.stderr, out.stdout + out.stderr   # the policy's 8


def _graphql_kernels(gateway, name: str) -> list[dict]:
    api = Api(gateway)
    sid = api("GET", f"/session/{name}").json()["sessionId"]
    q = ("query($id: UUID!) { compute_session(id: $id) { containers { id cluster_hostname cluster_role "
         "agent status } } }")
    res = api("POST", "/admin/gql", {"query": q, "variables": {"id": sid}}).json()
    assert "errors" not in res, res
    return res["data"]["compute_session"]["containers"]


def _template(api: Api, path: str, template: dict) -> str:
    r = api("POST", path, {"payload": json.dumps(template), "group_name": "default"})
    assert r.status_code == 200, r.text
    return r.json()[0]["id"]


# the fake GPUs a kernel may open: its own reaches the (absent) driver (ENXIO), another is refused by the
# device cgroup (EPERM)
GPU_CHECK = ('echo "$BACKENDAI_CLUSTER_HOST CVD=${CUDA_VISIBLE_DEVICES:-none} node=$SLURMD_NODENAME reachable='
             '$(for d in /dev/fakegpu*; do case $( (exec 3<>$d) 2>&1 ) in (*"not permitted"*) ;; '
             '(*) echo -n ${d#/dev/} ;; esac; done)"')


def test_a_cluster_template_with_a_gpu_main_and_cpu_workers_is_one_heterogeneous_job(clusters_allowed, gateway):
    """A cluster template whose roles differ (a GPU main, two CPU workers): one Slurm heterogeneous job, a
    component per role with its own gres, and each kernel sees exactly its own allocation."""
    api = Api(gateway)
    main_cmd = (f"{GPU_CHECK}; for h in worker1 worker2; do ssh $h '{GPU_CHECK}'; done; "
                "touch /home/work/ready; sleep 6")
    gpu = _template(api, "/template/session", {
        "api_version": "v1", "kind": "taskTemplate", "metadata": {"name": "gpu-main"},
        "spec": {"type": "batch", "kernel": {"image": "python", "run": {"startup_command": main_cmd}},
                 "resources": {"cpu": "1", "mem": "512m", "cuda.device": "1"}}})
    cpu = _template(api, "/template/session", {
        "api_version": "v1", "kind": "taskTemplate", "metadata": {"name": "cpu-worker"},
        "spec": {"kernel": {"image": "python"}, "resources": {"cpu": "2", "mem": "256m"}}})
    cluster_tpl = {"api_version": "v1", "kind": "clusterTemplate", "mode": "multi-node",
                   "metadata": {"name": "gpu-and-cpus"},
                   "spec": {"environ": {"ROLE_SET": "het"},
                            "nodes": [{"role": "worker", "session_template": cpu, "replicas": 2},
                                      {"role": "main", "session_template": gpu}]}}
    tid = _template(api, "/template/cluster", cluster_tpl)
    assert any(t["id"] == tid and t["type"] == "cluster" for t in api("GET", "/template/cluster").json())
    assert all(t["id"] != tid for t in api("GET", "/template/session").json())   # two kinds, two lists
    assert "kind: clusterTemplate" in api("GET", f"/template/cluster/{tid}?format=yaml").text

    name = "het-" + uuid.uuid4().hex[:6]
    r = api("POST", "/session/_/create-cluster", {"clientSessionToken": name, "template_id": tid, "type": "batch",
                                                  "group": "default", "domain": "default", "enqueueOnly": True,
                                                  "maxWaitSeconds": 0})
    assert r.status_code == 201, r.text
    running = wait_status(api, name, {"RUNNING", "TERMINATED", "ERROR"}, timeout=90)
    assert running["occupyingSlots"] == {"cpu": "5", "mem": str(1024 ** 3), "cuda.device": "1"}, running
    root = os.environ.get("BRIDGE_DEV_ROOT", "/srv/slurmroot")
    job = running["containerId"]
    shown = ""
    for _ in range(60):   # while it runs: the components as Slurm shows them
        shown = subprocess.run(["chroot", root, "scontrol", "show", "job", job], capture_output=True,
                               text=True).stdout
        if shown.count("HetJobOffset=") == 2:
            break
        time.sleep(0.5)
    parts = shown.strip().split("\n\n")
    assert [re.search(r"HetJobOffset=(\d)", p).group(1) for p in parts] == ["0", "1"], shown
    assert "gres/gpu:1" in parts[0] and "gres/gpu" not in parts[1], shown
    assert "NumNodes=1 " in parts[0] and "NumNodes=2 " in parts[1] and "MinCPUsNode=2" in parts[1], shown
    info = _ended(gateway, name)
    log = Api(gateway)("GET", f"/session/{name}/logs").json()["result"]["logs"]
    assert info["status"] == "TERMINATED" and info["result"] == "SUCCESS", (info, log)
    seen = dict(re.findall(r"^(main1|worker1|worker2) (CVD=.*)$", log, re.M))
    assert set(seen) == {"main1", "worker1", "worker2"}, log
    assert seen["main1"].startswith("CVD=0 ") and seen["worker1"].startswith("CVD=none "), seen
    nodes = {re.search(r"node=(\S+)", v).group(1) for v in seen.values()}
    assert len(nodes) == 3, seen
    kernels = _graphql_kernels(gateway, name)   # each role's kernels, by their own names, on their own nodes
    assert [(k["cluster_hostname"], k["cluster_role"]) for k in kernels] == \
        [("main1", "main"), ("worker1", "worker"), ("worker2", "worker")], kernels
    assert {k["agent"] for k in kernels} == nodes, kernels
    worker_log = api("GET", f"/session/{name}/logs?kernel_id=worker2").json()["result"]["logs"]
    assert "kernel worker2" in worker_log, worker_log
    if "ConstrainDevices" in _cgroup_conf(root):   # the device cgroup holds each kernel to its allocation
        for host, line in seen.items():
            # testbed.sh: node nK holds fakegpu[2(K-1)] and fakegpu[2K-1] (the other nodes' devices are on this
            # host only because every slurmd of the dev cluster runs on one machine: only the node's own count)
            k = int(re.search(r"node=n(\d)", line).group(1))
            own = {f"fakegpu{2 * (k - 1)}", f"fakegpu{2 * k - 1}"}
            reached = set(re.findall(r"fakegpu\d", line.split("reachable=")[1])) & own
            assert len(reached) == (1 if host == "main1" else 0), (host, line)


def test_cluster_templates_are_their_owners(clusters_allowed, gateway):
    alice, bob = Api(gateway), Api(gateway, "BOB_")
    sid = _template(alice, "/template/session", {"api_version": "v1", "kind": "taskTemplate", "metadata": {"name": "t"},
                                                 "spec": {"kernel": {"image": "python"}}})
    tpl = {"api_version": "v1", "kind": "clusterTemplate", "mode": "single-node", "metadata": {"name": "c"},
           "spec": {"nodes": [{"role": "main", "session_template": sid}, {"role": "sub", "session_template": sid}]}}
    tid = _template(alice, "/template/cluster", tpl)
    assert bob("GET", f"/template/cluster/{tid}").status_code == 404
    assert bob("DELETE", f"/template/cluster/{tid}").status_code == 404
    r = bob("POST", "/session/_/create-cluster", {"clientSessionToken": "steal-" + uuid.uuid4().hex[:4],
                                                  "template_id": tid, "type": "batch"})
    assert r.status_code == 404, r.text
    # nor may bob's own cluster template point at alice's session template
    r = bob("POST", "/template/cluster", {"payload": json.dumps(tpl), "group_name": "default"})
    assert r.status_code == 400 and "session_template" in r.json()["msg"], r.text
    # two mains, or none, is refused with the rule
    bad = {**tpl, "spec": {"nodes": [{"role": "sub", "session_template": sid}]}}
    r = alice("POST", "/template/cluster", {"payload": json.dumps(bad), "group_name": "default"})
    assert r.status_code == 400 and "main" in r.json()["msg"], r.text
    assert alice("DELETE", f"/template/cluster/{tid}").json() == {"success": True}
    assert alice("GET", f"/template/cluster/{tid}").status_code == 404


def _cgroup_conf(root: str) -> str:
    try:
        with open(f"{root}/etc/slurm/cgroup.conf") as f:
            return f.read()
    except OSError:
        return ""
