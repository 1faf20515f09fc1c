"""The folder file helper: every file operation the gateway performs in a virtual folder, run as a user.

Standalone (standard library only): the gateway runs it with `python3 -I -c <this file> OP HOST FOLDER ...`
as the user the operation is for (the runner's user switch), on the login node. HOST is the storage host's
directory (trusted: from the site's configuration), FOLDER the folder's directory below it
(`<unix user>/<id>`), and every path is relative to the folder.

Paths are resolved one component at a time from HOST, with O_NOFOLLOW: a symbolic link anywhere on the way
(planted by another user who shares the folder, or from inside a job) is refused, never followed, so no
request leaves its folder and nobody can turn another user's request against that user's own files.
Results: one JSON line on standard output; a failure: a JSON line on standard error and exit status 1.
`open` hands the opened file to the gateway instead (SCM_RIGHTS over standard output, a Unix socket), so
that large transfers are plain reads and writes on a file the user opened.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import stat
import sys
import time
from typing import Any, Literal, overload

# O_PATH: passing through a directory needs only search permission (a folder shared with a user is reached
# through its owner's directory, which that user may enter but not list)
DIR_FLAGS = os.O_PATH | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
KINDS = {stat.S_IFDIR: "DIRECTORY", stat.S_IFLNK: "SYMLINK", stat.S_IFREG: "FILE"}


class Refused(Exception):
    pass


@overload
def walk(host: str, folder: str, rel: str, *, parent: Literal[True]) -> tuple[int, str]: ...
@overload
def walk(host: str, folder: str, rel: str, *, parent: Literal[False] = ...) -> tuple[int, None]: ...
def walk(host: str, folder: str, rel: str, *, parent: bool = False) -> tuple[int, str | None]:
    """An fd of the folder's directory REL (or, with parent=True, of REL's parent, and REL's last name)."""
    parts = [p for p in folder.split("/") if p] + [p for p in rel.split("/") if p not in ("", ".")]
    if any(p == ".." for p in parts):
        raise Refused(f"{rel}: leaves the folder")
    last: str | None = None
    if parent:
        if len(parts) <= len([p for p in folder.split("/") if p]):
            raise Refused("the folder itself")
        last = parts.pop()
    fd = os.open(host, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        for part in parts:
            try:
                nxt = os.open(part, DIR_FLAGS, dir_fd=fd)
            except OSError as e:
                if e.errno == 40 or (e.errno == 20 and _is_link(fd, part)):   # ELOOP, ENOTDIR: a symlink
                    raise Refused(f"{rel}: a symbolic link on the way is not followed") from None
                raise
            os.close(fd)
            fd = nxt
    except BaseException:
        os.close(fd)
        raise
    return fd, last


def _is_link(dir_fd: int, name: str) -> bool:
    try:
        return stat.S_ISLNK(os.stat(name, dir_fd=dir_fd, follow_symlinks=False).st_mode)
    except OSError:
        return False


def entry(dir_fd: int, name: str) -> dict[str, Any]:
    st = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
    return {"name": name, "size": st.st_size, "mtime": st.st_mtime, "mode": stat.filemode(st.st_mode),
            "type": KINDS.get(stat.S_IFMT(st.st_mode), "FILE")}


def op_ls(host: str, folder: str, rel: str = ".") -> dict[str, Any]:
    at, _ = walk(host, folder, rel)
    try:
        fd = os.open(".", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC, dir_fd=at)
    finally:
        os.close(at)
    try:
        return {"entries": sorted((entry(fd, n) for n in os.listdir(fd)), key=lambda e: e["name"])}
    finally:
        os.close(fd)


def op_stat(host: str, folder: str, rel: str) -> dict[str, Any]:
    if rel in (".", ""):
        fd, _ = walk(host, folder, ".")
        try:
            st = os.fstat(fd)
            return {"type": "DIRECTORY", "size": st.st_size, "mtime": st.st_mtime}
        finally:
            os.close(fd)
    fd, name = walk(host, folder, rel, parent=True)
    try:
        e = entry(fd, name)
        return {"type": e["type"], "size": e["size"], "mtime": e["mtime"]}
    except FileNotFoundError:
        return {"type": None}
    finally:
        os.close(fd)


def op_mkdir(host: str, folder: str, rel: str, parents: str = "0", exist_ok: str = "0") -> dict[str, Any]:
    parts = [p for p in rel.split("/") if p not in ("", ".")]
    todo = ["/".join(parts[:i]) for i in range(1, len(parts) + 1)] if parents == "1" else [rel]
    for path in todo:
        fd, name = walk(host, folder, path, parent=True)
        try:
            os.mkdir(name, dir_fd=fd)
        except FileExistsError:
            if not (parents == "1" or exist_ok == "1") or not stat.S_ISDIR(
                    os.stat(name, dir_fd=fd, follow_symlinks=False).st_mode):
                raise
        finally:
            os.close(fd)
    return {}


def op_mv(host: str, folder: str, src: str, dst: str, into: str = "1") -> dict[str, Any]:
    """SRC into DST when DST is a directory (and `into`), else to that name, which must not exist."""
    sfd, sname = walk(host, folder, src, parent=True)
    try:
        dfd = None
        if into == "1":
            try:
                dfd, _ = walk(host, folder, dst)
                dname = sname
            except (NotADirectoryError, FileNotFoundError):
                pass
        if dfd is None:
            dfd, dname = walk(host, folder, dst, parent=True)
        try:
            if _exists(dfd, dname):
                raise FileExistsError(17, "File exists", dst)
            os.rename(sname, dname, src_dir_fd=sfd, dst_dir_fd=dfd)
        finally:
            os.close(dfd)
    finally:
        os.close(sfd)
    return {}


def op_rm(host: str, folder: str, recursive: str, *rels: str) -> dict[str, Any]:
    for rel in rels:
        fd, name = walk(host, folder, rel, parent=True)
        try:
            st = os.stat(name, dir_fd=fd, follow_symlinks=False)
            if stat.S_ISDIR(st.st_mode):
                if recursive != "1":
                    raise IsADirectoryError(21, "Is a directory", rel)
                shutil.rmtree(name, dir_fd=fd)   # fd-based: does not follow links inside
            else:
                os.unlink(name, dir_fd=fd)
        except FileNotFoundError:
            pass
        finally:
            os.close(fd)
    return {}


def op_rmfolder(host: str, folder: str) -> dict[str, Any]:
    """The folder's own directory and all in it."""
    fd, name = walk(host, "", folder, parent=True)
    try:
        shutil.rmtree(name, dir_fd=fd)
    except FileNotFoundError:
        pass
    finally:
        os.close(fd)
    return {}


def op_clone(src_host: str, src_folder: str, dst_host: str, dst_folder: str) -> dict[str, Any]:
    """Copy a folder's files into another (new, empty) folder, descriptor by descriptor: links are copied
    as links and never followed, and only data and the permission bits (no setuid, setgid or sticky bit,
    no ACL or other extended attribute: the copy takes the new folder's own) come along."""
    src, _ = walk(src_host, src_folder, ".")
    dst, _ = walk(dst_host, dst_folder, ".")
    failed: list[str] = []
    try:
        _copy_dir(src, dst, "", failed)
    finally:
        os.close(src)
        os.close(dst)
    if failed:
        raise Refused(f"{len(failed)} files could not be copied ({', '.join(failed[:5])}...)")
    return {}


def _copy_dir(src_at: int, dst_at: int, rel: str, failed: list[str]) -> None:
    """Copy what the directory `src_at` holds into `dst_at` (O_PATH descriptors)."""
    reading = os.open(".", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC, dir_fd=src_at)
    try:
        names = sorted(os.listdir(reading))
    finally:
        os.close(reading)
    for name in names:
        path = f"{rel}{name}"
        try:
            st = os.stat(name, dir_fd=src_at, follow_symlinks=False)
            if stat.S_ISLNK(st.st_mode):
                os.symlink(os.readlink(name, dir_fd=src_at), name, dir_fd=dst_at)
            elif stat.S_ISDIR(st.st_mode):
                sub = os.open(name, DIR_FLAGS, dir_fd=src_at)   # a directory swapped for a link: refused here
                try:
                    os.mkdir(name, st.st_mode & 0o777, dir_fd=dst_at)
                    made = os.open(name, DIR_FLAGS, dir_fd=dst_at)
                    try:
                        _copy_dir(sub, made, path + "/", failed)
                    finally:
                        os.close(made)
                finally:
                    os.close(sub)
            elif stat.S_ISREG(st.st_mode):
                _copy_file(src_at, dst_at, name, st.st_mode & 0o777)
            else:
                failed.append(path)   # FIFOs, sockets, devices: not copied
        except (OSError, Refused):
            failed.append(path)


def _copy_file(src_at: int, dst_at: int, name: str, mode: int) -> None:
    f = _open_plain(src_at, name, os.O_RDONLY, name)   # refused when swapped since it was listed
    try:
        out = os.open(name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, mode,
                      dir_fd=dst_at)
        try:
            while chunk := os.read(f, 1 << 20):
                view = memoryview(chunk)
                while view:
                    view = view[os.write(out, view):]
        finally:
            os.close(out)
    finally:
        os.close(f)


def _open_plain(dir_fd: int, name: str, flags: int, rel: str, *, own: bool = False) -> int:
    """A plain file opened with `flags`: no link followed, and a FIFO put in its place does not hang the
    helper. With `own` (an upload's hidden file) it must also be the user's, with one name: not a hard link
    another user planted under the name the gateway would use."""
    f = os.open(name, flags | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, dir_fd=dir_fd)
    try:
        st = os.fstat(f)
        if not stat.S_ISREG(st.st_mode):
            raise Refused(f"{rel}: not a plain file")
        if own and (st.st_uid != os.geteuid() or st.st_nlink != 1):
            raise Refused(f"{rel}: not a plain file of yours with one name")
        os.set_blocking(f, True)
    except BaseException:
        os.close(f)
        raise
    return f


def _open_in(host: str, folder: str, rel: str, flags: int, *, own: bool = False) -> int:
    """A plain file of the folder (see _open_plain), its path resolved with `walk`."""
    fd, name = walk(host, folder, rel, parent=True)
    try:
        return _open_plain(fd, name, flags, rel, own=own)
    finally:
        os.close(fd)


def op_du(host: str, folder: str, fresh_s: str = "86400") -> dict[str, int]:
    """Bytes and files under the folder (apparent sizes; links are counted, not followed), and the bytes
    that uploads under way still announce (`.bridge-upload-<key>-<size>`, touched in the last `fresh_s`)."""
    fd, _ = walk(host, folder, ".")
    size = files = reserved = 0
    since = time.time() - float(fresh_s)
    try:
        for _root, dirs, names, rfd in os.fwalk(".", dir_fd=fd):
            for n in names + dirs:
                try:
                    st = os.stat(n, dir_fd=rfd, follow_symlinks=False)
                except OSError:
                    continue
                size += st.st_size
                files += 1
                announced = n.rpartition("-")[2] if n.startswith(".bridge-upload-") else ""
                if announced.isdigit() and st.st_mtime > since:
                    reserved += max(0, int(announced) - st.st_size)
    finally:
        os.close(fd)
    return {"bytes": size, "files": files, "reserved": reserved}


def op_prepare(host: str, folder: str, partial: str, target: str | None = None) -> dict[str, int]:
    """The hidden file an upload is written to: made when missing, kept (to be continued) when there. An upload
    onto a folder (`target`) is refused first."""
    fd, name = walk(host, folder, partial, parent=True)
    try:
        if target is not None:
            with contextlib.suppress(FileNotFoundError):
                if stat.S_ISDIR(os.stat(target.rsplit("/", 1)[-1], dir_fd=fd, follow_symlinks=False).st_mode):
                    raise Refused(f"{target} is a folder")
        try:
            f = os.open(name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o666,
                        dir_fd=fd)
            os.close(f)
        except FileExistsError:
            pass
        f = _open_plain(fd, name, os.O_RDONLY, partial, own=True)
        try:
            return {"size": os.fstat(f).st_size}
        finally:
            os.close(f)
    finally:
        os.close(fd)


def op_finish(host: str, folder: str, partial: str, target: str) -> dict[str, Any]:
    """The upload is whole: renamed onto its target (which a link does not redirect: rename replaces the
    name itself). As durable as `cp`: the file system writes it back in its own time."""
    pfd, pname = walk(host, folder, partial, parent=True)
    try:
        os.close(_open_plain(pfd, pname, os.O_RDONLY, partial, own=True))
        tfd, tname = walk(host, folder, target, parent=True)
        try:
            if _is_dir(tfd, tname):
                raise IsADirectoryError(21, "Is a directory", target)
            os.rename(pname, tname, src_dir_fd=pfd, dst_dir_fd=tfd)
        finally:
            os.close(tfd)
    finally:
        os.close(pfd)
    return {}


def _exists(dir_fd: int, name: str) -> bool:
    try:
        os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
        return True
    except FileNotFoundError:
        return False


def _is_dir(dir_fd: int, name: str) -> bool:
    try:
        return stat.S_ISDIR(os.stat(name, dir_fd=dir_fd, follow_symlinks=False).st_mode)
    except FileNotFoundError:
        return False


def op_open(host: str, folder: str, rel: str, mode: str) -> None:
    """Open a plain file of the folder ('r', or 'w' for an upload's hidden file: read too, to compare what a
    client sends again) and hand it over."""
    f = _open_in(host, folder, rel, os.O_RDONLY if mode == "r" else os.O_RDWR, own=mode != "r")
    st = os.fstat(f)
    info = json.dumps({"size": st.st_size, "mtime": int(st.st_mtime)}).encode()
    out = socket.socket(fileno=os.dup(1))
    out.sendmsg([info], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, f.to_bytes(4, sys.byteorder))])
    return None


