"""`bai-bridge`: serve the API, migrate the database, run the dev cluster and dev environment, administer."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import TextIO

import click

from bridge import __version__
from bridge.cli_settings import settings_of
from bridge.config import BridgeSettings

_settings = settings_of


@click.group()
@click.version_option(__version__, prog_name="bai-bridge")
@click.option("--config", "config", type=click.Path(dir_okay=False), envvar="BRIDGE_CONFIG",
              help="TOML configuration file (env: BRIDGE_CONFIG).")
@click.pass_context
def main(ctx: click.Context, config: str | None) -> None:
    """bridge: the Backend.AI manager API on a Slurm cluster."""
    ctx.ensure_object(dict)["config"] = config


@main.command()
@click.pass_context
def serve(ctx: click.Context) -> None:
    """Run the API server."""
    import uvicorn

    from bridge import logs
    from bridge.api import access_log
    from bridge.api.app import create_app

    settings = _settings(ctx)
    logs.configure(settings.log.level, settings.log.format)
    access_log.install()
    _larger_request_reads()
    # WebSocket pings keep idle tunnels (a Jupyter tab left open) alive through proxies and NAT; tunnels
    # carry raw TCP, mostly compressed or encrypted already, so per-message deflate only costs CPU
    uvicorn.run(create_app(settings), host=settings.server.host, port=settings.server.port, log_config=None,
                log_level=settings.log.level.lower(), proxy_headers=False, ws_ping_interval=20.0,
                ws_ping_timeout=60.0, ws_per_message_deflate=False)


def _larger_request_reads(limit: int = 1 << 20) -> None:
    """uvicorn stops reading a request body once 64 KiB wait for the app, and hands the app what waited: a
    1 GiB upload then costs some 16,000 pause/resume rounds, and the gateway, not the disk, sets the pace
    (230 MB/s measured). 1 MiB per connection makes those rounds 16 times fewer. uvicorn has no setting for
    it, so its module constant is raised before the server starts (checked in tests/unit/test_serve.py)."""
    from uvicorn.protocols.http import flow_control, h11_impl, httptools_impl

    for module in (flow_control, h11_impl, httptools_impl):
        if getattr(module, "HIGH_WATER_LIMIT", None) is not None:
            module.HIGH_WATER_LIMIT = limit   # type: ignore[attr-defined]


@main.group()
def db() -> None:
    """Database schema (Alembic)."""


@db.command("upgrade")
@click.argument("revision", default="head")
@click.pass_context
def db_upgrade(ctx: click.Context, revision: str) -> None:
    """Apply migrations up to REVISION (default: head)."""
    from bridge.adapters.db import engine

    url = _settings(ctx).database.url
    before = engine.current_revision(url)
    engine.upgrade(url, revision)
    if revision == "head":
        asyncio.run(_ensure_defaults(_settings(ctx)))
    now = engine.current_revision(url)
    # the last word says whether anything changed (the Ansible role's changed_when reads it)
    change = "unchanged" if now == before else f"from {before or 'none'}"
    click.echo(f"database at revision {now} ({change})")


async def _ensure_defaults(settings: BridgeSettings) -> None:
    """The `default` domain and keypair resource policy every fresh installation starts with."""
    from bridge.services import accounts
    from bridge.wiring import Parts

    parts = Parts(settings)
    try:
        async with parts.db.unit_of_work() as s:
            await accounts.ensure_domain(s, "default", "the default domain")
            await accounts.ensure_policy(s, "default")
    finally:
        await parts.aclose()


@db.command("downgrade")
@click.argument("revision")
@click.pass_context
def db_downgrade(ctx: click.Context, revision: str) -> None:
    """Revert migrations down to REVISION (`base` empties the schema)."""
    from bridge.adapters.db import engine

    url = _settings(ctx).database.url
    engine.downgrade(url, revision)
    click.echo(f"database at revision {engine.current_revision(url)}")


@db.command("current")
@click.pass_context
def db_current(ctx: click.Context) -> None:
    from bridge.adapters.db import engine

    click.echo(engine.current_revision(_settings(ctx).database.url) or "empty")


@main.group()
def config() -> None:
    """Inspect the configuration."""


@config.command("check")
@click.pass_context
def config_check(ctx: click.Context) -> None:
    """Validate the configuration and print it (secrets masked)."""
    click.echo(_settings(ctx).model_dump_json(indent=2))


@config.command("schema")
def config_schema() -> None:
    """Print the JSON schema of the configuration: every key, its default and description."""
    click.echo(json.dumps(BridgeSettings.model_json_schema(), indent=2))


@main.command("systemd-units")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=Path("."), show_default=True,
              help="Where to write the unit files (e.g. /etc/systemd/system).")
@click.option("--venv", type=click.Path(file_okay=False, path_type=Path),
              help="The gateway's venv (default: this one).")
@click.option("--user", default="root", show_default=True, help="The account the gateway runs as.")
@click.option("--secret-file", help="An EnvironmentFile with BRIDGE_SECRET and other secrets (mode 600).")
@click.option("--home-root", default="/home", show_default=True, help="Where users' homes are (dotfiles go there).")
@click.option("--webui-venv", type=click.Path(file_okay=False, path_type=Path), help="The webserver's venv.")
@click.option("--webui-config", type=click.Path(dir_okay=False, path_type=Path), help="The webserver's webserver.conf.")
@click.option("--webui-user", default="bai-webui", show_default=True)
@click.pass_context
def systemd_units(ctx: click.Context, out: Path, venv: Path | None, user: str, secret_file: str | None,
                  home_root: str, webui_venv: Path | None, webui_config: Path | None, webui_user: str) -> None:
    """Write systemd units for this configuration: bai-bridge.service (and bai-bridge-webui.service)."""
    from bridge import units

    config = ctx.obj.get("config")
    if not config:
        raise click.UsageError("name the configuration: bai-bridge --config PATH systemd-units")
    rendered = units.render(_settings(ctx), config=Path(config), venv=venv, user=user, secret_file=secret_file,
                            home_root=home_root, webui_venv=webui_venv, webui_config=webui_config,
                            webui_user=webui_user)
    out.mkdir(parents=True, exist_ok=True)
    for name, text in rendered.items():
        (out / name).write_text(text)
        click.echo(out / name)


@main.command("webui-config")
@click.option("--endpoint", required=True, help="The gateway's URL as the webserver reaches it.")
@click.option("--port", type=int, default=8080, show_default=True, help="Where the WebUI listens.")
@click.option("--host", default="127.0.0.1", show_default=True, help="The address it listens on (behind TLS).")
@click.option("--redis", default="127.0.0.1:6379", show_default=True, help="host:port of its Redis.")
@click.option("--no-ssl-verify", is_flag=True, help="Do not check the gateway's certificate.")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), required=True,
              help="The webserver.conf to write (left alone when it already says this).")
def webui_config(endpoint: str, port: int, host: str, redis: str, no_ssl_verify: bool, out: Path) -> None:
    """Write the official backend.ai-webserver's configuration for this gateway (docs/webui.md)."""
    from bridge import units

    text = units.webserver_config(endpoint=endpoint, port=port, redis=redis, host=host, ssl_verify=not no_ssl_verify)
    if out.exists() and out.read_text() == text:
        click.echo(f"{out} (unchanged)")
        return
    out.write_text(text)
    click.echo(out)


