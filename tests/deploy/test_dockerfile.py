"""The Dockerfile, checked statically (no Docker engine runs here); its collectstatic step runs for real."""

from __future__ import annotations

import fnmatch
import json
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from tests.deploy.chart import ROOT

DOCKERFILE = ROOT / "Dockerfile"
SECRET_NAMES = ("SECRET_KEY", "FIELD_ENCRYPTION_KEYS", "DATABASE_URL", "REDIS_URL")


def instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    result, current = [], ""
    for line in DOCKERFILE.read_text().splitlines():
        stripped = line.strip()
        if not current and (not stripped or stripped.startswith("#")):
            continue
        if current and stripped.startswith("#"):
            continue
        if stripped.endswith("\\"):
            current += stripped[:-1] + " "
            continue
        current += stripped
        keyword, _, rest = current.partition(" ")
        result.append((keyword.upper(), rest.strip()))
        current = ""
    assert not current, "the Dockerfile ends in a continuation line"
    return result


def stages() -> list[list[tuple[str, str]]]:
    """The instructions of each stage; stage 0 holds the global ARGs before the first FROM."""
    found = [[]]
    for keyword, rest in instructions():
        if keyword == "FROM":
            found.append([])
        found[-1].append((keyword, rest))
    return found


def global_args() -> dict[str, str]:
    return dict(rest.split("=", 1) for keyword, rest in stages()[0] if keyword == "ARG" and "=" in rest)


def final_stage() -> list[tuple[str, str]]:
    return stages()[-1]


def test_base_images_are_python_3_11_slim_pinned_by_tag():
    args = global_args()
    names = []
    for stage in stages()[1:]:
        _, rest = stage[0]
        image = rest.split()[0]
        image = re.sub(r"\$\{(\w+)\}", lambda m: args[m.group(1)], image)
        if image in names:  # FROM an earlier stage
            continue
        repository, _, tag = image.partition(":")
        assert repository == "python" and tag.startswith("3.11-slim"), image
        assert tag != "latest"
        names += rest.split()[2:3]  # the stage name after AS
    assert len(stages()) >= 3, "a multi-stage build: builder and runtime"


def test_the_final_stage_runs_as_a_fixed_non_root_user_before_cmd():
    stage = final_stage()
    keywords = [k for k, _ in stage]
    users = [rest for k, rest in stage if k == "USER"]
    assert users, "no USER in the final stage"
    uid_default = next(
        rest.split("=", 1)[1] for k, rest in stage if k == "ARG" and rest.startswith("APP_UID=")
    )
    user = users[-1].replace("${APP_UID}", uid_default)
    uid, _, gid = user.partition(":")
    assert uid.isdigit() and int(uid) >= 1000, "a fixed numeric uid (Kubernetes runAsNonRoot checks it)"
    assert gid.isdigit() and int(gid) != 0
    assert keywords.index("USER") < keywords.index("CMD")
    assert keywords.count("CMD") == 1 and "ENTRYPOINT" not in keywords


def test_cmd_is_gunicorn_in_exec_form_and_the_ports_are_exposed():
    stage = final_stage()
    (cmd,) = [rest for k, rest in stage if k == "CMD"]
    command = json.loads(cmd)  # exec form: signals reach gunicorn
    assert command[:2] == ["gunicorn", "config.wsgi"]
    assert command[command.index("--bind") + 1] == "0.0.0.0:8000"
    # Started as run_prod starts it: its worker class (slow clients hold a thread, not a worker).
    assert command[command.index("--worker-class") + 1] == "config.gunicorn.ThreadWorker"
    assert command[command.index("--threads") + 1] == "8"
    assert command[command.index("--timeout") + 1] == "30"  # GUNICORN_TIMEOUT's default
    assert command[command.index("--config") + 1] == "python:config.gunicorn_conf"  # multiprocess metrics
    (expose,) = [rest for k, rest in stage if k == "EXPOSE"]
    assert expose.split() == ["8000", "8001"]


