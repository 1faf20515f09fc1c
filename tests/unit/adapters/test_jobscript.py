import jinja2
import pytest

from bridge.adapters import jobscript

VALUES = dict(session_id="s-1", session_name="n", kind="batch", owner="alice", image="python",
              image_path="/srv/images/py thon", cluster_size=1, access_key="AK", environ={"GREETING": "a'b $(x)"},
              work_dir="/srv/shared/bridge/alice/s-1", gpus=1, bootstrap_script=None,
              startup_command="echo $(whoami); rm -rf /", kernel_callback="http://gw/kernel-callback/s-1",
              service_network="private", kernel_network="node", binds=[])


def test_values_are_shell_quoted():
    out = jobscript.render("session.sh.j2", **VALUES)
    assert "export GREETING='a'\"'\"'b $(x)'" in out
    assert "'/srv/images/py thon'" in out and "--nv " in out
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
