"""A virtual folder as the clients read it (REST and GraphQL, client-compat.md §5.14), seen by one caller:
their permission, whether they own it, and whose it is (a user's, or a project's)."""

from __future__ import annotations

import uuid
from typing import Any


def folder(acc: Any, num_files: int | None = None) -> dict[str, Any]:
    row = acc.row
    kind = "group" if row.group_id else "user"
    out: dict[str, Any] = {
        "id": uuid.UUID(row.id).hex, "name": row.name, "host": row.host, "status": row.status,
        "usage_mode": row.usage_mode, "permission": acc.permission, "ownership_type": kind, "type": kind,
        "user": row.user_uuid, "group": row.group_id, "group_name": acc.group_name, "creator": row.creator,
        "is_owner": acc.is_owner, "cloneable": row.cloneable, "unmanaged_path": None, "max_files": 0,
        "max_size": 0, "created_at": row.created_at.isoformat(), "last_used": None,
    }
    if num_files is not None:
        out["num_files"] = out["numFiles"] = num_files
    return out


def graphql_folder(acc: Any, user_email: str | None = None) -> dict[str, Any]:
    row = acc.row
    return {
        "id": row.id, "host": row.host, "name": row.name, "user": row.user_uuid, "user_email": user_email,
        "group": row.group_id, "group_name": acc.group_name, "creator": row.creator, "status": row.status,
        "unmanaged_path": None, "usage_mode": row.usage_mode, "permission": acc.permission,
        "ownership_type": "group" if row.group_id else "user", "max_files": 0, "max_size": 0,
        "created_at": row.created_at, "last_used": None, "num_files": None, "cur_size": None,
        "cloneable": row.cloneable,
    }
