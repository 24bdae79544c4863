"""Dependencies point one way: core <- sites <- instances <- inventory <- discovery <- fleet (DESIGN.md).

Checked here for the lower layers, on every import in their modules (function-level ones included): core
imports no domain app, sites only core, instances only core and sites, and no app imports fleet. A lower
layer reaches a higher one through core.hooks, which the higher one subscribes to in ready().
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
APPS = ("core", "sites", "instances", "inventory", "discovery", "fleet")
MAY_IMPORT = {"core": set(), "sites": {"core"}, "instances": {"core", "sites"}}
# The launchers' commands (manage.py serve, run_prod) are core's, and their process logic is beside the
# process configuration in config/: those modules import no domain app (the ASGI app is a setting).
LAUNCHERS = {"config/serve.py", "config/run_prod.py"}


def imported_packages(path: Path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.add(node.module.split(".")[0])
    return found


def modules(package: str) -> list[Path]:
    return [path for path in sorted((ROOT / package).rglob("*.py")) if "migrations" not in path.parts]


@pytest.mark.parametrize("app", sorted(MAY_IMPORT))
def test_a_lower_layer_imports_no_app_above_it(app):
    wrong = {}
    for path in modules(app):
        allowed = MAY_IMPORT[app] | {app}
        if path.relative_to(ROOT / app).parts[:2] == ("management", "commands"):
            allowed = allowed | {"config"}
        if bad := (imported_packages(path) & {*APPS, "config"}) - allowed:
            wrong[str(path.relative_to(ROOT))] = sorted(bad)
    assert wrong == {}


def test_the_launchers_import_no_domain_app():
    assert {path: imported_packages(ROOT / path) & set(APPS) - {"core"} for path in LAUNCHERS} == {
        path: set() for path in LAUNCHERS
    }


def test_no_app_imports_fleet():
    importers = [
        str(path.relative_to(ROOT))
        for app in APPS
        if app != "fleet"
        for path in modules(app)
        if "fleet" in imported_packages(path)
    ]
    assert importers == []
