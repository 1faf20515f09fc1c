"""Where the project's top-level data folders (templates/, containers/) are: beside the package in a
checkout, or inside it (bridge/_data/, pyproject's force-include) in an installed wheel."""

from __future__ import annotations

from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parent


def data_dir(name: str) -> Path:
    repo = PACKAGE_DIR.parent / name
    return repo if repo.is_dir() else PACKAGE_DIR / "_data" / name
