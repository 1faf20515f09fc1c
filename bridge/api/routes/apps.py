"""Service ports of a session and every way to them: the app list, `start-service`/`shutdown-service`, the
WebSocket relays `tcpproxy` and `httpproxy` the clients use (one TCP connection per WebSocket, raw bytes
in binary frames), the browser's HTTP proxy under `/proxy/{session}/{app}/` (HTTP and WebSockets, with an
app token), and `GET /session/{ref}/tunnels` (traffic and last activity).

Every circuit is checked against the session's owner first, and reaches the service only through the
session's kernel runner (authenticated with the session's secret): knowing the node and port gets nobody in.
"""

from __future__ import annotations

import json
import posixpath
from typing import Annotated, Any
from urllib.parse import urlencode, urlsplit

from fastapi import APIRouter, Body, Request, WebSocket
from fastapi.responses import JSONResponse, RedirectResponse, Response, StreamingResponse
from websockets.asyncio.client import connect as ws_connect
from websockets.exceptions import InvalidStatus
from websockets.typing import Origin, Subprotocol

from bridge.api.deps import CurrentUser
from bridge.api.routes.execute import close_code, relay, service, ws_session
from bridge.errors import AppUnavailable, AuthorizationFailed, BridgeError, InvalidAPIParameters, ObjectNotFound
from bridge.services import app_proxy, service_ports
from bridge.services.auth import load_keypair

router = APIRouter()
TOKEN_TTL_S = 300            # a start-service token: long enough to open the browser
COOKIE_TTL_S = 12 * 3600     # the cookie it becomes


def _owner_key(request: Request) -> str | None:
    return request.query_params.get("owner_access_key")


def _json_arg(raw: str | None, what: str) -> dict[str, Any]:
    if not raw:
        return {}
    try:
        value = json.loads(raw)
    except ValueError:
        raise InvalidAPIParameters(f"{what}: not JSON") from None
    if value is None:   # the WebUI's app launcher sends `arguments: JSON.stringify(null)`, i.e. "null"
        return {}
    if not isinstance(value, dict):
        raise InvalidAPIParameters(f"{what}: must be a JSON object")
    return value


@router.get("/stream/session/{ref}/apps")
async def apps(request: Request, auth: CurrentUser, ref: str) -> list[dict[str, Any]]:
    row = await request.app.state.sessions.resolve(auth, ref, _owner_key(request))
    return list(row.service_ports or [])


@router.post("/session/{ref}/start-service")
async def start_service(request: Request, auth: CurrentUser, ref: str,
                        body: Annotated[dict[str, Any] | None, Body()] = None) -> dict[str, Any]:
    """Start a service (if needed) and hand out a token for the browser proxy, like Backend.AI's
    `{token, wsproxy_addr}`; `url` opens the app directly."""
    body = body or {}
    app_name = str(body.get("app") or body.get("service") or "")
    row = await request.app.state.sessions.resolve(auth, ref, _owner_key(request))
    if service_ports.find(row.service_ports, app_name) is None:
        raise ObjectNotFound(f"the session has no service {app_name!r}")
    arguments = body.get("arguments") or {}
    envs = body.get("envs") or {}
    if isinstance(arguments, str):
        arguments = _json_arg(arguments, "arguments")
    if isinstance(envs, str):
        envs = _json_arg(envs, "envs")
    sock = await service(request.app).service_socket(row, app_name, arguments, envs)  # starts it
    sock.close()
    settings = request.app.state.settings
    # bound to the caller (the owner, or an admin of the domain): each request is checked again as them
    token = app_proxy.issue(settings.secret.get_secret_value(), row.id, app_name, auth.access_key, TOKEN_TTL_S)
    base = (settings.server.public_url or str(request.base_url)).rstrip("/")
    app_base = _app_base(settings, base, row.id, app_name)
    return {"token": token, "wsproxy_addr": base, "session_id": row.id, "app": app_name,
            "url": f"{app_base}{service_ports.proxy_path(row.id, app_name)}?{urlencode({'token': token})}"}


def _app_base(settings: Any, base: str, session_id: str, app_name: str) -> str:
    """Where a browser opens an app: the session's own host under the apps domain, else the gateway."""
    if not settings.server.apps_domain:
        return base
    parts = urlsplit(base)
    port = f":{parts.port}" if parts.port else ""
    return f"{parts.scheme}://{service_ports.app_host(session_id, app_name, settings.server.apps_domain)}{port}"


