"""An instance's scrape address (`host:port`): where Prometheus scrapes its PromSNMP (service discovery)."""

from __future__ import annotations

import ipaddress
import re

# A DNS name (labels of letters, digits and hyphens), an IPv4 address, or a bracketed IPv6 address; a port.
_LABEL = r"[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
_PORT = r"([1-9][0-9]{0,3}|[1-5][0-9]{4}|6[0-4][0-9]{3}|65[0-4][0-9]{2}|655[0-2][0-9]|6553[0-5])"  # 1-65535
SCRAPE_ADDRESS_PATTERN = rf"^({_LABEL}(\.{_LABEL})*|\[[0-9A-Fa-f:.]+\]):{_PORT}$"
_SHAPE = re.compile(SCRAPE_ADDRESS_PATTERN)


def valid_scrape_address(value: str) -> bool:
    if len(value) > 262 or not _SHAPE.match(value):
        return False
    host = value.rpartition(":")[0]
    if host.startswith("["):
        try:
            ipaddress.IPv6Address(host[1:-1])
        except ValueError:
            return False
    elif len(host) > 253:
        return False
    return True
