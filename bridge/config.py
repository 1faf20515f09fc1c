"""The one typed settings tree. Sources, lowest first: defaults, a TOML file, then BRIDGE_<SECTION>__<KEY>.

Nothing is built at import: roots call `load_settings()` and hand each adapter its own section.
The defaults are the embedded mode: SQLite in ./.bridge-dev and the local dev cluster.
"""

from __future__ import annotations

import os
import tomllib
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

DEV_ROOT = os.environ.get("BRIDGE_DEV_ROOT", "/srv/slurmroot")  # where `dev-cluster up` puts the root


class ServerSettings(BaseModel):
    host: str = Field("127.0.0.1", description="Address the API listens on.")
    port: int = Field(8090, ge=1, le=65535, description="Port the API listens on.")
    public_url: str | None = Field(None, description="URL clients use, when behind a proxy.")
    apps_domain: str | None = Field(
        None, description="Serve each session's web apps (Jupyter, ttyd...) on a host of their own, "
                          "<session id>-<app>.<apps_domain>, behind a wildcard DNS name and certificate for "
                          "*.<apps_domain> that point at the gateway. Unset: every app shares the gateway's origin "
                          "(path mode), where one user's notebook JavaScript can drive another user's apps open in "
                          "the same browser: single-user development only; production requires this.")
    max_body_bytes: int = Field(4 * 1024 * 1024, ge=1024, description="Largest request body of API routes "
                                "(JSON, GraphQL); larger ones get 413 before anything reads them.")
    max_upload_bytes: int = Field(64 * 1024**3, ge=1024, description="Largest request body of file uploads "
                                  "(`/session/{ref}/upload`) and of requests through the browser proxy.")
    metrics_token: SecretStr | None = Field(
        None, description="Serve GET /metrics (Prometheus text) to scrapers that send `Authorization: Bearer "
                          "<this token>`; unset: /metrics answers 404.")


class DatabaseSettings(BaseModel):
    url: str = Field(
        "sqlite+aiosqlite:///.bridge-dev/bridge.sqlite3",
        description="SQLAlchemy async URL: sqlite+aiosqlite:///path or postgresql+asyncpg://user:pw@host/db.",
    )
    echo: bool = Field(False, description="Log every SQL statement.")


class SshSettings(BaseModel):
    host: str = Field("127.0.0.1", description="Login node that runs the Slurm commands.")
    port: int = Field(22, ge=1, le=65535)
    identity_file: Path | None = Field(None, description="Private key the gateway logs in with.")
    known_hosts: Path | None = Field(
        None, description="known_hosts file; required: host keys are always checked."
    )
    service_user: str = Field("root", description="Login for commands not run as a mapped user.")
    connect_timeout_s: float = Field(10.0, gt=0)


class SlurmCliSettings(BaseModel):
    transport: Literal["local", "ssh"] = Field("local", description="Run the commands here or on a login node.")
    prefix: list[str] = Field(
        default_factory=list,
        description="argv prepended to every command, e.g. ['chroot', '/srv/slurmroot'] for the dev cluster.",
    )
    user_switch: Literal["runuser", "sudo", "none"] = Field(
        "runuser", description="How a command is run as the mapped Unix user (local transport)."
    )
    bin_dir: str = Field("", description="Directory of the Slurm binaries; empty means PATH.")


class SlurmRestSettings(BaseModel):
    url: str = Field("http://127.0.0.1:7820", description="slurmrestd base URL.")
    api_version: str = Field("v0.0.42", description="data_parser version the gateway speaks.")
    jwt_key_file: Path | None = Field(
        None, description="Slurm's jwt_hs256.key: the gateway signs short-lived per-user tokens with it."
    )
    jwt_lifespan_s: int = Field(600, ge=30)
    timeout_s: float = Field(30.0, gt=0)


