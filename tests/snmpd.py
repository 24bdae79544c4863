"""A real net-snmp `snmpd` for discovery tests: in the foreground, on loopback addresses, at a free UDP port.

    with run_snmpd(addresses=("127.0.0.1", "127.0.0.2"), sys_name="lab-router") as agent:
        agent.port, agent.v2c, agent.v3_sha_aes, agent.v3_sha256_aes256  # wire SNMP configs

One snmpd answers the same for every address it listens on: each address is one "device" with the same
sysName. Run two to get two names. It gets its own config and SNMP_PERSISTENT_DIR in a temp dir (never
the machine's /etc/snmp or /var/lib/snmp), and is stopped at the end.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from config.demo import free_udp_port  # the demo starts its snmpd the same way
from tests.e2e.servers import stop

COMMUNITY = "lab-ro-2c"
V3_USER = "lab-sha-aes"
V3_USER_256 = "lab-sha256-aes256"
AUTH_PASS = "auth-pass-1"
PRIV_PASS = "priv-pass-1"
INTERFACES_OID = "1.3.6.1.2.1.2.1.0"
HINT = "net-snmp's snmpd and snmpget are missing: install them with `make system-packages`."


@dataclass
class Snmpd:
    port: int
    addresses: tuple[str, ...]
    sys_name: str
    sys_descr: str
    sys_location: str
    sys_contact: str
    process: subprocess.Popen
    log_path: Path
    v2c: dict = field(default_factory=lambda: {"version": 2, "type": "community", "readCommunity": COMMUNITY})
    v3_sha_aes: dict = field(
        default_factory=lambda: {
            "version": 3,
            "type": "usm",
            "securityName": V3_USER,
            "securityLevel": "authPriv",
            "authProtocol": "SHA",
            "authPassphrase": AUTH_PASS,
            "privProtocol": "AES",
            "privPassphrase": PRIV_PASS,
        }
    )
    v3_sha256_aes256: dict = field(
        default_factory=lambda: {
            "version": 3,
            "type": "usm",
            "securityName": V3_USER_256,
            "securityLevel": "authPriv",
            "authProtocol": "SHA256",
            "authPassphrase": AUTH_PASS,
            "privProtocol": "AES256",
            "privPassphrase": PRIV_PASS,
        }
    )

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-4000:]


def _config(sys_name: str, sys_descr: str, sys_location: str, sys_contact: str) -> str:
    return "\n".join(
        [
            f"rocommunity {COMMUNITY} 127.0.0.0/8",
            f'createUser {V3_USER} SHA "{AUTH_PASS}" AES "{PRIV_PASS}"',
            f'createUser {V3_USER_256} SHA-256 "{AUTH_PASS}" AES-256 "{PRIV_PASS}"',
            f"rouser {V3_USER} priv",
            f"rouser {V3_USER_256} priv",
            f"sysName {sys_name}",
            f"sysDescr {sys_descr}",
            f"sysLocation {sys_location}",
            f"sysContact {sys_contact}",
            "sysServices 72",
            "",
        ]
    )


def answers(address: str, port: int, timeout: float = 0.3) -> bool:
    """Does snmpd answer a v2c GET of sysName there (snmpget, so the check is not the code under test)."""
    result = subprocess.run(
        [
            "snmpget",
            "-v2c",
            "-c",
            COMMUNITY,
            "-t",
            str(timeout),
            "-r",
            "0",
            "-On",
            "-Ln",
            f"udp:{address}:{port}",
            "1.3.6.1.2.1.1.5.0",
        ],
        capture_output=True,
        text=True,
        env={**os.environ, "MIBS": ""},
        check=False,
    )
    return result.returncode == 0


@contextmanager
def run_snmpd(
    addresses: tuple[str, ...] = ("127.0.0.1", "127.0.0.2", "127.0.0.3"),
    *,
    sys_name: str = "lab-router",
    sys_descr: str = "Linux lab-router 6.1 net-snmp test agent",
    sys_location: str = "Rack 7, loopback",
    sys_contact: str = "noc@example.net",
    port: int | None = None,
    timeout: float = 10,
) -> Iterator[Snmpd]:
    """Start snmpd on the addresses at `port` (default: a free one), wait until it answers, stop it."""
    if not shutil.which("snmpd") and not os.path.exists("/usr/sbin/snmpd"):
        raise RuntimeError(HINT)
    if not shutil.which("snmpget"):
        raise RuntimeError(HINT)
    snmpd = shutil.which("snmpd") or "/usr/sbin/snmpd"
    with tempfile.TemporaryDirectory(prefix="snmpd-") as tmp:
        conf = Path(tmp) / "snmpd.conf"
        conf.write_text(_config(sys_name, sys_descr, sys_location, sys_contact))
        persistent = Path(tmp) / "persist"
        persistent.mkdir()
        log_path = Path(tmp) / "snmpd.log"
        chosen = port
        for _attempt in range(1 if port else 3):
            chosen = port or free_udp_port(addresses)
            listen = ",".join(f"udp:{address}:{chosen}" for address in addresses)
            with log_path.open("w") as log:
                process = subprocess.Popen(
                    [snmpd, "-f", "-Lo", "-C", "-c", str(conf), "-I", "-smux", listen],
                    env={**os.environ, "SNMP_PERSISTENT_DIR": str(persistent), "MIBS": ""},
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                )
            deadline = time.monotonic() + timeout
            while process.poll() is None and time.monotonic() < deadline:
                if all(answers(address, chosen) for address in addresses):
                    break
                time.sleep(0.05)
            else:
                stop(process, timeout=5)
                continue  # it exited (a port taken in between?) or never answered: another port
            break
        else:
            raise RuntimeError(f"snmpd did not start on {addresses}:\n{log_path.read_text()[-4000:]}")
        agent = Snmpd(
            port=chosen,
            addresses=addresses,
            sys_name=sys_name,
            sys_descr=sys_descr,
            sys_location=sys_location,
            sys_contact=sys_contact,
            process=process,
            log_path=log_path,
        )
        try:
            yield agent
        finally:
            stop(process, timeout=5)