def _check_app_host(settings: Any, host_header: str, session_id: str, app_name: str) -> None:
    """With an apps domain, an app answers only on its own host: a page of another session's app (another
    origin) cannot reach it, and neither can the gateway's own origin."""
    domain = settings.server.apps_domain
    own = service_ports.app_host(session_id, app_name, domain) if domain else ""
    if domain and host_header.split(":", 1)[0].lower() != own:
        raise ObjectNotFound(f"apps are served on their own host: {own}")


def _inside_app(prefix: str, wanted: str) -> str | None:
    """The WebUI's `redirect=/tree` as a path under the app's prefix; None for anything that would leave it
    (`//host`, `/../..`) or carry more than a path."""
    if not wanted.startswith("/") or any(c in wanted for c in "?#\\") or "\x00" in wanted:
        return None
    path = posixpath.normpath(prefix.rstrip("/") + wanted)
    return path if path.startswith(prefix.rstrip("/") + "/") or path == prefix.rstrip("/") else None


def _cors(request: Request) -> dict[str, str]:
    """A cross-origin read by the WebUI's page (served by the webserver, not the gateway). The WebUI sends
    its credentials along; these answers use none (the token in the URL is the proof), so allowing them
    gives another origin nothing."""
    origin = request.headers.get("origin")
    if not origin:
        return {}
    return {"Access-Control-Allow-Origin": origin, "Access-Control-Allow-Credentials": "true", "Vary": "Origin"}


@router.get("/scaling-groups/{scaling_group}/wsproxy-version")
async def wsproxy_version(request: Request, auth: CurrentUser, scaling_group: str) -> dict[str, str]:
    """The WebUI opens apps through "v2": the gateway itself is the app proxy (/v2/proxy/.../add)."""
    return {"wsproxy_version": "v2"}


@router.options("/v2/proxy/{token}/{session_id}/add", include_in_schema=False)
async def wsproxy_v2_preflight(request: Request, token: str, session_id: str) -> Response:
    """A browser's preflight before the cross-origin call (it sends its own headers along)."""
    return Response(status_code=204, headers={
        **_cors(request), "Access-Control-Allow-Methods": "GET, OPTIONS", "Access-Control-Max-Age": "600",
        "Access-Control-Allow-Headers": request.headers.get("access-control-request-headers") or "*"})


@router.get("/v2/proxy/{token}/{session_id}/add", include_in_schema=False)
async def wsproxy_v2_add(request: Request, token: str, session_id: str, app: str = "") -> JSONResponse:
    """The WebUI's v2 app-proxy call with the start-service token (which is the proof: unsigned, as the
    browser calls it from the webserver's page): the URL that opens the app."""
    settings = request.app.state.settings
    app_proxy.verify(settings.secret.get_secret_value(), token, session_id, app)
    base = (settings.server.public_url or str(request.base_url)).rstrip("/")
    url = f"{_app_base(settings, base, session_id, app)}{service_ports.proxy_path(session_id, app)}?" + \
        urlencode({"token": token})
    return JSONResponse({"code": 200, "url": url}, headers=_cors(request))


@router.post("/session/{ref}/shutdown-service")
async def shutdown_service(request: Request, auth: CurrentUser, ref: str,
                           body: Annotated[dict[str, Any] | None, Body()] = None) -> dict[str, Any]:
    app_name = str((body or {}).get("service_name") or (body or {}).get("app") or "")
    row = await request.app.state.sessions.resolve(auth, ref, _owner_key(request))
    if service_ports.find(row.service_ports, app_name) is None:
        raise ObjectNotFound(f"the session has no service {app_name!r}")
    stopped = await service(request.app).stop_service(row, app_name)
    return {"stopped": stopped}


@router.get("/session/{ref}/tunnels")
async def tunnels(request: Request, auth: CurrentUser, ref: str) -> dict[str, Any]:
    row = await request.app.state.sessions.resolve(auth, ref, _owner_key(request))
    summary: dict[str, Any] = request.app.state.tunnels.summary(row.id)
    return summary


# bytes per WebSocket message towards the client: fewer, larger messages cost less per byte; under the
# smallest limit a client keeps (the `websockets` library's 1 MiB)
RELAY_CHUNK = 256 << 10


