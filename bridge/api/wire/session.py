"""The JSON of `POST /session` as every client version sends it (client-compat.md §5.3). Unknown keys are
ignored; each known key is checked for its type, and a bad value is a 400 naming the field."""

from __future__ import annotations

from typing import Any

from pydantic import AliasChoices, BaseModel, ConfigDict, Field, field_validator

from bridge.domain.session import SessionRequest


class CreationConfig(BaseModel):
    model_config = ConfigDict(extra="ignore")

    mounts: list[str] | None = None
    mount_map: dict[str, str] | None = None
    environ: dict[str, str] | None = None
    resources: dict[str, Any] | None = None
    resource_opts: dict[str, Any] | None = None
    scaling_group: str | None = Field(None, validation_alias=AliasChoices("scaling_group", "scalingGroup"))
    preopen_ports: list[int] | None = None
    cluster_size: int | None = Field(None, validation_alias=AliasChoices("clusterSize", "cluster_size"))

    @field_validator("environ", mode="before")
    @classmethod
    def _env_values_are_strings(cls, v: Any) -> Any:
        if isinstance(v, dict):
            return {k: str(val) if isinstance(val, int | float | bool) else val for k, val in v.items()}
        return v


class CreateSession(BaseModel):
    model_config = ConfigDict(extra="ignore", populate_by_name=True)

    name: str | None = Field(None, validation_alias=AliasChoices("name", "clientSessionToken", "sessionName"))
    image: str | None = Field(None, validation_alias=AliasChoices("image", "lang"))
    type: str = Field("interactive", validation_alias=AliasChoices("type", "sessionType", "session_type"))
    group: str = Field("default", validation_alias=AliasChoices("group", "group_name", "groupName"))
    domain: str = Field("default", validation_alias=AliasChoices("domain", "domain_name", "domainName"))
    config: CreationConfig = CreationConfig()
    cluster_size: int | None = Field(None, validation_alias=AliasChoices("clusterSize", "cluster_size"))
    cluster_mode: str = Field("single-node", validation_alias=AliasChoices("clusterMode", "cluster_mode"))
    tag: str | None = None
    enqueue_only: bool = Field(False, validation_alias=AliasChoices("enqueueOnly", "enqueue_only"))
    max_wait_seconds: int = Field(0, ge=0, validation_alias=AliasChoices("maxWaitSeconds", "max_wait_seconds"))
    reuse_if_exists: bool = Field(True, validation_alias=AliasChoices("reuseIfExists", "reuse_if_exists"))
    startup_command: str | None = Field(None, validation_alias=AliasChoices("startupCommand", "startup_command"))
    bootstrap_script: str | None = Field(None, validation_alias=AliasChoices("bootstrap_script", "bootstrapScript"))
    starts_at: str | None = Field(None, validation_alias=AliasChoices("starts_at", "startsAt"))
    dependencies: list[str] | None = None
    callback_url: str | None = Field(None, validation_alias=AliasChoices("callback_url", "callbackUrl"))
    owner_access_key: str | None = Field(None, validation_alias=AliasChoices("owner_access_key", "ownerAccessKey"))
    batch_timeout: int | None = Field(None, validation_alias=AliasChoices("batch_timeout", "batchTimeout"))
    architecture: str = Field("x86_64", validation_alias=AliasChoices("architecture", "arch"))

    def to_request(self, template: dict[str, Any] | None = None) -> SessionRequest:
        if not self.image:
            from bridge.errors import InvalidAPIParameters

            raise InvalidAPIParameters("image: required")
        return SessionRequest(
            image=self.image, name=self.name, kind=self.type, group=self.group, domain=self.domain,
            resources=self.config.resources, resource_opts=self.config.resource_opts,
            scaling_group=self.config.scaling_group, environ=self.config.environ,
            preopen_ports=tuple(self.config.preopen_ports or ()),
            mounts=tuple(self.config.mounts or ()), mount_map=dict(self.config.mount_map or {}),
            cluster_size=self.cluster_size or self.config.cluster_size or 1,
            cluster_mode=self.cluster_mode, startup_command=self.startup_command,
            bootstrap_script=self.bootstrap_script, starts_at=self.starts_at,
            dependencies=tuple(self.dependencies or ()), callback_url=self.callback_url, tag=self.tag,
            owner_access_key=self.owner_access_key, batch_timeout=self.batch_timeout,
            enqueue_only=self.enqueue_only, max_wait_s=self.max_wait_seconds,
            reuse_if_exists=self.reuse_if_exists, architecture=self.architecture,
        )
