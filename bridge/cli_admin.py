"""`bai-bridge admin ...`: create and list domains, users, projects, keypairs and resource policies.

These act on the database directly (an operator on the gateway host), through the same account service
(bridge/services/accounts.py) and checks as the GraphQL mutations, as the site operator whom nobody
outranks. Project commands can also create the Slurm account and associations.
"""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

import click

from bridge.adapters.db.engine import Database
from bridge.cli_settings import settings_of
from bridge.config import BridgeSettings
from bridge.errors import BridgeError
from bridge.services import accounts

if TYPE_CHECKING:
    from bridge.services.images import ImageResolver
from bridge.services.project_sync import ProjectSync
from bridge.wiring import Overrides, Parts

T = TypeVar("T")


def _run(ctx: click.Context, fn: Callable[[Database, BridgeSettings], Awaitable[T]]) -> T:
    settings = settings_of(ctx)

    async def go() -> T:
        db = Database(settings.database.url, secret=settings.secret.get_secret_value())
        try:
            return await fn(db, settings)
        finally:
            await db.dispose()

    try:
        return asyncio.run(go())
    except BridgeError as e:
        raise click.ClickException(e.msg) from None


def _table(rows: Sequence[dict[str, Any]], columns: Sequence[str], as_json: bool) -> None:
    if as_json:
        click.echo(json.dumps(list(rows), indent=2, default=str))
        return
    widths = {c: max([len(c)] + [len(str(r.get(c, ""))) for r in rows]) for c in columns}
    click.echo("  ".join(c.ljust(widths[c]) for c in columns))
    for r in rows:
        click.echo("  ".join(str(r.get(c, "")).ljust(widths[c]) for c in columns))


def _parts(settings: BridgeSettings, db: Database | None = None) -> Parts:
    """The composition root (bridge/wiring.py), on the command's database when it has one open."""
    return Parts(settings, Overrides(db=db))


def _project_sync(settings: BridgeSettings, force: bool = False) -> ProjectSync:
    """Slurm kept in step with projects: on with `accounts.slurm_sync`, or for one command with its flag."""
    return _parts(settings).project_sync(force)


def _accounts(settings: BridgeSettings, force: bool = False) -> accounts.AccountService:
    """The account service, as the GraphQL mutations use it, with Slurm kept in step as `_project_sync` says."""
    return _parts(settings).accounts(force)


async def _folders_follow(db: Database, settings: BridgeSettings, group_ids: list[str]) -> None:
    """After members joined projects: the projects' folders' ACLs on disk name them too (docs/folders.md)."""
    folders = _parts(settings, db).folders
    await folders.sync_many(await folders.touching(group_ids=group_ids))


json_option = click.option("--json", "as_json", is_flag=True, help="Print JSON.")


@click.group()
def admin() -> None:
    """Administer accounts: domains, users, projects, keypairs, resource policies."""


@admin.group()
def domain() -> None:
    """Domains."""


@domain.command("create")
@click.argument("name")
@click.option("--description", default="")
@click.pass_context
def domain_create(ctx: click.Context, name: str, description: str) -> None:
    async def go(db: Database, settings: BridgeSettings) -> None:
        async with db.unit_of_work() as s:
            await _accounts(settings).create_domain(s, None, name, {"description": description})
    _run(ctx, go)
    click.echo(f"domain {name} created")


@domain.command("list")
@json_option
@click.pass_context
def domain_list(ctx: click.Context, as_json: bool) -> None:
    async def go(db: Database, _s: BridgeSettings) -> list[dict[str, Any]]:
        async with db.unit_of_work() as s:
            return [{"name": d.name, "active": d.is_active, "description": d.description}
                    for d in await accounts.list_domains(s)]
    _table(_run(ctx, go), ("name", "active", "description"), as_json)


@admin.group()
def user() -> None:
    """Users and the Unix accounts their jobs run as."""


