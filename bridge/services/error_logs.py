"""Errors a client reports about itself (`/logs/error`, the WebUI's error log page): kept per user; a user
reads and clears their own, a domain admin those of their domain, a superadmin all."""

from __future__ import annotations

import json
from datetime import UTC
from typing import Any

from sqlalchemy import func, or_, select, update

from bridge.adapters.db.engine import Database
from bridge.adapters.db.tables import ErrorLogRow, UserRow
from bridge.domain.auth import ROLE_RANK, AuthContext, role_rank
from bridge.errors import InvalidAPIParameters, ObjectNotFound

SEVERITIES = ("critical", "error", "warning", "info", "debug")
MAX_MESSAGE = 64 * 1024
MAX_PAGE = 100


def wire(row: ErrorLogRow) -> dict[str, Any]:
    created = row.created_at if row.created_at.tzinfo else row.created_at.replace(tzinfo=UTC)
    return {"log_id": row.id, "created_at": created.timestamp(), "severity": row.severity, "source": row.source,
            "user": row.user_uuid, "is_read": row.is_read, "message": row.message,
            "context_lang": row.context_lang, "context_env": row.context_env, "request_url": row.request_url,
            "request_status": row.request_status, "traceback": row.traceback}


class ErrorLogs:
    def __init__(self, db: Database) -> None:
        self.db = db

    async def append(self, auth: AuthContext, body: dict[str, Any]) -> None:
        severity = str(body.get("severity") or "").lower()
        if severity not in SEVERITIES:
            raise InvalidAPIParameters(f"severity: one of {', '.join(SEVERITIES)}")
        message = body.get("message")
        if not isinstance(message, str) or not message:
            raise InvalidAPIParameters("message: what went wrong, as text")
        env = body.get("context_env") or {}
        if isinstance(env, str):
            env = {"text": env}
        status = body.get("request_status")
        async with self.db.unit_of_work() as s:
            s.add(ErrorLogRow(
                severity=severity, source=_text(body.get("source") or "", 256), user_uuid=auth.user_uuid,
                domain_name=auth.domain_name, message=_text(message, MAX_MESSAGE),
                context_lang=_text(body.get("context_lang") or "", 32),
                context_env=json.loads(_text(json.dumps(env), MAX_MESSAGE)) if isinstance(env, dict) and len(
                    json.dumps(env)) <= MAX_MESSAGE else {},
                request_url=_text(body["request_url"], 2048) if body.get("request_url") else None,
                request_status=_status(status),
                traceback=_text(body["traceback"], MAX_MESSAGE) if body.get("traceback") else None))

    def _visible(self, auth: AuthContext) -> Any:
        """Own reports; an admin also those of the accounts below them in their domain (never of another
        admin or a superadmin: their request URLs can hold their links); a superadmin all."""
        live = ErrorLogRow.is_cleared.is_(False)
        if auth.is_superadmin:
            return live
        mine = ErrorLogRow.user_uuid == auth.user_uuid
        if auth.is_admin:
            below = [r for r, rank in ROLE_RANK.items() if rank < role_rank(auth.role)]
            theirs = ErrorLogRow.user_uuid.in_(select(UserRow.uuid).where(
                UserRow.domain_name == auth.domain_name, UserRow.role.in_(below)))
            return live & or_(mine, theirs)
        return live & mine

    async def page(self, auth: AuthContext, *, page_no: int, page_size: int, mark_read: bool) -> dict[str, Any]:
        if page_no < 1 or not 1 <= page_size <= MAX_PAGE:
            raise InvalidAPIParameters(f"page_no from 1, page_size from 1 to {MAX_PAGE}")
        async with self.db.unit_of_work() as s:
            where = self._visible(auth)
            count = (await s.execute(select(func.count()).select_from(ErrorLogRow).where(where))).scalar_one()
            rows = list((await s.execute(select(ErrorLogRow).where(where).order_by(ErrorLogRow.created_at.desc())
                                         .offset((page_no - 1) * page_size).limit(page_size))).scalars())
            out = [wire(r) for r in rows]
            if mark_read and rows:
                await s.execute(update(ErrorLogRow).where(ErrorLogRow.id.in_([r.id for r in rows]))
                                .values(is_read=True))
        return {"logs": out, "count": count}

    async def clear(self, auth: AuthContext, log_id: str) -> None:
        """Hide one: a user their own, an admin any of their domain's (a superadmin any)."""
        async with self.db.unit_of_work() as s:
            row = (await s.execute(select(ErrorLogRow).where(ErrorLogRow.id == log_id, self._visible(auth))
                                   )).scalar_one_or_none()
            if row is None:
                raise ObjectNotFound(f"no error log {log_id}")
            row.is_cleared = True


def _status(value: Any) -> int | None:
    """An HTTP status, or nothing."""
    if isinstance(value, str) and value.isdigit() and len(value) <= 3:
        value = int(value)
    return value if isinstance(value, int) and not isinstance(value, bool) and 100 <= value <= 599 else None


def _text(value: Any, limit: int) -> str:
    """Text as a database keeps it (PostgreSQL refuses NUL characters)."""
    return str(value).replace("\x00", "")[:limit]
