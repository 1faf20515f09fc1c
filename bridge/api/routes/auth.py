"""`/auth/*`: the signed echo test, role, password authorization (webserver login) and SSH keypairs."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Body, Request
from pydantic import BaseModel, Field

from bridge.api.deps import CurrentUser
from bridge.domain.login_guard import LoginGuard
from bridge.errors import AuthorizationFailed, GenericForbidden, InvalidAPIParameters, TooManyRequests
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
    user, kp = await _guarded_check(request, req.domain, req.username, req.password)
    return {"data": {"access_key": kp.access_key, "secret_key": kp.secret_key, "role": user.role,
                     "status": user.status}}


async def _guarded_check(request: Request, domain: str, username: str, password: str) -> tuple[Any, Any]:
    """The user and keypair for this password, behind the same guard as a login (a password change is a
    password guess too)."""
    guard: LoginGuard = request.app.state.login_guard
    account = f"{domain}/{username.strip().lower()}"
    wait = guard.wait_s(account, request.client.host if request.client else "-")
    if wait > 0:
        raise TooManyRequests(f"too many login attempts: try again in {int(wait) + 1} s")
    async with request.app.state.password_checks:
        try:
            async with request.app.state.db.unit_of_work() as s:
                found = await accounts.authorize(s, domain, username, password)
        except AuthorizationFailed:
            guard.failed(account)
            raise
    guard.succeeded(account)
    return found


class PasswordChange(BaseModel):
    old_password: str
    new_password: str
    new_password2: str


@router.post("/update-password")
async def update_password(request: Request, auth: CurrentUser, req: PasswordChange) -> dict[str, Any]:
    """The caller's own password, given the current one (the WebUI's profile dialog)."""
    if req.new_password != req.new_password2:
        raise InvalidAPIParameters("new password mismatch")
    await _guarded_check(request, auth.domain_name, auth.email, req.old_password)
    async with request.app.state.db.unit_of_work() as s:
        await accounts.set_password(s, auth.user_uuid, req.new_password)
    return {}


class ExpiredPasswordChange(BaseModel):
    domain: str = "default"
    username: str
    current_password: str
    new_password: str


@router.post("/update-password-no-auth")
async def update_password_no_auth(request: Request, req: ExpiredPasswordChange) -> dict[str, Any]:
    """Unsigned, for an account that must change its password before it may log in (need_password_change):
    the current password proves who asks, under the login guard."""
    user, _ = await _guarded_check(request, req.domain, req.username, req.current_password)
    if not user.need_password_change:
        raise GenericForbidden("this password has not expired: change it after logging in")
    if req.new_password == req.current_password:
        raise InvalidAPIParameters("the new password must differ from the current one")
    async with request.app.state.db.unit_of_work() as s:
        changed_at = await accounts.set_password(s, user.uuid, req.new_password)
    return {"password_changed_at": changed_at.isoformat()}


class FullName(BaseModel):
    email: str
    full_name: str = Field(max_length=64)


@router.post("/update-full-name")
async def update_full_name(request: Request, auth: CurrentUser, req: FullName) -> dict[str, Any]:
    if req.email != auth.email:
        raise GenericForbidden("you may change only your own name")
    if "\x00" in req.full_name:
        raise InvalidAPIParameters("full_name: no NUL characters")
    async with request.app.state.db.unit_of_work() as s:
        await accounts.set_full_name(s, auth.user_uuid, req.full_name)
    return {}


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