@user.command("create")
@click.argument("email")
@click.option("--unix-user", required=True, help="Unix account the user's jobs run as (never root).")
@click.option("--username", default=None)
@click.option("--role", type=click.Choice(accounts.ROLES), default="user", show_default=True)
@click.option("--domain", "domain_name", default="default", show_default=True)
@click.option("--group", "groups", multiple=True, help="Project to join (repeatable).")
@click.option("--policy", default="default", show_default=True, help="Keypair resource policy.")
@click.option("--password-stdin", is_flag=True, help="Read the password from standard input.")
@json_option
@click.pass_context
def user_create(ctx: click.Context, email: str, unix_user: str, username: str | None, role: str,
                domain_name: str, groups: tuple[str, ...], policy: str, password_stdin: bool, as_json: bool) -> None:
    """Create a user with a keypair; prints the keys once."""
    password = sys.stdin.readline().rstrip("\n") if password_stdin else None

    async def go(db: Database, settings: BridgeSettings) -> dict[str, Any]:
        async with db.unit_of_work() as s:
            u, kp = await _accounts(settings).create_user(
                s, None, email=email, username=username, password=password, domain=domain_name, role=role,
                unix_user=unix_user, group_names=groups, resource_policy=policy)
            joined = [g.id for g in await accounts.groups_of_user(s, u.uuid)]
            out = {"email": email, "uuid": u.uuid, "unix_user": unix_user, "role": role,
                   "access_key": kp.access_key, "secret_key": kp.secret_key}
        await _folders_follow(db, settings, joined)
        return out
    out = _run(ctx, go)
    if as_json:
        click.echo(json.dumps(out, indent=2))
    else:
        for k, v in out.items():
            click.echo(f"{k}: {v}")


@user.command("list")
@click.option("--domain", "domain_name", default=None)
@json_option
@click.pass_context
def user_list(ctx: click.Context, domain_name: str | None, as_json: bool) -> None:
    async def go(db: Database, _s: BridgeSettings) -> list[dict[str, Any]]:
        async with db.unit_of_work() as s:
            rows = []
            for u in await accounts.list_users(s, domain=domain_name):
                groups = ",".join(g.name for g in await accounts.groups_of_user(s, u.uuid))
                rows.append({"email": u.email, "role": u.role, "unix_user": u.unix_user, "domain": u.domain_name,
                             "status": u.status, "projects": groups})
            return rows
    _table(_run(ctx, go), ("email", "role", "unix_user", "domain", "status", "projects"), as_json)


@admin.group()
def group() -> None:
    """Projects and the Slurm accounts their jobs are charged to."""


@group.command("create")
@click.argument("name")
@click.option("--domain", "domain_name", default="default", show_default=True)
@click.option("--slurm-account", default=None, help="Slurm account (default: the project name).")
@click.option("--create-slurm-account", is_flag=True,
              help="Also create the account in Slurm (sacctmgr); always so with accounts.slurm_sync.")
@click.option("--description", default="")
@click.pass_context
def group_create(ctx: click.Context, name: str, domain_name: str, slurm_account: str | None,
                 create_slurm_account: bool, description: str) -> None:
    async def go(db: Database, settings: BridgeSettings) -> str:
        async with db.unit_of_work() as s:
            # the Slurm account is made inside the unit of work: a Slurm failure leaves no project behind
            g = await _accounts(settings, force=create_slurm_account).create_project(
                s, None, name, domain_name, {"slurm_account": slurm_account, "description": description})
            return g.slurm_account
    account = _run(ctx, go)
    click.echo(f"project {name} created (Slurm account {account})")


@group.command("list")
@click.option("--domain", "domain_name", default=None)
@json_option
@click.pass_context
def group_list(ctx: click.Context, domain_name: str | None, as_json: bool) -> None:
    async def go(db: Database, _s: BridgeSettings) -> list[dict[str, Any]]:
        async with db.unit_of_work() as s:
            return [{"name": g.name, "id": g.id, "domain": g.domain_name, "slurm_account": g.slurm_account,
                     "active": g.is_active} for g in await accounts.list_groups(s, domain=domain_name)]
    _table(_run(ctx, go), ("name", "id", "domain", "slurm_account", "active"), as_json)