class SlurmSettings(BaseModel):
    driver: Literal["cli", "rest"] = Field("cli", description="Which Slurm adapter the gateway uses.")
    cluster: str = Field("devcluster", description="Slurm cluster name (sacctmgr, sacct).")
    default_partition: str = Field("debug", description="Partition for sessions that name no resource group.")
    command_timeout_s: float = Field(60.0, gt=0)
    job_tag_prefix: str = Field(
        "bridge:", max_length=48, pattern=r"^[A-Za-z0-9._:-]+$",
        description="Comment prefix that marks the jobs this gateway owns. Unique per gateway, and no prefix of "
                    "another's: at start-up a gateway cancels tagged jobs its database does not know.")
    notify_secret: str = Field(
        "", description="Shared with slurm_plugins/ (docs/slurm-plugins.md). bridge_notify.py (PrologSlurmctld/"
                        "EpilogSlurmctld): its signed notices that a job of ours started or ended make the watcher "
                        "look at once. job_submit.lua: the gateway signs its job tags with it, and the plugin "
                        "refuses a job whose tag does not check. Empty: both off (the watcher polls alone).")
    cli: SlurmCliSettings = SlurmCliSettings()
    rest: SlurmRestSettings = SlurmRestSettings()


class IdleSettings(BaseModel):
    """Site defaults of the idle checks (docs/sessions.md#utilization-and-idle-checks). A keypair resource
    policy's `idle_timeout` / `max_session_lifetime` win when positive; 0 there means none; a negative value
    (or a keypair without a policy) takes these."""

    idle_timeout_s: float = Field(0.0, ge=0, description="An interactive session with no traffic through its "
                                                         "tunnels, terminal or apps this long is terminated "
                                                         "(idle-timeout). 0: never.")
    max_session_lifetime_s: float = Field(0.0, ge=0, description="A session running this long is terminated "
                                                                 "(idle-session-lifetime). 0: never.")
    utilization_thresholds: dict[str, float] = Field(
        default_factory=dict, description="Minimum average utilization in percent over utilization_window_s, "
                                          "per metric (cpu_util: of the allocated CPUs, mem: of the allocated "
                                          "memory, cuda_util, cuda_mem where measured); empty: no check.")
    utilization_window_s: float = Field(600.0, gt=0, description="The window the averages are taken over.")
    utilization_grace_s: float = Field(300.0, ge=0, description="No utilization check this long after start.")
    utilization_operator: Literal["and", "or"] = Field(
        "and", description="and: idle when every metric is below its threshold; or: when any is.")


