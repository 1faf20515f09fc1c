"""The stored records that services hand to the API, named for it: the API reads them to answer (its
wire modules), and reaches the database, to query or change them, only through a service.

They are the adapters' ORM rows, re-exported: the API holds no query and no session of its own.
"""

from __future__ import annotations

from contextlib import AbstractAsyncContextManager
from typing import Any, Protocol, TypeAlias

from bridge.adapters.db.tables import DomainRow as DomainRow
from bridge.adapters.db.tables import GroupRow as GroupRow
from bridge.adapters.db.tables import KeypairResourcePolicyRow as KeypairResourcePolicyRow
from bridge.adapters.db.tables import KeypairRow as KeypairRow
from bridge.adapters.db.tables import ResourcePresetRow as ResourcePresetRow
from bridge.adapters.db.tables import ScalingGroupRow as ScalingGroupRow
from bridge.adapters.db.tables import SessionRow as SessionRow
from bridge.adapters.db.tables import UserRow as UserRow

UnitOfWork: TypeAlias = Any   # an open unit of work: the API hands it to services, and queries nothing itself


class UnitsOfWork(Protocol):
    """Where the API gets a unit of work for a request (the Database, wired by the composition root)."""

    def unit_of_work(self) -> AbstractAsyncContextManager[UnitOfWork]: ...


__all__ = ["DomainRow", "GroupRow", "KeypairResourcePolicyRow", "KeypairRow", "ResourcePresetRow", "ScalingGroupRow",
           "SessionRow", "UnitOfWork", "UnitsOfWork", "UserRow"]
