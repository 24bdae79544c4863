"""The first pass of a discovery scan: which addresses answer SNMP at all, found without state per address.

One UDP socket per address family sends one small request to every address at a bounded rate, then
waits for the answers; only the addresses that answered get the full GET (snmp.scanner, pysnmp). The
requests are encoded here by hand (BER), once per kind of request and length of request id:

- v1/v2c: a GET of sysObjectID.0 with the config's community. A wrong community gets no answer.
- v3: the engine-id discovery request (RFC 3414 §4: noAuthNoPriv, empty engine id and user name,
  reportable). Every v3 agent answers it with a REPORT (usmStatsUnknownEngineIDs) without credentials,
  so the full GET with the real user and keys tells a device with other credentials (an "auth" error)
  from a silent address, as before.

The request id (and the v3 msgID) is the address's position in the targets, plus a random offset,
modulo 2^31: an answer names its address without a lookup table. The state of the addresses in flight is
one byte each in a ring (`window` addresses at most), so memory stays flat whatever the size of the
targets; timeouts are kept per batch of consecutive addresses, not per address.
"""

from __future__ import annotations

import asyncio
import bisect
import collections
import contextlib
import ipaddress
import secrets
import socket
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from snmp.targets import Target

SYS_OBJECT_ID = "1.3.6.1.2.1.1.2.0"
RATE = 20_000  # requests per second, all families and kinds of request together
WINDOW = 1 << 18  # addresses in flight at most (sent, not yet answered or timed out, or in the full GET)
BATCH = 64  # addresses sent back to back at most (their timeout is one entry); fewer at low rates
BATCH_SECONDS = 0.01  # a batch is at most this much of the rate's requests
RECEIVE_BUFFER = 4 << 20  # asked for (the kernel caps it at net.core.rmem_max)
_RIDS = 1 << 31  # request ids are 0 to 2^31 - 1 (a positive INTEGER32)
_MAX_DATAGRAM = 65535

# The state byte of a slot of the ring.
_FREE, _PENDING, _ANSWERED = 0, 1, 2

_RID = object()  # where the request id goes in a template


# --- BER, just what the two requests and the answers' first fields need --------------------------------