@main.group("dev-cluster")
def dev_cluster() -> None:
    """The local test cluster: real Slurm 24.11, slurmdbd, slurmrestd and Apptainer (needs root)."""


@dev_cluster.command("up")
def dev_cluster_up() -> None:
    """Install (first time, cached after), start what does not serve, check every daemon; idempotent.

    A daemon that does not come up is named with the end of its own log; packages that differ from
    the tested versions (bridge/devcluster/tested-versions.txt) are listed."""
    from bridge.devcluster import testbed

    testbed("up")


@dev_cluster.command("down")
def dev_cluster_down() -> None:
    """Stop every daemon and unmount the root (the installed root stays, for a fast next `up`)."""
    from bridge.devcluster import testbed

    testbed("down")


@dev_cluster.command("status")
def dev_cluster_status() -> None:
    """Show which daemons serve, and what differs from the tested versions; exit 1 if any does not serve."""
    from bridge.devcluster import testbed

    raise SystemExit(testbed("status", check=False))


@dev_cluster.command("versions")
@click.option("--record", is_flag=True, help="Rewrite tested-versions.txt from what is installed (after a green run).")
def dev_cluster_versions(record: bool) -> None:
    """The versions of the cluster's packages (in the root and on the host), and their drift."""
    from bridge.devcluster import testbed

    raise SystemExit(testbed("record-versions" if record else "versions", check=False))


