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

from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError

from bridge.adapters.db.engine import Database
from bridge.adapters.db.tables import KeypairResourcePolicyRow, KeypairRow, UserRow, VFolderRow
from bridge.adapters.runner import CommandRunner, Completed
from bridge.config import BridgeSettings
from bridge.domain import folders as rules
from bridge.domain import tokens
from bridge.domain.auth import AuthContext
from bridge.domain.ids import normalize_uuid
from bridge.errors import (
    AuthorizationFailed,
    BackendError,
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
                     usage_mode: str = "general", permission: str = "rw", cloneable: bool = False) -> VFolderRow:
        name = rules.check_name(name)
        if group:
            raise InvalidAPIParameters("group: project folders are not served yet; create a user folder")
        if permission not in rules.PERMISSIONS:
            raise InvalidAPIParameters(f"permission: one of {', '.join(rules.PERMISSIONS)}")
        host_name, host_path = self._host_path(host)
        async with self.db.unit_of_work() as s:
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
        row = VFolderRow(id=fid, name=name, host=host_name, user_uuid=auth.user_uuid, domain_name=auth.domain_name,
                         unix_user=auth.unix_user, path=path, creator=auth.email, usage_mode=usage_mode,
                         permission=permission, cloneable=cloneable, created_at=datetime.now(UTC))
        try:
            async with self.db.unit_of_work() as s:
                s.add(row)
        except Exception as e:
            await self.runner.run(["rmdir", "--", path], user=auth.unix_user, timeout_s=self.timeout_s)
            if isinstance(e, IntegrityError):   # another request made one of that name meanwhile
                raise FolderAlreadyExists(f"you have a folder named {name} already") from None
            raise
        return row

    async def owned(self, auth: AuthContext, owner_access_key: str | None = None) -> list[VFolderRow]:
        user_uuid = await self._owner_of(auth, owner_access_key)
        async with self.db.unit_of_work() as s:
            return list((await s.execute(select(VFolderRow).where(VFolderRow.user_uuid == user_uuid)
                                         .order_by(VFolderRow.created_at))).scalars())

    async def get(self, auth: AuthContext, ref: str) -> VFolderRow:
        """A folder by name (the caller's own) or by id (the caller's, or one of an account below them)."""
        async with self.db.unit_of_work() as s:
            fid = normalize_uuid(ref)   # an id (with or without dashes, as 26.x sends it), else a name
            row = await s.get(VFolderRow, fid) if fid else await self._named(s, auth.user_uuid, ref)
            if row is not None and row.user_uuid != auth.user_uuid:
                owner = await s.get(UserRow, row.user_uuid)
                if owner is None or not auth.may_act_for(owner.uuid, owner.role, owner.domain_name):
                    row = None   # another user's folder does not exist for the caller
        if row is None:
            raise FolderNotFound(f"no folder {ref!r}")
        return row

    async def delete(self, auth: AuthContext, ref: str) -> None:
        row = await self.get(auth, ref)
        await self._as(row.unix_user, ["rm", "-rf", "--one-file-system", "--", row.path],
                       f"cannot remove the folder {row.name}")
        async with self.db.unit_of_work() as s:
            gone = await s.get(VFolderRow, row.id)
            if gone is not None:
                await s.delete(gone)

    # ---- files ----------------------------------------------------------------------------------------

    async def files(self, auth: AuthContext, ref: str, path: object = ".") -> tuple[VFolderRow, list[dict[str, Any]]]:
        row = await self.get(auth, ref)
        target = self._inside(row, path)
        if target != row.path and not await self._is_dir(row, target):
            raise InvalidAPIParameters(f"path: {path} is not a folder")
        done = await self._as(row.unix_user, ["find", target, "-mindepth", "1", "-maxdepth", "1", "-printf",
                                              "%f\\0%s\\0%T@\\0%M\\0%y\\0"], f"cannot list {path}")
        return row, rules.parse_listing(done.stdout)

    async def mkdir(self, auth: AuthContext, ref: str, path: object, *, parents: bool = False,
                    exist_ok: bool = False) -> str:
        row = await self.get(auth, ref)
        target = self._inside(row, path)
        if target == row.path:
            raise InvalidAPIParameters("path: the folder itself exists already")
        argv = ["mkdir", *(["-p"] if parents or exist_ok else []), "--", target]
        if not exist_ok:
            exists = await self.runner.run(["test", "-e", target], user=row.unix_user, timeout_s=self.timeout_s)
            if exists.ok:
                raise InvalidAPIParameters(f"path: {path} exists already")
        await self._as(row.unix_user, argv, f"cannot create {path}")
        return posixpath.relpath(target, row.path)

    async def rename(self, auth: AuthContext, ref: str, new_name: object) -> VFolderRow:
        """A new name (the directory is named by the folder's id and stays)."""
        row = await self.get(auth, ref)
        name = rules.check_name(new_name)
        try:
            async with self.db.unit_of_work() as s:
                if name != row.name and await self._named(s, row.user_uuid, name) is not None:
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
        row = await self.get(auth, ref)
        if permission is not None and permission not in rules.PERMISSIONS:
            raise InvalidAPIParameters(f"permission: one of {', '.join(rules.PERMISSIONS)}")
        async with self.db.unit_of_work() as s:
            fresh = await s.get(VFolderRow, row.id)
            if fresh is None:
                raise FolderNotFound(f"no folder {ref!r}")
            if permission is not None:
                fresh.permission = str(permission)
            if cloneable is not None:
                fresh.cloneable = bool(cloneable)

    async def move(self, auth: AuthContext, ref: str, src: object, dst: object) -> None:
        """`mv SRC DST` inside the folder, as its owner: into DST when it is a folder, else to that name
        (which must not exist)."""
        row = await self.get(auth, ref)
        source, target = self._inside(row, src, "src"), self._inside(row, dst, "dst")
        if source == row.path:
            raise InvalidAPIParameters("src: the folder itself cannot be moved")
        into = await self._is_dir(row, target)
        if not into and (await self.runner.run(["test", "-e", target], user=row.unix_user,
                                               timeout_s=self.timeout_s)).ok:
            raise InvalidAPIParameters(f"dst: {dst} exists already")
        await self._as(row.unix_user, ["mv", *([] if into else ["-T"]), "--", source, target], f"cannot move {src}")

    async def rename_file(self, auth: AuthContext, ref: str, target_path: object, new_name: object) -> None:
        """A file or folder's new name, in the same folder."""
        if not isinstance(new_name, str) or "/" in new_name or new_name in ("", ".", ".."):
            raise InvalidAPIParameters("new_name: a name without '/' is required")
        row = await self.get(auth, ref)
        source = self._inside(row, target_path, "target_path")
        if source == row.path:
            raise InvalidAPIParameters("target_path: the folder itself is renamed with `rename`")
        target = posixpath.join(posixpath.dirname(source), rules.inside(new_name, "new_name"))
        exists = await self.runner.run(["test", "-e", target], user=row.unix_user, timeout_s=self.timeout_s)
        if exists.ok:
            raise InvalidAPIParameters(f"new_name: {new_name} exists already")
        await self._as(row.unix_user, ["mv", "-T", "--", source, target], f"cannot rename {target_path}")

    async def delete_files(self, auth: AuthContext, ref: str, files: object, recursive: bool = False) -> None:
        row = await self.get(auth, ref)
        if not isinstance(files, list) or not files:
            raise InvalidAPIParameters("files: a list of paths is required")
        targets = [self._inside(row, f, "files") for f in files]
        if row.path in targets:
            raise InvalidAPIParameters("files: the folder itself is deleted with DELETE /folders/{name}")
        await self._as(row.unix_user, ["rm", *(["-r"] if recursive else []), "-f", "--one-file-system", "--",
                                       *targets], "cannot delete")

    async def _is_dir(self, row: VFolderRow, target: str) -> bool:
        return (await self.runner.run(["test", "-d", target], user=row.unix_user, timeout_s=self.timeout_s)).ok

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
        row = await self.get(auth, ref)
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
        claims: dict[str, Any] = {"f": row.id, "r": posixpath.relpath(target, row.path), "s": size}
        if size == 0:
            await self._as(row.unix_user, ["truncate", "-s", "0", "--", target], f"cannot create {path}")
        else:
            partial = posixpath.join(posixpath.dirname(target), f".bridge-upload-{uuid.uuid4().hex[:16]}")
            await self._as(row.unix_user, ["truncate", "-s", "0", "--", partial], f"cannot create {path}")
            claims["t"] = posixpath.relpath(partial, row.path)
        return tokens.issue(self.secret, "vfolder-upload", claims, TRANSFER_TTL_S)

    async def upload_state(self, token: str) -> tuple[VFolderRow, str, str, int, int]:
        """(folder, the file being written, the target, bytes written so far, bytes announced)."""
        claims = tokens.open_(self.secret, "vfolder-upload", token)
        row = await self._by_id(claims["f"])
        target = posixpath.join(row.path, rules.inside(claims["r"]))
        partial = posixpath.join(row.path, rules.inside(claims["t"])) if claims.get("t") else target
        seen = await self.runner.run(["stat", "-c", "%s|%F", "--", partial], user=row.unix_user,
                                     timeout_s=self.timeout_s)
        if not seen.ok and partial != target:   # complete (renamed onto the target) or gone
            done = await self.runner.run(["stat", "-c", "%s|%F", "--", target], user=row.unix_user,
                                         timeout_s=self.timeout_s)
            if done.ok and done.stdout.strip().partition("|")[0] == str(claims["s"]):
                return row, target, target, int(claims["s"]), int(claims["s"])
            raise InvalidAPIParameters("this upload is no longer there; request a new one")
        if not seen.ok:
            raise InvalidAPIParameters("this upload is no longer there; request a new one")
        size, _, kind = seen.stdout.strip().partition("|")
        if not kind.startswith("regular"):   # "regular file", or "regular empty file"
            raise InvalidAPIParameters("the upload's target is no longer a plain file")
        return row, partial, target, int(size), int(claims["s"])

    async def upload_chunk(self, token: str, offset: int, chunks: AsyncIterator[bytes]) -> int:
        """Append one tus chunk at `offset` (which must be where the upload stands); the new offset. The
        last chunk moves the file onto its target."""
        row, partial, target, now, announced = await self.upload_state(token)
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
                           "status=none"], counted(), user=row.unix_user)
        if not done.ok:
            raise_for(done, "cannot write the upload")
        if offset + written == announced and partial != target:
            await self._as(row.unix_user, ["mv", "-T", "--", partial, target], "cannot put the upload in place")
        return offset + written

    async def request_download(self, auth: AuthContext, ref: str, path: object) -> str:
        row = await self.get(auth, ref)
        target = self._inside(row, path)
        return tokens.issue(self.secret, "vfolder-download", {"f": row.id,
                                                              "r": posixpath.relpath(target, row.path)}, TRANSFER_TTL_S)

    async def download(self, token: str, start: int = 0) -> Download:
        """A file of the folder, read as its owner from byte `start` on, with its size and mtime."""
        claims = tokens.open_(self.secret, "vfolder-download", token)
        row = await self._by_id(claims["f"])
        target = posixpath.join(row.path, rules.inside(claims["r"]))
        seen = await self._as(row.unix_user, ["stat", "-L", "-c", "%s|%Y|%F", "--", target],
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
        stream = drain(["tail", "-c", f"+{start + 1}", "--", target], user=row.unix_user)
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

    # ---- mounts ---------------------------------------------------------------------------------------

    async def mounts(self, user_uuid: str, names: list[str], mount_map: dict[str, str] | None) -> list[Mount]:
        """The folders a session of that user mounts: those named (each must be theirs), plus their dot-folders;
        refused before anything is submitted when one is not theirs to use."""
        mount_map = dict(mount_map or {})
        wanted = list(dict.fromkeys([*names, *mount_map]))
        async with self.db.unit_of_work() as s:
            rows = (await s.execute(select(VFolderRow).where(VFolderRow.user_uuid == user_uuid))).scalars()
            own = {r.name: r for r in rows}
        for name in own:
            if rules.auto_mounted(name) and name not in wanted:
                wanted.append(name)
        result, targets = [], set()
        for name in wanted:
            row = own.get(name)
            if row is None:
                raise FolderNotFound(f"mounts: you have no folder {name!r}")
            target = rules.mount_target(name, mount_map.get(name))
            if target in targets:
                raise InvalidAPIParameters(f"mounts: two folders would be mounted at {target}")
            targets.add(target)
            result.append(Mount(name, row.path, target, "ro" if row.permission == "ro" else "rw"))
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
