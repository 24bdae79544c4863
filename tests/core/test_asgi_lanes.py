"""core/asgi.py: daphne's Django handler runs each request's sync work in one of a few long-lived threads,
in one call, and keeps what Django's own ASGI handler does (disconnects, streamed bodies, request_finished
after the response)."""

from __future__ import annotations

import asyncio
import threading

import pytest
from asgiref.sync import sync_to_async
from django.core.signals import request_finished
from django.db import connection, connections
from django.http import JsonResponse, StreamingHttpResponse
from django.test import override_settings
from django.urls import path

from core.asgi import LaneASGIHandler

pytestmark = pytest.mark.django_db(transaction=True)

seen: list[dict] = []
view_may_finish = threading.Event()
view_started = threading.Event()


def where(request):
    with connection.cursor() as cursor:  # a query, as a real view makes
        cursor.execute("SELECT 1")
    # The objects themselves (kept alive by the list): a thread's ident may be reused after it ends.
    seen.append({"thread": threading.current_thread(), "wrapper": connections["default"]})
    return JsonResponse({"ok": True})


def slow(request):
    view_started.set()
    view_may_finish.wait(5)
    seen.append({"thread": threading.get_ident(), "slow": True})
    return JsonResponse({"ok": True})


def streamed(request):
    view_thread = threading.get_ident()
    # What core.api.json_stream does under ASGI: each step run in the view's thread (its connection).
    step = sync_to_async(
        lambda n: f"{n}:{threading.get_ident() == view_thread};".encode(), thread_sensitive=True
    )

    async def in_view_thread():
        for n in range(3):
            yield await step(n)

    return StreamingHttpResponse(in_view_thread(), content_type="text/plain")


urlpatterns = [path("where", where), path("slow", slow), path("streamed", streamed)]


def scope_for(route: str) -> dict:
    return {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": f"/{route}",
        "raw_path": f"/{route}".encode(),
        "query_string": b"",
        "root_path": "",
        "headers": [(b"host", b"127.0.0.1")],
        "client": ("127.0.0.1", 5000),
        "server": ("127.0.0.1", 8000),
    }


async def call(handler, route: str, *, disconnect: asyncio.Event | None = None) -> dict:
    """One request through the handler; the answer's status and body, and when request_finished came."""
    answered = asyncio.Event()
    disconnect = disconnect or answered
    messages = []
    requested = False

    async def receive():
        nonlocal requested
        if not requested:
            requested = True
            return {"type": "http.request", "body": b"", "more_body": False}
        await disconnect.wait()
        return {"type": "http.disconnect"}

    async def send(message):
        messages.append(message)
        if message["type"] == "http.response.body" and not message.get("more_body"):
            answered.set()

    await handler(scope_for(route), receive, send)
    starts = [m for m in messages if m["type"] == "http.response.start"]
    body = b"".join(m.get("body", b"") for m in messages if m["type"] == "http.response.body")
    return {"status": starts[0]["status"] if starts else None, "body": body}


@pytest.fixture
def handler():
    seen.clear()
    view_started.clear()
    view_may_finish.clear()
    with override_settings(ROOT_URLCONF=__name__):
        lanes = LaneASGIHandler(threads=2)
        yield lanes
        lanes.close()


def test_requests_run_in_the_lanes_threads_and_keep_their_connection_wrapper(handler):
    async def scenario():
        answers = await asyncio.gather(*(call(handler, "where") for _ in range(20)))
        assert {answer["status"] for answer in answers} == {200}

    asyncio.run(scenario())
    assert len(seen) == 20
    # Two threads for twenty requests (Django's handler: a new thread, and connection, for each).
    threads = {entry["thread"] for entry in seen}
    assert len(threads) <= 2
    assert len({entry["wrapper"] for entry in seen}) == len(threads)  # one database wrapper per lane


def test_request_finished_comes_after_the_response_is_sent(handler):
    events = []

    def finished(**_):
        events.append("finished")

    request_finished.connect(finished, weak=False)
    try:

        async def scenario():
            answer = await call(handler, "where")
            events.append(f"answered {answer['status']}")
            for _ in range(200):  # the close is handed to the lane after the answer
                if "finished" in events:
                    break
                await asyncio.sleep(0.01)

        asyncio.run(scenario())
    finally:
        request_finished.disconnect(finished)
    assert events == ["answered 200", "finished"]


def test_a_client_that_goes_away_is_not_answered_and_its_view_finishes(handler):
    finished = threading.Event()

    def on_finished(**_):
        finished.set()

    request_finished.connect(on_finished, weak=False)
    try:

        async def scenario():
            gone = asyncio.Event()
            task = asyncio.create_task(call(handler, "slow", disconnect=gone))
            await asyncio.to_thread(view_started.wait, 5)
            gone.set()  # the client disconnects while the view runs
            answer = await asyncio.wait_for(task, 5)
            assert answer["status"] is None  # nothing sent
            assert not finished.is_set() and seen == []  # the view is still running
            view_may_finish.set()
            for _ in range(500):
                if finished.is_set():
                    break
                await asyncio.sleep(0.01)

        asyncio.run(scenario())
    finally:
        request_finished.disconnect(on_finished)
    assert finished.is_set() and seen and seen[0]["slow"]  # it ran to the end and its response was closed


def test_a_streamed_bodys_steps_run_in_the_views_thread(handler):
    answer = asyncio.run(call(handler, "streamed"))
    assert answer["status"] == 200
    assert answer["body"] == b"0:True;1:True;2:True;"


def test_websocket_scopes_are_not_its_business(handler):
    async def scenario():
        with pytest.raises(ValueError, match="Django can only handle ASGI/HTTP"):
            await handler({"type": "websocket"}, None, None)

    asyncio.run(scenario())