@dev_cluster.command("reset")
def dev_cluster_reset() -> None:
    """Cancel every job and return every node to service (a clean slate for tests)."""
    from bridge.devcluster import testbed

    raise SystemExit(testbed("reset", check=False))


@dev_cluster.command("enter", context_settings={"ignore_unknown_options": True})
@click.argument("argv", nargs=-1, type=click.UNPROCESSED)
def dev_cluster_enter(argv: tuple[str, ...]) -> None:
    """Run a command inside the cluster's root (pivot_root), e.g. `enter sinfo`."""
    from bridge.devcluster import testbed

    raise SystemExit(testbed("enter", *(argv or ("bash",)), check=False))


@main.group()
def dev() -> None:
    """The dev environment: cluster + gateway in the background + keys in .bridge-dev/env."""


@dev.command("up")
@click.option("--state-dir", type=click.Path(file_okay=False, path_type=Path), default=Path(".bridge-dev"))
@click.option("--port", type=int, default=8090, show_default=True)
@click.option("--no-first-session", "--no-first-job", "no_first", is_flag=True, help="Skip the first session.")
@click.option("--apps-domain", default=None, help="Serve apps on hosts of their own under this domain "
              "(server.apps_domain); the names must resolve to this machine (a browser's host resolver rules).")
@click.option("--slurm-driver", type=click.Choice(["cli", "rest"]), default="cli", show_default=True,
              help="How the gateway talks to Slurm: its commands with --json, or slurmrestd (slurm.driver).")
@click.option("--webui-port", type=int, default=8099, show_default=True,
              help="Where the official webserver (the WebUI) listens; 0: a free port.")
@click.option("--no-webui", is_flag=True, help="Do not start the WebUI (the official webserver and its Redis).")
def dev_up_cmd(state_dir: Path, port: int, no_first: bool, apps_domain: str | None, slurm_driver: str,
               webui_port: int, no_webui: bool) -> None:
    """Bring up the dev cluster and a gateway (and the WebUI in front of it, where installed), write
    .bridge-dev/env, and run a first session."""
    from bridge.devcluster.devenv import dev_up

    dev_up(state_dir, port, run_first_session=not no_first, apps_domain=apps_domain, slurm_driver=slurm_driver,
           webui_port=None if no_webui else webui_port)


@dev.command("down")
@click.option("--state-dir", type=click.Path(file_okay=False, path_type=Path), default=Path(".bridge-dev"))
def dev_down_cmd(state_dir: Path) -> None:
    """Stop what `dev up` started (by pid): the gateway, and the cluster if `dev up` started it."""
    from bridge.devcluster.devenv import dev_down

    dev_down(state_dir)


@main.group()
def slurm() -> None:
    """Talk to Slurm through the configured adapter (for operators checking a site)."""


