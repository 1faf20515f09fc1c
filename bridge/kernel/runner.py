"""The in-job kernel runner: a small HTTP server inside the session's container that runs code like a REPL.

Stdlib only, Python 3.8+: it runs on the kernel image's own Python. At start it binds a free port on the
node, then reports `{port}` to the gateway, signed with the session's secret (read from a mode-600 file,
never from argv or a shared place), so no port is ever guessed. Every request must be signed with the same
secret (X-Bridge-Auth: an HMAC over method, target, time, nonce and body; see bridge/domain/runner_auth.py,
whose functions this file repeats): the secret itself never crosses the network.

POST /execute {"run_id", "mode": "query", "code", "options"}
  -> {"status": "finished"|"continued"|"waiting-input", "console": [[kind, text]...], "exitCode", "options"}
A run that takes longer than a moment answers `continued`; the caller asks again with the same run_id and
empty code. `input()` answers `waiting-input`; the next call's code is the line typed.
"""

from __future__ import annotations

import builtins
import hashlib
import hmac
import io
import json
import os
import queue
import re
import shutil
import socketserver
import subprocess
import sys
import tarfile
import tempfile
import threading
import time
import traceback
import urllib.parse
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

POLL_S = 0.5       # how long one /execute call waits for the run to finish before answering `continued`


MAX_POST_BYTES = 8 << 20    # code and requests (the gateway takes 4 MiB at most); files come by PUT, streamed
MAX_CONNECTIONS = 256       # at once; one more is closed unanswered (an open terminal or app stream is one)
REQUEST_TIMEOUT_S = 30      # for a request's head and body; a signed stream (terminal, app, file) has none
WATCH_S = 5                 # how often a relay checks that its runner is still there

# ---- signed requests: a copy of bridge/domain/runner_auth.py (this file runs alone, in the container) ----
AUTH_HEADER = "X-Bridge-Auth"
AUTH_WINDOW_S = 300
_NONCES: dict[str, float] = {}
_NONCES_LOCK = threading.Lock()


def auth_target(target: str) -> str:
    parts = urllib.parse.urlsplit(target)
    query = urllib.parse.urlencode(sorted(urllib.parse.parse_qsl(parts.query, keep_blank_values=True)))
    return parts.path + ("?" + query if query else "")


def auth_digest(body: bytes | None) -> str:
    return hashlib.sha256(body).hexdigest() if body is not None else "-"


def auth_mac(secret: str, method: str, target: str, digest: str, t: int, nonce: str) -> str:
    text = "\n".join((method.upper(), auth_target(target), str(t), nonce, digest))
    return hmac.new(secret.encode(), text.encode(), hashlib.sha256).hexdigest()


def auth_header(secret: str, method: str, target: str, body: bytes | None, now: float, nonce: str) -> str:
    t = int(now)
    digest = auth_digest(body)
    return f"t={t},n={nonce},d={digest},s={auth_mac(secret, method, target, digest, t, nonce)}"


_AUTH_FIELDS = re.compile(r"\At=(\d{1,12}),n=([0-9A-Za-z_-]{8,64}),(?:d=([0-9a-f]{64}|-),)?s=([0-9a-f]{64})\Z")


def auth_fields(value: str | None, now: float) -> tuple[int, str, str | None, str] | None:
    """(time, nonce, digest or None, mac) of a well-formed header inside the time window, else None."""
    m = _AUTH_FIELDS.match(value or "")
    if m is None or abs(now - int(m.group(1))) > AUTH_WINDOW_S:
        return None
    return int(m.group(1)), m.group(2), m.group(3), m.group(4)


def auth_mac_ok(secret: str, fields: tuple[int, str, str | None, str], method: str, target: str, digest: str) -> bool:
    t, nonce, _, given = fields
    return bool(secret) and hmac.compare_digest(given, auth_mac(secret, method, target, digest, t, nonce))


def auth_first_use(nonce: str, now: float) -> bool:
    with _NONCES_LOCK:
        if len(_NONCES) > 100000:
            for old in [n for n, seen in _NONCES.items() if seen < now - AUTH_WINDOW_S]:
                del _NONCES[old]
        if nonce in _NONCES:
            return False
        _NONCES[nonce] = now
    return True


def auth_verify(secret: str, value: str | None, method: str, target: str, digest: str, now: float) -> bool:
    fields = auth_fields(value, now)
    if fields is None or (fields[2] is not None and fields[2] != digest):
        return False
    return auth_mac_ok(secret, fields, method, target, digest) and auth_first_use(fields[1], now)


class Run:
    def __init__(self, run_id: str) -> None:
        self.run_id = run_id
        # ("stdout"|"stderr", text) | ("input", prompt) | ("done", code)
        self.events: queue.Queue[tuple[str, Any]] = queue.Queue()
        self.inputs: queue.Queue[str] = queue.Queue()
        self.done = False