async def _byte_relay(ws: WebSocket, ref: str, kind: str) -> None:
    row = await ws_session(ws, ref)
    if row is None:
        return
    app_name = ws.query_params.get("app") or ""
    if service_ports.find(row.service_ports, app_name) is None:
        await ws.close(code=4404, reason=f"the session has no service {app_name!r}"[:120])
        return
    try:
        arguments = _json_arg(ws.query_params.get("arguments"), "arguments")
        envs = _json_arg(ws.query_params.get("envs"), "envs")
        reader, writer = await service(ws.app).open_service(row, app_name, arguments, envs)
    except BridgeError as e:   # the owner's own circuit: accepted, then closed with the reason the client shows
        await ws.accept()
        await ws.close(code=1011, reason=e.msg[:120])
        return
    await ws.accept()
    auth = ws.scope["state"]["auth"]
    with ws.app.state.tunnels.circuit(row.id, app_name, kind, auth.access_key, closer=writer.close) as circuit:

        async def upstream_to_client() -> None:
            while data := await reader.read(RELAY_CHUNK):
                circuit.down(len(data))
                await ws.send_bytes(data)

        async def client_to_upstream() -> None:
            while True:
                msg = await ws.receive()
                if msg["type"] == "websocket.disconnect":
                    break
                data = msg.get("bytes") or (msg.get("text") or "").encode()
                circuit.up(len(data))
                writer.write(data)
                await writer.drain()

        await relay(ws, writer.close, upstream_to_client(), client_to_upstream())


@router.websocket("/stream/session/{ref}/tcpproxy")
async def tcpproxy(ws: WebSocket, ref: str) -> None:
    """One TCP connection per WebSocket, raw bytes in binary frames (client-compat.md §5.11)."""
    await _byte_relay(ws, ref, "tcpproxy")


@router.websocket("/stream/session/{ref}/httpproxy")
async def httpproxy(ws: WebSocket, ref: str) -> None:
    """The same relay for HTTP services (Backend.AI's wsproxy name for it); no client version uses it."""
    await _byte_relay(ws, ref, "httpproxy")


# ---- the browser's HTTP proxy ----------------------------------------------------------------------------


async def _proxy_owner(app: Any, cookies: dict[str, str], session_id: str, app_name: str) -> tuple[Any, Any]:
    """The session behind a proxied request, if its cookie is genuine and its holder may still use it."""
    token = cookies.get(app_proxy.COOKIE)
    if not token:
        raise AuthorizationFailed("no app token: open the app through start-service")
    access_key = app_proxy.verify(app.state.settings.secret.get_secret_value(), token, session_id, app_name)
    owners: app_proxy.OwnerCache = app.state.proxy_owners
    cached: tuple[Any, Any] | None = owners.get(f"{access_key}/{session_id}/{app_name}")
    if cached is not None:
        return cached
    async with app.state.db.unit_of_work() as s:
        loaded = await load_keypair(s, access_key)
    if loaded is None:
        raise AuthorizationFailed("the app token's key pair is gone or inactive")
    auth = loaded[0]
    row = await app.state.sessions.resolve(auth, session_id)
    if service_ports.find(row.service_ports, app_name) is None:
        raise ObjectNotFound(f"the session has no service {app_name!r}")
    if row.kernel_port:
        owners.put(f"{access_key}/{session_id}/{app_name}", (auth, row))
    return auth, row


@router.api_route("/proxy/{session_id}/{app_name}/{path:path}",
                  methods=["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"], include_in_schema=False)