@group.command("add-user")
@click.argument("name")
@click.argument("email")
@click.option("--domain", "domain_name", default="default", show_default=True)
@click.option("--sync-slurm", is_flag=True,
              help="Also add the user's association to the Slurm account; always so with accounts.slurm_sync.")
@click.pass_context
def group_add_user(ctx: click.Context, name: str, email: str, domain_name: str, sync_slurm: bool) -> None:
    async def go(db: Database, settings: BridgeSettings) -> None:
        async with db.unit_of_work() as s:
            g = await accounts.get_group(s, name, domain_name)
            u = await accounts.get_user_by_email(s, email)
            if g is None or u is None:
                raise click.ClickException(f"no project {name} in {domain_name}" if g is None else f"no user {email}")
            await _accounts(settings, force=sync_slurm).add_to_project(s, None, g, u)
            gid = g.id
        await _folders_follow(db, settings, [gid])
    _run(ctx, go)
    click.echo(f"{email} is a member of {name}")


@group.command("quota")
@click.argument("name")
@click.argument("slots", required=False)
@click.option("--domain", "domain_name", default="default", show_default=True)
@click.option("--sync-slurm", is_flag=True,
              help="Also set the Slurm account's GrpTRES; always so with accounts.slurm_sync.")
@click.pass_context
def group_quota(ctx: click.Context, name: str, slots: str | None, domain_name: str, sync_slurm: bool) -> None:
    """Show or set a project's quota: SLOTS as JSON, e.g. '{"cpu": 64, "mem": "256g", "cuda.device": 8}'
    ('{}' lifts it). With Slurm kept in step, it becomes the project's Slurm account's GrpTRES."""
    async def go(db: Database, settings: BridgeSettings) -> tuple[dict[str, Any], dict[str, int] | None]:
        service = _accounts(settings, force=sync_slurm)
        sync = service.projects
        async with db.unit_of_work() as s:
            g = await accounts.get_group(s, name, domain_name)
            if g is None:
                raise click.ClickException(f"no project {name} in {domain_name}")
            if slots is not None:
                try:
                    wanted = json.loads(slots)
                except json.JSONDecodeError as e:
                    raise click.ClickException(f"SLOTS must be a JSON object: {e}") from None
                if not isinstance(wanted, dict):
                    raise click.ClickException("SLOTS must be a JSON object")
                await service.set_project_quota(s, None, g, wanted)
            return dict(g.total_resource_slots or {}), sync.quota(g) if sync.enabled else None
    quota, tres = _run(ctx, go)
    click.echo(f"{name}: {json.dumps(quota)}")
    if tres is not None:
        limits = ",".join(f"{k}={v}" for k, v in tres.items() if v >= 0) or "none"
        click.echo(f"Slurm account GrpTRES: {limits}")


@admin.group()
def keypair() -> None:
    """Keypairs."""


@keypair.command("create")
@click.argument("email")
@click.option("--policy", default="default", show_default=True)
@click.pass_context
def keypair_create(ctx: click.Context, email: str, policy: str) -> None:
    async def go(db: Database, settings: BridgeSettings) -> accounts.NewKeypair:
        async with db.unit_of_work() as s:
            u = await accounts.get_user_by_email(s, email)
            if u is None:
                raise click.ClickException(f"no user {email}")
            row = await _accounts(settings).issue_keypair(s, None, u, resource_policy=policy)
            return accounts.NewKeypair(row.access_key, row.secret_key, u.email)
    kp = _run(ctx, go)
    click.echo(f"access_key: {kp.access_key}\nsecret_key: {kp.secret_key}")


@keypair.command("list")
@click.option("--email", default=None)
@json_option
@click.pass_context
def keypair_list(ctx: click.Context, email: str | None, as_json: bool) -> None:
    async def go(db: Database, _s: BridgeSettings) -> list[dict[str, Any]]:
        async with db.unit_of_work() as s:
            return [{"access_key": k.access_key, "user": k.user_id, "active": k.is_active, "admin": k.is_admin,
                     "policy": k.resource_policy, "last_used": k.last_used}
                    for k in await accounts.list_keypairs(s, email=email)]
    _table(_run(ctx, go), ("access_key", "user", "active", "admin", "policy", "last_used"), as_json)


