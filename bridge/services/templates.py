"""Session templates (Backend.AI `taskTemplate`): parse JSON or multi-document YAML payloads, keep them
per user and project, and turn one into a session-create request."""

from __future__ import annotations

import json
import shlex
from typing import Any, Literal

import yaml
from pydantic import AliasChoices, BaseModel, ConfigDict, Field, ValidationError
from sqlalchemy import select

from bridge.adapters.db.engine import Database
from bridge.adapters.db.tables import GroupMemberRow, GroupRow, SessionTemplateRow, UserRow
from bridge.domain.auth import AuthContext
from bridge.errors import GenericForbidden, InvalidAPIParameters, ObjectNotFound


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)


class GitSpec(_Model):
    repository: str
    commit: str | None = None
    branch: str | None = None
    credential: dict[str, str] | None = None
    destination_dir: str | None = Field(None, validation_alias=AliasChoices("destination_dir", "destinationDir"))


class RunSpec(_Model):
    bootstrap: str | None = None
    startup_command: str | None = Field(
        None, validation_alias=AliasChoices("startup_command", "startupCommand", "stratup", "startup"))


class KernelSpec(_Model):
    image: str
    architecture: str = "x86_64"
    environ: dict[str, str] | None = None
    run: RunSpec | None = None
    git: GitSpec | None = None


class TemplateSpec(_Model):
    session_type: Literal["interactive", "batch"] = Field(
        "interactive", validation_alias=AliasChoices("type", "sessionType", "session_type"))
    kernel: KernelSpec
    scaling_group: str | None = None
    mounts: dict[str, str | None] | None = None
    resources: dict[str, Any] | None = None


class Metadata(_Model):
    name: str
    tag: str | None = None


class TaskTemplate(_Model):
    api_version: str = Field(validation_alias=AliasChoices("api_version", "apiVersion"))
    kind: Literal["taskTemplate", "task_template"]
    metadata: Metadata
    spec: TemplateSpec


def parse_payload(payload: str) -> list[tuple[str, dict[str, Any]]]:
    """[(name, template)] from a JSON or (multi-document) YAML payload; each document is a template, or
    `{name, template}` around one. ValueError says what is wrong."""
    try:
        docs = [json.loads(payload)]
    except json.JSONDecodeError:
        try:
            docs = [d for d in yaml.safe_load_all(payload) if d is not None]
        except yaml.YAMLError as e:
            raise InvalidAPIParameters(f"payload: neither JSON nor YAML ({e})") from None
    if len(docs) == 1 and isinstance(docs[0], list):
        docs = docs[0]
    out = []
    for i, doc in enumerate(docs):
        if not isinstance(doc, dict):
            raise InvalidAPIParameters(f"payload: document {i + 1} is not a mapping")
        body = doc.get("template", doc)
        try:
            tpl = TaskTemplate.model_validate(body)
        except ValidationError as e:
            err = e.errors()[0]
            where = ".".join(str(x) for x in err["loc"])
            raise InvalidAPIParameters(f"payload: document {i + 1}: {where}: {err['msg']}") from None
        out.append((doc.get("name") or tpl.metadata.name, tpl.model_dump(mode="json", exclude_none=True)))
    if not out:
        raise InvalidAPIParameters("payload: no template in it")
    return out


def git_bootstrap(git: dict[str, Any]) -> str:
    dest = git.get("destination_dir") or "/home/work/" + git["repository"].rstrip("/").rsplit("/", 1)[-1].removesuffix(
        ".git")
    cmd = ["git", "clone"] + (["--branch", git["branch"]] if git.get("branch") else []) + [git["repository"], dest]
    script = shlex.join(cmd)
    if git.get("commit"):
        script += " && " + shlex.join(["git", "-C", dest, "checkout", git["commit"]])
    return script


def session_fields(template: dict[str, Any]) -> dict[str, Any]:
    """The create-request values a template gives (the request may override any of them)."""
    spec, kernel = template["spec"], template["spec"]["kernel"]
    run = kernel.get("run") or {}
    bootstrap = run.get("bootstrap")
    if kernel.get("git"):
        bootstrap = git_bootstrap(kernel["git"]) + (f"\n{bootstrap}" if bootstrap else "")
    return {
        "image": kernel["image"], "type": spec.get("session_type", "interactive"),
        "architecture": kernel.get("architecture", "x86_64"), "tag": template["metadata"].get("tag"),
        "startup_command": run.get("startup_command"), "bootstrap_script": bootstrap,
        "environ": kernel.get("environ") or {}, "resources": spec.get("resources") or {},
        "mounts": list((spec.get("mounts") or {}).keys()), "scaling_group": spec.get("scaling_group"),
        # `mounts: {name: path}`: where the folder appears (None: /home/work/<name>)
        "mount_map": {k: v for k, v in (spec.get("mounts") or {}).items() if v},
    }


