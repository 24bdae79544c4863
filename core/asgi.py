"""Django's HTTP handler for daphne (the embedded default's one process, `manage.py serve`), run the way a
threaded WSGI server runs Django: each request's sync work in one of a few long-lived threads, in one go.

Django's own ASGI handler gives every request a thread of its own (a new `ThreadSensitiveContext`, whose
executor ends with the request), so every request opened a database connection and closed it again
(SQLite: about 1.8 ms of CPU), and it drives our sync-only middleware from the event loop, crossing
between the loop and a thread at every change of mode. Here a request takes one of `threads` lanes (an
executor with one thread, kept for the life of the process) and crosses twice: once to run the
request_started signal, the whole middleware chain and the view, as gunicorn's threads do; once, after
the response is sent, to close it (request_finished: the token-use flush, the connection's upkeep). The
lane's thread keeps its database connection for the next request (SQLite's CONN_MAX_AGE,
config/settings.py; PostgreSQL's pool hands it back as before). Measured in-process (bench/README.md):
4.0 ms of CPU per heartbeat before, 1.4 ms with the lanes and the kept connection.

What Django's handler does besides is kept: a client that goes away while its view runs is not answered
and its view finishes in its thread (core/admission.py holds its slot until then); a streamed answer's
steps run in the lane's thread (its connection), on the loop's request. There are no async views here.
"""

from __future__ import annotations

import asyncio
import logging
from concurrent.futures import Executor, ThreadPoolExecutor

from asgiref.sync import ThreadSensitiveContext
from django.core import signals
from django.core.exceptions import RequestAborted
from django.core.handlers.asgi import ASGIHandler, get_script_prefix
from django.db import connections
from django.urls import set_script_prefix

logger = logging.getLogger("django.request")


class LaneASGIHandler(ASGIHandler):
    """ASGIHandler whose requests run their sync work in one of `threads` long-lived threads, through a sync
    middleware chain in one call."""

    def __init__(self, *, threads: int):
        super().__init__()
        self.load_middleware(is_async=False)  # the sync chain: middleware and view in one call, in the lane
        self._executors = [
            ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"http-lane-{n}") for n in range(threads)
        ]
        self._idle: asyncio.LifoQueue | None = None  # made on the server's loop, at the first request

    def _lanes(self) -> asyncio.LifoQueue:
        if self._idle is None:
            self._idle = asyncio.LifoQueue()
            for executor in reversed(self._executors):
                self._idle.put_nowait(executor)
        return self._idle

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await super().__call__(scope, receive, send)  # refused, as Django does
        try:
            body_file = await self.read_body(receive)
        except RequestAborted:
            return
        lanes = self._lanes()
        executor = await lanes.get()  # LIFO: the thread used last, its caches warm
        try:
            # Every thread-sensitive call made for this request on the loop (a streamed body's steps) goes to
            # the lane's thread too; the executor outlives the context.
            async with ThreadSensitiveContext(executor=executor):
                await self._serve(executor, scope, body_file, receive, send)
        finally:
            lanes.put_nowait(executor)

    async def _serve(self, executor: Executor, scope, body_file, receive, send) -> None:
        responding = asyncio.wrap_future(executor.submit(self._respond, scope, body_file))
        listening = asyncio.create_task(self.listen_for_disconnect(receive))
        try:
            await asyncio.wait((responding, listening), return_when=asyncio.FIRST_COMPLETED)
            if responding.done():
                await self.send_response(responding.result(), send)
        except asyncio.CancelledError:
            pass  # the client went away while the response was sent (as Django's handler)
        finally:
            listening.cancel()
            if listening.done() and not listening.cancelled():
                error = listening.exception()
                if error is not None and not isinstance(error, RequestAborted):
                    raise error  # an ASGI message that should never come (Django's assertion)
            # After the response is sent, or when the view is done if the client went away first.
            responding.add_done_callback(lambda done: self._close_later(executor, done, body_file))

    def _respond(self, scope, body_file):
        """In the lane's thread: request_started (the connection's upkeep), then the middleware and view."""
        set_script_prefix(get_script_prefix(scope))
        signals.request_started.send(sender=self.__class__, scope=scope)
        request, error_response = self.create_request(scope, body_file)
        return error_response if request is None else self.get_response(request)

    def _close_later(self, executor: Executor, responding: asyncio.Future, body_file) -> None:
        response = None if responding.cancelled() or responding.exception() else responding.result()
        try:
            executor.submit(self._close, response, body_file)
        except RuntimeError:  # the executor was shut down: the server is stopping
            body_file.close()

    @staticmethod
    def _close(response, body_file) -> None:
        try:
            if response is not None:
                response.close()  # request_finished
        except Exception:
            logger.exception("closing a response failed")
        finally:
            body_file.close()

    def close(self) -> None:
        """Close each lane's database connections and stop its thread (the server has stopped)."""
        for executor in self._executors:
            executor.submit(connections.close_all)
            executor.shutdown(wait=True)
