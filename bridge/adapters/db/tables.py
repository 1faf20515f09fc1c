"""Typed SQLAlchemy tables. The same schema runs on SQLite (embedded) and PostgreSQL (production).

Names follow Backend.AI's manager schema where the API exposes them (domains, users, groups, keypairs,
keypair_resource_policies); HPC mappings are explicit columns: `users.unix_user`, `groups.slurm_account`.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from bridge.adapters.db.sealed import Sealed
from bridge.domain.session import TERMINAL_STATUSES

NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


# the rows of sessions that still hold their name (migration 0013 spells out the same statuses)
_ENDED = ", ".join(f"'{s.value}'" for s in TERMINAL_STATUSES)
ACTIVE_NAME_CLAUSE = text(f"status NOT IN ({_ENDED})")


def utcnow() -> datetime:
    return datetime.now(UTC)


def new_uuid() -> str:
    return str(uuid.uuid4())


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)
    type_annotation_map = {dict[str, Any]: JSON, list[str]: JSON, list[Any]: JSON, datetime: DateTime(timezone=True)}


class DomainRow(Base):
    __tablename__ = "domains"
    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    description: Mapped[str] = mapped_column(Text, default="")
    is_active: Mapped[bool] = mapped_column(Boolean, default=True)
    total_resource_slots: Mapped[dict[str, Any]] = mapped_column(default=dict)
    allowed_vfolder_hosts: Mapped[dict[str, Any]] = mapped_column(default=dict)
    allowed_docker_registries: Mapped[list[str]] = mapped_column(default=list)
    integration_id: Mapped[str | None] = mapped_column(String(512))
    dotfiles: Mapped[list[Any]] = mapped_column(default=list, doc="[{path, perm, data}] for every session")
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    modified_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)


class KeypairResourcePolicyRow(Base):
    __tablename__ = "keypair_resource_policies"
    name: Mapped[str] = mapped_column(String(256), primary_key=True)
    default_for_unspecified: Mapped[str] = mapped_column(String(16), default="UNLIMITED")
    total_resource_slots: Mapped[dict[str, Any]] = mapped_column(default=dict)
    max_session_lifetime: Mapped[int] = mapped_column(Integer, default=0)
    max_concurrent_sessions: Mapped[int] = mapped_column(Integer, default=30)
    max_concurrent_sftp_sessions: Mapped[int] = mapped_column(Integer, default=30)
    max_containers_per_session: Mapped[int] = mapped_column(Integer, default=1)
    max_vfolder_count: Mapped[int] = mapped_column(Integer, default=0)
    max_vfolder_size: Mapped[int] = mapped_column(BigInteger, default=0)
    idle_timeout: Mapped[int] = mapped_column(Integer, default=0)
    allowed_vfolder_hosts: Mapped[dict[str, Any]] = mapped_column(default=dict)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class UserRow(Base):
    __tablename__ = "users"
    uuid: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_uuid)
    username: Mapped[str] = mapped_column(String(64), unique=True)
    email: Mapped[str] = mapped_column(String(64), unique=True)
    password: Mapped[str | None] = mapped_column(String(256))
    need_password_change: Mapped[bool] = mapped_column(Boolean, default=False)
    full_name: Mapped[str] = mapped_column(String(64), default="")
    description: Mapped[str] = mapped_column(Text, default="")
    status: Mapped[str] = mapped_column(String(16), default="active")
    status_info: Mapped[str | None] = mapped_column(String(64))
    domain_name: Mapped[str] = mapped_column(ForeignKey("domains.name"))
    role: Mapped[str] = mapped_column(String(16), default="user")
    unix_user: Mapped[str] = mapped_column(String(64), doc="Unix account the user's jobs run as.")
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    modified_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)


class GroupRow(Base):
    """A Backend.AI project ("group"); its jobs are charged to `slurm_account`."""

    __tablename__ = "groups"
    __table_args__ = (UniqueConstraint("domain_name", "name", name="uq_groups_domain_name_name"),)
    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_uuid)
    name: Mapped[str] = mapped_column(String(64))
    description: Mapped[str] = mapped_column(Text, default="")
    is_active: Mapped[bool] = mapped_column(Boolean, default=True)
    domain_name: Mapped[str] = mapped_column(ForeignKey("domains.name"))
    total_resource_slots: Mapped[dict[str, Any]] = mapped_column(default=dict)
    allowed_vfolder_hosts: Mapped[dict[str, Any]] = mapped_column(default=dict)
    integration_id: Mapped[str | None] = mapped_column(String(512))
    slurm_account: Mapped[str] = mapped_column(String(64))
    dotfiles: Mapped[list[Any]] = mapped_column(default=list, doc="[{path, perm, data}] for its sessions")
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    modified_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)


class GroupMemberRow(Base):
    __tablename__ = "association_groups_users"
    group_id: Mapped[str] = mapped_column(ForeignKey("groups.id", ondelete="CASCADE"), primary_key=True)
    user_id: Mapped[str] = mapped_column(ForeignKey("users.uuid", ondelete="CASCADE"), primary_key=True)


class KeypairRow(Base):
    __tablename__ = "keypairs"
    access_key: Mapped[str] = mapped_column(String(20), primary_key=True)
    secret_key: Mapped[str] = mapped_column(Sealed())
    user_id: Mapped[str] = mapped_column(String(256), doc="The owner's email, as Backend.AI keeps it.")
    user: Mapped[str] = mapped_column(ForeignKey("users.uuid", ondelete="CASCADE"), index=True)
    is_active: Mapped[bool] = mapped_column(Boolean, default=True)
    is_admin: Mapped[bool] = mapped_column(Boolean, default=False)
    resource_policy: Mapped[str] = mapped_column(ForeignKey("keypair_resource_policies.name"))
    rate_limit: Mapped[int] = mapped_column(Integer, default=30000)
    num_queries: Mapped[int] = mapped_column(Integer, default=0)
    ssh_public_key: Mapped[str | None] = mapped_column(Text)
    ssh_private_key: Mapped[str | None] = mapped_column(Sealed())
    dotfiles: Mapped[list[Any]] = mapped_column(default=list, doc="[{path, perm, data}] for its sessions")
    bootstrap_script: Mapped[str] = mapped_column(Text, default="", doc="Run at the start of its sessions.")
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    modified_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)
    last_used: Mapped[datetime | None] = mapped_column()


class ResourcePresetRow(Base):
    __tablename__ = "resource_presets"
    name: Mapped[str] = mapped_column(String(256), primary_key=True)
    resource_slots: Mapped[dict[str, Any]] = mapped_column(default=dict)
    shared_memory: Mapped[int | None] = mapped_column(BigInteger)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class ScalingGroupRow(Base):
    """A resource group: one Slurm partition of the same name, found by the gateway or created by an admin.
    Who may use it is the union of its associations with domains, projects and keypairs."""

    __tablename__ = "scaling_groups"
    name: Mapped[str] = mapped_column(String(64), primary_key=True, doc="The Slurm partition's name.")
    description: Mapped[str] = mapped_column(Text, default="")
    is_active: Mapped[bool] = mapped_column(Boolean, default=True)
    is_public: Mapped[bool] = mapped_column(Boolean, default=True)
    wsproxy_addr: Mapped[str | None] = mapped_column(String(1024))
    scheduler_opts: Mapped[dict[str, Any]] = mapped_column(default=dict)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class ScalingGroupForDomainRow(Base):
    __tablename__ = "sgroups_for_domains"
    scaling_group: Mapped[str] = mapped_column(ForeignKey("scaling_groups.name", ondelete="CASCADE"),
                                               primary_key=True)
    domain: Mapped[str] = mapped_column(ForeignKey("domains.name", ondelete="CASCADE"), primary_key=True)


class ScalingGroupForGroupRow(Base):
    __tablename__ = "sgroups_for_groups"
    scaling_group: Mapped[str] = mapped_column(ForeignKey("scaling_groups.name", ondelete="CASCADE"),
                                               primary_key=True)
    group: Mapped[str] = mapped_column(ForeignKey("groups.id", ondelete="CASCADE"), primary_key=True)


class ScalingGroupForKeypairRow(Base):
    __tablename__ = "sgroups_for_keypairs"
    scaling_group: Mapped[str] = mapped_column(ForeignKey("scaling_groups.name", ondelete="CASCADE"),
                                               primary_key=True)
    access_key: Mapped[str] = mapped_column(ForeignKey("keypairs.access_key", ondelete="CASCADE"), primary_key=True)


class SettingRow(Base):
    """Small pieces of gateway state that must survive restarts (the announcement, ...)."""

    __tablename__ = "settings"
    key: Mapped[str] = mapped_column(String(128), primary_key=True)
    value: Mapped[dict[str, Any]] = mapped_column(default=dict)
    modified_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)


class SessionRow(Base):
    """A compute session: one Slurm batch job (one multi-node job for a cluster session)."""

    __tablename__ = "sessions"
    # one unfinished session per name and keypair, held by the database too (several gateway processes
    # may admit creations at once; each one's own lock covers only itself)
    __table_args__ = (Index("uq_sessions_active_name", "access_key", "name", unique=True,
                            sqlite_where=ACTIVE_NAME_CLAUSE, postgresql_where=ACTIVE_NAME_CLAUSE),)
    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_uuid)
    name: Mapped[str] = mapped_column(String(64), index=True)
    access_key: Mapped[str] = mapped_column(ForeignKey("keypairs.access_key"), index=True)
    user_uuid: Mapped[str] = mapped_column(ForeignKey("users.uuid"))
    domain_name: Mapped[str] = mapped_column(ForeignKey("domains.name"))
    group_id: Mapped[str] = mapped_column(ForeignKey("groups.id"))
    unix_user: Mapped[str] = mapped_column(String(64))
    slurm_account: Mapped[str] = mapped_column(String(64))
    partition: Mapped[str] = mapped_column(String(64))
    image: Mapped[str] = mapped_column(String(512))
    image_path: Mapped[str] = mapped_column(String(1024))
    architecture: Mapped[str] = mapped_column(String(32), default="x86_64")
    type: Mapped[str] = mapped_column(String(16), default="interactive")
    tag: Mapped[str | None] = mapped_column(String(256))
    startup_command: Mapped[str | None] = mapped_column(Text)
    bootstrap_script: Mapped[str | None] = mapped_column(Text)
    environ: Mapped[dict[str, Any]] = mapped_column(default=dict)
    mounts: Mapped[list[str]] = mapped_column(default=list)
    resources: Mapped[dict[str, Any]] = mapped_column(default=dict)
    resource_opts: Mapped[dict[str, Any]] = mapped_column(default=dict)
    cluster_size: Mapped[int] = mapped_column(Integer, default=1)
    cluster_mode: Mapped[str] = mapped_column(String(16), default="single-node")
    starts_at: Mapped[datetime | None] = mapped_column()
    batch_timeout: Mapped[int | None] = mapped_column(Integer)
    callback_url: Mapped[str | None] = mapped_column(String(2048))
    status: Mapped[str] = mapped_column(String(16), default="PENDING", index=True)
    status_info: Mapped[str | None] = mapped_column(String(256))
    status_data: Mapped[dict[str, Any]] = mapped_column(default=dict)
    status_changed: Mapped[datetime] = mapped_column(default=utcnow)
    status_history: Mapped[dict[str, Any]] = mapped_column(default=dict)
    result: Mapped[str] = mapped_column(String(16), default="UNDEFINED")
    termination_requested: Mapped[bool] = mapped_column(Boolean, default=False)
    job_id: Mapped[str | None] = mapped_column(String(32), index=True)
    job_tag: Mapped[str] = mapped_column(String(128))
    work_dir: Mapped[str] = mapped_column(String(1024))
    nodes: Mapped[list[str]] = mapped_column(default=list)
    exit_code: Mapped[int | None] = mapped_column(Integer)
    kernel_secret: Mapped[str | None] = mapped_column(Sealed(), doc="Shared with the in-job kernel runner.")
    kernel_host: Mapped[str | None] = mapped_column(String(256))
    kernel_port: Mapped[int | None] = mapped_column(Integer)
    service_ports: Mapped[list[Any]] = mapped_column(default=list)
    num_queries: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    scheduled_at: Mapped[datetime | None] = mapped_column()
    started_at: Mapped[datetime | None] = mapped_column()
    terminated_at: Mapped[datetime | None] = mapped_column()


class SessionDependencyRow(Base):
    __tablename__ = "session_dependencies"
    session_id: Mapped[str] = mapped_column(ForeignKey("sessions.id", ondelete="CASCADE"), primary_key=True)
    depends_on: Mapped[str] = mapped_column(ForeignKey("sessions.id", ondelete="CASCADE"), primary_key=True)


class SessionTemplateRow(Base):
    """A user's session template (Backend.AI's taskTemplate), kept as validated JSON."""

    __tablename__ = "session_templates"
    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_uuid)
    name: Mapped[str] = mapped_column(String(128))
    access_key: Mapped[str] = mapped_column(ForeignKey("keypairs.access_key"), index=True)
    user_uuid: Mapped[str] = mapped_column(ForeignKey("users.uuid"))
    group_id: Mapped[str] = mapped_column(ForeignKey("groups.id"))
    domain_name: Mapped[str] = mapped_column(ForeignKey("domains.name"))
    type: Mapped[str] = mapped_column(String(16), default="task")
    template: Mapped[dict[str, Any]] = mapped_column(default=dict)
    is_active: Mapped[bool] = mapped_column(Boolean, default=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    modified_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)


class VFolderRow(Base):
    """A virtual folder: a directory on a storage host, owned on disk by its owner's Unix account."""

    __tablename__ = "vfolders"
    __table_args__ = (UniqueConstraint("user_uuid", "name", name="uq_vfolders_user_uuid_name"),
                      UniqueConstraint("group_id", "name", name="uq_vfolders_group_id_name"))
    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_uuid)
    name: Mapped[str] = mapped_column(String(64))
    host: Mapped[str] = mapped_column(String(128))
    user_uuid: Mapped[str | None] = mapped_column(ForeignKey("users.uuid"), index=True,
                                                  doc="The owner of a user folder; None for a project folder.")
    group_id: Mapped[str | None] = mapped_column(ForeignKey("groups.id"), index=True,
                                                 doc="The project owning a project folder; None for a user folder.")
    domain_name: Mapped[str] = mapped_column(ForeignKey("domains.name"))
    unix_user: Mapped[str] = mapped_column(String(64), doc="Owner on disk.")
    path: Mapped[str] = mapped_column(String(1024), doc="The folder's directory on the shared file system.")
    creator: Mapped[str] = mapped_column(String(256), default="")
    usage_mode: Mapped[str] = mapped_column(String(16), default="general")
    permission: Mapped[str] = mapped_column(String(4), default="rw")
    cloneable: Mapped[bool] = mapped_column(Boolean, default=False)
    status: Mapped[str] = mapped_column(String(16), default="ready")
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class VFolderShareRow(Base):
    """A user's permission on a folder that is not theirs: an accepted invitation to a user folder, or a
    project folder's permission overridden for one member (`share`)."""

    __tablename__ = "vfolder_shares"
    vfolder_id: Mapped[str] = mapped_column(ForeignKey("vfolders.id", ondelete="CASCADE"), primary_key=True)
    user_uuid: Mapped[str] = mapped_column(ForeignKey("users.uuid", ondelete="CASCADE"), primary_key=True)
    permission: Mapped[str] = mapped_column(String(4))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class VFolderInvitationRow(Base):
    """An invitation to share a user folder: pending until its invitee accepts or rejects it."""

    __tablename__ = "vfolder_invitations"
    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_uuid)
    vfolder_id: Mapped[str] = mapped_column(ForeignKey("vfolders.id", ondelete="CASCADE"), index=True)
    inviter_uuid: Mapped[str] = mapped_column(ForeignKey("users.uuid", ondelete="CASCADE"))
    invitee_uuid: Mapped[str] = mapped_column(ForeignKey("users.uuid", ondelete="CASCADE"), index=True)
    permission: Mapped[str] = mapped_column(String(4))
    state: Mapped[str] = mapped_column(String(16), default="pending", doc="pending|accepted|rejected|canceled")
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    modified_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)


