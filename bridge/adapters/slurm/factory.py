"""Builds the configured SlurmClient, its CommandRunner and the Slurm accounting (sacctmgr). Called by the
roots (CLI, app) only."""

from __future__ import annotations

from bridge.adapters.runner import CommandRunner, LocalRunner, SshRunner
from bridge.adapters.slurm.accounting import CliSlurmAccounting
from bridge.adapters.slurm.base import SlurmClient
from bridge.adapters.slurm.cli import CliSlurmClient
from bridge.adapters.slurm.rest import RestSlurmClient
from bridge.adapters.slurm.stepstats import SlurmStepStats
from bridge.config import BridgeSettings


def build_runner(settings: BridgeSettings, transport: str | None = None) -> CommandRunner:
    transport = transport or settings.slurm.cli.transport
    if transport == "ssh":
        s = settings.ssh
        return SshRunner(s.host, s.port, identity_file=s.identity_file, known_hosts=s.known_hosts,
                         service_user=s.service_user, connect_timeout_s=s.connect_timeout_s)
    return LocalRunner(settings.slurm.cli.prefix, settings.slurm.cli.user_switch)


def build_slurm_client(settings: BridgeSettings, driver: str | None = None,
                       transport: str | None = None) -> SlurmClient:
    driver = driver or settings.slurm.driver
    if driver == "rest":
        r = settings.slurm.rest
        return RestSlurmClient(r.url, jwt_key_file=r.jwt_key_file, api_version=r.api_version,
                               jwt_lifespan_s=r.jwt_lifespan_s, timeout_s=r.timeout_s)
    return CliSlurmClient(build_runner(settings, transport), bin_dir=settings.slurm.cli.bin_dir,
                          timeout_s=settings.slurm.command_timeout_s)


def build_accounting(settings: BridgeSettings, runner: CommandRunner | None = None) -> CliSlurmAccounting:
    return CliSlurmAccounting(runner or build_runner(settings), cluster=settings.slurm.cluster,
                              bin_dir=settings.slurm.cli.bin_dir, timeout_s=settings.slurm.command_timeout_s)


def build_step_stats(settings: BridgeSettings, runner: CommandRunner | None = None) -> SlurmStepStats:
    """Live utilization (sstat) of many jobs per call, through the CLI runner whatever the driver:
    slurmrestd has no step statistics."""
    return SlurmStepStats(runner or build_runner(settings), bin_dir=settings.slurm.cli.bin_dir,
                          timeout_s=settings.slurm.command_timeout_s)