@admin.group()
def policy() -> None:
    """Keypair resource policies."""


@policy.command("create")
@click.argument("name")
@click.option("--max-sessions", type=int, default=30, show_default=True)
@click.option("--max-containers-per-session", type=int, default=1, show_default=True)
@click.option("--idle-timeout", type=int, default=0, show_default=True, help="Seconds; 0 disables.")
@click.option("--max-session-lifetime", type=int, default=0, show_default=True, help="Seconds; 0 disables.")
@click.option("--slot", "slots", multiple=True, help="Total resource slot limit KEY=VALUE (repeatable).")
@click.pass_context
def policy_create(ctx: click.Context, name: str, max_sessions: int, max_containers_per_session: int,
                  idle_timeout: int, max_session_lifetime: int, slots: tuple[str, ...]) -> None:
    total = dict(s.split("=", 1) for s in slots)

    async def go(db: Database, settings: BridgeSettings) -> None:
        async with db.unit_of_work() as s:
            await _accounts(settings).create_policy(s, None, name, {
                "max_concurrent_sessions": max_sessions, "max_containers_per_session": max_containers_per_session,
                "idle_timeout": idle_timeout, "max_session_lifetime": max_session_lifetime,
                "total_resource_slots": total, "default_for_unspecified": "LIMITED" if total else "UNLIMITED"})
    _run(ctx, go)
    click.echo(f"resource policy {name} created")


@policy.command("list")
@json_option
@click.pass_context
def policy_list(ctx: click.Context, as_json: bool) -> None:
    async def go(db: Database, _s: BridgeSettings) -> list[dict[str, Any]]:
        async with db.unit_of_work() as s:
            return [{"name": p.name, "max_sessions": p.max_concurrent_sessions, "slots": p.total_resource_slots,
                     "idle_timeout": p.idle_timeout} for p in await accounts.list_policies(s)]
    _table(_run(ctx, go), ("name", "max_sessions", "slots", "idle_timeout"), as_json)


@admin.group()
def image() -> None:
    """Kernel images: Backend.AI references mapped to Apptainer images on the compute nodes."""


def _registry(settings: BridgeSettings, db: Database) -> ImageResolver:
    return _parts(settings, db).images


@image.command("add")
@click.argument("reference")
@click.argument("path")
@click.option("--alias", "aliases", multiple=True, help="Another reference for the same image (repeatable).")
@click.pass_context
def image_add(ctx: click.Context, reference: str, path: str, aliases: tuple[str, ...]) -> None:
    """Register PATH (a SIF file or sandbox directory where the jobs run) as REFERENCE; reads its labels."""
    async def go(db: Database, settings: BridgeSettings) -> dict[str, Any]:
        row = await _registry(settings, db).add(reference, path, list(aliases))
        return {"name": row.name, "path": row.path, "aliases": row.aliases,
                "min": {k.rsplit(".", 1)[-1]: v for k, v in row.labels.items() if ".resource.min." in k}}
    out = _run(ctx, go)
    click.echo(f"image {out['name']} -> {out['path']} (aliases: {', '.join(out['aliases']) or '-'}; "
               f"minimum: {out['min'] or '-'})")


@image.command("import")
@click.argument("source")
@click.option("--name", "name", default=None, help="Reference to register it as (default: registry/repo:tag).")
@click.option("--alias", "aliases", multiple=True, help="Another reference for the same image (repeatable).")
@click.pass_context
def image_import(ctx: click.Context, source: str, name: str | None, aliases: tuple[str, ...]) -> None:
    """Pull SOURCE (docker://... or oras://...) into the shared cache, keyed by its digest, and register it.
    A digest already in the cache is not pulled again."""
    from bridge.services.image_pull import ImagePuller, parse

    async def go(db: Database, settings: BridgeSettings) -> dict[str, Any]:
        ref = parse(source)
        if ref is None:
            raise click.UsageError("SOURCE must be a docker:// or oras:// reference")
        parts = _parts(settings, db)
        try:
            puller = ImagePuller(parts.runner, parts.images, settings, parts.oci_registry)
            row = await puller.pull(ref, name=name, aliases=list(aliases))
        finally:
            await parts.aclose()   # the registry's client (the command's database stays the command's)
        return {"name": row.name, "path": row.path, "digest": row.digest, "aliases": row.aliases}
    out = _run(ctx, go)
    click.echo(f"image {out['name']} ({out['digest']}) -> {out['path']} (aliases: {', '.join(out['aliases']) or '-'})")


