"""Dependencies point one way (DESIGN.md, docs/architecture.md): `make lint` runs import-linter with the
contracts in pyproject.toml. Here: they hold on the code, and they catch a new upward import (function-
level ones included) and Django in the agent, on a copy of the packages."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("config", "core", "sites", "instances", "inventory", "discovery", "fleet", "agent", "snmp")
LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")


def lint_imports(cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(LINT_IMPORTS), "--no-cache"], cwd=cwd, capture_output=True, text=True, timeout=120, check=False
    )


@pytest.fixture
def copy_of_the_packages(tmp_path: Path) -> Path:
    for package in PACKAGES:
        shutil.copytree(ROOT / package, tmp_path / package, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "pyproject.toml", tmp_path)
    return tmp_path


def test_the_contracts_hold_on_the_code():
    result = lint_imports(ROOT)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 broken" in result.stdout


@pytest.mark.parametrize(
    ("module", "line", "reported"),
    [
        (
            "sites/selectors.py",
            "from instances.models import Instance",
            "sites is not allowed to import instances",
        ),
        (
            "inventory/services.py",
            "def later():\n    from discovery import runs  # hidden in a function\n",
            "inventory is not allowed to import discovery",
        ),
        ("core/audit.py", "import fleet.metrics", "core is not allowed to import fleet"),
        ("agent/client.py", "import django.conf", "agent is not allowed to import django"),
        ("snmp/targets.py", "from inventory import parsing", "snmp is not allowed to import inventory"),
    ],
)
def test_an_upward_import_breaks_a_contract(copy_of_the_packages, module, line, reported):
    path = copy_of_the_packages / module
    path.write_text(path.read_text() + f"\n{line}\n")
    result = lint_imports(copy_of_the_packages)
    assert result.returncode != 0, result.stdout
    assert reported in " ".join(result.stdout.split())
