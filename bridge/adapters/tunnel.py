"""How the gateway reaches a session's kernel runner on its compute node: directly, where the compute
network is routable from the gateway, or through SSH port forwarding (paramiko), via the login node or the
node itself, logged in as the session's mapped user. Chosen per resource group (partition).

Either way the caller gets a (host, port) to connect to: the forwarder listens on the gateway's loopback
and carries each connection over a `direct-tcpip` channel. What goes through is still the runner's own
protocol, which wants the session's secret, so a local user who finds the forward gains nothing.
"""

from __future__ import annotations

import asyncio
import logging
import select
import socketserver
import threading
from typing import Any

from bridge.adapters.runner import SshRunner
from bridge.config import BridgeSettings

logger = logging.getLogger(__name__)

# A forwarded channel's receive window and largest packet: paramiko's defaults (2 MiB, 32 KiB) make the far
# side wait for a window adjustment every 2 MiB and cost a packet's Python work every 32 KiB.
CHANNEL_WINDOW = 16 << 20
CHANNEL_MAX_PACKET = 128 << 10
RELAY_CHUNK = 1 << 20


class _Forward(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, open_channel: Any, target: tuple[str, int]) -> None:
        self.open_channel, self.target = open_channel, target
        super().__init__(("127.0.0.1", 0), _Relay)


class _Relay(socketserver.BaseRequestHandler):
    server: _Forward

    def handle(self) -> None:
        try:
            chan = self.server.open_channel(self.server.target, self.request.getpeername())
        except Exception as e:  # noqa: BLE001 - refused by the SSH server or the target: drop the connection
            logger.warning("ssh forward to %s:%s failed: %s", *self.server.target, e)
            return
        sock = self.request
        try:
            while True:
                ready, _, _ = select.select([sock, chan], [], [], 60)
                if sock in ready:
                    data = sock.recv(RELAY_CHUNK)
                    if not data:
                        break
                    chan.sendall(data)
                if chan in ready:
                    data = chan.recv(RELAY_CHUNK)
                    if not data:
                        break
                    sock.sendall(data)
        except OSError:
            pass
        finally:
            chan.close()


class KernelTransport:
    def __init__(self, settings: BridgeSettings) -> None:
        self.settings = settings
        self._jumps: dict[str, SshRunner] = {}
        self._forwards: dict[tuple[str, str, str, int], _Forward] = {}   # (session, login, host, port)
        self._lock = threading.Lock()

    def mode(self, partition: str | None) -> str:
        t = self.settings.tunnels
        return t.partitions.get(partition or "", t.transport)

    def _jump(self, node: str) -> SshRunner:
        s, t = self.settings.ssh, self.settings.tunnels
        host = node if t.via == "node" else s.host
        with self._lock:
            runner = self._jumps.get(host)
            if runner is None:
                runner = self._jumps[host] = SshRunner(
                    host, s.port, identity_file=s.identity_file, known_hosts=s.known_hosts,
                    service_user=s.service_user, connect_timeout_s=s.connect_timeout_s)
            return runner

    async def address(self, session_id: str, partition: str | None, login: str, host: str,
                      port: int) -> tuple[str, int]:
        """Where to connect to reach `host:port` on the node of this session."""
        if self.mode(partition) == "direct":
            return host, port
        key = (session_id, login, host, port)
        forward = self._forwards.get(key)
        if forward is None:
            forward = await asyncio.to_thread(self._start, key)
        host_, port_ = forward.server_address[:2]
        return str(host_), int(port_)

    def _start(self, key: tuple[str, str, str, int]) -> _Forward:
        session_id, login, host, port = key
        jump = self._jump(host)
        jump.transport(login)   # log in now: a refused login fails this call, not a later connection
        timeout = self.settings.ssh.connect_timeout_s

        def open_channel(target: tuple[str, int], origin: tuple[str, int]) -> Any:
            return jump.transport(login).open_channel("direct-tcpip", target, origin, timeout=timeout,
                                                      window_size=CHANNEL_WINDOW, max_packet_size=CHANNEL_MAX_PACKET)

        with self._lock:
            forward = self._forwards.get(key)
            if forward is not None:
                return forward
            forward = self._forwards[key] = _Forward(open_channel, (host, port))
        threading.Thread(target=forward.serve_forever, name=f"ssh-forward-{host}:{port}", daemon=True).start()
        logger.info("ssh forward 127.0.0.1:%s -> %s:%s as %s (session %s)", forward.server_address[1], host, port,
                    login, session_id)
        return forward

    def release(self, session_id: str) -> int:
        """Close the forwards of a session that ended."""
        with self._lock:
            keys = [k for k in self._forwards if k[0] == session_id]
            forwards = [self._forwards.pop(k) for k in keys]
        for f in forwards:
            f.shutdown()
            f.server_close()
        return len(forwards)

    async def aclose(self) -> None:
        for session_id in {k[0] for k in list(self._forwards)}:
            await asyncio.to_thread(self.release, session_id)
        for runner in self._jumps.values():
            runner.close()

