"""`GET /`: the unsigned version probe the client sends before anything else."""

from __future__ import annotations

from fastapi import APIRouter

from bridge import __version__

router = APIRouter()

SERVER_API_VERSION = "v6.20220615"
# The Backend.AI manager release whose features the gateway serves: clients (the WebUI above all) turn
# features on by it (21.09/22.03: the app launcher asks wsproxy-version and uses the gateway as its app proxy,
# resource groups' scheduler options, session lifetimes; 22.09: allowed_vfolder_hosts as {host: [permissions]}
# with `GET /acl`, the form API v6.20220615 has; its 2FA and container commit stay off unless the webserver's
# configuration turns them on, and neither is). The gateway's own version is `bridge`.
MANAGER_COMPAT = "22.09.0"


@router.get("/")
async def hello() -> dict[str, str]:
    return {"version": SERVER_API_VERSION, "manager": MANAGER_COMPAT, "bridge": __version__}
