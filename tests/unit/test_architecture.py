"""The layers of bridge/, enforced (docs/architecture.md): imports flow api -> services -> adapters -> domain.

- The domain imports no other layer and no I/O library.
- Adapters import neither services, the API, the CLI nor the dev cluster.
- Services import neither the API nor the CLI.
- The API reaches the database only through services.
- The composition root (bridge.wiring) builds the adapters and services once, for the app and the admin CLI;
  it is a layer of its own, above services and adapters, that only the CLI, the dev environment and the app's
  own root (bridge.api.app, which adds the app's transports and background tasks) import.
- The in-job kernel runner imports nothing of the gateway, since it runs inside the user's container.

KNOWN lists the inversions that are still there (issue 11: none now), so that no new one can join them. An
entry that is gone must leave the list: the test says so.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2] / "bridge"

LAYERS = (  # prefix -> layer; the first match wins
    ("bridge.domain", "domain"), ("bridge.adapters", "adapters"), ("bridge.services", "services"),
    ("bridge.api", "api"), ("bridge.devcluster", "devcluster"), ("bridge.kernel", "kernel"),
    ("bridge.migrations", "migrations"), ("bridge.client", "client"), ("bridge.cli_admin", "cli"),
    ("bridge.cli_settings", "cli"), ("bridge.cli", "cli"), ("bridge.__main__", "cli"), ("bridge.wiring", "wiring"),
)
MAY_IMPORT = {
    "domain": {"domain", "shared"},
    "adapters": {"adapters", "domain", "shared"},
    "services": {"services", "adapters", "domain", "shared"},
    "api": {"api", "services", "domain", "shared"},
    "kernel": set(),
    "migrations": {"migrations", "adapters", "shared"},
    "client": {"client", "api", "domain", "shared"},          # our CLI's client signs as the API does
    "devcluster": {"devcluster", "adapters", "services", "api", "client", "wiring", "domain", "shared"},
    "cli": {"cli", "api", "services", "adapters", "client", "devcluster", "wiring", "domain", "shared"},
    "wiring": {"wiring", "services", "adapters", "domain", "shared"},
    "shared": {"shared", "domain"},
}
COMPOSITION_ROOT = "bridge.api.app"   # the app's root: also imports adapters (transports) and bridge.wiring
IO_LIBRARIES = {"sqlalchemy", "httpx", "paramiko", "fastapi", "starlette", "uvicorn", "subprocess", "socket",
                "aiosqlite", "asyncpg", "websockets", "h11", "jinja2"}
KNOWN: set[tuple[str, str]] = set()  # (module, the layer it should not import); none left (issue 11)


def layer(module: str) -> str:
    for prefix, name in LAYERS:
        if module == prefix or module.startswith(prefix + "."):
            return name
    return "shared"


def imports() -> list[tuple[str, str]]:
    found = []
    for path in sorted(ROOT.rglob("*.py")):
        parts = list(path.relative_to(ROOT.parent).with_suffix("").parts)
        module = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                found += [(module, a.name) for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                found.append((module, node.module))
    return found


def test_imports_flow_one_way():
    wrong = set()
    for module, target in imports():
        if not target.startswith("bridge") or module == COMPOSITION_ROOT:
            continue
        if layer(target) not in MAY_IMPORT[layer(module)]:
            wrong.add((module, layer(target)))
    assert wrong - KNOWN == set(), f"imports against the layers: {sorted(wrong - KNOWN)}"
    assert KNOWN - wrong == set(), f"fixed, so remove them from KNOWN: {sorted(KNOWN - wrong)}"


def test_the_domain_does_no_io_and_the_runner_stands_alone():
    for module, target in imports():
        top = target.split(".")[0]
        if layer(module) == "domain":
            assert top not in IO_LIBRARIES, f"{module} imports {target}: the domain does no I/O"
        if layer(module) == "kernel":
            assert top != "bridge", f"{module} imports {target}: the runner runs in the container, alone"


def test_the_cli_and_its_admin_group_do_not_import_each_other():
    pairs = {(m, t) for m, t in imports()}
    assert ("bridge.cli_admin", "bridge.cli") not in pairs


def test_the_api_holds_no_database_session():
    """Outside its composition root the API imports no SQLAlchemy: queries and sessions are the services'
    (the modules still in KNOWN excepted, until they ask services too)."""
    found = {m for m, t in imports()
             if layer(m) == "api" and m != COMPOSITION_ROOT and t.split(".")[0] == "sqlalchemy"}
    known = {m for m, _ in KNOWN}
    assert found - known == set(), f"the API imports SQLAlchemy in {sorted(found - known)}"


def test_one_composition_root_builds_the_slurm_client_the_runner_and_the_database():
    """bridge.wiring builds them once; the app and the admin CLI take them from there (the CLI opens the
    command's database itself and hands it over)."""
    pairs = set(imports())
    assert ("bridge.wiring", "bridge.adapters.slurm.factory") in pairs
    for root in (COMPOSITION_ROOT, "bridge.cli_admin"):
        assert (root, "bridge.adapters.slurm.factory") not in pairs, root
    assert (COMPOSITION_ROOT, "bridge.adapters.db.engine") not in pairs
