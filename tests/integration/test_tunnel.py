"""The SSH transport to kernels, against the dev cluster's real login node (sshd, paramiko): a forward
carries bytes to a service on the node's network as the mapped user, and closes with its session."""

from __future__ import annotations

import asyncio
import socket

import pytest

from bridge.adapters.tunnel import KernelTransport
from bridge.config import TunnelSettings

pytestmark = pytest.mark.cluster


async def _echo_server() -> tuple[asyncio.Server, int]:
    async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while data := await reader.read(65536):
            writer.write(data.upper())
            await writer.drain()
        writer.close()

    server = await asyncio.start_server(echo, "127.0.0.1", 0)
    return server, server.sockets[0].getsockname()[1]


async def _roundtrip(host: str, port: int, payload: bytes) -> bytes:
    reader, writer = await asyncio.open_connection(host, port)
    writer.write(payload)
    await writer.drain()
    got = b""
    while len(got) < len(payload):
        got += await asyncio.wait_for(reader.read(65536), 10)
    writer.close()
    return got


def test_ssh_forward_per_resource_group(settings):
    async def main() -> None:
        server, port = await _echo_server()
        transport = KernelTransport(settings.model_copy(update={"tunnels": TunnelSettings(partitions={"gpu": "ssh"})}))
        try:
            # debug is direct: the node's own address
            assert await transport.address("S1", "debug", "alice", "127.0.0.1", port) == ("127.0.0.1", port)
            host, local = await transport.address("S2", "gpu", "alice", "127.0.0.1", port)
            assert (host, local) != ("127.0.0.1", port)
            assert await transport.address("S2", "gpu", "alice", "127.0.0.1", port) == (host, local)  # reused
            payload = b"through the login node " * 4000
            assert await _roundtrip(host, local, payload) == payload.upper()
            # two circuits at once over the same SSH connection
            both = await asyncio.gather(_roundtrip(host, local, b"a" * 70000), _roundtrip(host, local, b"b" * 70000))
            assert both == [b"A" * 70000, b"B" * 70000]
            assert await asyncio.to_thread(transport.release, "S2") == 1
            with pytest.raises(OSError):
                socket.create_connection((host, local), timeout=2).close()
            # a user the login node does not let in gets no forward
            with pytest.raises(Exception, match="(?i)auth|denied|ssh"):
                await transport.address("S3", "gpu", "nosuchuser", "127.0.0.1", port)
        finally:
            await transport.aclose()
            server.close()

    asyncio.run(main())


def test_ssh_forward_through_the_node_itself(settings):
    """via = "node": the jump host is the session's node (its sshd on ssh.port); the dev cluster's nodes
    are this machine, whose sshd is the login node's."""

    async def main() -> None:
        server, port = await _echo_server()
        transport = KernelTransport(settings.model_copy(update={"tunnels": TunnelSettings(transport="ssh",
                                                                                          via="node")}))
        try:
            host, local = await transport.address("S4", "debug", "bob", "127.0.0.1", port)
            assert await _roundtrip(host, local, b"node hop") == b"NODE HOP"
            assert set(transport._jumps) == {"127.0.0.1"}
        finally:
            await transport.aclose()
            server.close()

    asyncio.run(main())
