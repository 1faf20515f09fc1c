"""Virtual folders on the cluster's shared storage: create, find, list, delete, and the files inside.

Every file operation runs as the folder owner's Unix account, through the same command runner (and user
switch) as job submission: the gateway never reads or writes a user's files with its own privileges, and
what a folder holds on disk belongs to its user. Folders live in <host path>/<unix user>/<folder id>.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import hashlib
import json
import logging
import os
import posixpath
import re
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, cast
from urllib.parse import quote

from sqlalchemy import and_, func, or_, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import aliased

from bridge.adapters.db.engine import Database
from bridge.adapters.db.tables import (
    GroupMemberRow,
    GroupRow,
    KeypairResourcePolicyRow,
    KeypairRow,
    SessionRow,
    UserRow,
    VFolderInvitationRow,
    VFolderRow,
    VFolderShareRow,
)
from bridge.adapters.runner import CommandRunner, Completed
from bridge.adapters.storage.files import FolderFiles, empty_stream, read_from, write_at
from bridge.config import BridgeSettings
from bridge.domain import folders as rules
from bridge.domain import tokens
from bridge.domain.auth import AuthContext
from bridge.domain.ids import normalize_uuid
from bridge.domain.session import TERMINAL_STATUSES
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
from bridge.services.bgtasks import Report


@dataclass(frozen=True)
class Mount:
    """A folder bound into a session's container."""

    name: str
    source: str
    target: str
    mode: str   # ro | rw


logger = logging.getLogger(__name__)
_NO_ACL = "sharing folders needs the POSIX ACL tools (getfacl, setfacl: Debian's `acl`) on the login node"
TRANSFER_TTL_S = 24 * 3600   # an upload or download link works this long


class FolderInUse(InvalidAPIParameters):
    slug, title, status = "vfolder-in-use", "The folder is mounted by a session.", 409


class UploadOffsetMismatch(InvalidAPIParameters):
    slug, title, status = "upload-offset-mismatch", "The upload does not continue where the file ends.", 409


@dataclass
class Download:
    """A file being downloaded from byte `start`: either open here (`fd`, which the receiver may send
    itself with `take_fd`) or streamed by the folder helper (`chunks`, over SSH)."""

    name: str
    size: int
    mtime: int
    start: int
    fd: int | None = None
    chunks: AsyncIterator[bytes] | None = None

    def stream(self) -> AsyncIterator[bytes]:
        """The bytes from `start` on; the stream owns the open file from now on."""
        if self.chunks is None:
            self.chunks = read_from(self.take_fd(), self.start, self.size) if self.fd is not None else empty_stream()
        return self.chunks

    def take_fd(self) -> int:
        """The open file, now owned by the caller (who closes it)."""
        fd, self.fd = self.fd, None
        if fd is None:
            raise ValueError("this download is not an open file")
        return fd

    def close(self) -> None:
        """Let go of the file where the download will not happen, or stopped half-way (idempotent). A helper's
        stream (SSH) is closed by whoever iterates it (aclose)."""
        if self.fd is not None:
            os.close(self.take_fd())

    async def aclose(self) -> None:
        """close(), and the helper's stream too (its command stops)."""
        self.close()
        if self.chunks is not None:
            await self.chunks.aclose()   # type: ignore[attr-defined]

    def answer(self) -> tuple[int, dict[str, str]]:
        """The HTTP status and headers of this download: 200, 206 from `start`, or 416 past the end (the
        file is then let go)."""
        if self.start and self.start >= self.size:
            self.close()
            return 416, {"Content-Range": f"bytes */{self.size}"}
        headers = {"Content-Length": str(self.size - self.start), "Accept-Ranges": "bytes",
                   "Content-Type": "application/octet-stream",
                   "Last-Modified": datetime.fromtimestamp(self.mtime, UTC).strftime("%a, %d %b %Y %H:%M:%S GMT"),
                   "Content-Disposition": f"attachment; filename*=UTF-8''{quote(self.name)}"}
        if not self.start:
            return 200, headers
        return 206, {**headers, "Content-Range": f"bytes {self.start}-{self.size - 1}/{self.size}"}


def resume_offset(range_header: str) -> int:
    """Where a download starts: the clients resume with `Range: bytes=N-`; other ranges get the whole file."""
    m = re.fullmatch(r"bytes=([0-9]{1,19})-", range_header)
    return int(m.group(1)) if m else 0


# Moves `n` bytes of the request body into the open file at `pos` without passing them through Python (the
# transfer port's splice); the bytes moved, fewer when the client went away.
BodyInto = Callable[[int, int, int], Awaitable[int]]


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


