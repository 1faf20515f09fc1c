import asyncio
import time

import pytest

from bridge.adapters.runner import LocalRunner, SshRunner
from bridge.errors import CommandFailed


async def test_local_runner_runs_argv_with_env_and_stdin():
    done = await LocalRunner(user_switch="none").run(["sh", "-c", 'echo "$X"; cat'], env={"X": "a b"},
                                                     stdin="in")
    assert done.ok and done.stdout == "a b\nin" and done.argv[0] == "sh"


async def test_local_runner_reports_exit_code_and_stderr():
    done = await LocalRunner(user_switch="none").run(["sh", "-c", "echo oops >&2; exit 3"])
    assert done.rc == 3 and done.stderr.strip() == "oops"


async def test_local_runner_times_out():
    with pytest.raises(CommandFailed, match="timed out"):
        await LocalRunner(user_switch="none").run(["sleep", "5"], timeout_s=0.2)


async def test_local_runner_missing_program():
    with pytest.raises(CommandFailed, match="cannot run"):
        await LocalRunner(user_switch="none").run(["/nonexistent/prog"])


def test_every_command_gets_a_clean_environment_and_the_user_switch():
    clean = ["/usr/bin/env", "-i", "PATH=/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin", "LANG=C.UTF-8"]
    a = LocalRunner(["chroot", "/srv/r"], "runuser").build_argv(["sbatch"], "alice", {"K": "v"})
    assert a == ["chroot", "/srv/r", *clean, "runuser", "-u", "alice", "--", "env", "K=v", "sbatch"]
    assert LocalRunner([], "sudo").build_argv(["id"], "bob", None) == [*clean, "sudo", "-n", "-u", "bob", "--", "id"]


async def test_the_gateways_environment_never_reaches_a_command(monkeypatch):
    """Issue 12.3: `runuser ... sbatch --export=ALL` passed the gateway's whole environment (its secret, its
    database URL) into every job on the local transport."""
    monkeypatch.setenv("BRIDGE_SECRET", "gateway-secret-value")
    monkeypatch.setenv("BRIDGE_DATABASE__URL", "postgresql://bridge:pw@db/bridge")
    done = await LocalRunner(user_switch="none").run(["env"], env={"ASKED": "yes"})
    assert done.ok
    assert "gateway-secret-value" not in done.stdout and "postgresql://" not in done.stdout
    assert sorted(line.split("=")[0] for line in done.stdout.splitlines()) == ["ASKED", "LANG", "PATH"]


@pytest.mark.parametrize("bad", ["-oProxyCommand=x", "a b", "", "x;y", "../etc"])
def test_user_names_that_could_inject_are_refused(bad):
    with pytest.raises(CommandFailed):
        LocalRunner().build_argv(["id"], bad, None)


async def test_ssh_runner_refuses_without_known_hosts():
    r = SshRunner("127.0.0.1", 1, identity_file=None, known_hosts=None)
    with pytest.raises(CommandFailed, match="known_hosts"):
        await r.run(["true"], user="alice")


async def test_an_unreachable_login_node_is_not_tried_again_at_once(tmp_path):
    """Issue 19: a login node that is down made every call wait for its own connect timeout; now calls fail
    at once, saying when the next try is, and the node is tried again after 1 s, 2 s, 4 s..."""
    import socket

    with socket.socket() as s:   # a port where nothing listens
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    known = tmp_path / "known_hosts"
    known.write_text("")
    now = [100.0]
    r = SshRunner("127.0.0.1", port, identity_file=None, known_hosts=known, clock=lambda: now[0])
    with pytest.raises(CommandFailed, match="ConnectionRefused|Unable to connect|Errno 111"):
        await r.run(["true"], user="alice")
    with pytest.raises(CommandFailed, match="did not answer; next try in 1 s"):
        await r.run(["true"], user="bob")           # the node, not the login: every login waits
    now[0] += 1.5
    with pytest.raises(CommandFailed, match="ConnectionRefused|Unable to connect|Errno 111"):
        await r.run(["true"], user="alice")         # tried again, and refused again: now 2 s
    with pytest.raises(CommandFailed, match="next try in 2 s"):
        await r.run(["true"], user="alice")


async def test_a_command_that_prints_without_end_is_cut_off(monkeypatch):
    """`communicate()` held whatever a command printed: a runaway `squeue` (or a hostile PATH) could fill
    the gateway's memory."""
    from bridge.adapters import runner as runner_module

    monkeypatch.setattr(runner_module, "MAX_OUTPUT_BYTES", 1 << 20)
    with pytest.raises(CommandFailed, match="exceeds the cap"):
        await LocalRunner().run(["sh", "-c", "yes 'xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx' | cat"], timeout_s=20)
    done = await LocalRunner().run(["sh", "-c", "head -c 900000 /dev/zero; head -c 10 /dev/zero >&2"],
                                   stdin="ignored")
    assert len(done.stdout) == 900000 and len(done.stderr) == 10


async def test_a_timed_out_command_is_killed_with_what_it_started(tmp_path):
    """Killing only the command left its children holding the output pipe, and asyncio's wait() (which
    waits for the pipes) hung the caller for good."""
    marker = tmp_path / "child-alive"
    t0 = time.monotonic()
    with pytest.raises(CommandFailed, match="timed out"):
        await LocalRunner().run(["sh", "-c", f"(sleep 3; touch {marker}) & sleep 30"], timeout_s=0.5)
    assert time.monotonic() - t0 < 5
    await asyncio.sleep(3.5)
    assert not marker.exists()


def test_ssh_connections_offer_aes_gcm_and_encrypt_then_mac_first():
    """The login-node connection (commands and the SSH transport's forwards) offers AES-GCM first: one
    authenticated encryption per packet instead of CTR plus a MAC (the SSH tunnel's throughput); of what
    paramiko offers only 3DES and MD5 MACs are dropped, so a server without GCM still agrees on something."""
    import socket

    import paramiko

    from bridge.adapters.runner import ssh_transport

    a, b = socket.socketpair()
    try:
        options = ssh_transport(a).get_security_options()
        default = paramiko.Transport(b).get_security_options()
        assert options.ciphers[:2] == ("aes128-gcm@openssh.com", "aes256-gcm@openssh.com")
        assert options.digests[0] == "hmac-sha2-256-etm@openssh.com"
        refused = {"3des-cbc", "hmac-md5", "hmac-md5-96"}
        assert not refused & set(options.ciphers + options.digests)
        assert sorted(options.ciphers) == sorted(set(default.ciphers) - refused)
        assert sorted(options.digests) == sorted(set(default.digests) - refused)
    finally:
        a.close()
        b.close()
