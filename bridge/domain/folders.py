"""Virtual folders: the rules for their names, the paths inside them, and where they are mounted.

Pure: the storage adapter and the folder service apply these before anything touches a disk.
"""

from __future__ import annotations

import posixpath
import re

from bridge.domain.ids import UUID_SHAPE
from bridge.errors import InvalidAPIParameters

# letters, digits, '-', '_' and '.', 1 to 64 of them; a leading dot marks a folder mounted in every session
_NAME = re.compile(r"\A[A-Za-z0-9._-]{1,64}\Z")
PERMISSIONS = ("ro", "rw", "wd")
MOUNT_ROOT = "/home/work"


RESERVED = (".bridge",)   # the session's own: its runner, secret and keys live in /home/work/.bridge
# where a folder may not be mounted: the system's own trees (a user would only break their own session,
# but clearly so, before it starts)
_SYSTEM = ("/bin", "/boot", "/dev", "/etc", "/lib", "/lib32", "/lib64", "/proc", "/run", "/sbin", "/sys", "/usr",
           "/var")


def check_name(name: object) -> str:
    if not isinstance(name, str) or not _NAME.match(name) or name in (".", "..") or name.startswith(".."):
        raise InvalidAPIParameters(f"name: {name!r} is not a folder name (1 to 64 letters, digits, '-', '_' or "
                                   "'.', not '.' or '..')")
    if UUID_SHAPE.match(name):   # it would be taken for an id
        raise InvalidAPIParameters(f"name: {name!r} looks like a folder id; choose another name")
    if name in RESERVED:
        raise InvalidAPIParameters(f"name: {name!r} is reserved for the session's own files")
    return name


def auto_mounted(name: str) -> bool:
    """Folders whose name starts with a dot are mounted into every session of their owner."""
    return name.startswith(".") and name not in (".", "..")


def inside(rel: object, what: str = "path") -> str:
    """A path relative to a folder's root, normalised; refused when it is absolute, leaves the folder,
    or holds a control character (newline, NUL, ...). '.' is the root itself."""
    if not isinstance(rel, str) or len(rel) > 4096:
        raise InvalidAPIParameters(f"{what}: a relative path is required")
    if any(ord(c) < 32 or ord(c) == 127 for c in rel):
        raise InvalidAPIParameters(f"{what}: {rel!r} holds a control character")
    if rel.startswith("/"):
        raise InvalidAPIParameters(f"{what}: {rel!r} is absolute; paths are relative to the folder")
    norm = posixpath.normpath(rel or ".")
    if norm == ".." or norm.startswith("../"):
        raise InvalidAPIParameters(f"{what}: {rel!r} leaves the folder")
    if any(len(part.encode()) > 255 for part in norm.split("/")):
        raise InvalidAPIParameters(f"{what}: a part of {rel!r} is longer than 255 bytes")
    return norm


def mount_target(name: str, mapped: str | None) -> str:
    """Where a folder appears in the container: /home/work/<name>, or the mapped path (absolute, or
    relative to /home/work), which must not be /home/work itself nor hold ':' or ','."""
    target = mapped or name
    if not target.startswith("/"):
        target = posixpath.join(MOUNT_ROOT, inside(target, f"mount_map[{name}]"))
    target = posixpath.normpath(target)
    bad = (target in ("/", "/home", MOUNT_ROOT) or any(c in target for c in ":,") or any(ord(c) < 32 for c in target)
           or any(target == p or target.startswith(p + "/") for p in (*_SYSTEM, f"{MOUNT_ROOT}/.bridge")))
    if bad:
        raise InvalidAPIParameters(f"mount_map[{name}]: {mapped!r} is not a place to mount a folder")
    return target


def unsafe_home(stat_line: str, unix_user: str) -> str | None:
    """What is wrong with a user's folder on a storage host, from `stat -c '%F|%U|%a|%n'`, or None: it must
    be a real directory (not a symlink) of the user's, which nobody else may write to. Under a 1777 root,
    another user could have made it first, and then reach into every folder of the victim's."""
    fields = stat_line.strip().split("|", 3)
    if len(fields) != 4:
        return "stat gave no answer"
    kind, owner, mode, path = fields
    if kind != "directory":
        return f"{path} is a {kind}, not a directory"
    if owner != unix_user:
        return f"{path} belongs to {owner}, not {unix_user}"
    if int(mode, 8) & 0o022:
        return f"{path} has mode {mode}: others may write to it"
    return None


def parse_listing(out: str) -> list[dict[str, object]]:
    """Entries from `find DIR -mindepth 1 -maxdepth 1 -printf '%f\\0%s\\0%T@\\0%M\\0%y\\0'` (NUL-separated:
    any name survives)."""
    parts = out.split("\0")
    entries = []
    for i in range(0, len(parts) - 4, 5):
        name, size, mtime, mode, kind = parts[i:i + 5]
        entries.append({"name": name, "size": int(size), "mtime": float(mtime), "mode": mode,
                        "type": {"d": "DIRECTORY", "l": "SYMLINK"}.get(kind, "FILE")})
    return sorted(entries, key=lambda e: str(e["name"]))


RANK = {"ro": 0, "rw": 1, "wd": 2}


def check_permission(value: object, what: str = "permission") -> str:
    if value not in RANK:
        raise InvalidAPIParameters(f"{what}: one of {', '.join(PERMISSIONS)}")
    return str(value)


def at_least(have: str, need: str) -> bool:
    return RANK[have] >= RANK[need]


def acl_bits(permission: str) -> str:
    """POSIX ACL bits for a folder permission: 'ro' reads (and enters folders), 'rw' and 'wd' also write
    ('X': execute on folders and on what is executable already)."""
    return "rX" if permission == "ro" else "rwX"


def acl_grant(unix_user: str, permission: str, owner: str) -> str:
    """The `setfacl -m` spec that gives a user a permission on a folder tree, now and on what is made in it
    later (default entries; the owner's own default entry keeps what others make readable to the owner)."""
    bits = acl_bits(permission)
    return f"u:{unix_user}:{bits},d:u:{unix_user}:{bits},d:u:{owner}:rwX"


def parse_acl(getfacl: str) -> dict[str, str]:
    """Named users of a folder's access ACL (`getfacl -cp` output), as folder permissions: 'ro' or 'rw'."""
    users = {}
    for line in getfacl.splitlines():
        tag, _, rest = line.partition(":")
        name, _, bits = rest.partition(":")
        if tag == "user" and name:
            users[name] = "rw" if "w" in bits[:3] else "ro"
    return users
