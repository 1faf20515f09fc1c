"""The settings of a `bai-bridge` command: read once per invocation (from --config / BRIDGE_CONFIG and the
environment), shared by the main CLI and its `admin` group."""

from __future__ import annotations

import click

from bridge.config import BridgeSettings, load_settings


def settings_of(ctx: click.Context) -> BridgeSettings:
    obj = ctx.ensure_object(dict)
    if "settings" not in obj:
        try:
            obj["settings"] = load_settings(obj.get("config"))
        except Exception as e:  # pydantic ValidationError, TOML errors, missing file
            raise click.ClickException(f"invalid configuration: {e}") from e
    settings: BridgeSettings = obj["settings"]
    return settings