class Kernel:
    """One persistent namespace; runs execute one at a time, in a worker thread."""

    def __init__(self) -> None:
        self.namespace: dict[str, Any] = {"__name__": "__main__", "__builtins__": builtins}
        self.lock = threading.Lock()
        self.runs: dict[str, Run] = {}
        self.current: Run | None = None
        self.thread: threading.Thread | None = None
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, run_id: str, code: str) -> Run:
        run = Run(run_id)
        self.runs = {run_id: run}
        self.thread = threading.Thread(target=self._work, args=(run, code), daemon=True)
        self.thread.start()
        return run

    def _work(self, run: Run, code: str) -> None:
        with self.lock:
            self.current = run
            out, err = _Stream(run, "stdout"), _Stream(run, "stderr")
            saved = sys.stdout, sys.stderr, builtins.input
            sys.stdout, sys.stderr = out, err
            builtins.input = lambda prompt="": _ask(run, str(prompt))
            exit_code = 0
            try:
                try:  # an expression prints its value, like the interactive prompt
                    compiled, is_expression = compile(code, "<input>", "eval"), True
                except SyntaxError:
                    compiled, is_expression = compile(code, "<input>", "exec"), False
                value = eval(compiled, self.namespace)  # noqa: S307 - it is the user's own kernel
                if is_expression and value is not None:
                    print(repr(value))
            except SystemExit as e:
                exit_code = e.code if isinstance(e.code, int) else 1
            except BaseException:
                exit_code = 1
                etype, value, tb = sys.exc_info()
                sys.stderr.write("".join(traceback.format_exception(etype, value, tb.tb_next if tb else None)))
            finally:
                out.flush()
                err.flush()
                sys.stdout, sys.stderr, builtins.input = saved
                run.events.put(("done", exit_code))
                self.current = None

    def interrupt(self) -> bool:
        """KeyboardInterrupt in the running code (or SIGINT to a batch step's process)."""
        import ctypes

        run, thread = self.current, self.thread
        if run is None:
            return False
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(2)
            return True
        if thread is not None and thread.ident is not None:
            ctypes.pythonapi.PyThreadState_SetAsyncExc(ctypes.c_ulong(thread.ident),
                                                       ctypes.py_object(KeyboardInterrupt))
            return True
        return False

    def complete(self, text: str) -> list[str]:
        """Completions of the last word of `text`, from the kernel's namespace (like the Python prompt)."""
        import re as _re
        import rlcompleter

        word = _re.split(r"[\s()\[\]{},;=+\-*/%<>!&|^~:]", text)[-1]
        completer = rlcompleter.Completer(self.namespace)
        out = []
        for i in range(200):
            match = completer.complete(word, i)
            if match is None:
                break
            out.append(match)
        return out

    def start_batch(self, run_id: str, options: dict[str, Any]) -> Run:
        run = Run(run_id)
        self.runs = {run_id: run}
        threading.Thread(target=self._batch, args=(run, options), daemon=True).start()
        return run

    def _batch(self, run: Run, options: dict[str, Any]) -> None:
        """Backend.AI batch mode: clean, build, then exec, each a shell command in /home/work ("*": the
        default of a Python kernel: `make` if there is a Makefile, then `python3 main.py`)."""
        with self.lock:
            self.current = run
            code = 0
            steps = [("clean", options.get("clean"), "clean-finished"),
                     ("build", options.get("build"), "build-finished"),
                     ("exec", options.get("exec"), None)]
            for step, command, phase in steps:
                if command == "*":
                    command = {"build": "make" if os.path.exists("Makefile") else None,
                               "exec": "python3 main.py", "clean": None}[step]
                if not command:
                    continue
                code = _shell(run, command)
                if code != 0:
                    break
                if phase:
                    run.events.put(("phase", phase))
            run.events.put(("done", code))
            self.current = None

    def collect(self, run: Run, wait_s: float) -> dict[str, Any]:
        console, status, exit_code, options = [], "continued", None, {}
        try:
            item = run.events.get(timeout=wait_s)
            while True:
                kind, value = item
                if kind == "done":
                    status, exit_code = "finished", value
                    run.done = True
                    break
                if kind == "phase":
                    status = value
                    break
                if kind == "input":
                    status, options = "waiting-input", {"is_password": False, "prompt": value}
                    if value:
                        console.append(["stdout", value])
                    break
                if console and console[-1][0] == kind:
                    console[-1][1] += value
                else:
                    console.append([kind, value])
                item = run.events.get_nowait()
        except queue.Empty:
            pass
        return {"runId": run.run_id, "status": status, "console": console, "exitCode": exit_code,
                "options": options, "files": []}


class _Stream(io.TextIOBase):
    def __init__(self, run: Run, kind: str) -> None:
        self.run, self.kind = run, kind

    def write(self, text: str) -> int:
        if text:
            self.run.events.put((self.kind, text))
        return len(text)