@slurm.command("jobs")
@click.option("--driver", type=click.Choice(["cli", "rest"]), default=None)
@click.option("--user", default=None)
@click.pass_context
def slurm_jobs(ctx: click.Context, driver: str | None, user: str | None) -> None:
    """List jobs known to slurmctld, one JSON object per line."""
    from bridge.wiring import Parts

    settings = _settings(ctx)
    if driver:
        settings.slurm.driver = "rest" if driver == "rest" else "cli"

    async def run() -> None:
        parts = Parts(settings)
        try:
            for j in await parts.slurm.jobs(user=user):
                click.echo(json.dumps({"job_id": j.job_id, "name": j.name, "state": j.state.value,
                                       "reason": j.reason, "user": j.user, "nodes": list(j.nodes)}))
        finally:
            await parts.aclose()

    asyncio.run(run())


@main.command("open")
@click.argument("session")
@click.argument("app", default="jupyter")
@click.option("--browser", is_flag=True, help="Also open the URL in this machine's web browser.")
def open_app(session: str, app: str, browser: bool) -> None:
    """Print a browser URL for APP (default jupyter) of SESSION, through the gateway's HTTP proxy.

    The URL carries a short-lived token that the browser trades for a cookie; it opens the app for whoever
    follows it within 5 minutes, so treat it like a password. Uses BACKEND_ENDPOINT and your keys."""
    from bridge.client.api import ApiError, BackendAIClient

    client = BackendAIClient.from_env()
    try:
        url = client.request("POST", f"/session/{session}/start-service", {"app": app})["url"]
    except ApiError as e:
        raise click.ClickException(str(e)) from None
    click.echo(url)
    if browser:
        import webbrowser

        webbrowser.open(url)


@main.command()
@click.argument("script", type=click.File("r"))
@click.option("--image", default=None, help="Kernel image (else `#BAI image=...` in the script, else python).")
@click.option("--group", "-g", default=None, help="Project (else the one whose Slurm account is #SBATCH -A).")
@click.option("--name", "-J", default=None, help="Session name (else #SBATCH --job-name).")
@click.option("--wait", is_flag=True, help="Wait for the end, print the output, exit with the job's code.")
def sbatch(script: TextIO, image: str | None, group: str | None, name: str | None,
           wait: bool) -> None:
    """Submit an #SBATCH script as a Backend.AI batch session; prints the session id.

    Supported directives: --nodes, --time, --partition, --account, --job-name, --output, --cpus-per-task,
    --mem, --gres=gpu:N / --gpus, --begin, --dependency=afterok:SESSION. Uses BACKEND_ENDPOINT,
    BACKEND_ACCESS_KEY and BACKEND_SECRET_KEY, like the backend.ai client.
    """
    import time as _time

    from bridge.client import sbatch as sb
    from bridge.client.api import ApiError, BackendAIClient

    parsed = sb.parse(script.read())
    for w in parsed.warnings:
        click.echo(f"warning: {w}", err=True)
    client = BackendAIClient.from_env()
    try:
        if group is None and parsed.options.get("account"):
            account = parsed.options["account"]
            data = client.request("POST", "/admin/gql", {"query": "query { groups { name slurm_account } }"})
            matches = [g["name"] for g in data["data"]["groups"] or [] if account in (g["slurm_account"], g["name"])]
            if not matches:
                raise click.ClickException(f"no project of yours is charged to Slurm account {account}")
            group = matches[0]
        body = sb.to_session(parsed, image=image, group=group, name=name)
        created = client.request("POST", "/session", body)
    except (ApiError, ValueError) as e:
        raise click.ClickException(str(e)) from None
    sid = created["sessionId"]
    click.echo(sid)
    if not wait:
        return
    while True:
        info = client.request("GET", f"/session/{sid}")
        if info["status"] in ("TERMINATED", "CANCELLED", "ERROR"):
            break
        _time.sleep(1)
    click.echo(client.request("GET", f"/session/{sid}/logs")["result"]["logs"], nl=False)
    click.echo(f"session {sid}: {info['status']} {info.get('statusInfo') or ''} {info.get('result') or ''}",
               err=True)
    raise SystemExit(info.get("exitCode") or (0 if info.get("result") != "FAILURE" else 1))


def _register() -> None:
    from bridge.cli_admin import admin

    main.add_command(admin)


_register()