async def browser_proxy(request: Request, session_id: str, app_name: str, path: str) -> Response:
    settings = request.app.state.settings
    _check_app_host(settings, request.headers.get("host", ""), session_id, app_name)
    prefix = service_ports.proxy_path(session_id, app_name)
    token = request.query_params.get("token")
    if token is not None:   # the start-service link: trade the token for a cookie on this app's path
        access_key = app_proxy.verify(settings.secret.get_secret_value(), token, session_id, app_name)
        if request.headers.get("accept", "").split(",")[0].strip() == "application/json":
            # the WebUI's look before it opens the window: the link stays good for that (it is reusable
            # until it expires), and a page of the WebUI's origin may read this answer
            return JSONResponse({"redirect_url": str(request.url), "reuse": True},
                                headers=_cors(request))
        query = [(k, v) for k, v in request.query_params.multi_items() if k not in ("token", "redirect")]
        path = _inside_app(prefix, request.query_params.get("redirect", "")) or request.url.path
        target = path + (f"?{urlencode(query)}" if query else "")
        redirect = RedirectResponse(target, status_code=303)
        redirect.set_cookie(app_proxy.COOKIE, app_proxy.issue(settings.secret.get_secret_value(), session_id,
                                                              app_name, access_key, COOKIE_TTL_S),
                            max_age=COOKIE_TTL_S, path=prefix, httponly=True, samesite="lax",
                            # behind a TLS proxy uvicorn sees http: the public URL says what the browser uses
                            secure=request.url.scheme == "https"
                            or (settings.server.public_url or "").startswith("https://"))
        return redirect
    auth, row = await _proxy_owner(request.app, request.cookies, session_id, app_name)
    upstream_path = request.url.path if app_name in service_ports.BASE_PATH_AWARE else "/" + path
    target = upstream_path + (f"?{request.url.query}" if request.url.query else "")
    headers = app_proxy.upstream_headers(list(request.headers.items()),
                                         request.client.host if request.client else None, request.url.scheme,
                                         request.headers.get("host", ""))
    length = request.headers.get("content-length")
    bodiless = request.method in ("GET", "HEAD", "OPTIONS") and not length
    pool: app_proxy.StreamPool = request.app.state.proxy_pool
    open_exchange: app_proxy.ExchangeFactory = request.app.state.proxy_exchange
    tunnels = request.app.state.tunnels
    for attempt in (1, 2):   # a pooled stream the service closed meanwhile: once more on a fresh one
        pooled = pool.take(row.id, app_name) if bodiless and attempt == 1 else None
        reader, writer = pooled or await service(request.app).open_service(row, app_name)
        exchange = open_exchange(reader, writer, bodiless)
        try:
            status, upstream = await exchange.request(request.method, target, headers, request.stream(),
                                                      int(length) if length is not None else None)
            break
        except AppUnavailable as e:
            writer.close()
            if pooled is None:
                cause = type(e.__cause__ or e).__name__
                return Response(f"the service {app_name} did not answer: {cause}\n", status_code=502,
                                media_type="text/plain")
    circuit = tunnels.open(row.id, app_name, "http", auth.access_key, closer=writer.close)

    async def body() -> Any:
        try:
            async for chunk in exchange.body():
                yield chunk
        finally:
            circuit.up(exchange.bytes_up)
            circuit.down(exchange.bytes_down)
            tunnels.close(circuit)
            if exchange.reusable:
                pool.give(row.id, app_name, (exchange.reader, exchange.writer))

    response = StreamingResponse(body(), status_code=status)
    for k, v in upstream:
        if k.lower() == "location" and v.startswith("/") and not v.startswith(prefix):
            v = prefix.rstrip("/") + v   # a root-served app redirects within itself
        response.headers.append(k, v)
    return response


@router.websocket("/proxy/{session_id}/{app_name}/{path:path}")
async def browser_proxy_ws(ws: WebSocket, session_id: str, app_name: str, path: str) -> None:
    """A browser WebSocket (Jupyter's kernels and terminals, ttyd) to the service, message for message."""
    try:
        _check_app_host(ws.app.state.settings, ws.headers.get("host", ""), session_id, app_name)
        auth, row = await _proxy_owner(ws.app, ws.cookies, session_id, app_name)
        sock = await service(ws.app).service_socket(row, app_name)
    except BridgeError as e:
        await ws.close(code=close_code(e), reason=e.msg[:120])
        return
    host = ws.headers.get("host", "kernel")
    upstream_path = ws.url.path if app_name in service_ports.BASE_PATH_AWARE else "/" + path
    target = f"ws://{host}{upstream_path}" + (f"?{ws.url.query}" if ws.url.query else "")
    headers = [(k, v) for k, v in app_proxy.upstream_headers(list(ws.headers.items()), None, ws.url.scheme, host)
               if k.lower() not in ("host", "origin") and not k.lower().startswith("sec-websocket")]
    protocols = [p.strip() for p in ws.headers.get("sec-websocket-protocol", "").split(",") if p.strip()]
    try:
        origin = ws.headers.get("origin")
        upstream = await ws_connect(target, sock=sock, additional_headers=headers,
                                    origin=Origin(origin) if origin else None,
                                    subprotocols=[Subprotocol(p) for p in protocols] or None, compression=None,
                                    max_size=None,
                                    ping_interval=20, ping_timeout=60, open_timeout=30)
    except (InvalidStatus, OSError, TimeoutError) as e:
        sock.close()
        await ws.close(code=1011, reason=f"the service refused the WebSocket: {e}"[:120])
        return
    await ws.accept(subprotocol=upstream.subprotocol)
    tunnels = ws.app.state.tunnels
    with tunnels.circuit(row.id, app_name, "http", auth.access_key, closer=lambda: sock.close()) as circuit:

        async def service_to_browser() -> None:
            async for message in upstream:
                circuit.down(len(message))
                await (ws.send_bytes(message) if isinstance(message, bytes) else ws.send_text(message))

        async def browser_to_service() -> None:
            while True:
                msg = await ws.receive()
                if msg["type"] == "websocket.disconnect":
                    break
                data: bytes | str = msg["bytes"] if msg.get("bytes") is not None else msg.get("text") or ""
                circuit.up(len(data))
                await upstream.send(data)

        await relay(ws, upstream.close, service_to_browser(), browser_to_service())
