"""Virtual folders on the cluster's shared storage: create, find, list, delete, and the files inside.

Every file operation runs as the folder owner's Unix account, through the same command runner (and user
switch) as job submission: the gateway never reads or writes a user's files with its own privileges, and
what a folder holds on disk belongs to its user. Folders live in <host path>/<unix user>/<folder id>.
"""

from __future__ import annotations

import posixpath
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import and_, func, or_, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import aliased

from bridge.adapters.db.engine import Database
from bridge.adapters.db.tables import (
    GroupMemberRow,
    GroupRow,
    KeypairResourcePolicyRow,
    KeypairRow,
    UserRow,
    VFolderInvitationRow,
    VFolderRow,
    VFolderShareRow,
)
from bridge.adapters.runner import CommandRunner, Completed
from bridge.config import BridgeSettings
from bridge.domain import folders as rules
from bridge.domain import tokens
from bridge.domain.auth import AuthContext
from bridge.domain.ids import normalize_uuid
from bridge.errors import (
    AuthorizationFailed,
    BackendError,
    BridgeError,
    CommandFailed,
    FolderAlreadyExists,
    FolderNotFound,
    GenericForbidden,
    InvalidAPIParameters,
    QuotaExceeded,
)


@dataclass(frozen=True)
class Mount:
    """A folder bound into a session's container."""

    name: str
    source: str
    target: str
    mode: str   # ro | rw


_NO_ACL = "sharing folders needs the POSIX ACL tools (getfacl, setfacl: Debian's `acl`) on the login node"
TRANSFER_TTL_S = 24 * 3600   # an upload or download link works this long


class UploadOffsetMismatch(InvalidAPIParameters):
    slug, title, status = "upload-offset-mismatch", "The upload does not continue where the file ends.", 409


@dataclass(frozen=True)
class Download:
    name: str
    size: int
    mtime: int
    start: int
    chunks: AsyncIterator[bytes]


_USER_ERRORS = ("No such file", "Permission denied", "Not a directory", "File exists", "Is a directory",
                "Directory not empty", "Invalid argument", "cannot move", "same file", "File name too long",
                "Too many levels of symbolic links", "Read-only file system")
_FULL = ("No space left on device", "Disk quota exceeded")


def raise_for(done: Completed, what: str) -> None:
    """The error a failed file command means for the user: what they asked was wrong (400), the storage is
    full (412), or the gateway's side failed (502). The message names no path on the host."""
    err = (done.stderr.strip().splitlines()[-1:] or [f"exit {done.rc}"])[0]
    reason = err.rsplit(": ", 1)[-1]
    if any(m in err for m in _FULL):
        raise QuotaExceeded(f"{what}: the storage is full ({reason})")
    if any(m in err for m in _USER_ERRORS):
        raise InvalidAPIParameters(f"{what}: {'no such file or folder' if 'No such file' in err else reason}")
    raise BackendError(f"{what}: {reason[:200]}")


async def _nothing() -> AsyncIterator[bytes]:
    return
    yield b""


