"""gunicorn's worker class for the REST API: slow clients must not starve the workers, and beyond
capacity requests are answered 503 at once instead of waiting in the kernel's backlog (issue 8).

`manage.py run_prod`, the image's CMD and the Helm chart all start gunicorn with
`--worker-class config.gunicorn.ThreadWorker --threads GUNICORN_THREADS`. It relies on gunicorn 27's
gthread internals (TConn.init, enqueue_req, finish_request, set_accept_enabled, the poller and the
keep-alive and pending queues): the slow-client and overload tests (tests/e2e/test_slow_clients.py,
tests/e2e/test_overload.py) catch a release that changes them.
"""

from __future__ import annotations

import errno
import json
import multiprocessing
import os
import selectors
import socket
import tempfile
import time
from collections import deque
from contextlib import suppress
from dataclasses import dataclass, field
from functools import partial

from django.conf import settings
from gunicorn.http.unreader import SocketUnreader
from gunicorn.workers import gthread

from core.admission import IN_FLIGHT, NEVER_SHED, ShedLog, overloaded_body, retry_after
from core.metrics import process_exists

# After the first READ_TIMEOUT, a request must keep arriving at this rate: a 10 MB body gets 160 s more.
REQUEST_MIN_BYTES_PER_SECOND = 64 * 1024
BODY_SPOOL_BYTES = 1024 * 1024  # a buffered body larger than this goes to a temporary file
TRIAGE_SECONDS = (
    5.0  # a connection read by the main thread (see ThreadWorker) must send its request line by then
)
TRIAGE_MAX_CONNECTIONS = 1024  # beyond this, the oldest is closed: a flood costs a bounded amount of memory
LINGER_SECONDS = 1.0  # after a 503, the client's unread request is drained this long, so it gets the answer
HANDED_OFF_POLL_SECONDS = 0.05  # a worker that left new connections to a sibling looks again this often


class RequestReadTimeout(Exception):
    """The client did not send its request in time (not an OSError: gunicorn answers it, see below)."""


class DeadlineUnreader(SocketUnreader):
    """gunicorn's socket reader, with a deadline for the request being read (its headers and body).

    Armed when a thread takes the request; the deadline starts at the first read and moves by one
    second for each REQUEST_MIN_BYTES_PER_SECOND received; disarmed once the body is buffered.
    """

    def __init__(self, sock, max_chunk: int, timeout: float):
        super().__init__(sock, max_chunk)
        self.timeout = timeout
        self.armed = False
        self.deadline: float | None = None

    def arm(self) -> None:
        self.armed, self.deadline = True, None

    def disarm(self) -> None:
        self.armed = False

    def chunk(self, size_hint=None):
        if not self.armed:
            return super().chunk(size_hint)
        now = time.monotonic()
        if self.deadline is None:
            self.deadline = now + self.timeout
        if now >= self.deadline:
            raise RequestReadTimeout
        self.sock.settimeout(self.deadline - now)
        try:
            data = super().chunk(size_hint)
        except TimeoutError as exc:
            raise RequestReadTimeout from exc
        finally:
            self.sock.settimeout(None)  # blocking, as gthread has it everywhere else
        self.deadline += len(data) / REQUEST_MIN_BYTES_PER_SECOND
        return data


class WorkerOccupancy:
    """How many requests each worker has taken (queued or running), in shared memory that the master
    creates when it imports this module, before it forks the workers: a worker whose threads are all busy
    learns whether a sibling still has a free one."""

    SLOTS = 64

    def __init__(self):
        self._lock = multiprocessing.Lock()
        self._pids = multiprocessing.RawArray("i", self.SLOTS)
        self._busy = multiprocessing.RawArray("i", self.SLOTS)

    def claim(self, pid: int) -> int:
        """A slot for this worker (a free one, or one of a worker that died); -1 when there is none."""
        with self._lock:
            for slot in range(self.SLOTS):
                owner = self._pids[slot]
                if owner == 0 or not process_exists(owner):
                    self._pids[slot], self._busy[slot] = pid, 0
                    return slot
        return -1

    def release(self, slot: int) -> None:
        if slot >= 0:
            self._pids[slot] = 0

    def set_busy(self, slot: int, busy: int) -> None:
        if slot >= 0:
            self._busy[slot] = busy

    def sibling_has_free_thread(self, slot: int, threads: int) -> bool:
        return any(
            other != slot
            and (pid := self._pids[other])
            and self._busy[other] < threads
            and process_exists(pid)
            for other in range(self.SLOTS)
        )


