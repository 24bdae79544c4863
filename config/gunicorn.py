"""gunicorn's worker class for the REST API: slow clients must not starve the workers (issue 8).

`manage.py run_prod`, the image's CMD and the Helm chart all start gunicorn with
`--worker-class config.gunicorn.ThreadWorker --threads GUNICORN_THREADS`. It relies on gunicorn 27's
gthread internals (TConn.init, enqueue_req, finish_request, set_accept_enabled): the slow-client tests
(tests/e2e/test_slow_clients.py) catch a release that changes them.
"""

from __future__ import annotations

import errno
import json
import socket
import tempfile
import time
from contextlib import suppress

from django.conf import settings
from gunicorn.http.unreader import SocketUnreader
from gunicorn.workers import gthread

# After the first READ_TIMEOUT, a request must keep arriving at this rate: a 10 MB body gets 160 s more.
REQUEST_MIN_BYTES_PER_SECOND = 64 * 1024
BODY_SPOOL_BYTES = 1024 * 1024  # a buffered body larger than this goes to a temporary file


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


class DeadlineConnection(gthread.TConn):
    def init(self):
        fresh = not self.initialized
        super().init()
        unreader = getattr(self.parser, "unreader", None)
        if fresh and type(unreader) is SocketUnreader:  # HTTP/1.1 (not h2, not uwsgi)
            deadline_unreader = DeadlineUnreader(unreader.sock, unreader.mxchunk, self.read_timeout)
            deadline_unreader.buf = unreader.buf
            self.parser.unreader = deadline_unreader
            deadline_unreader.arm()


class ThreadWorker(gthread.ThreadWorker):
    """gunicorn's gthread worker, hardened against slow clients (issue 8; docs/decisions.md).

    - A thread reads a request's headers and body within a deadline (GUNICORN_REQUEST_READ_TIMEOUT_
      SECONDS, extended for a large body) and buffers the body before Django runs, so a client that
      stalls gets 408 and its connection closed; the view never waits on the network.
    - A worker whose threads are all busy stops accepting, so new connections go to a worker with a
      free thread (stock gthread would queue them behind the slow ones).
    - The main thread keeps notifying the arbiter whatever the threads do, so no worker is killed.
    """

    def run(self):
        self.busy_threads = 0
        self.read_timeout = float(settings.GUNICORN_REQUEST_READ_TIMEOUT_SECONDS)  # app loaded: configured
        super().run()

    def accept(self, listener):
        # gthread.ThreadWorker.accept with a DeadlineConnection
        try:
            client_sock, client_addr = listener.accept()
        except OSError as exc:
            if exc.errno not in (errno.EAGAIN, errno.ECONNABORTED, errno.EWOULDBLOCK):
                raise
            return
        self.nr_conns += 1
        client_sock.setblocking(True)
        conn = DeadlineConnection(self.cfg, client_sock, client_addr, listener.getsockname())
        conn.read_timeout = self.read_timeout
        self.enqueue_req(conn)

    def set_accept_enabled(self, enabled):
        # run() asks again on every turn of its loop while this differs from what it wants.
        super().set_accept_enabled(enabled and self.busy_threads < self.cfg.threads)

    def enqueue_req(self, conn):  # main thread, like finish_request
        self.busy_threads += 1
        if self.busy_threads >= self.cfg.threads:
            super().set_accept_enabled(False)
        super().enqueue_req(conn)

    def finish_request(self, conn, fs):
        self.busy_threads -= 1
        super().finish_request(conn, fs)

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


def req_content_length(req) -> int:
    for name, value in req.headers:
        if name == "CONTENT-LENGTH":
            with suppress(ValueError):
                return int(value)
    return 0