@image.command("prune")
@click.option("--dry-run", is_flag=True, help="Only list what would be removed.")
@click.pass_context
def image_prune(ctx: click.Context, dry_run: bool) -> None:
    """Remove pulled images from the cache that no registered image and no live session uses."""
    from bridge.services.image_pull import ImagePuller

    async def go(db: Database, settings: BridgeSettings) -> list[str]:
        registry = _registry(settings, db)
        return await ImagePuller(registry.runner, registry, settings).prune(db, dry_run=dry_run)
    stale = _run(ctx, go)
    for path in stale:
        click.echo(("would remove " if dry_run else "removed ") + path)
    if not stale:
        click.echo("nothing to remove")


@image.command("alias")
@click.argument("alias")
@click.argument("target")
@click.pass_context
def image_alias(ctx: click.Context, alias: str, target: str) -> None:
    async def go(db: Database, settings: BridgeSettings) -> None:
        await _registry(settings, db).alias(alias, target)
    _run(ctx, go)
    click.echo(f"{alias} -> {target}")


@image.command("remove")
@click.argument("reference")
@click.pass_context
def image_remove(ctx: click.Context, reference: str) -> None:
    async def go(db: Database, settings: BridgeSettings) -> None:
        await _registry(settings, db).remove(reference)
    _run(ctx, go)
    click.echo(f"image {reference} removed (the files stay)")


@image.command("list")
@json_option
@click.pass_context
def image_list(ctx: click.Context, as_json: bool) -> None:
    async def go(db: Database, settings: BridgeSettings) -> list[dict[str, Any]]:
        return [{"name": r.name, "path": r.path, "aliases": ",".join(r.aliases or []), "digest": r.digest or "",
                 "min_cpu": r.labels.get("ai.backend.resource.min.cpu", ""),
                 "min_mem": r.labels.get("ai.backend.resource.min.mem", ""), "size_bytes": r.size_bytes}
                for r in await _registry(settings, db).list()]
    _table(_run(ctx, go), ("name", "path", "aliases", "digest", "min_cpu", "min_mem", "size_bytes"), as_json)


@admin.group()
def folder() -> None:
    """Virtual folders (docs/folders.md)."""


@folder.command("list")
@click.option("--user", "email", default=None, help="Only this user's folders.")
@click.option("--usage", is_flag=True, help="Measure each folder (du, as its owner): slower.")
@json_option
@click.pass_context
def folder_list(ctx: click.Context, email: str | None, usage: bool, as_json: bool) -> None:
    """Every folder with its owner (a user, or a project), host, path on disk and who it is shared with (and,
    with --usage, its size and file count)."""
    from sqlalchemy import select

    from bridge.adapters.db.tables import GroupRow, UserRow, VFolderRow, VFolderShareRow

    async def go(db: Database, settings: BridgeSettings) -> list[dict[str, Any]]:
        async with db.unit_of_work() as s:
            q = (select(VFolderRow, UserRow.email, GroupRow.name)
                 .outerjoin(UserRow, UserRow.uuid == VFolderRow.user_uuid)
                 .outerjoin(GroupRow, GroupRow.id == VFolderRow.group_id))
            if email:
                q = q.where(UserRow.email == email)
            found = list((await s.execute(q.order_by(UserRow.email, GroupRow.name, VFolderRow.name))).all())
            shares: dict[str, list[str]] = {}
            for fid, who, perm in (await s.execute(
                    select(VFolderShareRow.vfolder_id, UserRow.email, VFolderShareRow.permission)
                    .join(UserRow, UserRow.uuid == VFolderShareRow.user_uuid).order_by(UserRow.email))).all():
                shares.setdefault(fid, []).append(f"{who}:{perm}")
        svc = _parts(settings, db).folders
        rows = []
        for f, owner, project in found:
            row: dict[str, Any] = {"name": f.name, "owner": owner or f"project {project}", "unix_user": f.unix_user,
                                   "host": f.host, "permission": f.permission, "shared_with": ",".join(
                                       shares.get(f.id, [])), "path": f.path,
                                   "created": f.created_at.isoformat()[:19]}
            if usage:
                try:
                    row["bytes"], row["files"] = await svc.usage(f)
                except BridgeError as e:
                    row["bytes"], row["files"] = "?", e.msg[:60]
            rows.append(row)
        return rows

    columns = ["name", "owner", "unix_user", "host", "permission", "shared_with", "created", "path"]
    _table(_run(ctx, go), columns + (["bytes", "files"] if usage else []), as_json)