def op_write(host: str, folder: str, rel: str, offset: str, size: str) -> dict[str, int]:
    """Standard input written into an upload's hidden file from `offset` (where the transport cannot hand
    the open file over: SSH). Bytes that agree with those kept are skipped, and the file is cut where they
    differ, as the gateway does with a handed-over file. Prints the new offset."""
    f = _open_in(host, folder, rel, os.O_RDWR, own=True)
    try:
        kept, pos, announced = os.fstat(f).st_size, int(offset), int(size)
        if pos > kept:
            raise Refused(f"the file holds {kept} bytes; continue from there")
        while chunk := os.read(0, 1 << 20):
            if pos + len(chunk) > announced:
                raise Refused(f"the upload passes the {announced} bytes announced for it")
            if pos < kept:
                n = min(len(chunk), kept - pos)
                if os.pread(f, n, pos) == chunk[:n]:
                    pos, chunk = pos + n, chunk[n:]
                else:
                    os.ftruncate(f, pos)
                    kept = pos
            view = memoryview(chunk)
            while view:
                done = os.pwrite(f, view, pos)
                pos, view = pos + done, view[done:]
        return {"offset": max(pos, kept)}
    finally:
        os.close(f)


def op_read(host: str, folder: str, rel: str, start: str = "0") -> None:
    """A plain file of the folder from byte `start`, on standard output (where the transport cannot hand
    the open file over: SSH)."""
    f = _open_in(host, folder, rel, os.O_RDONLY)
    try:
        pos = int(start)
        out = sys.stdout.buffer
        while chunk := os.pread(f, 1 << 20, pos):
            out.write(chunk)
            pos += len(chunk)
        out.flush()
    finally:
        os.close(f)
    return None


def main(argv: list[str]) -> int:
    op, args = argv[0], argv[1:]
    fn = globals().get("op_" + op)
    if fn is None:
        raise SystemExit(f"unknown operation {op}")
    try:
        result = fn(*args)
    except Refused as e:
        print(json.dumps({"kind": "refused", "msg": str(e)}), file=sys.stderr)
        return 1
    except OSError as e:
        if e.errno == 40:   # ELOOP: O_NOFOLLOW met a link
            print(json.dumps({"kind": "refused", "msg": "a symbolic link is not followed"}), file=sys.stderr)
            return 1
        kind = "full" if e.errno in (28, 122) else "user"   # ENOSPC, EDQUOT
        print(json.dumps({"kind": kind, "msg": e.strerror or str(e), "errno": e.errno}), file=sys.stderr)
        return 1
    if result is not None:
        print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