def _shell(run: Run, command: str) -> int:
    proc = subprocess.Popen(["/bin/sh", "-c", command], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    KERNEL.proc = proc

    def pump(stream: object, kind: str) -> None:
        for chunk in iter(lambda: stream.read1(65536), b""):  # type: ignore[attr-defined]
            run.events.put((kind, chunk.decode(errors="replace")))

    threads = [threading.Thread(target=pump, args=(proc.stdout, "stdout")),
               threading.Thread(target=pump, args=(proc.stderr, "stderr"))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    proc.stdout.close()  # type: ignore[union-attr]
    proc.stderr.close()  # type: ignore[union-attr]
    return proc.wait()


def _ask(run: Run, prompt: str) -> str:
    run.events.put(("input", prompt))
    return run.inputs.get()


class Services:
    """The session's service ports, started on first use and reached only through this runner.

    Three ways to reach one: `unix` services listen on a socket in the user's 700 folder (Jupyter, ttyd),
    `inetd` ones get each connection on their stdio (sshd -i): neither has a port on the node. `tcp` ones
    are image-defined services (/etc/backend.ai/service-defs/NAME.json) listening on their declared port:
    each is started in a network namespace of its own (`isolated`), where that port is on a loopback no
    other process of the node shares, and reached through a Unix socket in the user's folder. With
    BRIDGE_SERVICE_NETWORK=node (a site's choice, for services that need the network) they listen on the
    node's loopback instead, where other users of the same node could reach them.
    """

    DEFS_DIR = "/etc/backend.ai/service-defs"

    def __init__(self) -> None:
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.lock = threading.Lock()
        self.session_id = os.environ.get("BACKENDAI_SESSION_ID", "")
        self.ports: dict[str, int] = {}   # name -> declared container port (from the image label, via the gateway)
        self.preopen: set[str] = set()   # names of the session's preopen ports: the user starts what listens there

    def base_path(self, name: str) -> str:
        """Where the gateway's HTTP proxy serves the service; web apps are started under it."""
        return f"/proxy/{self.session_id}/{name}/"

    def definition(self, name: str, arguments: dict[str, Any], envs: dict[str, Any]) -> dict[str, Any]:
        sock = os.path.join(WORK, ".bridge", f"{name}.sock")
        if name in ("jupyter", "jupyterlab"):
            return {"kind": "unix", "sock": sock, "command": [
                "jupyter", "lab", f"--sock={sock}", "--sock-mode=0600", "--no-browser", "--ServerApp.token=",
                "--ServerApp.password=", "--ServerApp.root_dir=/home/work", "--ServerApp.allow_remote_access=True",
                f"--ServerApp.base_url={self.base_path(name)}"]}
        if name == "ttyd":
            shell = "/bin/bash" if os.path.exists("/bin/bash") else "/bin/sh"
            return {"kind": "unix", "sock": sock, "command": [
                "ttyd", "--writable", "-i", sock, "-b", self.base_path(name).rstrip("/"), shell, "-l"]}
        if name == "sshd":
            return {"kind": "inetd", "command": sshd_command()}
        if name in self.preopen:
            return {"kind": "tcp", "port": int(self.ports[name]), "command": None}
        path = os.path.join(self.DEFS_DIR, os.path.basename(name) + ".json")
        if not os.path.isfile(path):
            raise KeyError(name)
        with open(path) as f:
            spec = json.load(f)
        port = int(self.ports.get(name) or spec.get("port") or 0)
        if not port:
            raise KeyError(name)
        context: dict[str, Any] = {"ports": [port],
                                   "runtime_path": os.environ.get("BRIDGE_RUNTIME_PATH", sys.executable),
                                   "session_id": self.session_id, "base_path": self.base_path(name)}
        for action in spec.get("prestart") or []:
            result = prestart(action, context)
            if action.get("ref"):
                context[action["ref"]] = result
        command = [str(part).format(**context) for part in spec.get("command") or []]
        allowed = spec.get("allowed_arguments") or []
        for key, value in arguments.items():
            if key in allowed:
                command += [key, str(value)] if value not in (None, "") else [key]
        env = {k: str(v) for k, v in envs.items() if k in (spec.get("allowed_envs") or [])}
        if os.environ.get("BRIDGE_SERVICE_NETWORK", "private") == "node":
            return {"kind": "tcp", "port": port, "command": command, "env": env}
        # started by this file's `isolated` mode: a network of its own, reached by the socket
        return {"kind": "unix", "sock": sock, "env": env,
                "command": [sys.executable, os.path.abspath(__file__), "--isolated", sock, str(port), "--", *command]}

    def connect(self, name: str, arguments: dict[str, Any], envs: dict[str, Any], timeout_s: float = 90.0) -> object:
        """A connected socket to the service (started if it is not running), or for inetd ones the command."""
        import socket as _socket
        import time

        spec = self.definition(name, arguments, envs)
        if spec["kind"] == "inetd":
            return spec
        if spec["command"] is None:   # a preopen port: connect to what the user runs there, start nothing
            try:
                probe = _socket.create_connection(("127.0.0.1", spec["port"]), timeout=5)
            except OSError:
                raise RuntimeError(f"nothing listens on port {spec['port']} in the session yet (a preopen port: "
                                   "start your service there first)") from None
            probe.settimeout(None)
            return probe
        with self.lock:
            proc = self.procs.get(name)
            if proc is None or proc.poll() is not None:
                if spec["kind"] == "unix" and os.path.exists(spec["sock"]):
                    os.unlink(spec["sock"])
                try:
                    with open(os.path.join(WORK, ".bridge", f"{name}.log"), "ab") as log:   # the child keeps its copy
                        self.procs[name] = proc = subprocess.Popen(
                            spec["command"], stdout=log, stderr=log, cwd=WORK, start_new_session=True,
                            env={**os.environ, **spec.get("env", {})})
                except FileNotFoundError:
                    raise RuntimeError(f"this image has no {spec['command'][0]} (the {name} service needs it)") \
                        from None
            deadline = time.monotonic() + timeout_s
            while time.monotonic() < deadline:
                if proc.poll() is not None:
                    raise RuntimeError(f"{name} exited with {proc.returncode}; see .bridge/{name}.log")
                if spec["kind"] == "unix":
                    probe = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM)
                    address: str | tuple[str, int] = spec["sock"]
                else:
                    probe = _socket.socket(_socket.AF_INET, _socket.SOCK_STREAM)
                    address = ("127.0.0.1", spec["port"])
                try:
                    probe.connect(address)
                    return probe
                except OSError:
                    probe.close()
                time.sleep(0.2)
        raise RuntimeError(f"{name} did not start within {timeout_s:.0f} s")

    def stop(self, name: str) -> bool:
        with self.lock:
            proc = self.procs.pop(name, None)
        if proc is None or proc.poll() is not None:
            return False
        import signal

        try:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(timeout=10)
        except (OSError, subprocess.TimeoutExpired):
            os.killpg(proc.pid, signal.SIGKILL)
        return True


def prestart(action: dict[str, Any], context: dict[str, Any]) -> object:
    """One prestart action of a service definition (write_file, write_tempfile, mkdir, log, run_command)."""
    args = action.get("args") or {}

    def fill(value: object) -> str:
        return str(value).format(**context)

    kind = action.get("action")
    if kind in ("write_file", "write_tempfile"):
        body = "".join(fill(line) for line in args.get("body") or [])
        if kind == "write_tempfile":
            fd, path = tempfile.mkstemp(dir=os.path.join(WORK, ".bridge"), prefix="svc-")
            os.close(fd)
        else:
            path = fill(args["filename"])
        with open(path, "a" if args.get("append") else "w") as f:
            f.write(body)
        os.chmod(path, int(str(args.get("mode") or "755"), 8))
        return path
    if kind == "mkdir":
        os.makedirs(fill(args["path"]), exist_ok=True)
        return None
    if kind == "log":
        sys.stderr.write(fill(args.get("body", "")) + "\n")
        return None
    if kind == "run_command":
        done = subprocess.run([fill(a) for a in args.get("command") or []], capture_output=True, cwd=WORK)
        return done.stdout.decode(errors="replace").strip()
    raise RuntimeError(f"unknown prestart action {kind!r}")


def replace_file(path: str, content: str) -> None:
    """Write a file whole: readers see the old content or the new, never a part (unchanged: untouched)."""
    try:
        with open(path) as f:
            if f.read() == content:
                return
    except OSError:
        pass
    fd, tmp = tempfile.mkstemp(dir=os.path.dirname(path), prefix=".tmp-")
    with os.fdopen(fd, "w") as f:
        f.write(content)
    os.replace(tmp, path)


def sshd_command() -> dict[str, Any]:
    """`sshd -i` as the session's user: a host key and config of its own in .bridge/sshd, the key pair of
    the user's access key in authorized_keys, and `work` (the login name the clients use) resolving to
    this user through nss_wrapper."""

    sshd = next((p for p in ("/usr/sbin/sshd", "/usr/bin/sshd") if os.path.exists(p)), None)
    if sshd is None:
        raise RuntimeError("this image has no OpenSSH server (sshd), so the sshd service is not available")
    home = os.path.join(WORK, ".bridge", "sshd")
    os.makedirs(home, mode=0o700, exist_ok=True)
    host_key = os.path.join(home, "host_ed25519")
    with SSHD_SETUP:   # concurrent first connections: one host key, made once
        return _sshd_setup(sshd, home, host_key)


SSHD_SETUP = threading.Lock()


def _sshd_setup(sshd: str, home: str, host_key: str, *, authorized: tuple[str, ...] = (),
                config_name: str = "sshd_config", set_env: dict[str, str] | None = None) -> dict[str, Any]:
    import glob
    import pwd

    if not os.path.exists(host_key):
        made = subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", host_key], capture_output=True)
        if made.returncode != 0:
            raise RuntimeError(f"cannot make the sshd host key: {made.stderr.decode(errors='replace')[:200]}")
    me = pwd.getpwuid(os.getuid())
    # every connection starts its own sshd, which reads these files: they are replaced whole, never
    # rewritten in place (a truncated passwd made a concurrent login fail with "Permission denied")
    passwd = os.path.join(home, config_name.replace("sshd_config", "passwd"))
    replace_file(passwd, "".join(":".join(str(x) for x in e) + "\n" for e in pwd.getpwall())
                 + f"work:x:{me.pw_uid}:{me.pw_gid}:{me.pw_gecos}:/home/work:{me.pw_shell or '/bin/sh'}\n")
    sftp = next((p for p in ("/usr/lib/openssh/sftp-server", "/usr/libexec/openssh/sftp-server")
                 if os.path.exists(p)), "internal-sftp")
    config = os.path.join(home, config_name)
    keys = " ".join(authorized or (os.path.join(WORK, ".bridge", "authorized_keys"),))
    env = {"BACKENDAI_SESSION_ID": os.environ.get("BACKENDAI_SESSION_ID", ""), **(set_env or {})}
    replace_file(config, f"HostKey {host_key}\nAuthorizedKeysFile {keys}\n"
                 "PasswordAuthentication no\nKbdInteractiveAuthentication no\nUsePAM no\nStrictModes no\n"
                 f"PidFile none\nPrintMotd no\nPermitUserEnvironment no\nSubsystem sftp {sftp}\n"
                 # one SetEnv line: sshd keeps the first of several
                 + "SetEnv " + " ".join(f"{k}={v}" for k, v in env.items() if v and " " not in v and '"' not in v)
                 + "\n")
    env = {"LD_PRELOAD": " ".join(glob.glob("/usr/lib/*/libnss_wrapper.so") + glob.glob("/usr/lib*/libnss_wrapper.so")),
           "NSS_WRAPPER_PASSWD": passwd, "NSS_WRAPPER_GROUP": "/etc/group"}
    return {"argv": [sshd, "-i", "-e", "-f", config], "env": env}


CLUSTER_ENV = ("BACKENDAI_KERNEL_ID", "BACKENDAI_CLUSTER_SIZE", "BACKENDAI_CLUSTER_HOSTS", "BACKENDAI_CLUSTER_REPLICAS",
               "BACKENDAI_CLUSTER_HOST", "BACKENDAI_CLUSTER_IDX", "BACKENDAI_CLUSTER_ROLE",
               "BACKENDAI_CLUSTER_LOCAL_RANK", "BACKENDAI_SESSION_NAME", "SLURM_JOB_ID", "SLURMD_NODENAME")


def cluster_sshd(host: str, cluster_dir: str) -> int:
    """`runner.py --cluster-sshd HOST DIR`: the sshd through which the other kernels of a cluster session reach
    this one (`ssh sub1`). It listens on a free port of the node (port 0: no race with other jobs), writes that
    port to DIR/HOST.port, and starts `sshd -i` for each connection: the session's own key pair alone gets in
    (DIR/id_cluster, made by the job for this session) and the host key is the session's (DIR/host_key, which
    the kernels' known_hosts pins), so neither another user of the node nor one on the network between the
    nodes can log in or pose as a kernel."""
    import socket

    sshd = next((p for p in ("/usr/sbin/sshd", "/usr/bin/sshd") if os.path.exists(p)), None)
    if sshd is None:
        sys.stderr.write("[bridge] this image has no OpenSSH server: the kernels cannot ssh into each other\n")
        return 3
    authorized = [os.path.join(cluster_dir, "id_cluster.pub")]
    if os.path.exists(os.path.join(WORK, ".bridge", "authorized_keys")):
        authorized.append(os.path.join(WORK, ".bridge", "authorized_keys"))
    spec = _sshd_setup(sshd, cluster_dir, os.path.join(cluster_dir, "host_key"), authorized=tuple(authorized),
                       config_name=f"{host}.sshd_config",   # one per kernel: they start at once
                       set_env={k: os.environ.get(k, "") for k in CLUSTER_ENV})
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("0.0.0.0", 0))
    listener.listen(64)
    replace_file(os.path.join(cluster_dir, f"{host}.port"), f"{listener.getsockname()[1]}\n")
    sys.stderr.write(f"[bridge] {host}: sshd for the other kernels on port {listener.getsockname()[1]}\n")
    env = {**os.environ, **spec["env"]}
    while True:
        conn, _ = listener.accept()
        with conn:
            subprocess.Popen(spec["argv"], stdin=conn.fileno(), stdout=conn.fileno(), stderr=subprocess.DEVNULL,
                             env=env, cwd=WORK, start_new_session=True)
        # reap what has ended
        while True:
            try:
                if os.waitpid(-1, os.WNOHANG)[0] == 0:
                    break
            except ChildProcessError:
                break


