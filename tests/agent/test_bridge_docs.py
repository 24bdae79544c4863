"""docs/promsnmp.md says what works: its sidecar manifest is valid YAML whose bridge arguments the agent's
own parser accepts (bridge mode, the scrape address, the state directory on PromSNMP's volume), and its
values snippet for the manager renders with the real chart (helm template)."""

from __future__ import annotations

import re
import tempfile
from pathlib import Path

import yaml

from agent.__main__ import parse_args
from tests.deploy.chart import find, helm, template_args

DOC = Path(__file__).resolve().parents[2] / "docs" / "promsnmp.md"


def yaml_blocks() -> list[str]:
    return re.findall(r"```yaml\n(.*?)```", DOC.read_text(), flags=re.S)


def manifest() -> list[dict]:
    block = next(block for block in yaml_blocks() if "kind: StatefulSet" in block)
    return [doc for doc in yaml.safe_load_all(block) if doc]


def test_the_sidecars_arguments_are_the_agents_bridge_mode(monkeypatch):
    statefulset = next(doc for doc in manifest() if doc["kind"] == "StatefulSet")
    pod = statefulset["spec"]["template"]["spec"]
    containers = {c["name"]: c for c in pod["containers"]}
    bridge, promsnmp = containers["bridge"], containers["promsnmp"]
    assert bridge["command"] == ["promsnmp-agent"]
    env = {item["name"] for item in bridge["env"]}
    assert {"PROMSNMP_TOKEN", "PROMSNMP_HOSTNAME", "POD_IP"} <= env
    monkeypatch.setenv("PROMSNMP_TOKEN", "psm_documented")
    args = parse_args([arg.replace("$(POD_IP)", "10.1.2.3") for arg in bridge["args"]])
    assert args.promsnmp_url == "http://127.0.0.1:8080"
    assert args.scrape_address == "10.1.2.3:8080"
    assert args.site and args.url.startswith("https://")
    # The bridge's state and PromSNMP's inventory file live on the same volume (they belong together).
    state_mount = next(m for m in bridge["volumeMounts"] if m["mountPath"] == args.state_dir)
    data_mount = promsnmp["volumeMounts"][0]
    assert (
        state_mount["name"]
        == data_mount["name"]
        == statefulset["spec"]["volumeClaimTemplates"][0]["metadata"]["name"]
    )
    inventory_file = {e["name"]: e.get("value") for e in promsnmp["env"]}["PROM_INV_FILE"]
    assert inventory_file.startswith(data_mount["mountPath"] + "/")
    port = {e["name"]: e.get("value") for e in promsnmp["env"]}["SERVER_PORT"]
    assert args.promsnmp_url.endswith(f":{port}")


def test_the_managers_values_snippet_renders_with_the_chart():
    block = next(block for block in yaml_blocks() if "publicUrl:" in block)
    snippet = yaml.safe_load(block)
    with tempfile.NamedTemporaryFile("w", suffix=".yaml") as file:
        yaml.safe_dump(snippet, file)
        file.flush()
        result = helm(*template_args("minimal", ()), "-f", file.name)
    assert result.returncode == 0, result.stderr
    docs = [doc for doc in yaml.safe_load_all(result.stdout) if doc]
    (ingress,) = find(docs, "Ingress")
    assert [rule["host"] for rule in ingress["spec"]["rules"]] == ["manager.example.com"]
    public_urls = {doc["data"].get("PUBLIC_URL") for doc in find(docs, "ConfigMap")} - {None}
    assert public_urls == {"https://manager.example.com"}  # so the websocketUrl bridges get is wss://
    assert find(docs, "NetworkPolicy")