def row_to_dict(row: SessionTemplateRow, auth: AuthContext, group_name: str, user_email: str) -> dict[str, Any]:
    return {"name": row.name, "id": row.id, "created_at": row.created_at.isoformat(),
            "is_owner": row.access_key == auth.access_key, "user": row.user_uuid, "user_email": user_email,
            "group": row.group_id, "group_name": group_name, "domain_name": row.domain_name, "type": row.type,
            "template": row.template}


class TemplateService:
    def __init__(self, db: Database) -> None:
        self.db = db

    async def _group(self, s: Any, auth: AuthContext, group: str, domain: str) -> GroupRow:
        g = (await s.execute(select(GroupRow).where(GroupRow.name == group, GroupRow.domain_name == domain)))\
            .scalar_one_or_none()
        if g is None:
            raise InvalidAPIParameters(f"group: no project {group!r} in domain {domain}")
        if await s.get(GroupMemberRow, (g.id, auth.user_uuid)) is None and not auth.can_manage_domain(domain):
            raise GenericForbidden(f"you are not a member of project {group}")
        return g

    async def create(self, auth: AuthContext, payload: str, group: str, domain: str) -> list[dict[str, str]]:
        parsed = parse_payload(payload)
        async with self.db.unit_of_work() as s:
            g = await self._group(s, auth, group, domain)
            rows = [SessionTemplateRow(name=name, access_key=auth.access_key, user_uuid=auth.user_uuid,
                                       group_id=g.id, domain_name=domain, template=tpl) for name, tpl in parsed]
            s.add_all(rows)
        return [{"id": r.id, "user": auth.user_uuid} for r in rows]

    async def get(self, auth: AuthContext, template_id: str) -> SessionTemplateRow:
        async with self.db.unit_of_work() as s:
            row = await s.get(SessionTemplateRow, template_id)
        # templates are their owner's (and visible to the admins of their domain), like Backend.AI's
        if row is None or not row.is_active or not (
                row.access_key == auth.access_key or auth.can_manage_domain(row.domain_name)):
            raise ObjectNotFound(f"no session template {template_id}")
        return row

    async def list(self, auth: AuthContext, *, all_: bool, group_id: str | None) -> list[dict[str, Any]]:
        async with self.db.unit_of_work() as s:
            q = select(SessionTemplateRow, GroupRow.name).join(GroupRow, GroupRow.id == SessionTemplateRow.group_id)\
                .where(SessionTemplateRow.is_active)
            if group_id:
                q = q.where(SessionTemplateRow.group_id == group_id)
            if not (all_ and auth.is_admin):
                q = q.where(SessionTemplateRow.access_key == auth.access_key)
            elif not auth.is_superadmin:
                q = q.where(SessionTemplateRow.domain_name == auth.domain_name)
            rows = (await s.execute(q.order_by(SessionTemplateRow.created_at))).all()
        return [row_to_dict(r, auth, gname, "") for r, gname in rows]

    async def _may_change(self, auth: AuthContext, row: SessionTemplateRow) -> None:
        """The owner, or an admin above the owner in rank (domain/auth.py)."""
        if row.access_key == auth.access_key:
            return
        async with self.db.unit_of_work() as s:
            owner = await s.get(UserRow, row.user_uuid)
        if owner is None or not auth.may_act_for(owner.uuid, owner.role, owner.domain_name):
            raise GenericForbidden("only the owner, or an admin above the owner in rank, may change a template")

    async def update(self, auth: AuthContext, template_id: str, payload: str) -> None:
        row = await self.get(auth, template_id)
        await self._may_change(auth, row)
        parsed = parse_payload(payload)
        if len(parsed) != 1:
            raise InvalidAPIParameters("payload: an update takes exactly one template")
        async with self.db.unit_of_work() as s:
            fresh = await s.get(SessionTemplateRow, template_id)
            fresh.name, fresh.template = parsed[0]  # type: ignore[union-attr]

    async def delete(self, auth: AuthContext, template_id: str) -> None:
        row = await self.get(auth, template_id)
        await self._may_change(auth, row)
        async with self.db.unit_of_work() as s:
            fresh = await s.get(SessionTemplateRow, template_id)
            fresh.is_active = False  # type: ignore[union-attr]