@admin.group()
def quota() -> None:
    """Quotas as Slurm association limits (docs/quotas.md)."""


@quota.command("check")
@click.option("--repair", is_flag=True, help="Set every differing limit in Slurm to what the policies say.")
@json_option
@click.pass_context
def quota_check(ctx: click.Context, repair: bool, as_json: bool) -> None:
    """Compare the gateway's policies with Slurm's associations: each project's account (GrpTRES from its
    total_resource_slots) and each member's association (GrpTRES, MaxJobs, MaxWall from their keypair
    resource policy). Exits 1 when a difference is found and not repaired."""
    async def go(db: Database, settings: BridgeSettings) -> list[dict[str, str]]:
        sync = _project_sync(settings, force=True)
        async with db.unit_of_work() as s:
            return [d.as_dict() for d in await sync.check(s, repair=repair)]
    found = _run(ctx, go)
    if as_json:
        click.echo(json.dumps({"differences": found, "repaired": repair and bool(found)}, indent=2))
    elif not found:
        click.echo("Slurm's associations match the gateway's policies")
    else:
        _table(found, ("account", "user", "limit", "wanted", "found"), False)
        click.echo(f"{len(found)} difference(s){', repaired' if repair else '; --repair sets them right'}")
    if found and not repair:
        sys.exit(1)


class _Partitions:
    """The partitions, read from Slurm once per command."""

    def __init__(self, settings: BridgeSettings) -> None:
        self.settings = settings

    async def get(self) -> list[Any]:
        parts = _parts(self.settings)
        try:
            return await parts.slurm.partitions()
        finally:
            await parts.aclose()


@admin.group("scaling-group")
def scaling_group() -> None:
    """Resource groups (Slurm partitions) and who may use them."""


@scaling_group.command("list")
@json_option
@click.pass_context
def scaling_group_list(ctx: click.Context, as_json: bool) -> None:
    from bridge.services.resource_groups import ResourceGroups

    async def go(db: Database, settings: BridgeSettings) -> list[dict[str, Any]]:
        groups = ResourceGroups(db, _Partitions(settings))
        live = await groups.live()
        out = []
        async with db.unit_of_work() as s:
            for row in await groups.rows(s):
                opened = await groups.associations(s, row.name)
                p = live.get(row.name)
                out.append({"name": row.name, "active": row.is_active, "slurm_state": p.state if p else "MISSING",
                            "nodes": p.total_nodes if p else 0, "domains": ",".join(opened["domain"]),
                            "projects": len(opened["group"]), "keypairs": len(opened["keypair"])})
        return out
    _table(_run(ctx, go), ("name", "active", "slurm_state", "nodes", "domains", "projects", "keypairs"), as_json)