KERNEL = Kernel()
SERVICES = Services()
SECRET = ""


class Handler(BaseHTTPRequestHandler):
    timeout = REQUEST_TIMEOUT_S   # a client that sends its request slowly (or never) is cut off

    def log_message(self, *args: object) -> None:
        pass

    def setup(self) -> None:
        super().setup()
        # a deadline for the whole request, not only for each read: a peer that sends a byte now and then
        # must not hold a connection slot for long
        self._deadline = threading.Timer(REQUEST_TIMEOUT_S, self._cut)
        self._deadline.daemon = True
        self._deadline.start()

    def _cut(self) -> None:
        import socket as _socket

        try:
            self.connection.shutdown(_socket.SHUT_RDWR)
        except OSError:
            pass

    def finish(self) -> None:
        self._deadline.cancel()
        super().finish()

    def _streaming(self) -> None:
        """The request was authentic: what follows (a terminal, an app, a file) may be idle for long."""
        self._deadline.cancel()
        self.connection.settimeout(None)

    def _reply(self, status: int, body: dict[str, Any]) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _authorized(self, body: bytes | None = None) -> bool:
        return auth_verify(SECRET, self.headers.get(AUTH_HEADER), self.command, self.path, auth_digest(body),
                           time.time())

    def do_POST(self) -> None:  # noqa: N802
        try:
            length = int(self.headers.get("Content-Length", "0") or 0)
        except ValueError:
            length = -1
        now = time.time()
        fields = auth_fields(self.headers.get(AUTH_HEADER), now)
        # the MAC covers the digest the header names: checked before a byte of the body is read
        if not 0 <= length <= MAX_POST_BYTES or fields is None or fields[2] is None \
                or not auth_mac_ok(SECRET, fields, "POST", self.path, fields[2]):
            self.close_connection = True
            return self._reply(403, {"error": "forbidden"})
        raw = self.rfile.read(length)
        if auth_digest(raw) != fields[2] or not auth_first_use(fields[1], now):
            return self._reply(403, {"error": "forbidden"})
        self._streaming()   # the gateway's own request: no deadline from here (a service may take long to start)
        try:
            req = json.loads(raw or b"{}")
        except ValueError:
            return self._reply(400, {"error": "bad json"})
        if self.path == "/ping":
            return self._reply(200, {"ok": True, "pid": os.getpid()})
        if self.path == "/pty":
            return self._pty(req)
        if self.path == "/service":
            return self._service(req)
        if self.path == "/service/stop":
            return self._reply(200, {"stopped": SERVICES.stop(str(req.get("name") or ""))})
        if self.path == "/interrupt":
            return self._reply(200, {"interrupted": KERNEL.interrupt()})
        if self.path == "/complete":
            return self._reply(200, {"result": KERNEL.complete(str(req.get("code") or ""))})
        if self.path != "/execute":
            return self._reply(404, {"error": "no such path"})
        run_id, code = str(req.get("run_id") or ""), str(req.get("code") or "")
        run = KERNEL.runs.get(run_id)
        if run is None or run.done:
            if KERNEL.current is not None:
                return self._reply(409, {"error": "another run is in progress"})
            if req.get("mode") == "batch":
                run = KERNEL.start_batch(run_id, dict(req.get("options") or {}))
            else:
                run = KERNEL.start(run_id, code)
        elif code and not run.done and run.events.empty():
            run.inputs.put(code)   # the answer to input()
        return self._reply(200, KERNEL.collect(run, POLL_S))

    def _pty(self, req: dict[str, Any]) -> None:
        """A terminal: after the answer, the connection carries frames (type byte, 4-byte length, payload):
        `d` data both ways, `r` resize {"rows","cols"} and `x` restart from the gateway."""
        self.send_response(200)
        self.send_header("Content-Type", "application/x-bridge-pty")
        self.end_headers()
        self.wfile.flush()
        term = Terminal(int(req.get("rows") or 24), int(req.get("cols") or 80))
        self._streaming()
        sock = self.connection
        lock = threading.Lock()

        def send(kind: bytes, payload: bytes) -> None:
            with lock:
                sock.sendall(kind + len(payload).to_bytes(4, "big") + payload)

        def pump() -> None:
            while True:
                data = term.read()
                if not data:
                    break
                try:
                    send(b"d", data)
                except OSError:
                    break

        threading.Thread(target=pump, daemon=True).start()
        try:
            while True:
                head = _recv_exact(self.rfile, 5)
                if head is None:
                    break
                payload = _recv_exact(self.rfile, int.from_bytes(head[1:], "big")) or b""
                kind = head[:1]
                if kind == b"d":
                    term.write(payload)
                elif kind == b"r":
                    size = json.loads(payload)
                    term.resize(int(size["rows"]), int(size["cols"]))
                elif kind == b"x":
                    term.restart()
                    threading.Thread(target=pump, daemon=True).start()
        finally:
            term.close()

    def _service(self, req: dict[str, Any]) -> None:
        """Start the service if it is not running, then carry this connection's bytes to and from it."""

        name = str(req.get("name") or "")
        if req.get("port"):
            SERVICES.ports[name] = int(req["port"])
        if req.get("protocol") == "preopen":
            SERVICES.preopen.add(name)
        self.close_connection = True   # after the answer this connection is the service's, not HTTP's
        try:
            target = SERVICES.connect(name, dict(req.get("arguments") or {}), dict(req.get("envs") or {}))
        except KeyError:
            return self._reply(404, {"error": f"no service {name!r} in this kernel"})
        except (RuntimeError, OSError, ValueError) as e:
            return self._reply(503, {"error": str(e)})
        self.send_response(200)
        self.send_header("Content-Type", "application/x-bridge-stream")
        self.end_headers()
        self.wfile.flush()
        self._streaming()   # also puts the socket back in blocking mode, as an inetd service expects it
        down = self.connection
        if isinstance(target, dict):   # inetd: the service speaks on the connection itself
            command = target["command"]
            with open(os.path.join(WORK, ".bridge", f"{name}.log"), "ab") as log:
                subprocess.run(command["argv"], stdin=down.fileno(), stdout=down.fileno(), stderr=log, cwd=WORK,
                               env={**os.environ, **command["env"]})
            return None
        # the gateway sends nothing after its request until it has read this answer, so the HTTP reader
        # holds no stream bytes: the socket itself carries the stream from here on
        splice(down, target)
        target.close()  # type: ignore[attr-defined]
        return None

    def do_PUT(self) -> None:  # noqa: N802
        """PUT /files/<relative path>: the body becomes the file (streamed to disk, then renamed)."""
        if not self._authorized():
            return self._reply(403, {"error": "forbidden"})
        target = confine(urllib.parse.unquote(self.path[len("/files/"):]))
        if target is None or not self.path.startswith("/files/") or target == WORK:
            return self._reply(403, {"error": "the path leaves the session folder"})
        os.makedirs(os.path.dirname(target), exist_ok=True)
        remaining = int(self.headers.get("Content-Length", "0"))
        self._streaming()
        fd, tmp = tempfile.mkstemp(dir=os.path.dirname(target), prefix=".upload-")
        with os.fdopen(fd, "wb") as out:
            while remaining > 0:
                chunk = self.rfile.read(min(remaining, 1 << 20))
                if not chunk:
                    break
                out.write(chunk)
                remaining -= len(chunk)
        if remaining:
            os.unlink(tmp)
            return self._reply(400, {"error": "short upload"})
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # as a file the user made (mkstemp creates 0600)
        os.replace(tmp, target)
        return self._reply(200, {"ok": True, "path": os.path.relpath(target, WORK)})

    def do_GET(self) -> None:  # noqa: N802
        if not self._authorized():
            return self._reply(403, {"error": "forbidden"})
        self._streaming()
        url = urllib.parse.urlsplit(self.path)
        rel = urllib.parse.parse_qs(url.query).get("path", ["."])[0]
        target = confine(rel)
        if target is None:
            return self._reply(403, {"error": "the path leaves the session folder"})
        if not os.path.exists(target):
            return self._reply(404, {"error": f"no such file: {rel}"})
        if url.path == "/files":
            return self._reply(200, {"files": listing(target)})
        if url.path == "/raw":
            if not os.path.isfile(target):
                return self._reply(400, {"error": f"not a file: {rel}"})
            self.send_response(200)
            self.send_header("Content-Type", "application/octet-stream")
            self.send_header("Content-Length", str(os.path.getsize(target)))
            self.end_headers()
            with open(target, "rb") as f:
                shutil.copyfileobj(f, self.wfile, 1 << 20)
            return None
        if url.path == "/download":
            self.send_response(200)
            self.send_header("Content-Type", "application/x-tar")
            self.end_headers()  # HTTP/1.0: the stream ends when the connection closes
            with tarfile.open(fileobj=self.wfile, mode="w|") as tar:
                tar.add(target, arcname=os.path.basename(target.rstrip("/")) or ".")
            return None
        return self._reply(404, {"error": "no such path"})


