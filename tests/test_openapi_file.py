"""docs/openapi.yaml is the schema the server publishes: regenerate it with `make schema`."""

from pathlib import Path

import yaml
from django.core.management import call_command

COMMITTED = Path(__file__).resolve().parents[1] / "docs" / "openapi.yaml"


def test_committed_schema_is_current(tmp_path):
    generated = tmp_path / "openapi.yaml"
    call_command("spectacular", "--validate", "--fail-on-warn", "--file", str(generated))
    assert yaml.safe_load(COMMITTED.read_text()) == yaml.safe_load(generated.read_text()), (
        "docs/openapi.yaml is stale: run `make schema` and commit it"
    )
