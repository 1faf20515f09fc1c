"""The kernel runner's REPL semantics, in-process (the HTTP and callback parts run in the e2e tests)."""

import threading

from bridge.kernel.runner import Kernel


def run(kernel, code, run_id="r1", wait=5.0):
    r = kernel.start(run_id, code)
    return r, kernel.collect(r, wait)


def test_state_persists_between_runs_and_expressions_print():
    k = Kernel()
    assert run(k, "x = 40")[1]["status"] == "finished"
    _, res = run(k, "x + 2", "r2")
    assert res["console"] == [["stdout", "42\n"]] and res["exitCode"] == 0


def test_errors_give_a_clean_traceback_and_exit_code():
    _, res = run(Kernel(), "1/0")
    text = "".join(t for kind, t in res["console"] if kind == "stderr")
    assert res["exitCode"] == 1 and "ZeroDivisionError" in text and "During handling" not in text
    _, res = run(Kernel(), "def broken(:")
    assert res["exitCode"] == 1 and "SyntaxError" in res["console"][0][1]
    _, res = run(Kernel(), "raise SystemExit(3)")
    assert res["exitCode"] == 3


def test_long_runs_continue_and_input_waits():
    k = Kernel()
    r, res = run(k, "import time\nprint('a', flush=True)\ntime.sleep(1.0)\nprint('b')", wait=0.3)
    assert res["status"] == "continued" and res["console"] == [["stdout", "a\n"]]
    res = k.collect(r, 5.0)
    assert res["status"] == "finished" and res["console"] == [["stdout", "b\n"]]
    r, res = run(k, "name = input('who? ')\nprint('hi', name)")
    assert res["status"] == "waiting-input" and res["options"]["prompt"] == "who? "
    threading.Timer(0.1, r.inputs.put, args=("ada",)).start()
    res = k.collect(r, 5.0)
    assert res["status"] == "finished" and res["console"] == [["stdout", "hi ada\n"]]


def test_paths_are_confined_to_the_session_folder(tmp_path, monkeypatch):
    from bridge.kernel import runner

    monkeypatch.setattr(runner, "WORK", str(tmp_path))
    (tmp_path / "sub").mkdir()
    (tmp_path / "escape").symlink_to("/etc")
    assert runner.confine("sub") == str(tmp_path / "sub")
    assert runner.confine(str(tmp_path / "sub" / "f.txt")) == str(tmp_path / "sub" / "f.txt")
    for bad in ("../../etc/passwd", "/etc/passwd", "sub/../../x", "escape/passwd"):
        assert runner.confine(bad) is None, bad


def test_batch_mode_runs_build_then_exec(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "main.py").write_text("print('from main')\n")
    k = Kernel()
    r = k.start_batch("b1", {"build": "echo building", "exec": "*", "clean": None})
    status, out = until_not_continued(k, r)
    assert status["status"] == "build-finished" and out == "building\n"
    status, out = until_not_continued(k, r)
    assert status["status"] == "finished" and out == "from main\n" and status["exitCode"] == 0
    r = k.start_batch("b2", {"build": "exit 2", "exec": "echo never"})
    status, out = until_not_continued(k, r)
    assert status["status"] == "finished" and status["exitCode"] == 2 and out == ""


def until_not_continued(k, r):
    out = ""
    while True:
        res = k.collect(r, 5.0)
        out += "".join(t for _, t in res["console"])
        if res["status"] != "continued":
            return res, out


def test_interrupt_and_completion():
    import time

    k = Kernel()
    r, res = run(k, "import time\nwhile True:\n    time.sleep(0.05)", wait=0.3)
    assert res["status"] == "continued"
    time.sleep(0.1)
    assert k.interrupt() is True
    res = k.collect(r, 5.0)
    assert res["status"] == "finished" and "KeyboardInterrupt" in "".join(t for _, t in res["console"])
    run(k, "import os\nmy_variable = 1", "r2")
    assert "my_variable" in k.complete("x = my_va")
    assert "os.path" in k.complete("os.pa")
    assert k.interrupt() is False  # nothing runs


