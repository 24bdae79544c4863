"""One set of real snmpd processes for the scanner's tests (tests/snmpd.py), all at one UDP port:
"lab-router" on 127.0.0.1-3, "lab-switch" on 127.0.0.5, and "lab-far" spread over 127.0.0.0/16
(127.0.9.10, 127.0.200.10 and 127.0.255.254). Everything else in 127.0.0.0/8 at that port is silent."""

from __future__ import annotations

import pytest

from tests.snmpd import run_snmpd

FAR = ("127.0.9.10", "127.0.200.10", "127.0.255.254")


@pytest.fixture(scope="package")
def router():
    with run_snmpd(("127.0.0.1", "127.0.0.2", "127.0.0.3"), sys_name="lab-router") as agent:
        yield agent


@pytest.fixture(scope="package")
def switch(router):
    with run_snmpd(
        ("127.0.0.5",),
        port=router.port,
        sys_name="lab-switch",
        sys_descr="Lab switch 24-port",
        sys_location="Rack 8",
        sys_contact="lab@example.net",
    ) as agent:
        yield agent


@pytest.fixture(scope="package")
def far(router):
    with run_snmpd(FAR, port=router.port, sys_name="lab-far", sys_descr="Far away") as agent:
        yield agent