def _recv_exact(stream: object, n: int) -> bytes | None:
    buf = b""
    while len(buf) < n:
        chunk = stream.read(n - len(buf))  # type: ignore[attr-defined]
        if not chunk:
            return None
        buf += chunk
    return buf


class Terminal:
    """A login shell on a pseudo-terminal, in the session folder."""

    def __init__(self, rows: int, cols: int) -> None:
        self.rows, self.cols = rows, cols
        self._start()

    def _start(self) -> None:
        import pty

        self.master, slave = pty.openpty()
        self.resize(self.rows, self.cols)
        shell = "/bin/bash" if os.path.exists("/bin/bash") else "/bin/sh"
        env = {**os.environ, "TERM": "xterm-256color", "PS1": "\\u@\\h:\\w$ "}
        self.proc = subprocess.Popen([shell, "-i"], stdin=slave, stdout=slave, stderr=slave, cwd=WORK, env=env,
                                     start_new_session=True, close_fds=True)
        os.close(slave)

    def resize(self, rows: int, cols: int) -> None:
        import fcntl
        import struct
        import termios

        self.rows, self.cols = rows, cols
        fcntl.ioctl(self.master, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))

    def read(self) -> bytes:
        try:
            return os.read(self.master, 65536)
        except OSError:
            return b""

    def write(self, data: bytes) -> None:
        os.write(self.master, data)

    def restart(self) -> None:
        self.close()
        self._start()

    def close(self) -> None:
        try:
            self.proc.kill()
            self.proc.wait(timeout=5)
        except (OSError, subprocess.TimeoutExpired):
            pass
        try:
            os.close(self.master)
        except OSError:
            pass


