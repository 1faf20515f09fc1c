"""Requests to destinations that users or registries choose: each name is resolved first, and every address
it resolves to must pass domain/destinations.py. Checked when the destination is given and again just
before each request (a name can change what it resolves to). `OutboundClient` is the one HTTP client of each
adapter that makes such requests."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Sequence
from http.cookiejar import CookieJar, DefaultCookiePolicy
from urllib.parse import urlsplit

import httpx

from bridge.domain.destinations import Network, refused_address
from bridge.errors import InvalidAPIParameters


class RefusedDestination(InvalidAPIParameters):
    slug, title = "refused-destination", "The gateway does not send requests there."


async def check_url(url: str, allowed: Sequence[Network], what: str) -> None:
    """Refuse a URL whose host resolves to an address the gateway may not reach for users."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise InvalidAPIParameters(f"{what}: must be an http(s) URL with a host")
    port = parts.port or (443 if parts.scheme == "https" else 80)
    try:
        infos = await asyncio.get_running_loop().getaddrinfo(parts.hostname, port, type=socket.SOCK_STREAM)
    except socket.gaierror:
        raise RefusedDestination(f"{what}: the host {parts.hostname} does not resolve") from None
    for info in infos:
        why = refused_address(str(info[4][0]), allowed)
        if why:
            raise RefusedDestination(f"{what}: {parts.hostname} resolves to a destination the gateway does not "
                                     f"reach for users ({why}; a site may allow a network: "
                                     "sessions.callback_allowed_networks)")


class OutboundClient:
    """An adapter's HTTP client: made on first use (inside the event loop that uses it), kept for every request
    after (connections and TLS set-up reused), closed with the adapter. It follows no redirect (the gateway
    checked the destination, not wherever that destination would send it) and keeps no cookie (what one
    destination sets is never sent back, to it or to another)."""

    def __init__(self, timeout_s: float) -> None:
        self.timeout_s = timeout_s
        self._http: httpx.AsyncClient | None = None
        self._closed = False

    def __call__(self) -> httpx.AsyncClient:
        if self._closed:   # a request still under way at shutdown: refused, not served by a client nobody closes
            raise httpx.TransportError("the gateway is shutting down")
        if self._http is None:
            # no cap on connections: destinations are users' (callbacks) or registries, and one that answers
            # slowly must not hold the others' requests waiting for a free connection
            self._http = httpx.AsyncClient(timeout=self.timeout_s, follow_redirects=False,
                                           cookies=CookieJar(DefaultCookiePolicy(allowed_domains=[])),
                                           limits=httpx.Limits(max_connections=None, max_keepalive_connections=20))
        return self._http

    async def aclose(self) -> None:
        self._closed = True
        if self._http is not None:
            await self._http.aclose()