class ErrorLogRow(Base):
    """An error a client (the WebUI) reports about itself (`/logs/error`), kept for the user and admins."""

    __tablename__ = "error_logs"
    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_uuid)
    created_at: Mapped[datetime] = mapped_column(default=utcnow, index=True)
    severity: Mapped[str] = mapped_column(String(16))
    source: Mapped[str] = mapped_column(String(256))
    user_uuid: Mapped[str | None] = mapped_column(ForeignKey("users.uuid", ondelete="CASCADE"), index=True)
    domain_name: Mapped[str] = mapped_column(String(64))
    is_read: Mapped[bool] = mapped_column(Boolean, default=False)
    is_cleared: Mapped[bool] = mapped_column(Boolean, default=False)
    message: Mapped[str] = mapped_column(Text)
    context_lang: Mapped[str] = mapped_column(String(32), default="")
    context_env: Mapped[dict[str, Any]] = mapped_column(default=dict)
    request_url: Mapped[str | None] = mapped_column(String(2048))
    request_status: Mapped[int | None] = mapped_column(Integer)
    traceback: Mapped[str | None] = mapped_column(Text)


class ImageRow(Base):
    """A kernel image known to the gateway: a Backend.AI reference mapped to an Apptainer image path."""

    __tablename__ = "images"
    name: Mapped[str] = mapped_column(String(512), primary_key=True, doc="Canonical reference, e.g. python:3.13")
    path: Mapped[str] = mapped_column(String(1024), doc="SIF file or sandbox directory on the compute nodes.")
    architecture: Mapped[str] = mapped_column(String(32), default="x86_64")
    aliases: Mapped[list[str]] = mapped_column(default=list)
    labels: Mapped[dict[str, Any]] = mapped_column(default=dict)
    digest: Mapped[str | None] = mapped_column(String(128))
    size_bytes: Mapped[int | None] = mapped_column(BigInteger)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