WORK = os.path.realpath(os.getcwd())


def confine(rel: str) -> str | None:
    """The real path of `rel` inside the session folder, or None if it (or a link on the way) leaves it."""
    path = os.path.realpath(os.path.join(WORK, rel))  # an absolute rel stays absolute, then must be inside
    return path if path == WORK or path.startswith(WORK + os.sep) else None


def listing(target: str) -> list[dict[str, Any]]:
    names = sorted(os.listdir(target)) if os.path.isdir(target) else [os.path.basename(target)]
    base = target if os.path.isdir(target) else os.path.dirname(target)
    out = []
    for name in names:
        st = os.lstat(os.path.join(base, name))
        out.append({"filename": name, "size": st.st_size, "mtime": st.st_mtime, "mode": oct(st.st_mode)[-4:],
                    "is_dir": os.path.isdir(os.path.join(base, name))})
    return out


def report(port: int) -> None:
    url = os.environ["BRIDGE_KERNEL_CALLBACK"]
    body = json.dumps({"port": port, "pid": os.getpid(), "node": os.environ.get("SLURMD_NODENAME"),
                       "gpus": os.environ.get("CUDA_VISIBLE_DEVICES"), "auth": "hmac-v1",
                       "job_gpus": os.environ.get("SLURM_JOB_GPUS"),
                       "shards": os.environ.get("SLURM_SHARDS_ON_NODE")}).encode()
    # signed over the callback's own path (/kernel-callback/<session>), whatever prefix a proxy adds
    target = "/kernel-callback/" + urllib.parse.urlsplit(url).path.rsplit("/kernel-callback/", 1)[-1]
    signature = auth_header(SECRET, "POST", target, body, time.time(), os.urandom(16).hex())
    req = urllib.request.Request(url, data=body, method="POST",
                                 headers={"Content-Type": "application/json", AUTH_HEADER: signature})
    urllib.request.urlopen(req, timeout=30).read()  # noqa: S310 - the gateway's own URL


