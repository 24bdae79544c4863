"""Every management command of ours is run by a test (NetBox's habit: a meta-test that fails when a
command comes without one), and the README lists it.

A test runs a command when its source has one of:
- `call_command("name", …)`;
- a call `helper("name", …)` to a function of the tests that hands that parameter on to call_command or
  puts it after `manage.py` on a command line (tests/e2e/servers.py's `manage`, a module's `run`);
- a command line `[…, "manage.py", "name", …]` (a subprocess; `str(ROOT / "manage.py")` counts too).
A mere mention (a docstring, an assertion on output) does not count.
"""

from __future__ import annotations

import ast
from pathlib import Path

from django.apps import apps
from django.conf import settings
from django.core.management import find_commands

ROOT = Path(settings.BASE_DIR)
TESTS = ROOT / "tests"


def our_commands() -> dict[str, str]:
    """{command: app label} for the project's own apps (not Django's, not third parties')."""
    commands = {}
    for app in apps.get_app_configs():
        path = Path(app.path)
        if ROOT not in path.parents or {".venv", "site-packages"} & set(path.parts):
            continue
        for name in find_commands(str(path / "management")):
            commands[name] = app.label
    return commands


def _callee(node: ast.Call) -> str | None:
    if isinstance(node.func, ast.Name):
        return node.func.id
    if isinstance(node.func, ast.Attribute):
        return node.func.attr
    return None


def _mentions_manage_py(node: ast.AST) -> bool:
    return any(
        isinstance(n, ast.Constant) and isinstance(n.value, str) and n.value.endswith("manage.py")
        for n in ast.walk(node)
    )


def _command_lines(tree: ast.AST):
    """(the node after "manage.py") for every list or tuple literal that holds a manage.py command line."""
    for node in ast.walk(tree):
        if isinstance(node, ast.List | ast.Tuple):
            for before, after in zip(node.elts, node.elts[1:], strict=False):
                if _mentions_manage_py(before):
                    yield after


def runners(trees: list[ast.AST]) -> dict[str, int]:
    """{function name: the position of its parameter that names the command} for call_command and for the
    tests' helpers around it or around a manage.py command line."""
    found = {"call_command": 0}
    for tree in trees:
        for function in ast.walk(tree):
            if not isinstance(function, ast.FunctionDef | ast.AsyncFunctionDef):
                continue
            params = [arg.arg for arg in function.args.args]
            handed_on = [
                node.args[0]
                for node in ast.walk(function)
                if isinstance(node, ast.Call) and _callee(node) == "call_command" and node.args
            ]
            handed_on += list(_command_lines(function))
            for node in handed_on:
                if isinstance(node, ast.Name) and node.id in params:
                    found[function.name] = params.index(node.id)
    return found


def commands_run(sources: list[str]) -> set[str]:
    """The command names the sources run (see the module's docstring)."""
    trees = [ast.parse(source) for source in sources]
    calls = runners(trees)
    names = set()
    for tree in trees:
        for node in ast.walk(tree):
            if isinstance(node, ast.Call) and _callee(node) in calls:
                position = calls[_callee(node)]
                if len(node.args) > position:
                    argument = node.args[position]
                    if isinstance(argument, ast.Constant) and isinstance(argument.value, str):
                        names.add(argument.value)
        for node in _command_lines(tree):
            if isinstance(node, ast.Constant) and isinstance(node.value, str):
                names.add(node.value)
    return names


def test_every_command_of_ours_is_run_by_a_test():
    commands = our_commands()
    assert {"bootstrap", "fleet_status", "run_discovery", "seed_demo", "serve"} <= set(commands)
    sources = [path.read_text() for path in sorted(TESTS.rglob("*.py")) if path.name != Path(__file__).name]
    untested = sorted(set(commands) - commands_run(sources))
    assert not untested, f"management commands no test runs: {[(n, commands[n]) for n in untested]}"


def test_the_readme_lists_every_command_of_ours():
    readme = (ROOT / "README.md").read_text()
    section = readme[readme.index("## Operator commands") :]
    section = section[: section.index("\n## ", 1)]
    missing = sorted(name for name in our_commands() if f"`{name}" not in section)
    assert not missing, f"not in the README's Operator commands: {missing}"


def test_the_check_tells_a_run_from_a_mention():
    helpers = """
def run(command, *args):
    call_command(command, *args, stdout=out)

def manage(command, *args):
    return subprocess.run([sys.executable, "manage.py", command, *args])
"""
    uses = '''
"""fleet_status prints a table."""
call_command("seed_demo", "--sites", "2")
run("export_inventory", "site")
servers.manage("sync_schedules")
subprocess.Popen([sys.executable, str(ROOT / "manage.py"), "run_prod"])
assert "run_discovery" in output
'''
    assert commands_run([helpers, uses]) == {"seed_demo", "export_inventory", "sync_schedules", "run_prod"}
    assert commands_run([uses]) == {"seed_demo", "run_prod"}  # without the helpers, their calls count not
