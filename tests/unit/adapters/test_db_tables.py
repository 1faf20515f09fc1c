"""The schema's rules that spell out domain facts stay in step with the domain."""

from __future__ import annotations

import importlib

from bridge.adapters.db.tables import ACTIVE_NAME_CLAUSE
from bridge.domain.session import TERMINAL_STATUSES


def test_the_active_name_index_covers_exactly_the_unfinished_statuses():
    """uq_sessions_active_name's WHERE names the terminal statuses. A new terminal status needs a migration
    that remakes the index: this fails until the model and the newest migration say the same."""
    migration = importlib.import_module("bridge.migrations.versions.0013_one_active_session_per_name")
    ended = {s.value for s in TERMINAL_STATUSES}
    assert str(ACTIVE_NAME_CLAUSE) == migration.ACTIVE
    assert all(f"'{s}'" in migration.ACTIVE for s in ended) and migration.ACTIVE.count("'") == 2 * len(ended)