OCCUPANCY = WorkerOccupancy()


@dataclass(eq=False)
class Triage:
    """A connection the main thread reads itself, because the worker was full when its request came: it is
    answered 503 at once, unless it is a health probe or room was made meanwhile."""

    conn: DeadlineConnection
    deadline: float
    received: bytearray = field(default_factory=bytearray)
    answered: bool = False  # the 503 is sent; what the client still sends is drained until it closes


class DeadlineConnection(gthread.TConn):
    pushback = b""  # bytes of its first request that the main thread read before a thread took it

    def init(self):
        fresh = not self.initialized
        super().init()
        unreader = getattr(self.parser, "unreader", None)
        if fresh and self.pushback and unreader is not None:
            unreader.unread(self.pushback)
        if fresh and type(unreader) is SocketUnreader:  # HTTP/1.1 (not h2, not uwsgi)
            deadline_unreader = DeadlineUnreader(unreader.sock, unreader.mxchunk, self.read_timeout)
            deadline_unreader.buf = unreader.buf
            self.parser.unreader = deadline_unreader
            deadline_unreader.arm()


class ThreadWorker(gthread.ThreadWorker):
    """gunicorn's gthread worker, hardened against slow clients and overload (issue 8; docs/decisions.md).

    - A thread reads a request's headers and body within a deadline (GUNICORN_REQUEST_READ_TIMEOUT_
      SECONDS, extended for a large body) and buffers the body before Django runs, so a client that
      stalls gets 408 and its connection closed; the view never waits on the network.
    - A worker whose threads are all busy stops accepting while a sibling worker has a free thread, so
      new connections go there (stock gthread would queue them behind the slow ones).
    - When every worker is busy, a worker takes up to MAX_REQUESTS_IN_FLIGHT requests (queued for its
      threads); past that, the main thread reads the request line itself and answers 503 with
      Retry-After at once, on new and kept-alive connections alike, instead of leaving it in the
      kernel's backlog or the thread pool's queue. Health probes and /metrics are never refused.
      MAX_REQUESTS_IN_FLIGHT=0 turns this off (the connections then wait, as before).
    - The main thread keeps notifying the arbiter whatever the threads do, so no worker is killed.
    """

    def run(self):
        self.busy_threads = 0
        self.read_timeout = float(settings.GUNICORN_REQUEST_READ_TIMEOUT_SECONDS)  # app loaded: configured
        in_flight = int(settings.MAX_REQUESTS_IN_FLIGHT)
        self.admission_limit = max(in_flight, self.cfg.threads) if in_flight > 0 else 0
        self.shed_log = ShedLog(self.admission_limit)
        self.triaged: deque[Triage] = deque()
        self.slot = OCCUPANCY.claim(os.getpid())
        try:
            super().run()
        finally:
            OCCUPANCY.release(self.slot)

    # --- where a connection goes ---------------------------------------------------------------------

    def all_threads_busy(self) -> bool:
        return self.busy_threads >= self.cfg.threads

    def sibling_has_room(self) -> bool:
        return self.slot >= 0 and OCCUPANCY.sibling_has_free_thread(self.slot, self.cfg.threads)

    def admits(self) -> bool:
        """A request may be queued here (only called once all threads are busy)."""
        return not self.admission_limit or self.busy_threads < self.admission_limit or self.sibling_has_room()

    def wants_accept(self) -> bool:
        if not self.all_threads_busy():
            return True
        # Busy: leave new connections to a sibling with a free thread; when there is none, take them
        # (to queue up to the limit, then to shed) rather than let them wait unanswered in the backlog.
        return bool(self.admission_limit) and not self.sibling_has_room()

    def set_accept_enabled(self, enabled):
        # run() asks again on every turn of its loop while this differs from what it wants.
        super().set_accept_enabled(enabled and self.wants_accept())

    def wait_for_and_dispatch_events(self, timeout):
        if self.admission_limit and self.all_threads_busy() and not self._accepting:
            timeout = min(timeout, HANDED_OFF_POLL_SECONDS)  # the siblings may fill up meanwhile
        super().wait_for_and_dispatch_events(timeout)

    def accept(self, listener):
        # gthread.ThreadWorker.accept with a DeadlineConnection, and triage when full
        try:
            client_sock, client_addr = listener.accept()
        except OSError as exc:
            if exc.errno not in (errno.EAGAIN, errno.ECONNABORTED, errno.EWOULDBLOCK):
                raise
            return
        self.nr_conns += 1
        conn = DeadlineConnection(self.cfg, client_sock, client_addr, listener.getsockname())
        conn.read_timeout = self.read_timeout
        if self.all_threads_busy() and not self.admits():
            self.triage(conn)
            return
        self.enqueue_req(conn)

    def on_client_socket_readable(self, conn, client):
        # the next request on a kept-alive connection
        if not self.all_threads_busy() or self.admits():
            return super().on_client_socket_readable(conn, client)
        self.poller.unregister(client)
        self.keepalived_conns.remove(conn)
        self.triage(conn)

    def on_pending_socket_readable(self, conn, client):
        # a connection whose first request was slow to come (gthread deferred it from a thread)
        if not self.all_threads_busy() or self.admits():
            return super().on_pending_socket_readable(conn, client)
        self.poller.unregister(client)
        self.pending_conns.remove(conn)
        self.triage(conn)

    def enqueue_req(self, conn):  # main thread, like finish_request
        self.busy_threads += 1
        OCCUPANCY.set_busy(self.slot, self.busy_threads)
        IN_FLIGHT.set(self.busy_threads)
        if self.all_threads_busy():
            super().set_accept_enabled(self.wants_accept())
        super().enqueue_req(conn)

    def finish_request(self, conn, fs):
        self.busy_threads -= 1
        OCCUPANCY.set_busy(self.slot, self.busy_threads)
        IN_FLIGHT.set(self.busy_threads)
        super().finish_request(conn, fs)

    # --- triage: the main thread reads the request line of a connection that came when full -----------

    def triage(self, conn: DeadlineConnection) -> None:
        if len(self.triaged) >= TRIAGE_MAX_CONNECTIONS:
            self.end_triage(self.triaged[0])
        entry = Triage(conn, deadline=time.monotonic() + min(self.read_timeout, TRIAGE_SECONDS))
        conn.sock.setblocking(False)
        self.triaged.append(entry)
        self.poller.register(conn.sock, selectors.EVENT_READ, partial(self.on_triage_readable, entry))

    def on_triage_readable(self, entry: Triage, _sock) -> None:
        try:
            data = entry.conn.sock.recv(64 * 1024)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data = b""
        if not data or entry.answered:  # the client closed, or the rest of a refused request
            if not data:
                self.end_triage(entry)
            return
        entry.received += data
        line_end = entry.received.find(b"\r\n")
        if line_end < 0 and len(entry.received) < 8192:
            return  # the request line is not complete yet
        if request_path(entry.received[: max(line_end, 0)]) in NEVER_SHED or self.admits():
            self.admit_triaged(entry)
        else:
            self.shed(entry)

    def admit_triaged(self, entry: Triage) -> None:
        self.triaged.remove(entry)
        self.poller.unregister(entry.conn.sock)
        conn = entry.conn
        if conn.initialized:
            conn.parser.unreader.unread(bytes(entry.received))
        else:
            conn.pushback = bytes(entry.received)
            conn.data_ready = True  # what the thread would wait for is already read
        self.enqueue_req(conn)

    def shed(self, entry: Triage) -> None:
        self.shed_log.shed()
        body = overloaded_body(self.admission_limit)
        head = (
            "HTTP/1.1 503 Service Unavailable\r\nConnection: close\r\nContent-Type: application/json\r\n"
            f"Retry-After: {retry_after()}\r\nContent-Length: {len(body)}\r\n\r\n"
        ).encode()
        try:
            entry.conn.sock.send(head + body)  # a few hundred bytes: a fresh socket's buffer takes them
            entry.conn.sock.shutdown(socket.SHUT_WR)
        except OSError:
            self.end_triage(entry)
            return
        # Closing with the client's request unread would reset the connection, and the client might
        # lose the answer: drain what it still sends until it closes, for LINGER_SECONDS at most.
        entry.answered, entry.received = True, bytearray()
        entry.deadline = time.monotonic() + LINGER_SECONDS

    def end_triage(self, entry: Triage) -> None:
        self.triaged.remove(entry)
        with suppress(OSError, KeyError, ValueError):
            self.poller.unregister(entry.conn.sock)
        self.nr_conns -= 1
        entry.conn.close()

    def murder_keepalived(self, force=False):
        super().murder_keepalived(force)
        now = time.monotonic()
        for entry in [entry for entry in self.triaged if force or entry.deadline <= now]:
            self.end_triage(entry)

    def handle(self, conn):
        unreader = getattr(conn.parser, "unreader", None)
        if isinstance(unreader, DeadlineUnreader):  # the next request on a kept-alive connection
            unreader.arm()
        return super().handle(conn)

    def handle_request(self, req, conn):
        unreader = req.unreader
        if isinstance(unreader, DeadlineUnreader) and unreader.armed:
            length = req_content_length(req)
            # Larger than any route accepts: Django answers 413 without reading, so nothing to buffer.
            if 0 < length <= settings.DATA_UPLOAD_MAX_MEMORY_SIZE:
                body = tempfile.SpooledTemporaryFile(max_size=BODY_SPOOL_BYTES)  # noqa: SIM115 (wsgi.input)
                while data := req.body.read(64 * 1024):
                    body.write(data)
                body.seek(0)
                req.body = body
            unreader.disarm()
        return super().handle_request(req, conn)

    def handle_error(self, req, client, addr, exc):
        if not isinstance(exc, RequestReadTimeout):
            return super().handle_error(req, client, addr, exc)
        self.log.warning("Request not received within its deadline from %s: 408, connection closed", addr)
        body = json.dumps(
            {"error": "request_timeout", "detail": "The request was not received in time.", "fields": {}}
        ).encode()
        head = (
            "HTTP/1.1 408 Request Timeout\r\nConnection: close\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n\r\n"
        ).encode()
        with suppress(OSError):
            client.settimeout(1)  # a client that does not read its answer does not hold the thread
            client.sendall(head + body)
        # Shut down here, so that the main thread's graceful close does not linger for a stalled client.
        with suppress(OSError):
            client.shutdown(socket.SHUT_RDWR)


def request_path(request_line: bytes) -> str:
    """The path of an HTTP/1.x request line (`GET /health/live?x=1 HTTP/1.1` → `/health/live`)."""
    parts = bytes(request_line).split(b" ")
    return parts[1].split(b"?", 1)[0].decode("latin-1") if len(parts) == 3 else ""


def req_content_length(req) -> int:
    for name, value in req.headers:
        if name == "CONTENT-LENGTH":
            with suppress(ValueError):
                return int(value)
    return 0
