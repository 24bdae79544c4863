"""Discovery targets: a single address ("192.168.1.1", "2001:db8::1"), a network in CIDR notation
("10.0.1.0/24", every address of it counts, network and broadcast included: a /24 is 256 targets),
or an inclusive range ("10.0.0.1-10.0.0.20", or the IPv4 shorthand "10.0.0.1-20").

`parse_target` validates one and gives it a normalised text form; `count_addresses` counts what a
list covers (duplicates and overlaps count as given) and `estimated_targets` what a stored list of
normalised texts covers; `iter_addresses` yields the addresses one by one, never holding a whole
list in memory.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

Address = ipaddress.IPv4Address | ipaddress.IPv6Address

MAX_TARGET_LENGTH = 100  # the longest valid form (two full IPv6 addresses with a dash) is 79


@dataclass(frozen=True)
class Target:
    text: str  # the normalised form, as stored and shown
    first: Address
    last: Address

    @property
    def count(self) -> int:
        return int(self.last) - int(self.first) + 1

    @property
    def version(self) -> int:
        return self.first.version

    def addresses(self) -> Iterator[str]:
        start, end = int(self.first), int(self.last)
        make = ipaddress.IPv4Address if self.version == 4 else ipaddress.IPv6Address
        for value in range(start, end + 1):
            yield str(make(value))


def _address(text: str, whole: str) -> Address:
    if "%" in text:
        raise ValueError(f"{whole!r}: zone ids (%…) are not supported")
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        raise ValueError(f"{whole!r}: {text!r} is not an IPv4 or IPv6 address") from None


def _network(text: str) -> Target:
    address_text, _, prefix = text.partition("/")
    address = _address(address_text, text)
    if not prefix.isascii() or not prefix.isdigit():
        raise ValueError(f"{text!r}: the prefix length after '/' must be a number")
    if int(prefix) > address.max_prefixlen:
        raise ValueError(
            f"{text!r}: the prefix length must be 0 to {address.max_prefixlen} for IPv{address.version}"
        )
    network = ipaddress.ip_network(f"{address}/{int(prefix)}", strict=False)
    if network.network_address != address:
        raise ValueError(f"{text!r} has host bits set; the network is {network}")
    return Target(text=str(network), first=network.network_address, last=network.broadcast_address)


def _range(text: str) -> Target:
    left, _, right = text.partition("-")
    first = _address(left.strip(), text)
    right = right.strip()
    if first.version == 4 and right.isascii() and right.isdigit():
        # "10.0.0.1-20": the last octet of the range's end.
        if int(right) > 255:
            raise ValueError(f"{text!r}: the last octet {right} is above 255")
        last: Address = ipaddress.IPv4Address((int(first) & ~0xFF) | int(right))
    else:
        last = _address(right, text)
    if last.version != first.version:
        raise ValueError(f"{text!r}: a range cannot mix IPv4 and IPv6")
    if last < first:
        raise ValueError(f"{text!r}: the range runs backwards ({last} comes before {first})")
    return Target(text=f"{first}-{last}", first=first, last=last)


def parse_target(text: object) -> Target:
    """One target as written → Target, or ValueError saying what is wrong with it."""
    if not isinstance(text, str):
        raise ValueError("a target must be a string: an IP address, a CIDR network or a range a-b")
    value = text.strip()
    if not value:
        raise ValueError("a target must not be empty")
    if len(value) > MAX_TARGET_LENGTH or not value.isascii():
        raise ValueError(f"{value[:MAX_TARGET_LENGTH]!r} is not an IP address, a CIDR network or a range")
    if "/" in value:
        return _network(value)
    if "-" in value:
        return _range(value)
    address = _address(value, value)
    return Target(text=str(address), first=address, last=address)


def count_addresses(targets: Iterable[Target]) -> int:
    """How many addresses the targets cover, each counted as often as it is listed."""
    return sum(target.count for target in targets)


def iter_addresses(targets: Iterable[Target]) -> Iterator[str]:
    """Every address of every target, in the order given, as text."""
    for target in targets:
        yield from target.addresses()


def estimated_targets(targets: Iterable[str]) -> int:
    """Addresses a seed's stored targets cover (a /24 is 256; ranges inclusive); stored targets were
    validated, and one that no longer parses (a hand-edited row) counts nothing rather than failing."""
    total = 0
    for text in targets:
        try:
            total += parse_target(text).count
        except ValueError:
            continue
    return total
