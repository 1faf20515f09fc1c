"""Session templates (Backend.AI `taskTemplate`) and cluster templates (`clusterTemplate`: roles, each a session
template and a number of replicas): parse JSON or multi-document YAML payloads, keep them per user and project,
and turn one into a session-create request."""

from __future__ import annotations

import json
import shlex
from typing import Any, Literal

import yaml
from pydantic import AliasChoices, BaseModel, ConfigDict, Field, ValidationError
from sqlalchemy import select

from bridge.adapters.db.engine import Database
from bridge.adapters.db.tables import GroupMemberRow, GroupRow, SessionTemplateRow, UserRow
from bridge.domain import cluster
from bridge.domain.auth import AuthContext
from bridge.domain.session import RoleSpec
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


class ClusterNode(_Model):
    role: str
    session_template: str = Field(validation_alias=AliasChoices("session_template", "sessionTemplate"))
    replicas: int = 1


class ClusterSpec(_Model):
    environ: dict[str, str] | None = None
    mounts: dict[str, str | None] | None = None
    nodes: list[ClusterNode]


class ClusterMetadata(_Model):
    name: str


class ClusterTemplate(_Model):
    api_version: str = Field(validation_alias=AliasChoices("api_version", "apiVersion"))
    kind: Literal["clusterTemplate", "cluster_template"]
    mode: Literal["single-node", "multi-node"]
    metadata: ClusterMetadata
    spec: ClusterSpec


KINDS: dict[str, type[TaskTemplate] | type[ClusterTemplate]] = {"task": TaskTemplate, "cluster": ClusterTemplate}


def parse_payload(payload: str, kind: str = "task") -> list[tuple[str, dict[str, Any]]]:
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
            tpl = KINDS[kind].model_validate(body)
        except ValidationError as e:
            err = e.errors()[0]
            where = ".".join(str(x) for x in err["loc"])
            raise InvalidAPIParameters(f"payload: document {i + 1}: {where}: {err['msg']}") from None
        if isinstance(tpl, ClusterTemplate):
            try:
                main_first = sorted(tpl.spec.nodes, key=lambda n: n.role != "main")
                cluster.check_roles([(n.role, n.replicas) for n in main_first])
            except ValueError as e:
                raise InvalidAPIParameters(f"payload: document {i + 1}: spec.nodes: {e}") from None
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
    """Templates of one kind: `task` (session templates, /template/session) or `cluster` (/template/cluster),
    kept in one table and ruled alike: a template is its owner's, visible to the admins of its domain."""

    def __init__(self, db: Database, kind: str = "task") -> None:
        self.db, self.kind = db, kind
        self.noun = "session template" if kind == "task" else "cluster template"

    async def _group(self, s: Any, auth: AuthContext, group: str, domain: str) -> GroupRow:
        g: GroupRow | None = (await s.execute(select(GroupRow).where(GroupRow.name == group,
                                                                     GroupRow.domain_name == domain)))\
            .scalar_one_or_none()
        if g is None:
            raise InvalidAPIParameters(f"group: no project {group!r} in domain {domain}")
        if await s.get(GroupMemberRow, (g.id, auth.user_uuid)) is None and not auth.can_manage_domain(domain):
            raise GenericForbidden(f"you are not a member of project {group}")
        return g

    async def create(self, auth: AuthContext, payload: str, group: str, domain: str) -> list[dict[str, str]]:
        parsed = parse_payload(payload, self.kind)
        async with self.db.unit_of_work() as s:
            g = await self._group(s, auth, group, domain)
            for _, tpl in parsed:
                await self._check_nodes(s, auth, tpl)
            rows = [SessionTemplateRow(name=name, access_key=auth.access_key, user_uuid=auth.user_uuid, type=self.kind,
                                       group_id=g.id, domain_name=domain, template=tpl) for name, tpl in parsed]
            s.add_all(rows)
        return [{"id": r.id, "user": auth.user_uuid} for r in rows]

    async def _check_nodes(self, s: Any, auth: AuthContext, template: dict[str, Any]) -> None:
        """A cluster template names session templates its writer may use (as create-cluster will check)."""
        if self.kind != "cluster":
            return
        for i, node in enumerate(template["spec"]["nodes"]):
            row = await s.get(SessionTemplateRow, node["session_template"])
            if row is None or not _visible(row, auth) or row.type != "task":
                raise InvalidAPIParameters(f"payload: spec.nodes.{i}.session_template: no session template "
                                           f"{node['session_template']}")

    async def get(self, auth: AuthContext, template_id: str) -> SessionTemplateRow:
        async with self.db.unit_of_work() as s:
            row = await s.get(SessionTemplateRow, template_id)
        # templates are their owner's (and visible to the admins of their domain), like Backend.AI's
        if row is None or row.type != self.kind or not _visible(row, auth):
            raise ObjectNotFound(f"no {self.noun} {template_id}")
        return row

    async def list(self, auth: AuthContext, *, all_: bool, group_id: str | None) -> list[dict[str, Any]]:
        async with self.db.unit_of_work() as s:
            q = select(SessionTemplateRow, GroupRow.name).join(GroupRow, GroupRow.id == SessionTemplateRow.group_id)\
                .where(SessionTemplateRow.is_active, SessionTemplateRow.type == self.kind)
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
        parsed = parse_payload(payload, self.kind)
        if len(parsed) != 1:
            raise InvalidAPIParameters("payload: an update takes exactly one template")
        async with self.db.unit_of_work() as s:
            await self._check_nodes(s, auth, parsed[0][1])
            fresh = await s.get(SessionTemplateRow, template_id)
            fresh.name, fresh.template = parsed[0]  # type: ignore[union-attr]

    async def delete(self, auth: AuthContext, template_id: str) -> None:
        row = await self.get(auth, template_id)
        await self._may_change(auth, row)
        async with self.db.unit_of_work() as s:
            fresh = await s.get(SessionTemplateRow, template_id)
            fresh.is_active = False  # type: ignore[union-attr]


def _visible(row: SessionTemplateRow, auth: AuthContext) -> bool:
    return row.is_active and (row.access_key == auth.access_key or auth.can_manage_domain(row.domain_name))


def cluster_roles(template: dict[str, Any], sessions: dict[str, dict[str, Any]]) -> list[RoleSpec]:
    """A cluster template's roles (main first), each from its session template's image and resources;
    `sessions` maps the session template ids it names to their templates."""
    nodes = sorted(template["spec"]["nodes"], key=lambda n: n["role"] != "main")
    roles = []
    for node in nodes:
        fields = session_fields(sessions[node["session_template"]])
        roles.append(RoleSpec(role=node["role"], replicas=int(node.get("replicas", 1)), image=fields["image"],
                              resources=fields["resources"] or None))
    return roles