def _pipe(src: object, dst: object) -> None:
    import socket as _socket

    try:
        while True:
            data = src.recv(65536)  # type: ignore[attr-defined]
            if not data:
                break
            dst.sendall(data)  # type: ignore[attr-defined]
    except OSError:
        pass
    finally:
        try:
            dst.shutdown(_socket.SHUT_WR)  # type: ignore[attr-defined]
        except OSError:
            pass


def splice(down: object, up: object, linger_s: float = 60.0) -> None:
    """Carry bytes both ways between two connected sockets until `down` stops sending (then up to
    `linger_s` more for what `up` still has to say)."""
    t = threading.Thread(target=_pipe, args=(up, down), daemon=True)
    t.start()
    _pipe(down, up)
    t.join(timeout=linger_s)


class _Bounded:
    """A thread per connection, at most MAX_CONNECTIONS of them: one more is closed at once."""

    slots: threading.BoundedSemaphore

    def process_request(self, request: Any, client_address: Any) -> None:
        if not self.slots.acquire(blocking=False):
            self.shutdown_request(request)  # type: ignore[attr-defined]
            return
        try:
            super().process_request(request, client_address)  # type: ignore[misc]
        except BaseException:
            self.slots.release()
            raise

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)  # type: ignore[misc]
        finally:
            self.slots.release()

    def handle_error(self, request: Any, client_address: Any) -> None:
        if not isinstance(sys.exc_info()[1], (ConnectionError, TimeoutError)):   # a peer that went away
            super().handle_error(request, client_address)  # type: ignore[misc]


class Server(_Bounded, ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, address: tuple[str, int], handler: type[BaseHTTPRequestHandler]) -> None:
        super().__init__(address, handler)
        self.slots = threading.BoundedSemaphore(MAX_CONNECTIONS)


class UnixServer(_Bounded, socketserver.ThreadingUnixStreamServer):
    """The same on a Unix socket (mode 0600), for a runner in a network of its own."""

    daemon_threads = True

    def __init__(self, path: str, handler: type[BaseHTTPRequestHandler]) -> None:
        if os.path.exists(path):
            os.unlink(path)
        old = os.umask(0o177)
        try:
            super().__init__(path, handler)
        finally:
            os.umask(old)
        self.slots = threading.BoundedSemaphore(MAX_CONNECTIONS)