def test_no_secret_is_baked_into_the_image():
    for keyword, rest in instructions():
        if keyword in ("ENV", "ARG", "LABEL"):
            for name in SECRET_NAMES:
                assert name not in rest, f"{keyword} {rest}: secrets come from the environment at run time"
        if keyword == "RUN":
            for name, value in re.findall(r"\b(SECRET_KEY|FIELD_ENCRYPTION_KEYS)=(\S+)", rest):
                # Only throw-away values, scoped to the collectstatic command.
                assert "collectstatic" in rest, f"{name} set in a RUN that is not the collectstatic step"
                assert "build" in value, f"{name}={value} does not look like a build-time placeholder"
            assert not re.search(r"\b(DATABASE_URL|REDIS_URL)=\S", rest)


def test_var_dir_is_writable_by_the_app_user_and_holds_the_static_files():
    stage = final_stage()
    env = " ".join(rest for k, rest in stage if k == "ENV")
    var_dir = re.search(r"\bVAR_DIR=(\S+)", env).group(1)
    assert var_dir.startswith("/") and not var_dir.startswith("/app")
    (run,) = [rest for k, rest in stage if k == "RUN" and "collectstatic" in rest]
    assert 'chown ${APP_UID}:${APP_UID} "$VAR_DIR"' in run
    assert 'test ! -e "$VAR_DIR/secrets"' in run  # the build fails if settings generated a secret


def test_the_project_is_installed_and_labelled():
    runs = [rest for k, rest in instructions() if k == "RUN"]
    assert any(re.search(r"pip install (--no-deps )?-e \.", run) for run in runs)
    labels = " ".join(rest for k, rest in final_stage() if k == "LABEL")
    for key in ("title", "description", "version", "revision", "created"):
        assert f"org.opencontainers.image.{key}=" in labels


def dockerignore() -> list[str]:
    lines = (ROOT / ".dockerignore").read_text().splitlines()
    return [line.strip() for line in lines if line.strip() and not line.startswith("#")]


def ignored(path: str) -> bool:
    return any(fnmatch.fnmatch(path, pattern) or path.startswith(pattern + "/") for pattern in dockerignore())


def test_dockerignore_keeps_the_context_small_and_free_of_local_state():
    for path in (".venv", ".git", "var", "tests", ".tools", "helm", "bench", "config/__pycache__"):
        assert ignored(path), path
    for path in ("manage.py", "pyproject.toml", "README.md", "config", "templates", "static", "agent"):
        assert not ignored(path), f"{path} is needed in the image"


def collectstatic_run() -> str:
    (run,) = [rest for k, rest in final_stage() if k == "RUN" and "collectstatic" in rest]
    return run


def test_collectstatic_step_needs_no_database_nor_real_secrets(tmp_path: Path):
    """The image's collectstatic step, run as the Dockerfile runs it, writes the static files only."""
    words = shlex.split(collectstatic_run().split("&&")[0])
    assignments = dict(word.split("=", 1) for word in words if re.match(r"^[A-Z_]+=", word))
    command = [word for word in words if not re.match(r"^[A-Z_]+=", word)]
    assert command[:2] == ["python", "manage.py"] and "collectstatic" in command
    var_dir = tmp_path / "var"
    env = {k: v for k, v in os.environ.items() if k not in (*SECRET_NAMES, "DEBUG")}
    env.update(assignments, VAR_DIR=str(var_dir))
    subprocess.run([sys.executable, *command[1:]], cwd=ROOT, env=env, check=True, timeout=60)
    assert sorted(p.name for p in var_dir.iterdir()) == ["staticfiles"]
    assert (var_dir / "staticfiles" / "admin" / "css" / "base.css").exists()


@pytest.mark.parametrize("name", ["HOST", "PORT", "VAR_DIR"])
def test_env_names_of_the_image_are_settings(name):
    env = " ".join(rest for k, rest in final_stage() if k == "ENV")
    assert f"{name}=" in env
    assert f'"{name}"' in (ROOT / "config" / "settings.py").read_text()