class SessionSettings(BaseModel):
    work_root: str = Field(
        "/srv/shared/bridge",
        description="Shared directory (on the compute nodes' file system) under which each user's session "
                    "folders are made, as <work_root>/<unix user>/<session id>; must allow users to create "
                    "their own subfolder (mode 1777 like /tmp).",
    )
    image_dir: str = Field("/srv/images", description="Where kernel images (SIF files or sandboxes) live.")
    images: dict[str, str] = Field(
        default_factory=dict, description="Image reference or alias -> image path, beside image_dir lookups.")
    default_mem: str = Field("1g", description="Memory of a kernel that asks for none.")
    shards_per_gpu: int = Field(0, ge=0, description="gres/shard units the site configures per GPU; cuda.shares "
                                                     "becomes that many shards per share. 0: fractional GPUs "
                                                     "are refused.")
    watcher_floor_s: float = Field(0.5, gt=0, description="Shortest interval between two looks at Slurm.")
    watcher_max_s: float = Field(10.0, gt=0, description="Longest interval when nothing changes.")
    lost_after_s: float = Field(300.0, gt=0, description="A job missing from squeue and sacct this long is lost.")
    max_wait_s: float = Field(3600.0, gt=0, description="Cap on how long a create request waits for RUNNING.")
    cluster_timeout_s: int = Field(300, gt=0, description="How long the kernels of a cluster session wait for each "
                                   "other once the job has started, before the session fails naming the missing.")
    defer_when_unavailable: bool = Field(
        False, description="While Slurm is unreachable, accept every new session as PENDING (as enqueueOnly "
                           "requests are) and submit it once when Slurm answers again, instead of answering 503.")
    callback_url: str | None = Field(
        None, description="Base URL at which jobs on the compute nodes reach the gateway (kernel runners "
                          "report their port there). Default: server.public_url, else http://<host>:<port>.")
    callback_allowed_networks: list[str] = Field(
        default_factory=list, description="Networks (CIDR) a session's callback_url may reach although they are "
                                          "private, loopback or link-local (refused otherwise), e.g. a workflow "
                                          "engine inside the site: [\"10.1.2.0/24\"].")
    kernel_ready_timeout_s: float = Field(120.0, gt=0, description="How long code execution waits for a "
                                                                   "kernel runner to report after RUNNING.")
    reports_from_node: bool = Field(
        True, description="Refuse a kernel runner's report unless it comes from the address of the node it "
                          "names, one of its job's. Turn off only where reports reach the gateway through a "
                          "proxy or NAT that hides the node's address.")
    stats_interval_s: float = Field(
        10.0, gt=0, description="How often live utilization is read for all running sessions (ONE sstat call), "
                                "and the idle checks run.")
    stats_as: Literal["gateway", "owner"] = Field(
        "gateway", description="Who runs sstat: `gateway`, its own identity, one call for every running job "
                               "(root or SlurmUser may read every job's step statistics); `owner`, one call per "
                               "Unix user with running sessions, for a gateway without that right.")
    idle: IdleSettings = IdleSettings()
    kernel_network: Literal["node", "private"] = Field(
        "node", description="The network of an interactive session's kernel (its code, startup command, "
                            "preopen ports and services): `node`, the compute node's, with the network beyond it; "
                            "`private`, a network namespace of its own (Apptainer --network none) whose loopback "
                            "no other user of the node reaches, but with no network beyond it. The gateway then "
                            "reaches the kernel through a relay on the node.")
    service_network: Literal["private", "node"] = Field(
        "private", description="Where an image-defined TCP service listens: `private`, on the loopback of a "
                               "network namespace of its own (no other process of the node reaches it; it has "
                               "no network beyond that loopback); `node`, on the node's loopback, where other "
                               "users of the node can reach it too, for services that need the network.")


class ImageSettings(BaseModel):
    cache_dir: str = Field("", description="Where images pulled from registries are kept, one per manifest digest "
                                           "(on storage the compute nodes share); empty: <sessions.image_dir>/.cache.")
    insecure_registries: list[str] = Field(default_factory=list, description="Registries (host:port, shell "
                                                                              "patterns) spoken to over plain HTTP.")
    pull_on_create: list[str] = Field(default_factory=list, description="Registries from which a session may name "
                                      "an image directly (docker://..., oras://...), as host:port shell patterns; "
                                      "\"*\" for any; empty: only images an admin imported.")
    pull_timeout_s: float = Field(1800.0, gt=0, description="Longest time one pull may take.")
    max_pulls: int = Field(4, ge=1, description="Pulls that run at once on the site; more wait their turn "
                                                "(their sessions stay PULLING).")
    max_pulls_per_user: int = Field(2, ge=1, description="Pulls of images not yet in the cache that one user may "
                                                         "have started and not finished; a session naming one "
                                                         "more is refused (429) until one ends. Joining a pull "
                                                         "that is already running does not count.")
    pull_user: str | None = Field(
        None, description="Unix user that pulls and builds registry images (an unprivileged account that owns "
                          "cache_dir, e.g. a dedicated `bridge-pull`); unset: the gateway's own user. A registry's "
                          "layers are untrusted input to the builder: production requires this.")


class StorageSettings(BaseModel):
    hosts: dict[str, str] = Field(
        default_factory=lambda: {"local": "/srv/shared/vfolders"},
        description="Storage hosts (volumes) for virtual folders: name -> a directory on a file system the login "
                    "and compute nodes share, where users may create their own subfolder (mode 1777). Each user's "
                    "folders live in <path>/<unix user>/<folder id>, owned by that user.")
    default_host: str = Field("local", description="The host a folder is created on when none is named.")
    transfer_port: int | None = Field(
        None, ge=0, le=65535, description="Serve folder uploads and downloads on a port of their own (on server.host; "
        "0: any free port), which moves the bytes between socket and file inside the kernel (splice, sendfile): "
        "several times the throughput of the API port. Plain HTTP: put it behind TLS (transfer_url) where the "
        "network between clients and gateway is not trusted. Unset: transfers go through the API port.")
    transfer_url: str | None = Field(
        None, description="The transfer port's URL as clients reach it (a TLS proxy in front of it); unset: "
                          "http://<the API's host as the client named it>:<transfer_port>.")


