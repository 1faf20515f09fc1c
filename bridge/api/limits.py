"""Request bodies have a size limit on every route, enforced before anything reads them: 413 with a problem
body when the declared Content-Length is too large, and when a body sent without one (chunked) grows past it.

Outermost middleware, so it also guards routes that authenticate by other means (the runners' callbacks,
the browser proxy) and the signature check itself.
"""

from __future__ import annotations

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from bridge.api.problems import problem
from bridge.config import ServerSettings

CALLBACK_LIMIT = 64 * 1024   # a kernel runner's report: a few hundred bytes of JSON


class BodyLimitMiddleware:
    def __init__(self, app: ASGIApp, settings: ServerSettings) -> None:
        self.app, self.settings = app, settings

    def limit_for(self, path: str) -> int:
        if path.startswith(("/kernel-callback/", "/slurm/job-event")):
            return CALLBACK_LIMIT
        if path.startswith("/proxy/") or path.endswith("/upload"):
            return self.settings.max_upload_bytes
        return self.settings.max_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.limit_for(scope["path"])
        declared = dict(scope.get("headers") or ()).get(b"content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > limit):
            await self._refuse(scope, receive, send, limit)
            return
        seen, started, over = 0, False, False

        async def counted() -> Message:
            nonlocal seen, over
            if over:
                return {"type": "http.disconnect"}
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > limit:   # the app sees the client go away; the client gets the 413
                    over = True
                    return {"type": "http.disconnect"}
            return message

        async def watched(message: Message) -> None:
            nonlocal started
            if over:
                return   # whatever the app answers to a body it never got whole
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, counted, watched)
        except Exception:
            if not over:
                raise
        if over and not started:
            await self._refuse(scope, receive, send, limit)

    @staticmethod
    async def _refuse(scope: Scope, receive: Receive, send: Send, limit: int) -> None:
        await problem(413, "request-too-large", "Request entity too large.",
                      f"the request body exceeds {limit} bytes, the limit of {scope['path']}")(scope, receive, send)