async def _prefixed(first: bytes, rest: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
    try:
        if first:
            yield first
        async for chunk in rest:
            yield chunk
    finally:
        await rest.aclose()   # type: ignore[attr-defined]   # the command stops when the client goes away


@dataclass(frozen=True)
class Access:
    """What one caller may do with one folder, and as which Unix account its files are touched."""

    row: VFolderRow
    permission: str      # the caller's: ro | rw | wd (an owner: the folder's own)
    is_owner: bool
    manages: bool        # may rename, delete, re-permission and share it (its owner, or an admin over it)
    run_as: str          # file operations run as this account: the caller's own where the folder is shared
    group_name: str | None = None

    def allows(self, need: str) -> bool:
        return self.manages or rules.at_least(self.permission, need)


class FolderService:
    def __init__(self, db: Database, runner: CommandRunner, settings: BridgeSettings) -> None:
        self.db, self.runner = db, runner
        self.config = settings.storage
        self.timeout_s = settings.slurm.command_timeout_s
        self.secret = settings.secret.get_secret_value()

    # ---- hosts ----------------------------------------------------------------------------------------

    def hosts(self) -> dict[str, Any]:
        return {"default": self.config.default_host, "allowed": sorted(self.config.hosts)}

    def _host_path(self, host: str | None) -> tuple[str, str]:
        name = host or self.config.default_host
        if name not in self.config.hosts:
            known = ", ".join(sorted(self.config.hosts))
            raise InvalidAPIParameters(f"host: no storage host {name!r} (there are: {known})")
        return name, self.config.hosts[name].rstrip("/")

    # ---- folders --------------------------------------------------------------------------------------

    async def create(self, auth: AuthContext, name: object, host: str | None = None, *, group: str | None = None,
                     usage_mode: str = "general", permission: str = "rw", cloneable: bool = False) -> Access:
        """A user folder, or (`group`: a project's id or name) a project folder, which an admin of the
        project's domain creates; it is kept on disk by the creator's Unix account, and every member of the
        project reaches it through an ACL entry of their own."""
        name = rules.check_name(name)
        rules.check_permission(permission)
        host_name, host_path = self._host_path(host)
        project: GroupRow | None = None
        async with self.db.unit_of_work() as s:
            if group:
                project = await self._project(s, auth, group)
                if not auth.can_manage_domain(project.domain_name):
                    raise GenericForbidden("only an admin of the project's domain creates its folders")
                taken = await s.scalar(select(VFolderRow.id).where(VFolderRow.group_id == project.id,
                                                                   VFolderRow.name == name))
                if taken is not None:
                    raise FolderAlreadyExists(f"project {project.name} has a folder named {name} already")
            else:
                if await self._named(s, auth.user_uuid, name) is not None:
                    raise FolderAlreadyExists(f"you have a folder named {name} already")
                limit = await self._count_limit(s, auth.access_key)
                owned = await s.scalar(select(func.count()).select_from(VFolderRow)
                                       .where(VFolderRow.user_uuid == auth.user_uuid))
                if limit and (owned or 0) >= limit:
                    raise QuotaExceeded(f"you have {owned} folders, the most your resource policy allows")
        fid = str(uuid.uuid4())
        home = f"{host_path}/{auth.unix_user}"
        path = f"{home}/{fid.replace('-', '')}"
        await self._as(auth.unix_user, ["mkdir", "-p", "-m", "0700", home], f"cannot create {home}")
        seen = await self._as(auth.unix_user, ["stat", "-c", "%F|%U|%a|%n", home], f"cannot look at {home}")
        if (why := rules.unsafe_home(seen.stdout, auth.unix_user)) is not None:
            raise GenericForbidden(f"your folder on {host_name} is not safe to use: {why}. Ask an admin to remove it")
        await self._as(auth.unix_user, ["mkdir", "-m", "0700", path], f"cannot create the folder {name}")
        row = VFolderRow(id=fid, name=name, host=host_name, user_uuid=None if project else auth.user_uuid,
                         group_id=project.id if project else None, domain_name=auth.domain_name,
                         unix_user=auth.unix_user, path=path, creator=auth.email, usage_mode=usage_mode,
                         permission=permission, cloneable=cloneable, created_at=datetime.now(UTC))
        try:
            async with self.db.unit_of_work() as s:
                s.add(row)
        except Exception as e:
            await self.runner.run(["rmdir", "--", path], user=auth.unix_user, timeout_s=self.timeout_s)
            if isinstance(e, IntegrityError):   # another request made one of that name meanwhile
                raise FolderAlreadyExists(f"there is a folder named {name} already") from None
            raise
        if project is not None:
            try:
                await self.sync_access(row.id)
            except BridgeError:
                await self._drop(row)
                raise
            return Access(row, permission, False, True, row.unix_user, project.name)
        return Access(row, permission, True, True, row.unix_user)

    async def visible(self, auth: AuthContext, owner_access_key: str | None = None) -> list[Access]:
        """The caller's folders, those shared with them, and their projects' (an admin asking for another
        account below them: that account's own folders)."""
        user_uuid = await self._owner_of(auth, owner_access_key)
        async with self.db.unit_of_work() as s:
            if user_uuid != auth.user_uuid:
                rows = list((await s.execute(select(VFolderRow).where(VFolderRow.user_uuid == user_uuid)
                                             .order_by(VFolderRow.created_at))).scalars())
            else:
                shared = select(VFolderShareRow.vfolder_id).where(VFolderShareRow.user_uuid == user_uuid)
                mine = select(GroupMemberRow.group_id).where(GroupMemberRow.user_id == user_uuid)
                rows = list((await s.execute(select(VFolderRow).where(or_(
                    VFolderRow.user_uuid == user_uuid,
                    and_(VFolderRow.group_id.is_(None), VFolderRow.id.in_(shared)),
                    VFolderRow.group_id.in_(mine))).order_by(VFolderRow.created_at))).scalars())
            found = [await self._access(s, auth, r) for r in rows]
        return [a for a in found if a is not None]

    async def get(self, auth: AuthContext, ref: str, need: str = "ro") -> Access:
        """A folder by id, or by name: the caller's own first, then one shared with them, then one of their
        projects'. Another user's folder that the caller may not use does not exist for them (404); one
        they may read but not write to, asked for writing, is a 403."""
        async with self.db.unit_of_work() as s:
            fid = normalize_uuid(ref)   # an id (with or without dashes, as 26.x sends it), else a name
            found: Access | None = None
            if fid:
                row = await s.get(VFolderRow, fid)
                found = await self._access(s, auth, row) if row is not None else None
            else:
                own = await self._named(s, auth.user_uuid, ref)
                if own is not None:
                    found = await self._access(s, auth, own)
                else:
                    named = [a for a in [await self._access(s, auth, r) for r in (await s.execute(
                        select(VFolderRow).where(VFolderRow.name == ref, VFolderRow.user_uuid.is_not(auth.user_uuid)
                                                 | VFolderRow.user_uuid.is_(None)))).scalars()] if a is not None]
                    named.sort(key=lambda a: a.row.group_id is not None)   # shared with the caller before projects'
                    if len(named) > 1 and named[0].row.group_id is not None:
                        raise InvalidAPIParameters(f"several of your projects have a folder named {ref}; use its id")
                    found = named[0] if named else None
        if found is None:
            raise FolderNotFound(f"no folder {ref!r}")
        if not found.allows(need):
            raise GenericForbidden(f"folder {found.row.name}: your permission is {found.permission}; "
                                   f"this needs {need}")
        return found

    async def _managed(self, auth: AuthContext, ref: str) -> Access:
        acc = await self.get(auth, ref)
        if not acc.manages:
            raise GenericForbidden(f"folder {acc.row.name} is shared with you; only its owner may do that")
        return acc

    async def delete(self, auth: AuthContext, ref: str) -> None:
        await self._drop((await self._managed(auth, ref)).row)

    async def _drop(self, row: VFolderRow) -> None:
        await self._as(row.unix_user, ["rm", "-rf", "--one-file-system", "--", row.path],
                       f"cannot remove the folder {row.name}")
        async with self.db.unit_of_work() as s:
            gone = await s.get(VFolderRow, row.id)
            if gone is not None:
                await s.delete(gone)

    # ---- files ----------------------------------------------------------------------------------------

    async def files(self, auth: AuthContext, ref: str, path: object = ".") -> tuple[Access, list[dict[str, Any]]]:
        acc = await self.get(auth, ref)
        target = self._inside(acc.row, path)
        if target != acc.row.path and not await self._is_dir(acc, target):
            raise InvalidAPIParameters(f"path: {path} is not a folder")
        done = await self._as(acc.run_as, ["find", target, "-mindepth", "1", "-maxdepth", "1", "-printf",
                                           "%f\\0%s\\0%T@\\0%M\\0%y\\0"], f"cannot list {path}")
        return acc, rules.parse_listing(done.stdout)

    async def mkdir(self, auth: AuthContext, ref: str, path: object, *, parents: bool = False,
                    exist_ok: bool = False) -> str:
        acc = await self.get(auth, ref, "rw")
        target = self._inside(acc.row, path)
        if target == acc.row.path:
            raise InvalidAPIParameters("path: the folder itself exists already")
        argv = ["mkdir", *(["-p"] if parents or exist_ok else []), "--", target]
        if not exist_ok:
            exists = await self.runner.run(["test", "-e", target], user=acc.run_as, timeout_s=self.timeout_s)
            if exists.ok:
                raise InvalidAPIParameters(f"path: {path} exists already")
        await self._as(acc.run_as, argv, f"cannot create {path}")
        return posixpath.relpath(target, acc.row.path)

    async def rename(self, auth: AuthContext, ref: str, new_name: object) -> VFolderRow:
        """A new name (the directory is named by the folder's id and stays)."""
        row = (await self._managed(auth, ref)).row
        name = rules.check_name(new_name)
        try:
            async with self.db.unit_of_work() as s:
                if name != row.name:
                    same = (VFolderRow.group_id == row.group_id) if row.group_id else (
                        VFolderRow.user_uuid == row.user_uuid)
                    if await s.scalar(select(VFolderRow.id).where(same, VFolderRow.name == name)) is not None:
                        raise FolderAlreadyExists(f"there is a folder named {name} already")
                fresh = await s.get(VFolderRow, row.id)
                if fresh is None:
                    raise FolderNotFound(f"no folder {ref!r}")
                fresh.name = name
        except IntegrityError:   # renamed to that name by another request meanwhile
            raise FolderAlreadyExists(f"there is a folder named {name} already") from None
        return fresh

    async def update_options(self, auth: AuthContext, ref: str, permission: object = None,
                             cloneable: object = None) -> None:
        row = (await self._managed(auth, ref)).row
        if permission is not None:
            rules.check_permission(permission)
        async with self.db.unit_of_work() as s:
            fresh = await s.get(VFolderRow, row.id)
            if fresh is None:
                raise FolderNotFound(f"no folder {ref!r}")
            if permission is not None:
                fresh.permission = str(permission)
            if cloneable is not None:
                fresh.cloneable = bool(cloneable)
        if row.group_id and permission is not None:   # the members' default permission, on disk too
            await self.sync_access(row.id)

    async def move(self, auth: AuthContext, ref: str, src: object, dst: object) -> None:
        """`mv SRC DST` inside the folder: into DST when it is a folder, else to that name (which must not
        exist)."""
        acc = await self.get(auth, ref, "rw")
        source, target = self._inside(acc.row, src, "src"), self._inside(acc.row, dst, "dst")
        if source == acc.row.path:
            raise InvalidAPIParameters("src: the folder itself cannot be moved")
        into = await self._is_dir(acc, target)
        if not into and (await self.runner.run(["test", "-e", target], user=acc.run_as,
                                               timeout_s=self.timeout_s)).ok:
            raise InvalidAPIParameters(f"dst: {dst} exists already")
        await self._as(acc.run_as, ["mv", *([] if into else ["-T"]), "--", source, target], f"cannot move {src}")

    async def rename_file(self, auth: AuthContext, ref: str, target_path: object, new_name: object) -> None:
        """A file or folder's new name, in the same folder."""
        if not isinstance(new_name, str) or "/" in new_name or new_name in ("", ".", ".."):
            raise InvalidAPIParameters("new_name: a name without '/' is required")
        acc = await self.get(auth, ref, "rw")
        source = self._inside(acc.row, target_path, "target_path")
        if source == acc.row.path:
            raise InvalidAPIParameters("target_path: the folder itself is renamed with `rename`")
        target = posixpath.join(posixpath.dirname(source), rules.inside(new_name, "new_name"))
        exists = await self.runner.run(["test", "-e", target], user=acc.run_as, timeout_s=self.timeout_s)
        if exists.ok:
            raise InvalidAPIParameters(f"new_name: {new_name} exists already")
        await self._as(acc.run_as, ["mv", "-T", "--", source, target], f"cannot rename {target_path}")

    async def delete_files(self, auth: AuthContext, ref: str, files: object, recursive: bool = False) -> None:
        acc = await self.get(auth, ref, "rw")
        if not isinstance(files, list) or not files:
            raise InvalidAPIParameters("files: a list of paths is required")
        targets = [self._inside(acc.row, f, "files") for f in files]
        if acc.row.path in targets:
            raise InvalidAPIParameters("files: the folder itself is deleted with DELETE /folders/{name}")
        await self._as(acc.run_as, ["rm", *(["-r"] if recursive else []), "-f", "--one-file-system", "--",
                                    *targets], "cannot delete")

    async def _is_dir(self, acc: Access, target: str) -> bool:
        return (await self.runner.run(["test", "-d", target], user=acc.run_as, timeout_s=self.timeout_s)).ok

    # ---- transfers: signed links, the file written and read as its owner, a chunk at a time ------------

    async def usage(self, row: VFolderRow) -> tuple[int, int]:
        """(bytes, files) the folder holds, measured as its owner (`du`; the gateway enforces limits itself,
        it does not use file-system quotas)."""
        done = await self._as(row.unix_user, ["du", "-s", "-b", "--", row.path], "cannot measure the folder")
        count = await self._as(row.unix_user, ["find", row.path, "-mindepth", "1", "-printf", "."],
                               "cannot count the folder's files")
        return int(done.stdout.split()[0] or 0), len(count.stdout)

    async def size_limit(self, row: VFolderRow) -> int:
        """The owner's policy's max_vfolder_size in bytes (0: none)."""
        async with self.db.unit_of_work() as s:
            kp = (await s.execute(select(KeypairRow).where(KeypairRow.user == row.user_uuid)
                                  .order_by(KeypairRow.created_at))).scalars().first()
            policy = await s.get(KeypairResourcePolicyRow, kp.resource_policy) if kp else None
        return int(policy.max_vfolder_size or 0) if policy else 0

    async def request_upload(self, auth: AuthContext, ref: str, path: object, size: object) -> str:
        """A token for uploading one file (tus: PATCHes from offset 0). The bytes go to a hidden file beside
        the target, renamed onto it once all have come: an upload that fails or stops half-way leaves the
        old file as it was. A 0-byte file (which gets no PATCH) is made at once."""
        acc = await self.get(auth, ref, "rw")
        row = acc.row
        target = self._inside(row, path)
        if target == row.path:
            raise InvalidAPIParameters("path: the name of a file in the folder is required")
        if not isinstance(size, int) or isinstance(size, bool) or size < 0:
            raise InvalidAPIParameters("size: the file's size in bytes is required")
        limit = await self.size_limit(row)
        if limit:   # refused before a byte is written: no partial file past the limit
            used, _ = await self.usage(row)
            if used + size > limit:
                raise QuotaExceeded(f"the folder holds {used} bytes; {size} more would pass the {limit} bytes "
                                    "your resource policy allows a folder (max_vfolder_size)")
        claims: dict[str, Any] = {"f": row.id, "r": posixpath.relpath(target, row.path), "s": size,
                                  "u": acc.run_as}
        if size == 0:
            await self._as(acc.run_as, ["truncate", "-s", "0", "--", target], f"cannot create {path}")
        else:
            partial = posixpath.join(posixpath.dirname(target), f".bridge-upload-{uuid.uuid4().hex[:16]}")
            await self._as(acc.run_as, ["truncate", "-s", "0", "--", partial], f"cannot create {path}")
            claims["t"] = posixpath.relpath(partial, row.path)
        return tokens.issue(self.secret, "vfolder-upload", claims, TRANSFER_TTL_S)

    async def upload_state(self, token: str) -> tuple[VFolderRow, str, str, int, int]:
        """(folder, the file being written, the target, bytes written so far, bytes announced)."""
        row, _, state = await self._upload(token)
        return row, *state

    async def _upload(self, token: str) -> tuple[VFolderRow, str, tuple[str, str, int, int]]:
        """(folder, the account writing, (the file being written, the target, bytes so far, announced))."""
        claims = tokens.open_(self.secret, "vfolder-upload", token)
        row = await self._by_id(claims["f"])
        user = str(claims.get("u") or row.unix_user)
        target = posixpath.join(row.path, rules.inside(claims["r"]))
        partial = posixpath.join(row.path, rules.inside(claims["t"])) if claims.get("t") else target
        seen = await self.runner.run(["stat", "-c", "%s|%F", "--", partial], user=user, timeout_s=self.timeout_s)
        if not seen.ok and partial != target:   # complete (renamed onto the target) or gone
            done = await self.runner.run(["stat", "-c", "%s|%F", "--", target], user=user, timeout_s=self.timeout_s)
            if done.ok and done.stdout.strip().partition("|")[0] == str(claims["s"]):
                return row, user, (target, target, int(claims["s"]), int(claims["s"]))
            raise InvalidAPIParameters("this upload is no longer there; request a new one")
        if not seen.ok:
            raise InvalidAPIParameters("this upload is no longer there; request a new one")
        size, _, kind = seen.stdout.strip().partition("|")
        if not kind.startswith("regular"):   # "regular file", or "regular empty file"
            raise InvalidAPIParameters("the upload's target is no longer a plain file")
        return row, user, (partial, target, int(size), int(claims["s"]))

    async def upload_chunk(self, token: str, offset: int, chunks: AsyncIterator[bytes]) -> int:
        """Append one tus chunk at `offset` (which must be where the upload stands); the new offset. The
        last chunk moves the file onto its target."""
        row, user, (partial, target, now, announced) = await self._upload(token)
        if offset != now:
            raise UploadOffsetMismatch(f"the file holds {now} bytes; continue from there", data={"offset": now})
        if partial == target and now == announced and announced:
            return now   # complete already
        written = 0

        async def counted() -> AsyncIterator[bytes]:
            nonlocal written
            async for chunk in chunks:
                written += len(chunk)
                if offset + written > announced:
                    raise InvalidAPIParameters(f"the upload passes the {announced} bytes announced for it")
                yield chunk

        feed = getattr(self.runner, "feed", None)
        if feed is None:
            raise BackendError("file transfers need the local command transport (slurm.cli.transport = local)")
        done = await feed(["dd", f"of={partial}", "bs=1M", f"seek={offset}", "oflag=seek_bytes", "conv=notrunc",
                           "status=none"], counted(), user=user)
        if not done.ok:
            raise_for(done, "cannot write the upload")
        if offset + written == announced and partial != target:
            await self._as(user, ["mv", "-T", "--", partial, target], "cannot put the upload in place")
        return offset + written

    async def request_download(self, auth: AuthContext, ref: str, path: object) -> str:
        acc = await self.get(auth, ref)
        target = self._inside(acc.row, path)
        return tokens.issue(self.secret, "vfolder-download", {"f": acc.row.id, "u": acc.run_as,
                                                              "r": posixpath.relpath(target, acc.row.path)},
                            TRANSFER_TTL_S)

    async def download(self, token: str, start: int = 0) -> Download:
        """A file of the folder, read as its owner from byte `start` on, with its size and mtime."""
        claims = tokens.open_(self.secret, "vfolder-download", token)
        row = await self._by_id(claims["f"])
        user = str(claims.get("u") or row.unix_user)
        target = posixpath.join(row.path, rules.inside(claims["r"]))
        seen = await self._as(user, ["stat", "-L", "-c", "%s|%Y|%F", "--", target],
                              f"cannot read {claims['r']}")
        size, mtime, kind = seen.stdout.strip().split("|", 2)
        if not kind.startswith("regular"):
            raise InvalidAPIParameters(f"{claims['r']} is not a file (download a folder's files one by one)")
        drain = getattr(self.runner, "drain", None)
        if drain is None:
            raise BackendError("file transfers need the local command transport (slurm.cli.transport = local)")
        start = max(start, 0)
        if start >= int(size):   # nothing to send (or a range past the end: the route answers 416)
            return Download(posixpath.basename(target), int(size), int(mtime), start, _nothing())
        # the command started, and its first bytes read, before the answer goes out: a failure is a clean
        # error, not a body shorter than its Content-Length
        stream = drain(["tail", "-c", f"+{start + 1}", "--", target], user=user)
        try:
            first = await anext(stream)
        except StopAsyncIteration:
            first = b""
        except CommandFailed as e:
            raise InvalidAPIParameters(f"cannot read {claims['r']}: {e.msg.rsplit(': ', 1)[-1]}") from None
        return Download(posixpath.basename(target), int(size), int(mtime), start, _prefixed(first, stream))

    async def _by_id(self, fid: str) -> VFolderRow:
        async with self.db.unit_of_work() as s:
            row = await s.get(VFolderRow, fid)
        if row is None:
            raise AuthorizationFailed("the token's folder is gone")
        return row

    # ---- sharing: invitations to user folders, per-user permissions on project folders -----------------

    async def invite(self, auth: AuthContext, ref: str, permission: object, invitees: object) -> list[str]:
        """Invite users (by email, or by user id) to a user folder of the caller's; those invited already,
        or sharing it already, are left as they are. The invited emails."""
        acc = await self._managed(auth, ref)
        perm = rules.check_permission(permission, "perm")
        if acc.row.group_id:
            raise InvalidAPIParameters("a project folder is shared with its members; use `share` to change one's "
                                       "permission")
        if not isinstance(invitees, list) or not invitees or not all(isinstance(e, str) for e in invitees):
            raise InvalidAPIParameters("emails: a list of the users to invite is required")
        invited = []
        async with self.db.unit_of_work() as s:
            for who in dict.fromkeys(invitees):
                user = await self._user(s, who)
                if user is None or user.status != "active":
                    raise InvalidAPIParameters(f"emails: no active user {who}")
                if user.uuid == acc.row.user_uuid:
                    raise InvalidAPIParameters(f"emails: {who} owns the folder")
                shared = await s.get(VFolderShareRow, (acc.row.id, user.uuid))
                pending = await s.scalar(select(VFolderInvitationRow.id).where(
                    VFolderInvitationRow.vfolder_id == acc.row.id, VFolderInvitationRow.invitee_uuid == user.uuid,
                    VFolderInvitationRow.state == "pending"))
                if shared is None and pending is None:
                    s.add(VFolderInvitationRow(vfolder_id=acc.row.id, inviter_uuid=auth.user_uuid,
                                               invitee_uuid=user.uuid, permission=perm))
                    invited.append(user.email)
        return invited

    async def invitations(self, auth: AuthContext, *, sent: bool = False) -> list[dict[str, Any]]:
        """Pending invitations the caller received (or sent)."""
        who = VFolderInvitationRow.inviter_uuid if sent else VFolderInvitationRow.invitee_uuid
        inviter, invitee = aliased(UserRow), aliased(UserRow)
        async with self.db.unit_of_work() as s:
            found = (await s.execute(
                select(VFolderInvitationRow, VFolderRow, inviter.email, invitee.email)
                .join(VFolderRow, VFolderRow.id == VFolderInvitationRow.vfolder_id)
                .join(inviter, inviter.uuid == VFolderInvitationRow.inviter_uuid)
                .join(invitee, invitee.uuid == VFolderInvitationRow.invitee_uuid)
                .where(who == auth.user_uuid, VFolderInvitationRow.state == "pending")
                .order_by(VFolderInvitationRow.created_at))).all()
        return [{"id": inv.id, "inviter": by, "invitee": to, "perm": inv.permission, "permission": inv.permission,
                 "state": inv.state, "created_at": inv.created_at.isoformat(), "modified_at":
                 inv.modified_at.isoformat(), "vfolder_id": uuid.UUID(f.id).hex, "vfolder_name": f.name}
                for inv, f, by, to in found]

    async def update_invitation(self, auth: AuthContext, inv_id: str, permission: object) -> None:
        perm = rules.check_permission(permission, "perm")
        async with self.db.unit_of_work() as s:
            inv = await self._invitation(s, inv_id)
            if inv.inviter_uuid != auth.user_uuid:
                raise FolderNotFound("no such invitation")
            inv.permission = perm

    async def accept(self, auth: AuthContext, inv_id: object) -> None:
        """The invitee takes the invitation: the folder is shared with them, in the API and on disk."""
        async with self.db.unit_of_work() as s:
            inv = await self._invitation(s, inv_id)
            if inv.invitee_uuid != auth.user_uuid:
                raise FolderNotFound("no such invitation")
            row = await s.get(VFolderRow, inv.vfolder_id)
            if row is None:
                raise FolderNotFound("the invitation's folder is gone")
            if await self._named(s, auth.user_uuid, row.name) is not None:
                raise InvalidAPIParameters(f"you have a folder named {row.name} already; rename yours first")
            inv.state = "accepted"
            s.add(VFolderShareRow(vfolder_id=row.id, user_uuid=auth.user_uuid, permission=inv.permission))
        try:
            await self.sync_access(row.id)
        except BridgeError:   # not shared on disk: not shared at all, and the invitation stays
            async with self.db.unit_of_work() as s:
                share = await s.get(VFolderShareRow, (row.id, auth.user_uuid))
                if share is not None:
                    await s.delete(share)
                fresh = await s.get(VFolderInvitationRow, inv.id)
                if fresh is not None:
                    fresh.state = "pending"
            raise

    async def reject(self, auth: AuthContext, inv_id: object) -> None:
        """The invitee declines it (rejected), or its inviter takes it back (canceled)."""
        async with self.db.unit_of_work() as s:
            inv = await self._invitation(s, inv_id)
            if auth.user_uuid not in (inv.invitee_uuid, inv.inviter_uuid):
                raise FolderNotFound("no such invitation")
            inv.state = "rejected" if inv.invitee_uuid == auth.user_uuid else "canceled"

    async def leave(self, auth: AuthContext, ref: str, shared_user_uuid: object = None) -> None:
        """Stop using a folder shared with the caller; its owner may name a user to take it from instead."""
        acc = await self.get(auth, ref)
        if shared_user_uuid and acc.manages and not acc.row.group_id:
            await self._unshare(acc.row.id, [str(shared_user_uuid)])
            return
        if acc.manages or acc.row.group_id:
            raise InvalidAPIParameters("only a folder another user shared with you can be left")
        await self._unshare(acc.row.id, [auth.user_uuid])

    async def shared(self, auth: AuthContext, folder_id: str | None = None) -> list[dict[str, Any]]:
        """Who the caller's folders (or that one) are shared with, and how."""
        q = (select(VFolderShareRow, VFolderRow, UserRow).join(VFolderRow, VFolderRow.id == VFolderShareRow.vfolder_id)
             .join(UserRow, UserRow.uuid == VFolderShareRow.user_uuid).order_by(VFolderRow.name, UserRow.email))
        if folder_id:
            q = q.where(VFolderRow.id == (await self._managed(auth, folder_id)).row.id)
        else:
            q = q.where(VFolderRow.user_uuid == auth.user_uuid)
        async with self.db.unit_of_work() as s:
            found = (await s.execute(q)).all()
        return [{"vfolder_id": uuid.UUID(f.id).hex, "vfolder_name": f.name, "status": f.status, "owner":
                 f.user_uuid, "type": "group" if f.group_id else "user", "shared_by": f.creator,
                 "shared_to": {"uuid": u.uuid, "email": u.email}, "shared-to": {"uuid": u.uuid, "email": u.email},
                 "perm": share.permission} for share, f, u in found]

    async def set_shared(self, auth: AuthContext, folder_id: object, user_uuid: object, permission: object) -> None:
        """Change one user's permission on a folder of the caller's; None takes it away."""
        if not isinstance(folder_id, str) or not isinstance(user_uuid, str):
            raise InvalidAPIParameters("vfolder and user are required")
        acc = await self._managed(auth, folder_id)
        if permission is None:
            await self._unshare(acc.row.id, [user_uuid])
            return
        perm = rules.check_permission(permission, "perm")
        async with self.db.unit_of_work() as s:
            share = await s.get(VFolderShareRow, (acc.row.id, user_uuid))
            if share is None:
                raise FolderNotFound("the folder is not shared with that user")
            share.permission = perm
        await self.sync_access(acc.row.id)

    async def share(self, auth: AuthContext, ref: str, permission: object, emails: object) -> list[str]:
        """A project folder's permission for some of the project's members, overriding the folder's own."""
        acc = await self._managed(auth, ref)
        perm = rules.check_permission(permission)
        users = await self._project_members(acc, emails)
        async with self.db.unit_of_work() as s:
            for user in users:
                share = await s.get(VFolderShareRow, (acc.row.id, user.uuid))
                if share is None:
                    s.add(VFolderShareRow(vfolder_id=acc.row.id, user_uuid=user.uuid, permission=perm))
                else:
                    share.permission = perm
        await self.sync_access(acc.row.id)
        return [u.email for u in users]

    async def unshare(self, auth: AuthContext, ref: str, emails: object) -> list[str]:
        """Members back to the project folder's own permission."""
        acc = await self._managed(auth, ref)
        users = await self._project_members(acc, emails)
        await self._unshare(acc.row.id, [u.uuid for u in users])
        return [u.email for u in users]

    async def _project_members(self, acc: Access, emails: object) -> list[UserRow]:
        if not acc.row.group_id:
            raise InvalidAPIParameters("only a project folder is shared this way; invite users to a user folder")
        if not isinstance(emails, list) or not emails or not all(isinstance(e, str) for e in emails):
            raise InvalidAPIParameters("emails: a list of the project's members is required")
        async with self.db.unit_of_work() as s:
            users = []
            for email in dict.fromkeys(emails):
                user = await self._user(s, email)
                if user is None or await s.get(GroupMemberRow, (acc.row.group_id, user.uuid)) is None:
                    raise InvalidAPIParameters(f"emails: {email} is not a member of the folder's project")
                users.append(user)
        return users

    async def _unshare(self, fid: str, user_uuids: list[str]) -> None:
        async with self.db.unit_of_work() as s:
            for u in user_uuids:
                share = await s.get(VFolderShareRow, (fid, u))
                if share is not None:
                    await s.delete(share)
        await self.sync_access(fid)

    async def touching(self, *, user_uuid: str | None = None, group_ids: list[str] | None = None) -> set[str]:
        """The folders whose ACLs an account change may alter: those shared with the user, and those of the
        user's projects (or of these projects). Asked before and after the change, then `sync_many`."""
        groups = set(group_ids or [])
        async with self.db.unit_of_work() as s:
            ids: set[str] = set()
            if user_uuid:
                groups |= set((await s.execute(select(GroupMemberRow.group_id)
                                               .where(GroupMemberRow.user_id == user_uuid))).scalars())
                ids |= set((await s.execute(select(VFolderShareRow.vfolder_id)
                                            .where(VFolderShareRow.user_uuid == user_uuid))).scalars())
            if groups:
                ids |= set((await s.execute(select(VFolderRow.id).where(VFolderRow.group_id.in_(groups)))).scalars())
        return ids

    async def sync_many(self, fids: set[str]) -> None:
        """After a project's members, or a user's status or Unix account, changed: those folders' ACLs follow
        (a member who left is cut off on disk too, not only in the API)."""
        for fid in sorted(fids):
            await self.sync_access(fid)

    async def sync_access(self, fid: str) -> None:
        """Make the folder's ACL on disk say what the database says: one named-user entry (and default entry,
        for what is made later) per Unix account the folder is shared with, none for anyone else. Run as
        the folder's owner on disk; files another sharer made are theirs, so each writer also grants on
        their own (what fails there is theirs to fix, and only costs others access to those files)."""
        async with self.db.unit_of_work() as s:
            row = await s.get(VFolderRow, fid)
            if row is None:
                return
            want = await self._grants(s, row)
        try:
            listed = await self.runner.run(["getfacl", "-cp", "--", row.path], user=row.unix_user,
                                           timeout_s=self.timeout_s)
        except CommandFailed as e:   # not there at all
            raise BackendError(f"{_NO_ACL} ({e.msg})") from None
        if not listed.ok:
            self._acl_failed(listed, row)
        have = rules.parse_acl(listed.stdout)
        writers = [u for u, p in want.items() if p != "ro"]
        home = posixpath.dirname(row.path)
        for user, perm in want.items():
            if have.get(user) == perm:
                continue
            await self._acl(row, ["setfacl", "-m", f"u:{user}:x", "--", home])   # to pass through, not to list
            argv = ["setfacl", "-R", "-m", rules.acl_grant(user, perm, row.unix_user), "--", row.path]
            await self._acl(row, argv, tree=True)
            for other in writers:
                if other != user:
                    await self.runner.run(argv, user=other, timeout_s=self.timeout_s)
        for user in set(have) - set(want):
            argv = ["setfacl", "-R", "-x", f"u:{user},d:u:{user}", "--", row.path]
            await self._acl(row, argv, tree=True)
        if set(have) != set(want) or any(have.get(u) != p for u, p in want.items()):
            check = await self.runner.run(["getfacl", "-cp", "--", row.path], user=row.unix_user,
                                          timeout_s=self.timeout_s)
            if not check.ok or rules.parse_acl(check.stdout) != want:
                raise BackendError(f"folder {row.name}: its ACL on disk does not say what was shared")

    async def _acl(self, row: VFolderRow, argv: list[str], *, tree: bool = False) -> None:
        """setfacl as the folder's owner. Over a tree it fails on what others own there: the folder itself
        is checked afterwards instead."""
        done = await self.runner.run(argv, user=row.unix_user, timeout_s=self.timeout_s)
        if not done.ok and not (tree and "Operation not permitted" in done.stderr):
            self._acl_failed(done, row)

    @staticmethod
    def _acl_failed(done: Completed, row: VFolderRow) -> None:
        if done.rc == 127 or "failed to execute" in done.stderr or "not found" in done.stderr:
            raise BackendError(_NO_ACL)
        raise_for(done, f"cannot share the folder {row.name}")

    async def _grants(self, s: Any, row: VFolderRow) -> dict[str, str]:
        """Unix account -> 'ro' | 'rw' for everyone but the owner who may use the folder."""
        shares = {sh.user_uuid: sh.permission for sh in (await s.execute(
            select(VFolderShareRow).where(VFolderShareRow.vfolder_id == row.id))).scalars()}
        if row.group_id:
            members = (await s.execute(select(UserRow).join(GroupMemberRow, GroupMemberRow.user_id == UserRow.uuid)
                                       .where(GroupMemberRow.group_id == row.group_id))).scalars()
            users = {u.uuid: (u, shares.get(u.uuid, row.permission)) for u in members}
        else:
            found = (await s.execute(select(UserRow).where(UserRow.uuid.in_(shares)))).scalars()
            users = {u.uuid: (u, shares[u.uuid]) for u in found}
        grants: dict[str, str] = {}
        for user, perm in users.values():
            if user.unix_user == row.unix_user or user.status != "active":
                continue
            disk = "ro" if perm == "ro" else "rw"
            grants[user.unix_user] = "rw" if "rw" in (disk, grants.get(user.unix_user)) else "ro"
        return grants

    # ---- mounts ---------------------------------------------------------------------------------------

    async def mounts(self, user_uuid: str, names: list[str], mount_map: dict[str, str] | None,
                     group_id: str | None = None) -> list[Mount]:
        """The folders a session of that user mounts: those named (theirs, shared with them, or the session
        project's), plus their own dot-folders; read-only where their permission is. Refused before anything
        is submitted when one is not theirs to use."""
        mount_map = dict(mount_map or {})
        wanted = list(dict.fromkeys([*names, *mount_map]))
        async with self.db.unit_of_work() as s:
            user = await s.get(UserRow, user_uuid)
            if user is None:
                raise FolderNotFound("mounts: no such user")
            shared = select(VFolderShareRow.vfolder_id).where(VFolderShareRow.user_uuid == user_uuid)
            rows = (await s.execute(select(VFolderRow).where(or_(
                VFolderRow.user_uuid == user_uuid, and_(VFolderRow.group_id.is_(None), VFolderRow.id.in_(shared)),
                and_(VFolderRow.group_id.is_not(None), VFolderRow.group_id == group_id))))).scalars()
            usable: dict[str, tuple[int, VFolderRow, str]] = {}   # name -> (rank, folder, permission)
            for row in rows:   # own first, then shared, then the project's: the first of a name wins
                perm = await self._permission_of(s, user, row)
                rank = 0 if row.user_uuid == user_uuid else 1 if row.group_id is None else 2
                if perm is not None and (row.name not in usable or rank < usable[row.name][0]):
                    usable[row.name] = (rank, row, perm)
        for name, (rank, _, _) in usable.items():
            if rules.auto_mounted(name) and rank == 0 and name not in wanted:
                wanted.append(name)
        result, targets = [], set()
        for name in wanted:
            if name not in usable:
                raise FolderNotFound(f"mounts: you have no folder {name!r}")
            _, row, perm = usable[name]
            target = rules.mount_target(name, mount_map.get(name))
            if target in targets:
                raise InvalidAPIParameters(f"mounts: two folders would be mounted at {target}")
            targets.add(target)
            result.append(Mount(name, row.path, target, "ro" if perm == "ro" else "rw"))
        return result

    # ---- helpers --------------------------------------------------------------------------------------

    def _inside(self, row: VFolderRow, path: object, what: str = "path") -> str:
        rel = rules.inside(path, what)
        return row.path if rel == "." else posixpath.join(row.path, rel)

    async def _as(self, user: str, argv: list[str], what: str) -> Completed:
        done = await self.runner.run(argv, user=user, timeout_s=self.timeout_s)
        if not done.ok:
            raise_for(done, what)
        return done

    @staticmethod
    async def _named(s: Any, user_uuid: str, name: str) -> VFolderRow | None:
        return (await s.execute(select(VFolderRow).where(VFolderRow.user_uuid == user_uuid,
                                                         VFolderRow.name == name))).scalars().first()

    async def _access(self, s: Any, auth: AuthContext, row: VFolderRow) -> Access | None:
        """The caller's access to a folder, or None: not theirs, not shared with them, not their project's,
        and not an account below them."""
        if row.group_id is None and row.user_uuid == auth.user_uuid:
            return Access(row, row.permission, True, True, row.unix_user)
        project = await s.get(GroupRow, row.group_id) if row.group_id else None
        if project is not None:
            if auth.can_manage_domain(project.domain_name):
                return Access(row, "wd", False, True, row.unix_user, project.name)
            member = await s.get(GroupMemberRow, (project.id, auth.user_uuid))
            if member is None or not project.is_active:
                return None
            share = await s.get(VFolderShareRow, (row.id, auth.user_uuid))
            return Access(row, share.permission if share else row.permission, False, False, auth.unix_user,
                          project.name)
        share = await s.get(VFolderShareRow, (row.id, auth.user_uuid))
        if share is not None:
            return Access(row, share.permission, False, False, auth.unix_user)
        owner = await s.get(UserRow, row.user_uuid)
        if owner is not None and auth.may_act_for(owner.uuid, owner.role, owner.domain_name):
            return Access(row, row.permission, False, True, row.unix_user)
        return None

    @staticmethod
    async def _permission_of(s: Any, user: UserRow, row: VFolderRow) -> str | None:
        """A user's own permission on a folder for mounting it (no admin rights: a session mounts what its
        owner may use)."""
        if row.group_id is None and row.user_uuid == user.uuid:
            return row.permission
        share = await s.get(VFolderShareRow, (row.id, user.uuid))
        if row.group_id is None:
            return share.permission if share else None
        if await s.get(GroupMemberRow, (row.group_id, user.uuid)) is None:
            return None
        return share.permission if share else row.permission

    @staticmethod
    async def _project(s: Any, auth: AuthContext, ref: str) -> GroupRow:
        gid = normalize_uuid(ref)
        project = await s.get(GroupRow, gid) if gid else (await s.execute(
            select(GroupRow).where(GroupRow.name == ref, GroupRow.domain_name == auth.domain_name))).scalars().first()
        if project is None or not project.is_active:
            raise InvalidAPIParameters(f"group: no project {ref!r}")
        return project

    @staticmethod
    async def _user(s: Any, who: str) -> UserRow | None:
        uid = normalize_uuid(who)
        if uid:
            return await s.get(UserRow, uid)
        return (await s.execute(select(UserRow).where(UserRow.email == who))).scalars().first()

    @staticmethod
    async def _invitation(s: Any, inv_id: object) -> VFolderInvitationRow:
        iid = normalize_uuid(inv_id) if isinstance(inv_id, str) else None
        inv = await s.get(VFolderInvitationRow, iid) if iid else None
        if inv is None or inv.state != "pending":
            raise FolderNotFound("no such invitation")
        return inv

    @staticmethod
    async def _count_limit(s: Any, access_key: str) -> int:
        kp = await s.get(KeypairRow, access_key)
        policy = await s.get(KeypairResourcePolicyRow, kp.resource_policy) if kp else None
        return int(policy.max_vfolder_count or 0) if policy else 0

    async def _owner_of(self, auth: AuthContext, owner_access_key: str | None) -> str:
        if not owner_access_key or owner_access_key == auth.access_key:
            return auth.user_uuid
        async with self.db.unit_of_work() as s:
            kp = await s.get(KeypairRow, owner_access_key)
            owner = await s.get(UserRow, kp.user) if kp else None
        if owner is None or not auth.may_act_for(owner.uuid, owner.role, owner.domain_name):
            raise FolderNotFound("no such owner")
        return owner.uuid