class TunnelSettings(BaseModel):
    transport: Literal["direct", "ssh"] = Field(
        "direct", description="How the gateway reaches kernel runners and service ports on compute nodes: "
                              "directly (the compute network is routable) or by SSH port forwarding.")
    via: Literal["login", "node"] = Field(
        "login", description="ssh transport: forward through the login node (ssh.host) or the compute node itself "
                             "(its sshd on ssh.port); the gateway logs in as the session's mapped user.")
    partitions: dict[str, Literal["direct", "ssh"]] = Field(
        default_factory=dict, description="Per resource group (partition) override of `transport`.")


class AuthSettings(BaseModel):
    max_clock_skew_s: int = Field(900, ge=0, description="Allowed difference between Date and server time.")
    rate_limit_per_window: int = Field(30000, ge=1, description="Requests per access key per window.")
    rate_limit_window_s: int = Field(900, ge=1)


class AccountSettings(BaseModel):
    slurm_sync: bool = Field(
        False, description="Keep Slurm in step with projects changed through the API or `bai-bridge admin`: a "
                           "project's Slurm account is created (sacctmgr), each member gets an association, and the "
                           "project's total_resource_slots become the account's GrpTRES. The gateway's Slurm user "
                           "must then be a Slurm operator. Off: the site manages sacctmgr itself.")
    unix_uid_min: int = Field(1000, ge=1, description="Lowest uid a user may be mapped to through the API: system "
                                                       "accounts (daemon, slurm, munge...) lie outside the range.")
    unix_uid_max: int = Field(59999, ge=1, description="Highest uid a user may be mapped to through the API.")
    domain_unix_groups: dict[str, str] = Field(
        default_factory=dict,
        description="Domain name -> Unix group. A domain admin may map the users of that domain only to Unix "
                    "accounts in this group (primary or supplementary, as `getent` on the cluster says). Without "
                    "an entry, only a superadmin (or `bai-bridge admin` on the gateway host) maps users to Unix "
                    "accounts: a domain admin could otherwise make any unmapped account of the site theirs.")


class DevSettings(BaseModel):
    root: Path = Field(Path(DEV_ROOT), description="Where the dev cluster's Debian trixie root lives.")
    state_dir: Path = Field(Path(".bridge-dev"), description="pids, logs and the env file of `dev up`.")


class LogSettings(BaseModel):
    level: str = Field("INFO")
    format: Literal["text", "json"] = Field(
        "text", description="text: one line per record; json: one JSON object per line (time, level, logger, "
                            "message, request_id, exception) for a log collector.")


