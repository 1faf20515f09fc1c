import jinja2
import pytest

from bridge.adapters import jobscript

VALUES = dict(session_id="s-1", session_name="n", kind="batch", owner="alice", image="python",
              image_path="/srv/images/py thon", cluster_size=1, access_key="AK", environ={"GREETING": "a'b $(x)"},
              work_dir="/srv/shared/bridge/alice/s-1", gpus=1, bootstrap_script=None,
              startup_command="echo $(whoami); rm -rf /", kernel_callback="http://gw/kernel-callback/s-1",
              service_network="private")


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
