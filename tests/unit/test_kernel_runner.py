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