def test_service_definitions_from_the_image(tmp_path, monkeypatch):
    import json

    from bridge.kernel import runner

    (tmp_path / ".bridge").mkdir()
    defs = tmp_path / "defs"
    defs.mkdir()
    (defs / "board.json").write_text(json.dumps({
        "prestart": [{"action": "write_tempfile", "args": {"body": ["port={ports[0]}\n"]}, "ref": "cfg"}],
        "command": ["{runtime_path}", "-m", "http.server", "{ports[0]}", "--config", "{cfg}"],
        "allowed_arguments": ["--bind"], "allowed_envs": ["MODE"],
    }))
    monkeypatch.setattr(runner, "WORK", str(tmp_path))
    monkeypatch.setattr(runner.Services, "DEFS_DIR", str(defs))
    services = runner.Services()
    services.ports["board"] = 6006
    private = services.definition("board", {}, {})   # the default: a network of its own, reached by a socket
    assert private["kind"] == "unix" and private["sock"] == str(tmp_path / ".bridge" / "board.sock")
    assert private["command"][2:5] == ["--isolated", private["sock"], "6006"] and "http.server" in private["command"]
    monkeypatch.setenv("BRIDGE_SERVICE_NETWORK", "node")
    spec = services.definition("board", {"--bind": "127.0.0.1", "--evil": "x"}, {"MODE": "a", "LD_PRELOAD": "x"})
    assert spec["kind"] == "tcp" and spec["port"] == 6006
    cfg = spec["command"][spec["command"].index("--config") + 1]
    assert cfg.startswith(str(tmp_path / ".bridge"))
    assert (tmp_path / ".bridge" / cfg.rsplit("/", 1)[1]).read_text() == "port=6006\n"
    assert spec["command"][-2:] == ["--bind", "127.0.0.1"] and "--evil" not in spec["command"]
    assert spec["env"] == {"MODE": "a"}
    jupyter = services.definition("jupyter", {}, {})
    assert jupyter["kind"] == "unix" and any("base_url=/proxy/" in a for a in jupyter["command"])
    import pytest

    with pytest.raises(KeyError):
        services.definition("nothing-here", {}, {})


def test_a_service_whose_program_is_missing_says_so(tmp_path, monkeypatch):
    import pytest

    from bridge.kernel import runner

    (tmp_path / ".bridge").mkdir()
    monkeypatch.setattr(runner, "WORK", str(tmp_path))
    monkeypatch.setenv("PATH", str(tmp_path))   # no ttyd, no jupyter here
    with pytest.raises(RuntimeError, match="this image has no ttyd"):
        runner.Services().connect("ttyd", {}, {}, timeout_s=1)


ECHO_SERVER = """
import socket, sys
server = socket.create_server(("127.0.0.1", int(sys.argv[1])))
while True:
    conn, _ = server.accept()
    conn.sendall(conn.recv(100).upper())
    conn.close()
"""


def test_an_image_service_listens_on_a_loopback_of_its_own(tmp_path, monkeypatch):
    """An image-defined TCP service listened on the node's loopback, where every other user of the node
    could reach it (finding 12): now only the runner reaches it, through a socket in the user's folder."""
    import json
    import socket

    import pytest

    from bridge.kernel import runner

    (tmp_path / ".bridge").mkdir()
    defs = tmp_path / "defs"
    defs.mkdir()
    (tmp_path / "echo.py").write_text(ECHO_SERVER)
    (defs / "echo.json").write_text(json.dumps({"command": ["{runtime_path}", str(tmp_path / "echo.py"),
                                                            "{ports[0]}"]}))
    monkeypatch.setattr(runner, "WORK", str(tmp_path))
    monkeypatch.setattr(runner.Services, "DEFS_DIR", str(defs))
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    services = runner.Services()
    services.ports["echo"] = port
    try:
        with services.connect("echo", {}, {}, timeout_s=30) as conn:
            conn.sendall(b"hello")
            assert conn.recv(100) == b"HELLO"
        assert (tmp_path / ".bridge" / "echo.sock").stat().st_mode & 0o777 == 0o600
        with pytest.raises(ConnectionRefusedError):   # a neighbour on the node finds nothing there
            socket.create_connection(("127.0.0.1", port), timeout=5).close()
    finally:
        services.stop("echo")
    monkeypatch.setenv("BRIDGE_SERVICE_NETWORK", "node")   # the site's opt-out: the node's loopback
    try:
        with services.connect("echo", {}, {}, timeout_s=30) as conn:
            conn.sendall(b"x")
            assert conn.recv(100) == b"X"
        with socket.create_connection(("127.0.0.1", port), timeout=5) as neighbour:
            neighbour.sendall(b"y")
            assert neighbour.recv(100) == b"Y"
    finally:
        services.stop("echo")
