"""Telling systemd how the service stands (sd_notify: READY=1, STOPPING=1, STATUS=...) over $NOTIFY_SOCKET,
without libsystemd. Outside systemd (no NOTIFY_SOCKET) every call does nothing."""

from __future__ import annotations

import asyncio
import logging
import os
import socket

logger = logging.getLogger(__name__)


def notify(*states: str) -> bool:
    """Send `states` ("READY=1", ...); whether systemd was there to hear them."""
    where = os.environ.get("NOTIFY_SOCKET")
    if not where:
        return False
    address = "\0" + where[1:] if where.startswith("@") else where   # @name: the abstract namespace
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as s:
            s.sendto("\n".join(states).encode(), address)
        return True
    except OSError as e:
        logger.warning("could not notify systemd at %s: %s", where, e)
        return False


async def ready_when_listening(host: str, port: int, timeout_s: float = 60.0) -> bool:
    """READY=1 once the API port takes connections (the lifespan ends before uvicorn listens); whether it did."""
    if not os.environ.get("NOTIFY_SOCKET"):
        return False
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    target = "127.0.0.1" if host in ("0.0.0.0", "") else "::1" if host == "::" else host
    while loop.time() < deadline:
        try:
            _, writer = await asyncio.open_connection(target, port)
            writer.close()
            return notify("READY=1", f"STATUS=serving on {host}:{port}")
        except OSError:
            await asyncio.sleep(0.05)
    logger.warning("the API port %s:%d did not open within %.0f s: systemd not told READY", host, port, timeout_s)
    return False