def _length(size: int) -> bytes:
    if size < 0x80:
        return bytes((size,))
    octets = size.to_bytes((size.bit_length() + 7) // 8, "big")
    return bytes((0x80 | len(octets),)) + octets


def _integer(value: int) -> bytes:
    content = value.to_bytes((value.bit_length() + 8) // 8, "big", signed=True)
    return b"\x02" + _length(len(content)) + content


def _octets(value: bytes) -> bytes:
    return b"\x04" + _length(len(value)) + value


def _oid(text: str) -> bytes:
    parts = [int(part) for part in text.split(".")]
    content = bytearray((40 * parts[0] + parts[1],))
    for part in parts[2:]:
        chunk = [part & 0x7F]
        part >>= 7
        while part:
            chunk.append(0x80 | (part & 0x7F))
            part >>= 7
        content.extend(reversed(chunk))
    return b"\x06" + _length(len(content)) + bytes(content)


def _render(node: Any, size: int) -> tuple[list[Any], int]:
    """A template → its pieces (bytes and _RID markers) and encoded length, for a request id of `size`
    octets. A node is bytes (encoded already), _RID (an INTEGER) or (tag, [children])."""
    if node is _RID:
        return [b"\x02" + bytes((size,)), _RID], 2 + size
    if isinstance(node, bytes):
        return [node], len(node)
    tag, children = node
    pieces: list[Any] = []
    total = 0
    for child in children:
        child_pieces, child_size = _render(child, size)
        pieces.extend(child_pieces)
        total += child_size
    header = bytes((tag,)) + _length(total)
    return [header, *pieces], len(header) + total


@dataclass(frozen=True)
class Probe:
    """One kind of first-pass request; `key` is what an answer to it carries: (0 or 1, community) for
    v1/v2c, (3, None) for v3."""

    key: tuple[int, bytes | None]
    segments: tuple[tuple[bytes, ...], ...]  # by request id length (1 to 4 octets): join with the id

    def packet(self, rid: bytes) -> bytes:
        return rid.join(self.segments[len(rid) - 1])


def _probe(key: tuple[int, bytes | None], template: Any) -> Probe:
    by_size = []
    for size in range(1, 5):
        pieces, _ = _render(template, size)
        segments: list[bytes] = [b""]
        for piece in pieces:
            if piece is _RID:
                segments.append(b"")
            else:
                segments[-1] += piece
        by_size.append(tuple(segments))
    return Probe(key=key, segments=tuple(by_size))


def community_probe(version: int, community: str) -> Probe:
    """v1 (version 1) or v2c (version 2): GET sysObjectID.0."""
    wire_version = 0 if version == 1 else 1
    secret = community.encode()
    zero = _integer(0)
    var_binds = (0x30, [(0x30, [_oid(SYS_OBJECT_ID), b"\x05\x00"])])
    template = (0x30, [_integer(wire_version), _octets(secret), (0xA0, [_RID, zero, zero, var_binds])])
    return _probe((wire_version, secret), template)


def engine_discovery_probe() -> Probe:
    """v3: a reportable noAuthNoPriv GET with an empty engine id and user (RFC 3414 §4)."""
    zero = _integer(0)
    empty = _octets(b"")
    usm = (0x30, [empty, zero, zero, empty, empty, empty])  # engine id, boots, time, user, auth, priv
    usm_octets, _ = _render(usm, 1)
    header = (0x30, [_RID, _integer(_MAX_DATAGRAM - 28), _octets(b"\x04"), _integer(3)])  # reportable, USM
    scoped = (0x30, [empty, empty, (0xA0, [_RID, zero, zero, (0x30, [])])])
    template = (0x30, [_integer(3), header, _octets(b"".join(usm_octets)), scoped])
    return _probe((3, None), template)


def probes_for(configs: list[dict[str, Any]]) -> list[Probe]:
    """The first-pass requests that the wire configs need, each once: one per v1/v2c community, one
    engine-id discovery for any number of v3 users."""
    probes: dict[tuple[int, bytes | None], Probe] = {}
    for config in configs:
        if config["version"] == 3:
            probe = engine_discovery_probe()
        else:
            probe = community_probe(config["version"], config["readCommunity"])
        probes.setdefault(probe.key, probe)
    return list(probes.values())


def _tlv(data: bytes, pos: int) -> tuple[int, int, int]:
    """(tag, content start, content end) of the TLV at `pos`; IndexError/ValueError when cut or bad."""
    tag = data[pos]
    size = data[pos + 1]
    pos += 2
    if size & 0x80:
        count = size & 0x7F
        if not 1 <= count <= 4:
            raise ValueError("BER length")
        size = int.from_bytes(data[pos : pos + count], "big")
        pos += count
    end = pos + size
    if end > len(data):
        raise ValueError("cut short")
    return tag, pos, end


def _int_at(data: bytes, pos: int) -> tuple[int, int]:
    tag, start, end = _tlv(data, pos)
    if tag != 0x02 or not 1 <= end - start <= 5:
        raise ValueError("not an INTEGER")
    return int.from_bytes(data[start:end], "big", signed=True), end


def parse_answer(data: bytes) -> tuple[tuple[int, bytes | None], int] | None:
    """An answer's (probe key, request id): a v1/v2c GetResponse's community and request-id, a v3
    message's msgID; None for anything else."""
    try:
        tag, pos, _ = _tlv(data, 0)
        if tag != 0x30:
            return None
        version, pos = _int_at(data, pos)
        if version in (0, 1):
            tag, start, pos = _tlv(data, pos)
            if tag != 0x04:
                return None
            community = bytes(data[start:pos])
            tag, start, _ = _tlv(data, pos)
            if tag != 0xA2:  # GetResponse
                return None
            rid, _ = _int_at(data, start)
            return (version, community), rid
        if version == 3:
            tag, start, _ = _tlv(data, pos)
            if tag != 0x30:
                return None
            msg_id, _ = _int_at(data, start)
            return (3, None), msg_id
    except (IndexError, ValueError):
        return None
    return None


# --- addresses by position --------------------------------------------------------------------------


class Addresses:
    """The targets' addresses by position (overlaps counted as given), without a list of them."""

    def __init__(self, targets: list[Target]):
        self.targets = targets
        self.starts: list[int] = []
        total = 0
        for target in targets:
            self.starts.append(total)
            total += target.count
        self.total = total

    def at(self, index: int) -> tuple[int, str]:
        """(address family, text) of the address at `index`."""
        position = bisect.bisect_right(self.starts, index) - 1
        target = self.targets[position]
        return _text(target.version, int(target.first) + index - self.starts[position])

    def walk(self):
        """(family, text) of every address, in order."""
        for target in self.targets:
            start, end = int(target.first), int(target.last)
            for value in range(start, end + 1):
                yield _text(target.version, value)


def _text(version: int, value: int) -> tuple[int, str]:
    if version == 4:
        return socket.AF_INET, socket.inet_ntoa(value.to_bytes(4, "big"))
    return socket.AF_INET6, str(ipaddress.IPv6Address(value))


# --- the sweep -----------------------------------------------------------------------------------


class Sweep:
    """Send every probe to every address at most `rate` requests per second; an address that answers
    any of them is handed to `on_answer(index, address)` (it is then in the caller's hands until
    `release(index)`); one that answers none within `timeout` seconds, after `retries` resends, counts
    as silent (`on_silent(count)`, a batch at a time); one that cannot be sent to goes to
    `on_error(index, address, error)`. `run()` returns when every address has been sent and has
    answered or timed out."""

    def __init__(
        self,
        addresses: Addresses,
        probes: list[Probe],
        *,
        port: int,
        timeout: float,
        retries: int,
        rate: float = RATE,
        window: int = WINDOW,
        on_answer: Callable[[int, str], None],
        on_silent: Callable[[int], Awaitable[None]],
        on_error: Callable[[int, str, OSError], None],
    ):
        self.addresses = addresses
        self.probes = probes
        self.keys = {probe.key for probe in probes}
        self.port = port
        self.timeout = timeout
        self.retries = retries
        self.rate = rate
        self.size = max(1, min(window, addresses.total))  # the ring
        self.state = bytearray(self.size)
        self.on_answer = on_answer
        self.on_silent = on_silent
        self.on_error = on_error
        self.offset = secrets.randbelow(_RIDS)
        self.low = 0  # every address below this one is done
        self.high = 0  # the next address to send to
        self.sent = 0  # requests sent (each probe to each address, resends included)
        self.answered = 0
        self._sockets: dict[int, socket.socket] = {}
        self._space = asyncio.Event()  # set when release() frees the slot the sender waits for
        self._loop: asyncio.AbstractEventLoop | None = None

    # The ring: address i lives in slot i % size while it is in flight; low..high-1 are the live ones.

    def _rid(self, index: int) -> bytes:
        value = (index + self.offset) % _RIDS
        return value.to_bytes((value.bit_length() + 8) // 8, "big")

    def _index(self, rid: int) -> int | None:
        if rid < 0:
            return None
        index = self.low + (rid - self.offset - self.low) % _RIDS
        return index if index < self.high else None

    def _done(self, index: int) -> None:
        self.state[index % self.size] = _FREE
        while self.low < self.high and self.state[self.low % self.size] == _FREE:
            self.low += 1

    def release(self, index: int) -> None:
        """The caller is done with an address on_answer handed over."""
        self._done(index)
        self._space.set()

    # --- sockets

    def _socket(self, family: int) -> socket.socket:
        sock = self._sockets.get(family)
        if sock is None:
            sock = socket.socket(family, socket.SOCK_DGRAM)
            sock.setblocking(False)
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, RECEIVE_BUFFER)
            self._sockets[family] = sock
            assert self._loop is not None
            self._loop.add_reader(sock.fileno(), self._readable, sock)
        return sock

    def _readable(self, sock: socket.socket) -> None:
        for _ in range(4096):  # then let the sender run: more are read on the next call
            try:
                data = sock.recv(_MAX_DATAGRAM)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:  # an ICMP error queued on the socket (ECONNREFUSED): not an answer
                continue
            answer = parse_answer(data)
            if answer is None or answer[0] not in self.keys:
                continue
            index = self._index(answer[1])
            if index is None or self.state[index % self.size] != _PENDING:
                continue  # late (timed out already), a second probe's answer, or not ours
            self.state[index % self.size] = _ANSWERED
            self.answered += 1
            self.on_answer(index, self.addresses.at(index)[1])

    def close(self) -> None:
        for sock in self._sockets.values():
            if self._loop is not None:
                self._loop.remove_reader(sock.fileno())
            sock.close()
        self._sockets.clear()

    async def _send(self, index: int, family: int, address: str) -> bool:
        """Every probe to one address; False when it cannot be sent to (on_error has it)."""
        sock = self._socket(family)
        destination = (address, self.port) if family == socket.AF_INET else (address, self.port, 0, 0)
        rid = self._rid(index)
        for probe in self.probes:
            packet = probe.packet(rid)
            try:
                sock.sendto(packet, destination)
            except (BlockingIOError, InterruptedError):
                assert self._loop is not None
                await self._loop.sock_sendto(sock, packet, destination)  # the send buffer is full: wait
            except ConnectionRefusedError:
                pass  # an earlier ICMP port unreachable reported late: this request still went out
            except OSError as exc:  # unreachable network, a broadcast address, …
                self.on_error(index, address, exc)
                return False
            self.sent += 1
        return True

    # --- the pass

    async def run(self) -> None:
        self._loop = loop = asyncio.get_running_loop()
        pending = collections.deque()  # (deadline, attempt, first, end): a batch's timeout
        walk = self.addresses.walk()
        total = self.addresses.total
        started = loop.time()
        batch = max(1, min(BATCH, int(self.rate * BATCH_SECONDS / len(self.probes))))
        try:
            while True:
                now = loop.time()
                while pending and pending[0][0] <= now:
                    _, attempt, first, end = pending.popleft()
                    await self._expire(pending, attempt, first, end)
                space = self.size - (self.high - self.low)
                count = min(batch, total - self.high, space)
                # The rate: a batch goes once its requests fit in what the elapsed time allows.
                due = started + (self.sent + count * len(self.probes)) / self.rate
                if count > 0 and due <= loop.time():
                    first = self.high
                    for family, address in _take(walk, count):
                        index = self.high
                        self.high += 1
                        self.state[index % self.size] = _PENDING
                        if not await self._send(index, family, address):
                            self._done(index)
                    pending.append((loop.time() + self.timeout, 0, first, self.high))
                    await asyncio.sleep(0)  # let the answers in
                    continue
                if self.high >= total and not pending:
                    return
                # Sleep until the next batch may go, the next timeout, or a slot is released.
                wake = pending[0][0] if pending else loop.time() + 1
                if count > 0:
                    wake = min(wake, due)
                delay = max(0.0, wake - loop.time())
                if count == 0 and self.high < total:  # the ring is full: wait for release()
                    self._space.clear()
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self._space.wait(), delay)
                else:
                    await asyncio.sleep(delay)
        finally:
            self.close()

    async def _expire(self, pending: collections.deque, attempt: int, first: int, end: int) -> None:
        """A batch's timeout: resend to those still silent, or count them silent after the last try."""
        silent = 0
        resent = False
        for index in range(first, end):
            if self.state[index % self.size] != _PENDING:
                continue
            if attempt < self.retries:
                family, address = self.addresses.at(index)
                if await self._send(index, family, address):
                    resent = True
                else:
                    self._done(index)
            else:
                self._done(index)
                silent += 1
        if resent:
            assert self._loop is not None
            pending.append((self._loop.time() + self.timeout, attempt + 1, first, end))
        if silent:
            self._space.set()
            await self.on_silent(silent)


def _take(iterator, count: int):
    for _ in range(count):
        item = next(iterator, None)
        if item is None:
            return
        yield item
