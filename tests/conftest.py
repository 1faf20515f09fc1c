"""Shared test configuration: markers are declared in pyproject.toml."""

from __future__ import annotations

from pathlib import Path

import pytest

DATA = Path(__file__).parent / "data"


@pytest.fixture
def slurm_data() -> Path:
    return DATA / "slurm" / "24.11"
