import subprocess

import jinja2
import pytest

from bridge.adapters import jobscript
from bridge.domain import cluster

SID = "7ca6c9f0-9250-430a-9af1-9f3dfa258b6a"


def kernels(size: int, mode: str = "single-node", gpus: bool = True) -> list[dict]:
    ks = cluster.kernels(SID, size, mode)
    return [{"rank": k.rank, "host": k.host, "environ": cluster.environment(ks, k), "image_path": "/srv/images/py thon",
             "gpus": gpus} for k in ks]


def subs(size: int, cpus: int = 1) -> list[dict]:
    return [{"het_group": None, "base": 1, "count": size - 1, "cpus": cpus}] if size > 1 else []


VALUES = dict(session_id="s-1", session_name="n", kind="batch", owner="alice", image="python",
              image_path="/srv/images/py thon", cluster_mode="single-node", kernels=kernels(1),
              cluster_timeout_s=300, sub_groups=[], access_key="AK", environ={"GREETING": "a'b $(x)"},
              work_dir="/srv/shared/bridge/alice/s-1", gpus=1, bootstrap_script=None,
              startup_command="echo $(whoami); rm -rf /", kernel_callback="http://gw/kernel-callback/s-1",
              service_network="private", kernel_network="node", binds=[])


def test_values_are_shell_quoted():
    out = jobscript.render("session.sh.j2", **VALUES)
    assert "export GREETING='a'\"'\"'b $(x)'" in out
    assert "IMAGE_PATH='/srv/images/py thon'; NV=--nv" in out
    assert "kernel /bin/sh -c 'echo $(whoami); rm -rf /'" in out


def test_interactive_sessions_start_the_kernel_runner():
    out = jobscript.render("session.sh.j2", **{**VALUES, "kind": "interactive", "startup_command": None})
    assert "kernel python3 /home/work/.bridge/runner.py" in out
    assert "export BRIDGE_KERNEL_CALLBACK=http://gw/kernel-callback/s-1" in out
    assert "export BRIDGE_SERVICE_NETWORK=private" in out


def test_a_missing_value_is_an_error_not_an_empty_string():
    with pytest.raises(jinja2.UndefinedError):
        jobscript.render("session.sh.j2", **{k: v for k, v in VALUES.items() if k != "work_dir"})


def test_a_private_kernel_network_puts_the_kernel_behind_a_relay():
    values = {**VALUES, "kind": "interactive", "startup_command": "python3 -m http.server 8765",
              "bootstrap_script": "pip install x", "kernel_network": "private"}
    out = jobscript.render("session.sh.j2", **values)
    assert "apptainer -s exec --net --network none --nv" in out
    assert "BRIDGE_KERNEL_LISTEN=unix:/home/work/.bridge/runner.sock kernel python3" in out
    assert "python3 /home/work/.bridge/runner.py --relay /home/work/.bridge/runner.sock &" in out
    assert "export BRIDGE_STARTUP_COMMAND='python3 -m http.server 8765'" in out   # started by the runner,
    assert "kernel /bin/sh -c" not in out                                          # in its network
    assert "on_node /bin/sh -c 'pip install x'" in out                   # setup keeps the network
    node = jobscript.render("session.sh.j2", **{**values, "kernel_network": "node"})
    assert "--network none" not in node and "--relay" not in node
    assert "kernel /bin/sh -c 'python3 -m http.server 8765' &" in node


def test_folders_are_bound_with_their_mode():
    out = jobscript.render("session.sh.j2", **{**VALUES, "binds": [["/srv/v/alice/ab12", "/home/work/data", "rw"],
                                                               ["/srv/v/alice/cd34", "/home/work/ref", "ro"]]})
    assert "--bind /srv/v/alice/ab12:/home/work/data:rw --bind /srv/v/alice/cd34:/home/work/ref:ro " in out


def test_a_single_kernel_has_the_documented_cluster_environment_and_no_cluster_machinery():
    out = jobscript.render("session.sh.j2", **VALUES)
    assert f"0) export BACKENDAI_KERNEL_ID={SID}; export BACKENDAI_CLUSTER_SIZE=1;" in out
    assert "export BACKENDAI_CLUSTER_HOST=main1;" in out and "kernel_env 0" in out
    assert "srun" not in out and "join_cluster" not in out


@pytest.mark.parametrize("kind", ["batch", "interactive"])
@pytest.mark.parametrize("mode", ["multi-node", "single-node"])
def test_a_cluster_script_is_valid_bash_and_starts_the_subs_in_one_srun_step(kind, mode):
    out = jobscript.render("session.sh.j2", **{**VALUES, "kind": kind, "cluster_mode": mode,
                                                "kernels": kernels(3, mode), "sub_groups": subs(3, 2)})
    checked = subprocess.run(["bash", "-n"], input=out, text=True, capture_output=True)
    assert checked.returncode == 0, checked.stderr
    placement = "--relative=1 --nodes=2 --ntasks-per-node=1" if mode == "multi-node" else "--nodes=1"
    assert f"srun {placement} --ntasks=2 --cpus-per-task=2 --mem=0" in out
    assert "export BACKENDAI_CLUSTER_HOST=sub2;" in out and "CLUSTER_HOSTS='main1 sub1 sub2'" in out
    assert 'kernel_env $(($2 + SLURM_PROCID))' in out and '"$JOB_SCRIPT" --kernel 1 &' in out   # task 0: sub1
    # the copy the subs run lives beside the session folder, where no kernel's container can write
    assert "JOB_SCRIPT=/srv/shared/bridge/alice/s-1.job.sh" in out
    # the sub branch comes before the bootstrap script and main1's command: those run once, in main1
    assert out.index('if [ "${1:-}" = --kernel ]') < out.index('echo "[bridge] session')
    if kind == "batch":
        assert 'end_cluster "$main"' in out
    else:
        assert "--network none" not in out   # the kernels share the node's network, to reach each other


def test_a_clusters_kernels_find_each_other_with_the_hosts_file_bound():
    out = jobscript.render("session.sh.j2", **{**VALUES, "kernels": kernels(2), "sub_groups": subs(2)})
    assert '${HOSTS_FILE:+--bind "$HOSTS_FILE:/etc/hosts"}' in out
    assert "StrictHostKeyChecking yes" in out and "HostKeyAlias bridge-session" in out


def test_a_heterogeneous_cluster_starts_one_step_per_role_in_its_component():
    ks = cluster.kernels(SID, 3, "multi-node", [("main", 1), ("worker", 2)])
    values = [{"rank": k.rank, "host": k.host, "environ": cluster.environment(ks, k),
               "image_path": "/srv/images/gpu" if k.role == "main" else "/srv/images/cpu", "gpus": k.role == "main"}
              for k in ks]
    out = jobscript.render("session.sh.j2", **{**VALUES, "cluster_mode": "multi-node", "kernels": values,
                                                "sub_groups": [{"het_group": 1, "base": 1, "count": 2, "cpus": 4}]})
    assert subprocess.run(["bash", "-n"], input=out, text=True).returncode == 0
    assert "srun --het-group=1 --nodes=2 --ntasks-per-node=1 --ntasks=2 --cpus-per-task=4" in out
    assert "IMAGE_PATH=/srv/images/gpu; NV=--nv" in out and "IMAGE_PATH=/srv/images/cpu; NV= ;;" in out
    assert "CLUSTER_HOSTS='main1 worker1 worker2'" in out