def _association_command(associate: bool) -> Callable[..., None]:
    @click.argument("name")
    @click.option("--domain", "domain_name", default=None, help="A domain.")
    @click.option("--group", "project", default=None, help="A project, as DOMAIN/NAME or NAME in domain default.")
    @click.option("--keypair", "access_key", default=None, help="An access key.")
    @click.pass_context
    def change(ctx: click.Context, name: str, domain_name: str | None, project: str | None,
               access_key: str | None) -> None:
        from bridge.services.resource_groups import ResourceGroups

        given = [(k, v) for k, v in (("domain", domain_name), ("group", project), ("keypair", access_key)) if v]
        if len(given) != 1:
            raise click.UsageError("give exactly one of --domain, --group, --keypair")
        kind, target = given[0]

        async def go(db: Database, settings: BridgeSettings) -> None:
            groups = ResourceGroups(db, _Partitions(settings))
            async with db.unit_of_work() as s:
                ref = target
                if kind == "group":
                    dom, _, gname = target.rpartition("/")
                    g = await accounts.get_group(s, gname, dom or "default")
                    if g is None:
                        raise click.ClickException(f"no project {target}")
                    ref = g.id
                await (groups.associate if associate else groups.disassociate)(s, kind, name, ref)
        _run(ctx, go)
        click.echo(f"{name} {'opened to' if associate else 'closed to'} {kind} {target}")
    return change


scaling_group.command("associate", help="Open resource group NAME to a domain, project or keypair.")(
    _association_command(True))
scaling_group.command("disassociate", help="Close resource group NAME to a domain, project or keypair.")(
    _association_command(False))


@admin.group()
def preset() -> None:
    """Resource presets (what the launcher offers; /resource/presets)."""


@preset.command("list")
@json_option
@click.pass_context
def preset_list(ctx: click.Context, as_json: bool) -> None:
    async def go(db: Database, _s: BridgeSettings) -> list[dict[str, Any]]:
        async with db.unit_of_work() as s:
            return [{"name": p.name, "slots": p.resource_slots, "shared_memory": p.shared_memory}
                    for p in await accounts.list_presets(s)]
    _table(_run(ctx, go), ("name", "slots", "shared_memory"), as_json)


@preset.command("create")
@click.argument("name")
@click.option("--slot", "slots", multiple=True, required=True, help="KEY=VALUE, e.g. cpu=2, mem=4g (repeatable).")
@click.option("--shared-memory", default=None, help="e.g. 64m")
@click.pass_context
def preset_create(ctx: click.Context, name: str, slots: tuple[str, ...], shared_memory: str | None) -> None:
    from bridge.domain.resources import parse_binary_size, parse_slots

    pairs: dict[str, Any] = dict(s.split("=", 1) for s in slots if "=" in s)
    try:
        parse_slots(pairs)   # the same rules as a session's request
        shm = parse_binary_size(shared_memory) if shared_memory else None
    except ValueError as e:
        raise click.ClickException(str(e)) from None

    async def go(db: Database, settings: BridgeSettings) -> None:
        async with db.unit_of_work() as s:
            await _accounts(settings).create_preset(s, None, name, pairs, shm)
    _run(ctx, go)
    click.echo(f"resource preset {name} created")


@admin.group()
def maintenance() -> None:
    """Freeze the gateway (no new sessions) and let it run again."""


@maintenance.command("status")
@json_option
@click.pass_context
def maintenance_status(ctx: click.Context, as_json: bool) -> None:
    from bridge.services import settings_store

    async def go(db: Database, _s: BridgeSettings) -> dict[str, Any]:
        async with db.unit_of_work() as s:
            return await settings_store.get(s, settings_store.MANAGER_STATUS, {"status": "running"})
    state = _run(ctx, go)
    click.echo(json.dumps(state) if as_json else state["status"])


def _set_status(ctx: click.Context, status: str) -> None:
    from bridge.services import settings_store

    async def go(db: Database, _s: BridgeSettings) -> None:
        async with db.unit_of_work() as s:
            await settings_store.put(s, settings_store.MANAGER_STATUS, {"status": status})
    _run(ctx, go)


@maintenance.command("freeze")
@click.pass_context
def maintenance_freeze(ctx: click.Context) -> None:
    """Refuse new sessions (503 server-frozen); running ones go on (`PUT /manager/status` with force_kill
    ends them too)."""
    _set_status(ctx, "frozen")
    click.echo("frozen: new sessions are refused")


@maintenance.command("run")
@click.pass_context
def maintenance_run(ctx: click.Context) -> None:
    _set_status(ctx, "running")
    click.echo("running: new sessions are accepted")