class BridgeSettings(BaseSettings):
    """The gateway's whole configuration; `bai-bridge config schema` prints it."""

    model_config = SettingsConfigDict(env_prefix="BRIDGE_", env_nested_delimiter="__", extra="forbid")

    mode: Literal["dev", "production"] = Field("dev", description="production refuses unsafe settings.")
    secret: SecretStr = Field(SecretStr("dev-insecure-secret"), description="Signs internal tokens.")
    server: ServerSettings = ServerSettings()
    database: DatabaseSettings = DatabaseSettings()
    slurm: SlurmSettings = SlurmSettings()
    ssh: SshSettings = SshSettings()
    auth: AuthSettings = AuthSettings()
    accounts: AccountSettings = AccountSettings()
    sessions: SessionSettings = SessionSettings()
    tunnels: TunnelSettings = TunnelSettings()
    images: ImageSettings = ImageSettings()
    storage: StorageSettings = StorageSettings()
    dev: DevSettings = DevSettings()
    log: LogSettings = LogSettings()

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # init (the TOML file, passed by load_settings) < environment: env vars win over the file.
        return (env_settings, init_settings)

    def kernel_callback_base(self) -> str:
        if self.sessions.callback_url:
            return self.sessions.callback_url.rstrip("/")
        if self.server.public_url:
            return self.server.public_url.rstrip("/")
        host = "127.0.0.1" if self.server.host in ("0.0.0.0", "::") else self.server.host
        return f"http://{host}:{self.server.port}"

    @field_validator("secret")
    @classmethod
    def _secret_not_empty(cls, v: SecretStr) -> SecretStr:
        if not v.get_secret_value():
            raise ValueError("secret must not be empty")
        return v

    @model_validator(mode="after")
    def _production_is_safe(self) -> BridgeSettings:
        if self.mode != "production":
            return self
        problems = []
        if self.secret.get_secret_value() == "dev-insecure-secret":
            problems.append("secret is the dev default")
        uses_ssh = self.slurm.cli.transport == "ssh" or "ssh" in (self.tunnels.transport,
                                                                  *self.tunnels.partitions.values())
        if uses_ssh and self.ssh.known_hosts is None:
            problems.append("ssh.known_hosts is required")
        if self.slurm.cli.user_switch == "none":
            problems.append('slurm.cli.user_switch = "none" would run every job as the gateway\'s own user')
        if not (self.server.public_url or "").startswith("https://"):
            problems.append("server.public_url must be an https:// URL (signatures do not cover request bodies: "
                            "only TLS keeps them whole)")
        problems += sqlite_file_problems(self.database.url)
        if not self.server.apps_domain:
            problems.append("server.apps_domain is required: without it every user's apps share one origin")
        if not self.images.pull_user:
            problems.append("images.pull_user is required: registry images must not be built as the gateway's user")
        if self.storage.transfer_port is not None and not (self.storage.transfer_url or "").startswith("https://"):
            problems.append("storage.transfer_url must be the https:// URL of a TLS proxy in front of "
                            "storage.transfer_port (the transfer links carry their token in the URL)")
        if problems:
            raise ValueError("unsafe production settings: " + "; ".join(problems))
        return self


def sqlite_file_problems(url: str) -> list[str]:
    """A SQLite database holds every credential (sealed, but with the key one `secret` away): its file must
    be the gateway's alone, in a folder nobody else may write to."""
    if not url.startswith("sqlite") or ":memory:" in url:
        return []
    path = Path(url.split(":///", 1)[-1])
    problems = []
    if path.exists() and path.stat().st_mode & 0o077:
        problems.append(f"the database file {path} is open to group or others (mode {path.stat().st_mode & 0o777:o})")
    if path.parent.exists() and path.parent.stat().st_mode & 0o022:
        problems.append(f"the database folder {path.parent} is writable by group or others")
    return problems


def load_settings(path: str | os.PathLike[str] | None = None, **overrides: Any) -> BridgeSettings:
    """Read the TOML file at `path` (or $BRIDGE_CONFIG), then the environment."""
    path = path or os.environ.get("BRIDGE_CONFIG")
    data: dict[str, Any] = {}
    if path:
        with open(path, "rb") as f:
            data = tomllib.load(f)
    data.update(overrides)
    return BridgeSettings(**data)


def dev_cluster_overrides(root: Path = Path(DEV_ROOT)) -> dict[str, Any]:
    """Settings that point the gateway at the local dev cluster (`bai-bridge dev-cluster up`)."""
    return {
        "slurm": {
            "cli": {"prefix": ["chroot", str(root)], "user_switch": "runuser"},
            "rest": {"jwt_key_file": str(root / "var/spool/slurmctld/jwt_hs256.key")},
        },
        # testbed.sh: BRIDGE_DEV_SHARDS; callbacks to this machine's own loopback (the tests listen there)
        "sessions": {"shards_per_gpu": 4, "callback_allowed_networks": ["127.0.0.0/8"]},
        "images": {"pull_user": "nobody"},    # testbed.sh gives it /srv/images/.cache
        "accounts": {"slurm_sync": True},    # the dev cluster's root runs sacctmgr as a Slurm admin
        "ssh": {
            "host": "127.0.0.1",
            "port": 2222,
            "identity_file": str(root / "etc/bridge/gateway_ed25519"),
            "known_hosts": str(root / "etc/bridge/known_hosts"),
        },
    }
