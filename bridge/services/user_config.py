"""User, project and domain configuration of new sessions: dotfiles for the home and the keypair's stored
bootstrap script (Backend.AI's `/user-config`, `/group-config`, `/domain-config`).

Who may do what: a user manages their own keypair's (an admin, those of accounts below them, with
`owner_access_key`); a project's and a domain's are read by their members and changed by an admin of the
domain. A new session gets the domain's, then the project's, then the user's dotfiles (the later wins at
the same path), written into its home as its user before the job is submitted; its bootstrap script is the
one it was created with, else the keypair's stored one.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from bridge.adapters.db.engine import Database
from bridge.adapters.db.tables import DomainRow, GroupRow, KeypairRow, UserRow
from bridge.domain import dotfiles as rules
from bridge.domain.auth import AuthContext
from bridge.errors import GenericForbidden, InvalidAPIParameters, ObjectNotFound
from bridge.services import accounts

MAX_BOOTSTRAP_BYTES = 64 * 1024

Holder = KeypairRow | GroupRow | DomainRow


class DotfileAlreadyExists(InvalidAPIParameters):
    slug, title = "dotfile-already-exists", "Dotfile already exists."


class DotfileNotFound(ObjectNotFound):
    slug, title = "dotfile-not-found", "Requested dotfile not found."


def wire(entry: dict[str, Any]) -> dict[str, Any]:
    return {"path": entry["path"], "permission": entry.get("perm") or "644", "data": entry.get("data") or ""}


class UserConfig:
    def __init__(self, db: Database) -> None:
        self.db = db

    # ---- whose ---------------------------------------------------------------------------------------

    async def _keypair(self, s: AsyncSession, auth: AuthContext, owner_access_key: str | None) -> KeypairRow:
        kp = await s.get(KeypairRow, owner_access_key or auth.access_key)
        owner = await s.get(UserRow, kp.user) if kp else None
        if kp is None or owner is None:
            raise InvalidAPIParameters("owner_access_key: no such keypair")
        if not auth.may_act_for(owner.uuid, owner.role, owner.domain_name):
            raise GenericForbidden("you may act only for accounts of your domain whose role is below yours")
        return kp

    async def _domain(self, s: AsyncSession, auth: AuthContext, name: str | None, write: bool) -> DomainRow:
        name = name or auth.domain_name
        row = await s.get(DomainRow, name)
        if row is None or (name != auth.domain_name and not auth.is_superadmin):
            raise ObjectNotFound(f"no domain {name}")
        if write and not auth.can_manage_domain(name):
            raise GenericForbidden(f"only an admin of domain {name} changes its dotfiles")
        return row

    async def _group(self, s: AsyncSession, auth: AuthContext, ref: str | None, domain: str | None,
                     write: bool) -> GroupRow:
        if not ref:
            raise InvalidAPIParameters("group: which project (its id or name)")
        row = await accounts.find_group(s, ref, domain or auth.domain_name)
        if row is None or not (auth.can_manage_domain(row.domain_name)
                               or await accounts.is_member(s, row.id, auth.user_uuid)):
            raise ObjectNotFound(f"no project {ref}")
        if write and not auth.can_manage_domain(row.domain_name):
            raise GenericForbidden(f"only an admin of domain {row.domain_name} changes project {row.name}'s dotfiles")
        return row

    async def _holder(self, s: AsyncSession, auth: AuthContext, scope: str, target: dict[str, Any],
                      write: bool) -> Holder:
        for key, value in target.items():
            if value is not None and not isinstance(value, str):
                raise InvalidAPIParameters(f"{key}: a name or an id, as text")
        if scope == "user":
            return await self._keypair(s, auth, target.get("owner_access_key"))
        if scope == "domain":
            return await self._domain(s, auth, target.get("domain"), write)
        return await self._group(s, auth, target.get("group"), target.get("domain"), write)

    # ---- dotfiles ------------------------------------------------------------------------------------

    async def list(self, auth: AuthContext, scope: str, target: dict[str, Any],
                   path: str | None = None) -> list[dict[str, Any]] | dict[str, Any]:
        async with self.db.unit_of_work() as s:
            holder = await self._holder(s, auth, scope, target, write=False)
            entries = list(holder.dotfiles or [])
        if path is None:
            return [wire(e) for e in entries]
        wanted = _checked(rules.check_path, path)
        found = next((e for e in entries if e["path"] == wanted), None)
        if found is None:
            raise DotfileNotFound(f"no dotfile {wanted}")
        return wire(found)

    async def put(self, auth: AuthContext, scope: str, target: dict[str, Any], path: object, data: object,
                  perm: object, *, create: bool) -> None:
        """Add a dotfile (`create`: refused when the path has one) or replace one (refused when it has none)."""
        norm = _checked(rules.check_path, path)
        mode = _checked(rules.check_perm, perm)
        if not isinstance(data, str):
            raise InvalidAPIParameters("data: a dotfile's content is text")
        async with self.db.unit_of_work() as s:
            holder = await self._holder(s, auth, scope, target, write=True)
            entries = [dict(e) for e in holder.dotfiles or []]
            at = next((i for i, e in enumerate(entries) if e["path"] == norm), None)
            if create and at is not None:
                raise DotfileAlreadyExists(f"dotfile {norm} already exists")
            if not create and at is None:
                raise DotfileNotFound(f"no dotfile {norm}")
            entry: dict[str, Any] = {"path": norm, "perm": mode, "data": data}
            if scope != "user":   # who wrote it decides whose sessions it reaches (dotfiles.reaches)
                entry["by"] = {"uuid": auth.user_uuid, "role": auth.role}
            if at is None:
                entries.append(entry)
            else:
                entries[at] = entry
            _checked(rules.check_all, entries)
            holder.dotfiles = entries

    async def remove(self, auth: AuthContext, scope: str, target: dict[str, Any], path: object) -> None:
        norm = _checked(rules.check_path, path)
        async with self.db.unit_of_work() as s:
            holder = await self._holder(s, auth, scope, target, write=True)
            entries = [dict(e) for e in holder.dotfiles or []]
            if not any(e["path"] == norm for e in entries):
                raise DotfileNotFound(f"no dotfile {norm}")
            holder.dotfiles = [e for e in entries if e["path"] != norm]

    # ---- the bootstrap script -------------------------------------------------------------------------

    async def bootstrap_script(self, auth: AuthContext, owner_access_key: object = None) -> str:
        async with self.db.unit_of_work() as s:
            return (await self._keypair(s, auth, _key(owner_access_key))).bootstrap_script or ""

    async def set_bootstrap_script(self, auth: AuthContext, script: object, owner_access_key: object = None
                                   ) -> None:
        if not isinstance(script, str):
            raise InvalidAPIParameters("script: text")
        if len(script.encode()) > MAX_BOOTSTRAP_BYTES:
            raise InvalidAPIParameters(f"script: at most {MAX_BOOTSTRAP_BYTES // 1024} KiB")
        async with self.db.unit_of_work() as s:
            (await self._keypair(s, auth, _key(owner_access_key))).bootstrap_script = script.replace("\x00", "")


async def for_session(s: AsyncSession, access_key: str, group_id: str, domain: str) -> list[dict[str, str]]:
    """The dotfiles a new session of this keypair, project and domain gets: the project's and the domain's
    only those written by someone who outranks the session's owner."""
    kp, group = await s.get(KeypairRow, access_key), await s.get(GroupRow, group_id)
    dom = await s.get(DomainRow, domain)
    owner = await s.get(UserRow, kp.user) if kp else None
    if owner is None:
        return []

    def shared(entries: list[Any] | None) -> list[Any]:
        return [e for e in entries or [] if rules.reaches(e, owner.uuid, owner.role)]
    return rules.merged(shared(dom.dotfiles if dom else None), shared(group.dotfiles if group else None),
                        kp.dotfiles if kp else [])


# Writes a session's dotfiles into its home, run as its user with the login node's python3 (the JSON list on
# stdin, the home as the argument); never follows a link at the file itself. One that cannot be written (a
# folder's mount point, "a" beside "a/b") is named on stderr and left out: it must not stop the session.
WRITE_DOTFILES = """
import json, os, sys
home = sys.argv[1]
for e in json.load(sys.stdin):
    path = os.path.join(home, e["path"])
    try:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        mode = int(e["perm"], 8)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, mode)
        with os.fdopen(fd, "w") as f:
            f.write(e["data"])
        os.chmod(path, mode)
    except OSError as err:
        print(f"dotfile {e['path']} left out: {err.strerror}", file=sys.stderr)
"""


def _key(value: object) -> str | None:
    if value is not None and not isinstance(value, str):
        raise InvalidAPIParameters("owner_access_key: an access key, as text")
    return value


def _checked(check: Any, value: Any) -> Any:
    try:
        return check(value)
    except ValueError as e:
        raise InvalidAPIParameters(str(e)) from None
