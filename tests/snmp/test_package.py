"""The snmp package: no Django and no server app, and one vocabulary that the manager validates with
and the scanner reads."""

from __future__ import annotations

import itertools
import subprocess
import sys
from pathlib import Path

import pytest

from snmp import scanner
from snmp.credentials import AUTH_PROTOCOLS, PRIV_PROTOCOLS, SECURITY_LEVELS, parse_snmp_credentials
from tests.e2e.agent_support import agent_env

ROOT = Path(__file__).resolve().parents[2]
SERVER = (
    "django",
    "rest_framework",
    "channels",
    "core",
    "sites",
    "instances",
    "inventory",
    "discovery",
    "fleet",
    "config",
)


def test_the_package_imports_no_django_and_no_server_app():
    code = (
        "import sys, snmp, snmp.credentials, snmp.targets, snmp.sweep, snmp.scanner; "
        f"bad = sorted(m for m in sys.modules if m.split('.')[0] in {SERVER!r}); "
        "assert not bad, bad"
    )
    subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=agent_env(), check=True, timeout=60)


V3 = {
    "version": 3,
    "securityName": "monitor",
    "authPassphrase": "auth-pass-1",
    "privPassphrase": "priv-pass-1",
}
CONFIGS = [
    {"version": 1, "readCommunity": "public-1"},
    {"version": 2, "type": "community", "readCommunity": "public-2", "writeCommunity": "private-2"},
    *(
        {**V3, "securityLevel": level, "authProtocol": "SHA", "privProtocol": "AES"}
        for level in SECURITY_LEVELS
    ),
    *(
        {
            **V3,
            "securityLevel": "authPriv",
            "authProtocol": auth,
            "privProtocol": priv,
            "engineId": "80001f88",
        }
        for auth, priv in itertools.product(AUTH_PROTOCOLS, PRIV_PROTOCOLS)
    ),
]


@pytest.mark.parametrize("config", CONFIGS, ids=lambda c: "-".join(str(v) for v in c.values())[:60])
def test_credentials_the_manager_stores_are_what_the_scanner_uses(config):
    """Every version, level and protocol of the vocabulary: the scanner takes what parse_snmp_credentials
    accepts, and copies into a found device's agent exactly what the manager would store of it."""
    parsed = parse_snmp_credentials(config)
    assert parsed.errors == {}
    assert scanner.credentials(config).wire == {**parsed.plain, **parsed.secrets}