def relay(sock_path: str) -> int:
    """`runner.py --relay SOCK`, on the node's network: carry each connection from the gateway to the
    runner's socket (the runner has a network of its own: sessions.kernel_network = private), and report
    this relay's port as the runner's. Bytes only: the runner checks every request's signature itself."""
    import socket as _socket

    global SECRET
    with open(os.environ["BRIDGE_KERNEL_SECRET_FILE"]) as f:
        SECRET = f.read().strip()
    deadline = time.monotonic() + 120
    while not os.path.exists(sock_path):
        if time.monotonic() > deadline:
            sys.stderr.write(f"[bridge] the kernel runner never opened {sock_path}\n")
            return 1
        time.sleep(0.1)
    listener = _socket.create_server((os.environ.get("BRIDGE_KERNEL_BIND", "0.0.0.0"), 0))
    slots = threading.BoundedSemaphore(MAX_CONNECTIONS)

    def carry(down: _socket.socket) -> None:
        try:
            with _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM) as up:
                up.connect(sock_path)
                t = threading.Thread(target=_pipe, args=(down, up), daemon=True)
                t.start()
                _pipe(up, down)   # the runner is done with this connection (or cut it at its deadline):
                down.shutdown(_socket.SHUT_RDWR)   # so is the relay, whatever the peer still holds open
                t.join(timeout=10)
        except OSError:
            pass
        finally:
            down.close()
            slots.release()

    def watch() -> None:   # the runner ended (its socket refuses): so does the relay
        while True:
            time.sleep(WATCH_S)
            try:
                with _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM) as probe:
                    probe.connect(sock_path)
            except OSError:
                listener.shutdown(_socket.SHUT_RDWR)   # ends the accept() below
                listener.close()
                return

    threading.Thread(target=watch, daemon=True).start()
    report(listener.getsockname()[1])
    sys.stderr.write(f"[bridge] kernel relay listening on port {listener.getsockname()[1]}\n")
    while True:
        try:
            down, _ = listener.accept()
        except OSError:   # closed by watch(): the runner is gone
            return 0
        if not slots.acquire(blocking=False):
            down.close()
            continue
        threading.Thread(target=carry, args=(down,), daemon=True).start()


CLONE_NEWUSER, CLONE_NEWNET = 0x10000000, 0x40000000


def _private_network() -> None:
    """Move this (single-threaded) process into a new user and network namespace, keeping its own uid and
    gid, and bring that namespace's loopback up. Needs nothing but unprivileged user namespaces, which
    Apptainer's own default mode already needs."""
    import ctypes
    import fcntl
    import socket as _socket
    import struct

    uid, gid = os.getuid(), os.getgid()
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.unshare(CLONE_NEWUSER | CLONE_NEWNET) != 0:
        raise OSError(ctypes.get_errno(), "unshare(CLONE_NEWUSER|CLONE_NEWNET): " + os.strerror(ctypes.get_errno()))
    for path, text in (("/proc/self/setgroups", "deny"), ("/proc/self/uid_map", f"{uid} {uid} 1"),
                       ("/proc/self/gid_map", f"{gid} {gid} 1")):
        with open(path, "w") as f:
            f.write(text)
    with _socket.socket(_socket.AF_INET, _socket.SOCK_DGRAM) as s:
        flags = struct.unpack("16sH", fcntl.ioctl(s, 0x8913, struct.pack("16sH", b"lo", 0)))[1]   # SIOCGIFFLAGS
        fcntl.ioctl(s, 0x8914, struct.pack("16sH", b"lo", flags | 0x1))   # SIOCSIFFLAGS: IFF_UP


def isolated(sock_path: str, port: int, argv: list[str]) -> int:
    """`runner.py --isolated SOCK PORT -- ARGV...`: run ARGV in a network namespace of its own and carry each
    connection to SOCK (mode 0600, in the user's 700 folder) to its PORT there. The socket appears once the
    service answers; this process ends with the service."""
    import socket as _socket

    try:
        _private_network()
    except OSError as e:
        sys.stderr.write(f"[bridge] cannot give the service a network of its own: {e}. The site can allow "
                         "unprivileged user namespaces, or set sessions.service_network = \"node\".\n")
        return 97
    service = subprocess.Popen(argv, cwd=WORK)
    while service.poll() is None:
        try:
            _socket.create_connection(("127.0.0.1", port), timeout=1).close()
            break
        except OSError:
            time.sleep(0.2)
    else:
        return service.returncode
    listener = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM)
    old = os.umask(0o177)
    try:
        listener.bind(sock_path)
    finally:
        os.umask(old)
    listener.listen(64)

    def serve(down: object) -> None:
        try:
            up = _socket.create_connection(("127.0.0.1", port), timeout=10)
            up.settimeout(None)
        except OSError:
            down.close()  # type: ignore[attr-defined]
            return
        splice(down, up)
        up.close()
        down.close()  # type: ignore[attr-defined]

    def accept() -> None:
        while True:
            down, _ = listener.accept()
            threading.Thread(target=serve, args=(down,), daemon=True).start()

    threading.Thread(target=accept, daemon=True).start()
    return service.wait()


def main() -> None:
    global SECRET
    with open(os.environ["BRIDGE_KERNEL_SECRET_FILE"]) as f:
        SECRET = f.read().strip()
    listen = os.environ.get("BRIDGE_KERNEL_LISTEN", "")
    if listen.startswith("unix:"):   # a network of its own: the relay reports, and reaches us here
        local = UnixServer(listen[len("unix:"):], Handler)
        startup = os.environ.pop("BRIDGE_STARTUP_COMMAND", "")
        if startup:   # in this network, where what it serves is on our loopback (the job's log gets its output)
            subprocess.Popen(["/bin/sh", "-c", startup], cwd=WORK, start_new_session=True)
        local.serve_forever()
        return
    server = Server((os.environ.get("BRIDGE_KERNEL_BIND", "0.0.0.0"), 0), Handler)
    report(server.server_address[1])
    sys.stderr.write(f"[bridge] kernel runner listening on port {server.server_address[1]}\n")
    server.serve_forever()


if __name__ == "__main__":
    if sys.argv[1:2] == ["--isolated"]:
        sys.exit(isolated(sys.argv[2], int(sys.argv[3]), sys.argv[5:]))
    if sys.argv[1:2] == ["--relay"]:
        sys.exit(relay(sys.argv[2]))
    if sys.argv[1:2] == ["--cluster-sshd"]:
        sys.exit(cluster_sshd(sys.argv[2], sys.argv[3]))
    main()
