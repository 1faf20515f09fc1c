"""Dotfiles: small files a user, a project or a domain puts into the home of every new session (Backend.AI's
user-, group- and domain-config). Pure rules: where one may go, its mode, how much there may be, and which
wins when two scopes name the same path (the user's, then the project's, then the domain's)."""

from __future__ import annotations

import posixpath
import re
from collections.abc import Iterable, Mapping
from typing import Any

from bridge.domain.auth import role_rank

HOME = "/home/work"
MAX_TOTAL_BYTES = 64 * 1024     # all of one scope's dotfiles together, as Backend.AI limits them
MAX_COUNT = 100
# what the gateway and the kernel lay out in the home: a dotfile there would fight them
RESERVED = (".bridge", "id_container", ".ssh/authorized_keys", ".terminfo", ".jupyter", ".local", ".config")
_PERM = re.compile(r"^[0-7]{3,4}\Z")


def check_path(path: object) -> str:
    """A dotfile's path inside the session's home, relative ("~/.vimrc" and "/home/work/.vimrc" are
    ".vimrc"). ValueError: absolute elsewhere, escaping the home, or a path the gateway keeps."""
    if not isinstance(path, str) or not path.strip():
        raise ValueError("path: a dotfile needs a path")
    text = path.strip()
    if text.startswith("~/"):
        text = text[2:]
    elif text == HOME or text.startswith(HOME + "/"):
        text = text[len(HOME) + 1:]
    elif text.startswith("/"):
        raise ValueError(f"path: {path!r} is outside the session's home {HOME}")
    norm = posixpath.normpath(text)
    if norm in (".", "") or norm.startswith("../") or norm == ".." or "\x00" in norm:
        raise ValueError(f"path: {path!r} is not a file inside the session's home")
    if any(norm == r or norm.startswith(r + "/") for r in RESERVED):
        raise ValueError(f"path: {norm} is reserved (the gateway or the kernel lays it out)")
    return norm


def check_perm(perm: object) -> str:
    """An octal mode such as "644"; no setuid, setgid or sticky bit."""
    text = str(perm if perm is not None else "644").strip()
    if not _PERM.match(text) or int(text, 8) > 0o777:
        raise ValueError(f"permission: {perm!r} must be an octal mode such as 644 (no special bits)")
    return text[-3:]


def check_all(entries: list[Mapping[str, Any]]) -> None:
    if len(entries) > MAX_COUNT:
        raise ValueError(f"at most {MAX_COUNT} dotfiles")
    size = sum(len(str(e.get("data") or "").encode()) for e in entries)
    if size > MAX_TOTAL_BYTES:
        raise ValueError(f"dotfiles may hold {MAX_TOTAL_BYTES // 1024} KiB in all; these would hold {size} bytes")


def reaches(entry: Mapping[str, Any], owner_uuid: str, owner_role: str) -> bool:
    """Does a project's or a domain's dotfile go into this account's sessions? Only when whoever wrote it
    outranks the account (or is the account): a file in the home is code its user runs (.bashrc), and nobody
    acts for an account at or above their own role."""
    by = entry.get("by") or {}
    if by.get("uuid") == owner_uuid:
        return True
    return role_rank(str(by.get("role") or "")) > role_rank(owner_role)


def merged(*scopes: Iterable[Mapping[str, Any]]) -> list[dict[str, str]]:
    """The dotfiles a session gets: scopes from the most general (domain) to the most particular (user); a
    later scope's file wins over an earlier one's at the same path."""
    out: dict[str, dict[str, str]] = {}
    for scope in scopes:
        for e in scope:
            out[str(e["path"])] = {"path": str(e["path"]), "perm": str(e.get("perm") or "644"),
                                   "data": str(e.get("data") or "")}
    return [out[p] for p in sorted(out)]
