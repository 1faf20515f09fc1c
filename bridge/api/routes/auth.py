"""`/auth/*`: the signed echo test, role, password authorization (webserver login) and SSH keypairs."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Body, Request
from pydantic import BaseModel, Field

from bridge.api.deps import CurrentUser
from bridge.domain.login_guard import LoginGuard
from bridge.errors import AuthorizationFailed, InvalidAPIParameters, TooManyRequests
from bridge.services import accounts, ssh_keys

router = APIRouter(prefix="/auth")


@router.get("")
@router.post("")
@router.get("/test")
@router.post("/test")
async def auth_test(auth: CurrentUser, body: Annotated[dict[str, Any] | None, Body()] = None) -> dict[str, Any]:
    return {"authorized": "yes", "echo": (body or {}).get("echo")}


@router.get("/role")
async def role(request: Request, auth: CurrentUser, group: str | None = None) -> dict[str, Any]:
    group_role = None
    if group:
        async with request.app.state.db.unit_of_work() as s:
            member = await accounts.is_member(s, group, auth.user_uuid)
        group_role = "admin" if auth.is_admin else ("user" if member else None)
        if group_role is None:
            raise InvalidAPIParameters("you are not a member of this project")
    return {
        "global_role": "superadmin" if auth.is_superadmin else "user",
        "domain_role": "admin" if auth.is_admin else "user",
        **({"group_role": group_role} if group else {}),
    }


class AuthorizeRequest(BaseModel):
    type: str = Field("keypair", description="only 'keypair' is supported")
    domain: str = "default"
    username: str
    password: str


@router.post("/authorize")
async def authorize(request: Request, req: AuthorizeRequest) -> dict[str, Any]:
    """Exchange a user's email/username and password for their keypair (what the webserver's login does).
    Unsigned, as the spec has it, and guarded (domain/login_guard.py): failed logins make an account wait,
    an address has an attempt budget, and at most a few password checks run at once."""
    if req.type != "keypair":
        raise InvalidAPIParameters("only type=keypair is supported")
    guard: LoginGuard = request.app.state.login_guard
    account = f"{req.domain}/{req.username.strip().lower()}"
    wait = guard.wait_s(account, request.client.host if request.client else "-")
    if wait > 0:
        raise TooManyRequests(f"too many login attempts: try again in {int(wait) + 1} s")
    async with request.app.state.password_checks:
        try:
            async with request.app.state.db.unit_of_work() as s:
                user, kp = await accounts.authorize(s, req.domain, req.username, req.password)
        except AuthorizationFailed:
            guard.failed(account)
            raise
    guard.succeeded(account)
    return {"data": {"access_key": kp.access_key, "secret_key": kp.secret_key, "role": user.role,
                     "status": user.status}}


@router.get("/ssh-keypair")
async def get_ssh_keypair(request: Request, auth: CurrentUser) -> dict[str, Any]:
    return {"ssh_public_key": await ssh_keys.public_key(request.app.state.db, auth.access_key)}


@router.patch("/ssh-keypair")
async def refresh_ssh_keypair(request: Request, auth: CurrentUser) -> dict[str, Any]:
    public, private = await ssh_keys.store(request.app.state.db, auth.access_key, *ssh_keys.generate())
    return {"ssh_public_key": public, "ssh_private_key": private}


class SshKeypairUpload(BaseModel):
    pubkey: str
    privkey: str


@router.post("/ssh-keypair")
async def upload_ssh_keypair(request: Request, auth: CurrentUser, req: SshKeypairUpload) -> dict[str, Any]:
    ssh_keys.check_pair(req.pubkey, req.privkey)
    public, private = await ssh_keys.store(request.app.state.db, auth.access_key, req.pubkey, req.privkey)
    return {"ssh_public_key": public, "ssh_private_key": private}