WRITE_BATCH = 4 << 20       # bytes gathered before one write to disk
UPLOAD_IDLE_S = 120.0       # an upload's open file is closed after this long without a PATCH
CLONE_TIMEOUT_S = 3600.0    # a clone's copy (a background task) gives up after this
CLONING = "cloning"         # a clone's status until its copy is done


@dataclass(frozen=True)
class _Upload:
    key: str        # folder id / hidden file: one open file and one writer per upload
    user: str       # the account that writes it
    host: str
    folder: str
    partial: str    # the hidden file the bytes go to, relative to the folder
    target: str
    size: int


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
        self.db = db
        self.config = settings.storage
        self.timeout_s = settings.slurm.command_timeout_s
        self.secret = settings.secret.get_secret_value()
        self.runner = runner
        self._open_uploads: dict[str, list[float]] = {}   # upload key -> [fd, last used]
        self._locks: dict[str, asyncio.Lock] = {}
        self._acl_locks: dict[str, asyncio.Lock] = {}
        self._sweeper: asyncio.Task[None] | None = None
        self._volumes: tuple[float, list[dict[str, Any]]] | None = None   # (when, the volumes) read by df

    @property
    def runner(self) -> CommandRunner:
        return self._runner

    @runner.setter
    def runner(self, runner: CommandRunner) -> None:
        self._runner = runner
        self.disk = FolderFiles(runner, timeout_s=self.timeout_s)

    # ---- hosts ----------------------------------------------------------------------------------------

    def hosts(self) -> dict[str, Any]:
        return {"default": self.config.default_host, "allowed": sorted(self.config.hosts)}

    async def hosts_with_usage(self) -> dict[str, Any]:
        """`hosts()` and each host's volume (`volume_info`: backend, capabilities, how full), as the WebUI reads."""
        volumes = {v["id"]: v for v in await self.volumes()}
        info = {}
        for name in sorted(self.config.hosts):
            usage = json.loads(volumes[name]["usage"]) if name in volumes else {}
            total = usage.get("capacity_bytes") or 0
            info[name] = {"backend": "posix", "capabilities": ["vfolder"], "sftp_scaling_groups": [],
                          "usage": {"percentage": round(100.0 * (usage.get("used_bytes") or 0) / total, 2)
                                    if total else None}}
        return {**self.hosts(), "volume_info": info}

    async def volumes(self) -> list[dict[str, Any]]:
        """The storage hosts as volumes, with the size and use of their file systems (one `df`, read by the
        gateway's own identity, kept for 30 s)."""
        now = time.monotonic()
        if self._volumes is not None and now - self._volumes[0] < 30:
            return self._volumes[1]
        paths = {name: path.rstrip("/") or "/" for name, path in sorted(self.config.hosts.items())}
        done = await self.runner.run(["df", "-P", "-B1", *paths.values()], timeout_s=self.timeout_s)
        sizes: dict[str, tuple[int, int]] = {}
        lines = done.stdout.splitlines()[1:] if done.ok else []
        for (name, _), line in zip(paths.items(), lines, strict=False):
            cols = line.split()
            if len(cols) >= 4 and cols[1].isdigit() and cols[2].isdigit():
                sizes[name] = (int(cols[1]), int(cols[2]))
        out = [{"id": name, "backend": "posix", "path": path, "fsprefix": "", "capabilities": ["vfolder"],
                "hardware_metadata": json.dumps({}), "performance_metric": json.dumps({}),
                "usage": json.dumps({"capacity_bytes": sizes[name][0], "used_bytes": sizes[name][1]}
                                    if name in sizes else {})}
               for name, path in paths.items()]
        self._volumes = (now, out)
        return out

    async def scope_usage(self, *, user_uuid: str | None, group_id: str | None, host: str) -> int:
        """What a user's own folders, or a project's, hold on one host (measured as each folder's owner)."""
        async with self.db.unit_of_work() as s:
            q = select(VFolderRow).where(VFolderRow.host == host)
            q = q.where(VFolderRow.user_uuid == user_uuid) if user_uuid else q.where(VFolderRow.group_id == group_id)
            rows = list((await s.execute(q)).scalars())
        return sum([(await self.usage(r))[0] for r in rows])

    def _host_path(self, host: str | None) -> tuple[str, str]:
        name = host or self.config.default_host
        if name not in self.config.hosts:
            known = ", ".join(sorted(self.config.hosts))
            raise InvalidAPIParameters(f"host: no storage host {name!r} (there are: {known})")
        return name, self.config.hosts[name].rstrip("/")

    # ---- folders --------------------------------------------------------------------------------------

    async def create(self, auth: AuthContext, name: object, host: str | None = None, *, group: str | None = None,
                     usage_mode: str = "general", permission: str = "rw", cloneable: bool = False,
                     status: str = "ready") -> Access:
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
                         permission=permission, cloneable=cloneable, status=status, created_at=datetime.now(UTC))
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

    async def clone(self, auth: AuthContext, ref: str, target_name: object, target_host: str | None = None, *,
                    usage_mode: str = "general", permission: str = "rw", cloneable: bool = False
                    ) -> tuple[Access, Callable[[Report], Awaitable[str]]]:
        """A new folder of the caller's (status `cloning`) and the copy of a cloneable folder's files into it,
        to run in the background: copied as the caller, who may read the source (theirs, or shared with them).
        Until the copy is done the new folder cannot be mounted or written; when it fails, the folder goes."""
        source = await self.get(auth, ref)
        if not source.row.cloneable:
            raise GenericForbidden(f"folder {source.row.name} is not cloneable (update-options cloneable=true)")
        made = await self.create(auth, target_name, target_host, usage_mode=usage_mode, permission=permission,
                                 cloneable=cloneable, status=CLONING)
        src_host, src_folder = self._where(source.row)
        dst_host, dst_folder = self._where(made.row)

        async def copy(report: Report) -> str:
            # no progress events, only the end: as the manager's clones (the 23.9.10 CLI's tracker trips over
            # a progress event that comes before its spinner has started)
            try:
                done = await self.runner.run(self.disk.argv("clone", src_host, src_folder, dst_host, dst_folder),
                                             user=auth.unix_user, timeout_s=CLONE_TIMEOUT_S)
                if not done.ok:
                    raise self.disk.error(done, f"cannot clone {source.row.name}")
            except BaseException:
                await self._drop(made.row)
                raise
            await self._set_status(made.row.id, "ready")
            return f"folder {made.row.name} is a copy of {source.row.name}"
        return made, copy

    async def _set_status(self, folder_id: str, status: str) -> None:
        async with self.db.unit_of_work() as s:
            row = await s.get(VFolderRow, folder_id)
            if row is not None:
                row.status = status

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

    async def owned_by(self, user_uuid: str) -> list[Access]:
        """A user's own folders, as their owner sees them (for lists that already checked who may look)."""
        async with self.db.unit_of_work() as s:
            rows = (await s.execute(select(VFolderRow).where(VFolderRow.user_uuid == user_uuid)
                                    .order_by(VFolderRow.created_at))).scalars()
            return [Access(r, r.permission, True, True, r.unix_user) for r in rows]

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
                        select(VFolderRow).where(VFolderRow.name == ref, or_(VFolderRow.user_uuid != auth.user_uuid,
                                                                             VFolderRow.user_uuid.is_(None))))
                    ).scalars()] if a is not None]
                    named.sort(key=lambda a: a.row.group_id is not None)   # shared with the caller before projects'
                    if len(named) > 1 and named[0].row.group_id is not None:
                        raise InvalidAPIParameters(f"several of your projects have a folder named {ref}; use its id")
                    found = named[0] if named else None
        if found is None:
            raise FolderNotFound(f"no folder {ref!r}")
        if not found.allows(need):
            raise GenericForbidden(f"folder {found.row.name}: your permission is {found.permission}; "
                                   f"this needs {need}")
        if need != "ro" and found.row.status == CLONING:
            raise FolderInUse(f"folder {found.row.name} is still being cloned; wait for its background task")
        return found

    async def _managed(self, auth: AuthContext, ref: str) -> Access:
        acc = await self.get(auth, ref)
        if not acc.manages:
            raise GenericForbidden(f"folder {acc.row.name} is shared with you; only its owner may do that")
        return acc

    async def delete(self, auth: AuthContext, ref: str) -> None:
        """The folder and its files; refused while a session that has not ended mounts it."""
        row = (await self._managed(auth, ref)).row
        if row.status == CLONING:   # its copy is writing into it: the copy's end removes it if it fails
            raise FolderInUse(f"folder {row.name} is still being cloned; delete it when its copy is done")
        async with self.db.unit_of_work() as s:
            live = (await s.execute(select(SessionRow.name, SessionRow.status_data).where(
                SessionRow.status.not_in([st.value for st in TERMINAL_STATUSES])))).all()
        using = [name for name, data in live if any(b and b[0] == row.path for b in (data or {}).get("binds") or [])]
        if using:
            raise FolderInUse(f"folder {row.name} is mounted by session {', '.join(sorted(using)[:5])}; "
                              "delete it when the session has ended")
        await self._drop(row)

    async def _drop(self, row: VFolderRow) -> None:
        host, folder = self._where(row)
        await self.disk.call(row.unix_user, "rmfolder", host, folder, what=f"cannot remove the folder {row.name}")
        async with self.db.unit_of_work() as s:
            gone = await s.get(VFolderRow, row.id)
            if gone is not None:
                await s.delete(gone)

    # ---- files: each operation runs the folder file helper as the caller's account (adapters/storage) ----

    async def files(self, auth: AuthContext, ref: str, path: object = ".") -> tuple[Access, list[dict[str, Any]]]:
        acc = await self.get(auth, ref)
        rel = rules.inside(path)
        kind = "DIRECTORY" if rel == "." else (await self._stat(acc, rel)).get("type")
        if kind == "SYMLINK":
            raise InvalidAPIParameters(f"path: {path} is a symbolic link, which is not followed")
        if kind != "DIRECTORY":
            raise InvalidAPIParameters(f"path: {path} is not a folder")
        listed = await self._do(acc, "ls", rel, what=f"cannot list {path}")
        return acc, list(listed.get("entries") or [])

    async def mkdir(self, auth: AuthContext, ref: str, path: object, *, parents: bool = False,
                    exist_ok: bool = False) -> str:
        acc = await self.get(auth, ref, "rw")
        rel = rules.inside(path)
        if rel == ".":
            raise InvalidAPIParameters("path: the folder itself exists already")
        if not exist_ok and (await self._stat(acc, rel)).get("type") is not None:
            raise InvalidAPIParameters(f"path: {path} exists already")
        await self._do(acc, "mkdir", rel, "1" if parents or exist_ok else "0", "1" if exist_ok else "0",
                       what=f"cannot create {path}")
        return rel

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
        source, target = rules.inside(src, "src"), rules.inside(dst, "dst")
        if source == ".":
            raise InvalidAPIParameters("src: the folder itself cannot be moved")
        await self._do(acc, "mv", source, target, "1", what=f"cannot move {src}")

    async def rename_file(self, auth: AuthContext, ref: str, target_path: object, new_name: object) -> None:
        """A file or folder's new name, in the same folder."""
        if not isinstance(new_name, str) or "/" in new_name or new_name in ("", ".", ".."):
            raise InvalidAPIParameters("new_name: a name without '/' is required")
        acc = await self.get(auth, ref, "rw")
        source = rules.inside(target_path, "target_path")
        if source == ".":
            raise InvalidAPIParameters("target_path: the folder itself is renamed with `rename`")
        target = posixpath.join(posixpath.dirname(source), rules.inside(new_name, "new_name"))
        await self._do(acc, "mv", source, target, "0", what=f"cannot rename {target_path}")

    async def delete_files(self, auth: AuthContext, ref: str, files: object, recursive: bool = False) -> None:
        acc = await self.get(auth, ref, "rw")
        if not isinstance(files, list) or not files:
            raise InvalidAPIParameters("files: a list of paths is required")
        targets = [rules.inside(f, "files") for f in files]
        if "." in targets:
            raise InvalidAPIParameters("files: the folder itself is deleted with DELETE /folders/{name}")
        await self._do(acc, "rm", "1" if recursive else "0", *targets, what="cannot delete")

    async def _stat(self, acc: Access, rel: str) -> dict[str, Any]:
        return await self._do(acc, "stat", rel, what=f"cannot look at {rel}")

    async def _do(self, acc: Access, op: str, *args: str, what: str) -> dict[str, Any]:
        host, folder = self._where(acc.row)
        return await self.disk.call(acc.run_as, op, host, folder, *args, what=what)

    def _where(self, row: VFolderRow) -> tuple[str, str]:
        """(the storage host's directory, the folder's directory below it)."""
        host = self.config.hosts.get(row.host, "").rstrip("/")
        if not host or not row.path.startswith(host + "/"):
            raise BackendError(f"folder {row.name}: its storage host {row.host!r} is not configured here")
        return host, row.path[len(host) + 1:]

    # ---- transfers: signed links; the file opened by the user, then plain reads and writes ---------------

    async def usage(self, row: VFolderRow) -> tuple[int, int]:
        """(bytes, files) the folder holds, measured as its owner (the gateway enforces limits itself, it
        does not use file-system quotas)."""
        host, folder = self._where(row)
        got = await self.disk.call(row.unix_user, "du", host, folder, what="cannot measure the folder")
        return int(got.get("bytes") or 0), int(got.get("files") or 0)

    async def size_limit(self, row: VFolderRow) -> int:
        """The owner's policy's max_vfolder_size in bytes (0: none)."""
        async with self.db.unit_of_work() as s:
            kp = (await s.execute(select(KeypairRow).where(KeypairRow.user == row.user_uuid)
                                  .order_by(KeypairRow.created_at))).scalars().first()
            policy = await s.get(KeypairResourcePolicyRow, kp.resource_policy) if kp else None
        return int(policy.max_vfolder_size or 0) if policy else 0

    async def request_upload(self, auth: AuthContext, ref: str, path: object, size: object) -> str:
        """A token for uploading one file (tus). The bytes go to a hidden file beside the target, renamed
        onto it once all have come: an upload that fails or stops half-way leaves the old file as it was.
        The hidden file is named after the account, the path and the size: asking again for the same file
        (a client killed half-way, run again) continues where the bytes stopped (HEAD tells the offset).
        A 0-byte file (which gets no PATCH) is made at once."""
        acc = await self.get(auth, ref, "rw")
        row = acc.row
        rel = rules.inside(path)
        if rel == ".":
            raise InvalidAPIParameters("path: the name of a file in the folder is required")
        if not isinstance(size, int) or isinstance(size, bool) or size < 0:
            raise InvalidAPIParameters("size: the file's size in bytes is required")
        key = hashlib.sha256(f"{acc.run_as}\0{rel}\0{size}".encode()).hexdigest()[:20]
        partial = posixpath.join(posixpath.dirname(rel), f".bridge-upload-{key}-{size}")   # the size: reserved
        limit = await self.size_limit(row)
        if limit:   # refused before a byte is written: no partial file past the limit
            host, folder = self._where(row)
            got = await self.disk.call(row.unix_user, "du", host, folder, str(TRANSFER_TTL_S),
                                       what="cannot measure the folder")
            used, reserved = int(got.get("bytes") or 0), int(got.get("reserved") or 0)
            again = (await self._stat(acc, partial)).get("type") is not None   # reserved already
            if used + reserved + (0 if again else size) > limit:
                raise QuotaExceeded(f"the folder holds {used} bytes and uploads under way announce {reserved} "
                                    f"more; {size} more would pass the {limit} bytes your resource policy "
                                    "allows a folder (max_vfolder_size)")
        await self._do(acc, "prepare", partial, rel, what=f"cannot upload to {path}")   # refuses a folder
        if size == 0:   # (a whole one kept from before is put in place only once the client sends again)
            await self._do(acc, "finish", partial, rel, what=f"cannot create {path}")
        claims: dict[str, Any] = {"f": row.id, "r": rel, "s": size, "u": acc.run_as, "t": partial}
        return tokens.issue(self.secret, "vfolder-upload", claims, TRANSFER_TTL_S)

    async def upload_state(self, token: str) -> tuple[int, int]:
        """(bytes written so far, bytes announced)."""
        return await self.upload_state_of(await self._upload(token))

    async def upload_state_of(self, up: _Upload) -> tuple[int, int]:
        if up.key in self._open_uploads:
            return os.fstat(int(self._open_uploads[up.key][0])).st_size, up.size
        seen = await self.disk.call(up.user, "stat", up.host, up.folder, up.partial, what="cannot look at the upload")
        if seen.get("type") == "FILE":
            return int(seen["size"]), up.size
        done = await self.disk.call(up.user, "stat", up.host, up.folder, up.target, what="cannot look at the upload")
        if seen.get("type") is None and done.get("type") == "FILE" and done.get("size") == up.size:
            return up.size, up.size   # complete: renamed onto its target
        raise InvalidAPIParameters("this upload is no longer there; request a new one")

    async def upload_chunk(self, token: str, offset: int, chunks: AsyncIterator[bytes], *,
                           length: int | None = None, into: BodyInto | None = None) -> int:
        """Write one tus PATCH at `offset`; the new offset. The file stays open between PATCHes (opened by
        the user once); the last byte moves it onto its target.

        A PATCH from before where the file stands is a client that started again (the official clients
        never ask HEAD first, and always start at 0): the bytes it sends are compared with those kept, and
        while they agree nothing is written and the answer's Upload-Offset sends the client on to where the
        file stands. Where they differ, the file is cut there and the client's bytes are written: what is
        on disk is always what the client sent.

        A body of known `length` that can move itself into the file (`into`: the transfer port's splice)
        does so when it continues where the file ends, the usual case: its bytes never enter Python."""
        up = await self._upload(token)
        if not self.disk.hands_over:
            return await self._upload_streamed(up, offset, chunks)
        async with self._locks.setdefault(up.key, asyncio.Lock()):   # one writer per upload
            fd = await self._upload_fd(up)
            kept = os.fstat(fd).st_size
            if offset > kept:
                raise UploadOffsetMismatch(f"the file holds {kept} bytes; continue from there",
                                           data={"offset": kept})
            if into is not None and length is not None and offset == kept:
                return await self._upload_into(up, fd, offset, length, into)
            pos = offset          # the client's place in the file
            pending: list[bytes] = []
            queued = 0
            writing: asyncio.Task[int] | None = None   # one batch is written while the next one arrives
            try:
                async for chunk in chunks:
                    if pos + len(chunk) > up.size:
                        raise InvalidAPIParameters(f"the upload passes the {up.size} bytes announced for it")
                    if pos < kept:   # bytes the file holds already
                        n = min(len(chunk), kept - pos)
                        if os.pread(fd, n, pos) == chunk[:n]:
                            pos, chunk = pos + n, chunk[n:]
                            if not chunk:
                                continue
                        else:   # another file than the one kept: it goes from here on
                            os.ftruncate(fd, pos)
                            kept = pos
                    pending.append(chunk)
                    queued += len(chunk)
                    pos += len(chunk)
                    if queued >= WRITE_BATCH:
                        if writing is not None:
                            await writing
                        writing = asyncio.ensure_future(write_at(fd, pending, pos - queued))
                        pending, queued = [], 0
                if writing is not None:
                    await writing
                    writing = None
                if pending:
                    await write_at(fd, pending, pos - queued)
            except OSError as e:
                raise self._write_failed(up, e) from None
            finally:
                if writing is not None:   # the client went away or sent too much: what was whole is kept
                    with contextlib.suppress(OSError):
                        await writing
            return await self._finish_if_whole(up, max(pos, kept))

    async def _upload_into(self, up: _Upload, fd: int, offset: int, length: int, into: BodyInto) -> int:
        if offset + length > up.size:
            raise InvalidAPIParameters(f"the upload passes the {up.size} bytes announced for it")
        try:
            moved = await into(fd, offset, length)
        except OSError as e:
            raise self._write_failed(up, e) from None
        return await self._finish_if_whole(up, offset + moved)

    def _write_failed(self, up: _Upload, e: OSError) -> BridgeError:
        """The open upload let go, and what its write's failure means: the storage is full, or it failed."""
        self._close_upload(up.key)
        return (QuotaExceeded if e.errno in (errno.ENOSPC, errno.EDQUOT) else BackendError)(
            f"cannot write the upload: {e.strerror}")

    async def _finish_if_whole(self, up: _Upload, now: int) -> int:
        """With its last byte in, the upload is let go and moved onto its target; `now`, the new offset."""
        if now == up.size:
            self._close_upload(up.key)
            await self.disk.call(up.user, "finish", up.host, up.folder, up.partial, up.target,
                                 what="cannot put the upload in place")
        return now

    async def _upload_streamed(self, up: _Upload, offset: int, chunks: AsyncIterator[bytes]) -> int:
        """The same, where the transport cannot hand the file over (SSH): the helper writes what it is sent."""
        async with self._locks.setdefault(up.key, asyncio.Lock()):
            kept, _ = await self.upload_state_of(up)
            if offset > kept:
                raise UploadOffsetMismatch(f"the file holds {kept} bytes; continue from there",
                                           data={"offset": kept})
            sent = offset

            async def counted() -> AsyncIterator[bytes]:
                nonlocal sent
                async for chunk in chunks:
                    sent += len(chunk)
                    if sent > up.size:
                        raise InvalidAPIParameters(f"the upload passes the {up.size} bytes announced for it")
                    yield chunk

            now = await self.disk.write(up.user, up.host, up.folder, up.partial, offset, up.size, counted(),
                                        what="cannot write the upload")
            if now == up.size:
                await self.disk.call(up.user, "finish", up.host, up.folder, up.partial, up.target,
                                     what="cannot put the upload in place")
            return now

    async def _upload_fd(self, up: _Upload) -> int:
        held = self._open_uploads.get(up.key)
        if held is None:
            opened = await self.disk.open(up.user, up.host, up.folder, up.partial, "w", what="cannot write the upload")
            held = self._open_uploads[up.key] = [opened.fd, 0.0]
            self._sweep_later()
        held[1] = asyncio.get_running_loop().time()
        return int(held[0])

    def _close_upload(self, key: str) -> None:
        held = self._open_uploads.pop(key, None)
        self._locks.pop(key, None)
        if held is not None:
            os.close(int(held[0]))

    def _sweep_later(self) -> None:
        """Close uploads nobody wrote to for UPLOAD_IDLE_S (a client that went away): the bytes stay, and a
        later PATCH opens the file again."""
        if self._sweeper is None or self._sweeper.done():
            async def sweep() -> None:
                while self._open_uploads:
                    await asyncio.sleep(UPLOAD_IDLE_S / 4)
                    now = asyncio.get_running_loop().time()
                    for key, (_, used) in list(self._open_uploads.items()):
                        lock = self._locks.get(key)
                        if now - used > UPLOAD_IDLE_S and not (lock and lock.locked()):
                            self._close_upload(key)
            self._sweeper = asyncio.get_running_loop().create_task(sweep())

    async def _upload(self, token: str) -> _Upload:
        claims = tokens.open_(self.secret, "vfolder-upload", token)
        row = await self._by_id(claims["f"])
        host, folder = self._where(row)
        return _Upload(f"{row.id}/{claims['t']}", str(claims.get("u") or row.unix_user), host, folder,
                       rules.inside(claims["t"]), rules.inside(claims["r"]), int(claims["s"]))

    async def request_download(self, auth: AuthContext, ref: str, path: object) -> str:
        acc = await self.get(auth, ref)
        return tokens.issue(self.secret, "vfolder-download", {"f": acc.row.id, "u": acc.run_as,
                                                              "r": rules.inside(path)}, TRANSFER_TTL_S)

    async def download(self, token: str, start: int = 0) -> Download:
        """A file of the folder, opened by the user it was asked for, from byte `start` on."""
        claims = tokens.open_(self.secret, "vfolder-download", token)
        row = await self._by_id(claims["f"])
        host, folder = self._where(row)
        rel = rules.inside(claims["r"])
        if rel == ".":
            raise InvalidAPIParameters("a folder is downloaded file by file")
        user, what, start = str(claims.get("u") or row.unix_user), f"cannot read {claims['r']}", max(start, 0)
        if not self.disk.hands_over:   # SSH: the helper reads it out
            seen = await self.disk.call(user, "stat", host, folder, rel, what=what)
            if seen.get("type") != "FILE":
                raise InvalidAPIParameters(f"{what}: not a plain file")
            size = int(seen["size"])
            chunks = await self.disk.read(user, host, folder, rel, start, what=what) if start < size else \
                empty_stream()
            return Download(posixpath.basename(rel), size, int(seen["mtime"]), start, chunks=chunks)
        opened = await self.disk.open(user, host, folder, rel, "r", what=what)
        return Download(posixpath.basename(rel), opened.size, opened.mtime, start, fd=opened.fd)

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
            if auth.unix_user in await self.sync_access(row.id):
                raise InvalidAPIParameters(f"your Unix account {auth.unix_user} does not exist on the login node: "
                                           "the folder cannot be shared with it")
        except BridgeError:   # not shared on disk: not shared at all, and the invitation stays
            async with self.db.unit_of_work() as s:
                share = await s.get(VFolderShareRow, (row.id, auth.user_uuid))
                if share is not None:
                    await s.delete(share)
                fresh = await s.get(VFolderInvitationRow, inv.id)
                if fresh is not None:
                    fresh.state = "pending"
            with contextlib.suppress(BridgeError):   # and whatever the failed run granted, taken back
                await self.sync_access(row.id)
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

    async def sync_access(self, fid: str) -> set[str]:
        async with self._acl_locks.setdefault(fid, asyncio.Lock()):   # one at a time, each reads afresh
            return await self._sync_access(fid)

    async def _sync_access(self, fid: str) -> set[str]:
        """Make the folder's ACL on disk say what the database says: one named-user entry (and default entry,
        for what is made later) per Unix account the folder is shared with, none for anyone else. Run as
        the folder's owner on disk; files another sharer made are theirs, so each writer also grants on
        their own (what fails there is theirs to fix, and only costs others access to those files).
        The accounts the login node does not know (a project member without a Unix account there) are
        left out, and returned."""
        async with self.db.unit_of_work() as s:
            row = await s.get(VFolderRow, fid)
            if row is None:
                return set()
            want = await self._grants(s, row)
        try:
            listed = await self.runner.run(["getfacl", "-cpP", "--", row.path], user=row.unix_user,
                                           timeout_s=self.timeout_s)
        except CommandFailed as e:   # not there at all
            raise BackendError(f"{_NO_ACL} ({e.msg})") from None
        if not listed.ok:
            self._acl_failed(listed, row)
        have = rules.parse_acl(listed.stdout)
        writers = [u for u, p in want.items() if p != "ro"]
        home = posixpath.dirname(row.path)
        unknown: set[str] = set()
        for user, perm in list(want.items()):
            if have.get(user) == perm:
                continue
            passing = await self.runner.run(["setfacl", "-P", "-m", f"u:{user}:x", "--", home], user=row.unix_user,
                                            timeout_s=self.timeout_s)   # to pass through, not to list
            if not passing.ok and "Invalid argument" in passing.stderr:   # no such user on the login node
                logger.warning("folder %s: %s has no Unix account on the login node; left out", row.id, user)
                unknown.add(user)
                del want[user]
                continue
            if not passing.ok:
                self._acl_failed(passing, row)
            # -P: no link is followed, not even the folder's own path (its owner could make it one, and the
            # other writers run this too)
            argv = ["setfacl", "-R", "-P", "-m", rules.acl_grant(user, perm, row.unix_user), "--", row.path]
            await self._acl(row, argv, tree=True)
            await self._as_writers(argv, writers, but=user)
        for user in set(have) - set(want):
            argv = ["setfacl", "-R", "-P", "-x", f"u:{user},d:u:{user}", "--", row.path]
            await self._acl(row, argv, tree=True)
            await self._as_writers(argv, writers, but=user)
        if set(have) != set(want) or any(have.get(u) != p for u, p in want.items()):
            check = await self.runner.run(["getfacl", "-cpP", "--", row.path], user=row.unix_user,
                                          timeout_s=self.timeout_s)
            if not check.ok or rules.parse_acl(check.stdout) != want:
                raise BackendError(f"folder {row.name}: its ACL on disk does not say what was shared")
        return unknown

    async def _as_writers(self, argv: list[str], writers: list[str], *, but: str) -> None:
        """An ACL command run again as each other writer, on the files that are theirs (best effort: what
        fails there only costs others access to those files)."""
        for other in writers:
            if other != but:
                await self.runner.run(argv, user=other, timeout_s=self.timeout_s)

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
                perm = await self._permission_of(s, user.uuid, row)
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
            if row.status == CLONING:
                raise FolderInUse(f"mounts: folder {name} is still being cloned")
            target = rules.mount_target(name, mount_map.get(name))
            if target in targets:
                raise InvalidAPIParameters(f"mounts: two folders would be mounted at {target}")
            targets.add(target)
            # Apptainer resolves the source as the user: it must still be the folder's own directory (its
            # owner could have put a link there, to send a sharer's job into the sharer's own files)
            host, folder = self._where(row)
            await self.disk.call(user.unix_user, "stat", host, folder, ".", what=f"mounts: folder {name}")
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
        row: VFolderRow | None = (await s.execute(select(VFolderRow).where(VFolderRow.user_uuid == user_uuid,
                                                                           VFolderRow.name == name))).scalars().first()
        return row

    async def _access(self, s: Any, auth: AuthContext, row: VFolderRow) -> Access | None:
        """The caller's access to a folder, or None: not theirs, not shared with them, not their project's,
        and not an account below them."""
        if row.group_id is None and row.user_uuid == auth.user_uuid:
            return Access(row, row.permission, True, True, row.unix_user)
        project = await s.get(GroupRow, row.group_id) if row.group_id else None
        if project is not None and auth.can_manage_domain(project.domain_name):
            return Access(row, "wd", False, True, row.unix_user, project.name)
        permission = await self._permission_of(s, auth.user_uuid, row, project)
        if permission is not None:
            return Access(row, permission, False, False, auth.unix_user, project.name if project else None)
        owner = await s.get(UserRow, row.user_uuid) if project is None else None
        if owner is not None and auth.may_act_for(owner.uuid, owner.role, owner.domain_name):
            return Access(row, row.permission, False, True, row.unix_user)
        return None

    @staticmethod
    async def _permission_of(s: Any, user_uuid: str, row: VFolderRow, project: GroupRow | None = None) -> str | None:
        """A user's own permission on a folder (no admin rights: what a session of theirs mounts, and what
        they may do with one shared with them): the folder's own for its owner, their share's, or, for a
        member of an active project, their share's or the folder's."""
        if row.group_id is None and row.user_uuid == user_uuid:
            return row.permission
        share = await s.get(VFolderShareRow, (row.id, user_uuid))
        if row.group_id is None:
            return share.permission if share else None
        project = project or await s.get(GroupRow, row.group_id)
        if project is None or not project.is_active or await s.get(GroupMemberRow, (row.group_id, user_uuid)) is None:
            return None
        return share.permission if share else row.permission

    @staticmethod
    async def _project(s: Any, auth: AuthContext, ref: str) -> GroupRow:
        gid = normalize_uuid(ref)
        project: GroupRow | None = await s.get(GroupRow, gid) if gid else (await s.execute(
            select(GroupRow).where(GroupRow.name == ref, GroupRow.domain_name == auth.domain_name))).scalars().first()
        if project is None or not project.is_active:
            raise InvalidAPIParameters(f"group: no project {ref!r}")
        return project

    @staticmethod
    async def _user(s: Any, who: str) -> UserRow | None:
        uid = normalize_uuid(who)
        if uid:
            return cast(UserRow | None, await s.get(UserRow, uid))
        return cast(UserRow | None, (await s.execute(select(UserRow).where(UserRow.email == who))).scalars().first())

    @staticmethod
    async def _invitation(s: Any, inv_id: object) -> VFolderInvitationRow:
        iid = normalize_uuid(inv_id) if isinstance(inv_id, str) else None
        inv: VFolderInvitationRow | None = await s.get(VFolderInvitationRow, iid) if iid else None
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
