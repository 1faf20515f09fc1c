"""Session lifecycle callbacks: a JSON POST to the URL a session was created with. The destination is checked
again just before each request (adapters/outbound.py: a name can change what it resolves to); no redirects are
followed. A refused destination stays RefusedDestination; a transport failure (httpx errors) leaves here as
CallbackFailed."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any, Protocol

import httpx

from bridge.adapters import outbound
from bridge.domain.destinations import Network
from bridge.errors import CallbackFailed


class CallbackSender(Protocol):
    async def send(self, url: str, body: dict[str, Any], allowed: Sequence[Network]) -> None:
        """POST `body` to `url` if it may still be reached (RefusedDestination; CallbackFailed)."""
        ...

    async def aclose(self) -> None: ...


class HttpCallbacks:
    DEADLINE_S = 10.0   # the whole callback: a destination that answers a byte at a time holds nothing longer

    def __init__(self) -> None:
        self.http = outbound.OutboundClient(timeout_s=5)

    async def send(self, url: str, body: dict[str, Any], allowed: Sequence[Network]) -> None:
        await outbound.check_url(url, allowed, "callback_url")   # again: the name may point elsewhere by now
        try:
            async with asyncio.timeout(self.DEADLINE_S):
                await self.http().post(url, json=body)
        except httpx.HTTPError as e:
            raise CallbackFailed(f"callback to {url} failed: {type(e).__name__}: {e}") from e
        except TimeoutError as e:
            raise CallbackFailed(f"callback to {url} failed: no answer within {self.DEADLINE_S:.0f} s") from e

    async def aclose(self) -> None:
        await self.http.aclose()
