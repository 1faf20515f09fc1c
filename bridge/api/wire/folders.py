"""A virtual folder (a VFolderRow) as the clients read it (REST and GraphQL, client-compat.md §5.14)."""

from __future__ import annotations

import uuid
from typing import Any


def folder(row: Any, viewer_uuid: str, num_files: int | None = None) -> dict[str, Any]:
    hex_id = uuid.UUID(row.id).hex
    out: dict[str, Any] = {
        "id": hex_id, "name": row.name, "host": row.host, "status": row.status, "usage_mode": row.usage_mode,
        "permission": row.permission, "ownership_type": "user", "type": "user", "user": row.user_uuid,
        "group": None, "group_name": None, "creator": row.creator, "is_owner": row.user_uuid == viewer_uuid,
        "cloneable": row.cloneable, "unmanaged_path": None, "max_files": 0, "max_size": 0,
        "created_at": row.created_at.isoformat(), "last_used": None,
    }
    if num_files is not None:
        out["num_files"] = out["numFiles"] = num_files
    return out


def graphql_folder(row: Any, user_email: str | None = None) -> dict[str, Any]:
    return {
        "id": row.id, "host": row.host, "name": row.name, "user": row.user_uuid, "user_email": user_email,
        "group": None, "group_name": None, "creator": row.creator, "status": row.status, "unmanaged_path": None,
        "usage_mode": row.usage_mode, "permission": row.permission, "ownership_type": "user", "max_files": 0,
        "max_size": 0, "created_at": row.created_at, "last_used": None, "num_files": None, "cur_size": None,
        "cloneable": row.cloneable,
    }
