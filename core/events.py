"""The event bus: messages for an instance's or a site's sockets, delivered from a transactional outbox.

Groups: `site.<siteId>` (every socket of the site), `instance.<instanceId>` (one instance's sockets) and
`token.<tokenId>` (the sockets opened with one token).

`publish()` (a spec event) and `end_sessions()` (close sockets) write an OutboxMessage row in the
caller's transaction. After commit the process relays the rows to the channel layer itself when it can
deliver from here: with the Redis layer from any process, with the in-memory layer only inside the
server that holds the sockets. Otherwise (a management command in the embedded default), and whenever
a delivery failed (Redis down), the rows wait for the relay loop that runs in every server process
(`start_relay`). So a committed change always reaches the sockets, whichever process made it, and an
outage delays messages without losing them. Delivered events are kept EVENT_REPLAY_SECONDS with their
`seq`: a socket that reconnects with `lastSeq` is sent what it missed (`events_since`).

In the embedded default the channel layer lives in memory on the server's event loop; a relay from a
thread that is not a request's (the embedded beat) is handed to that loop, or it would only be
delivered when the loop next woke for something else.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import timedelta
from typing import Any

from asgiref.sync import async_to_sync, sync_to_async
from channels.db import database_sync_to_async
from channels.layers import InMemoryChannelLayer, get_channel_layer
from django.conf import settings
from django.db import transaction
from django.utils import timezone

from core.hooks import Provider
from core.logging import current_request_id
from core.models import OutboxMessage
from core.timefmt import iso_z

logger = logging.getLogger("promsnmp.events")

_server_loop: asyncio.AbstractEventLoop | None = None
_relay_tasks: dict[asyncio.AbstractEventLoop, asyncio.Task] = {}
_pending: set[asyncio.Future] = set()  # keeps relays scheduled from async code alive until done
RELAY_BATCH = 200
PRUNE_EVERY_SECONDS = 60
# The consumer method a message is dispatched to (instances/consumers.py), by kind.
HANDLERS = {OutboxMessage.Kind.EVENT: "event.message", OutboxMessage.Kind.SESSION_END: "session.end"}
# site id → the site's next event number, or None (no such site: the event goes out unnumbered). The sites
# app, which keeps the counter on the site row, provides it in ready().
next_event_seq: Provider[[str], int | None] = Provider("next_event_seq", default=lambda site_id: None)


def set_server_loop(loop: asyncio.AbstractEventLoop) -> None:
    global _server_loop
    _server_loop = loop


def remember_server_loop(app):
    """ASGI wrapper that notes the server's event loop, and starts its relay, on the first connection."""

    async def wrapper(scope, receive, send):
        loop = asyncio.get_running_loop()
        if _server_loop is None:
            set_server_loop(loop)
        start_relay(loop)
        return await app(scope, receive, send)

    return wrapper


def site_group(site_id: str) -> str:
    return f"site.{site_id}"


def instance_group(instance_id: str) -> str:
    return f"instance.{instance_id}"


def token_group(token_id: str) -> str:
    return f"token.{token_id}"


def build_event(event_type: str, site_id: str, payload: dict[str, Any]) -> dict[str, Any]:
    """The spec's envelope; with `requestId` (ours, like `seq`) when a request, or a task a request
    caused, made the event: the X-Request-ID of the manager's log lines and audit rows about it."""
    event = {"type": event_type, "timestamp": iso_z(timezone.now()), "siteId": site_id, "payload": payload}
    if request_id := current_request_id():
        event["requestId"] = request_id
    return event


def publish(*, group: str, event_type: str, site_id: str, payload: dict[str, Any]) -> None:
    """Queue a spec event for the group; it is sent after commit, never for a change that rolls back."""
    _enqueue(OutboxMessage.Kind.EVENT, group, site_id, build_event(event_type, site_id, payload))


def end_sessions(*, group: str, code: int, error: str, detail: str) -> None:
    """Close every socket of the group after commit: an error frame {error, detail}, then close `code`."""
    _enqueue(OutboxMessage.Kind.SESSION_END, group, "", {"code": code, "error": error, "detail": detail})


def _enqueue(kind: str, group: str, site_id: str, body: dict[str, Any]) -> None:
    row = OutboxMessage.objects.create(kind=kind, group=group, site_id=site_id, body=body)
    transaction.on_commit(lambda: relay_soon(row.id))


def relay_soon(row_id: int) -> None:
    """After a commit: deliver this message now if this process can. What it cannot deliver (or what
    fails) waits for a server's relay loop."""
    if not _can_deliver_here():
        return
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        _relay_logged(row_id)
        return
    # Called on an event loop (async code): the ORM must run in a thread.
    task = asyncio.ensure_future(sync_to_async(_relay_logged)(row_id))
    _pending.add(task)
    task.add_done_callback(_pending.discard)


def _can_deliver_here() -> bool:
    layer = get_channel_layer()
    if layer is None:
        return False
    if isinstance(layer, InMemoryChannelLayer):
        # Only the process that holds the sockets can deliver to its in-memory layer.
        running = _server_loop is not None and _server_loop.is_running()
        return running or settings.EVENT_RELAY_WITHOUT_SERVER
    return True


def _relay_logged(row_id: int) -> None:
    try:
        relay_pending(ids=[row_id])
    except Exception:
        # Committed and kept in the outbox: the relay loop delivers it when the layer is back.
        logger.warning("could not relay events now; they stay queued", exc_info=True)


def relay_pending(ids: list[int] | None = None) -> int:
    """Deliver queued messages (all, or those `ids`), oldest first; returns how many. Raises when the
    channel layer cannot take one (it and everything after it stay queued)."""
    layer = get_channel_layer()
    delivered = 0
    while True:
        failure: Exception | None = None
        with transaction.atomic():
            # SKIP LOCKED: several relays (API workers, every daphne) share the queue without waiting.
            queued = OutboxMessage.objects.select_for_update(skip_locked=True).filter(
                delivered_at__isnull=True
            )
            if ids is not None:
                queued = queued.filter(id__in=ids)
            rows = list(queued.order_by("id")[:RELAY_BATCH])
            for row in rows:
                try:
                    _deliver(layer, row)
                except Exception as exc:
                    failure = exc
                    break
                delivered += 1
        if failure is not None:
            raise failure
        if len(rows) < RELAY_BATCH:
            return delivered


def _deliver(layer, row: OutboxMessage) -> None:
    """Send one message; an event is numbered and kept for replay, anything else is deleted."""
    with transaction.atomic():  # a number taken for a message that could not be sent is given back
        if row.kind != OutboxMessage.Kind.EVENT:
            _group_send(layer, row.group, {"type": HANDLERS[row.kind], "end": row.body})
            row.delete()
            return
        body = dict(row.body)
        # Numbered when sent, not when made: the numbers follow the order of delivery, per site.
        row.seq = next_event_seq(row.site_id)
        if row.seq is not None:
            body["seq"] = row.seq
        _group_send(layer, row.group, {"type": HANDLERS[row.kind], "event": body})
        row.delivered_at = timezone.now()
        row.save(update_fields=["seq", "delivered_at"])


def events_since(
    *, site_id: str, groups: list[str], last_seq: int, limit: int = 1000
) -> list[dict[str, Any]]:
    """The site's delivered events for these groups numbered after `last_seq`, in order: what a socket
    that reconnects missed, as far back as EVENT_REPLAY_SECONDS keeps. One query."""
    rows = (
        OutboxMessage.objects.filter(
            site_id=site_id, kind=OutboxMessage.Kind.EVENT, group__in=groups, seq__gt=last_seq
        )
        .order_by("seq")
        .values_list("body", "seq")[:limit]
    )
    return [{**body, "seq": seq} for body, seq in rows]


def prune_delivered() -> int:
    """Forget delivered events older than the replay window."""
    horizon = timezone.now() - timedelta(seconds=settings.EVENT_REPLAY_SECONDS)
    deleted, _ = OutboxMessage.objects.filter(delivered_at__lt=horizon).delete()
    return deleted


def _group_send(layer, group: str, message: dict[str, Any]) -> None:
    if isinstance(layer, InMemoryChannelLayer) and _server_loop is not None and _server_loop.is_running():
        # The in-memory layer belongs to the server's loop: hand the send to it.
        asyncio.run_coroutine_threadsafe(layer.group_send(group, message), _server_loop).result(timeout=5)
    else:
        async_to_sync(layer.group_send)(group, message)


def start_relay(loop: asyncio.AbstractEventLoop) -> None:
    """Run the relay loop on this server loop (once per loop): it delivers what other processes queued
    for an in-memory layer, and retries what a failed delivery left."""
    interval = settings.EVENT_RELAY_INTERVAL_SECONDS
    if not interval or loop in _relay_tasks:
        return

    async def relay_loop():
        failures, pruned_at = 0, 0.0
        while True:
            # Back off while the layer is down (up to 10 intervals), so a long outage is not a busy loop.
            await asyncio.sleep(interval * min(2**failures, 10))
            try:
                if loop.time() - pruned_at >= PRUNE_EVERY_SECONDS:
                    await database_sync_to_async(prune_delivered)()
                    pruned_at = loop.time()
                await database_sync_to_async(relay_pending)()
                failures = 0
            except Exception:
                failures += 1
                logger.warning("event relay: delivery failed (%d in a row); will retry", failures)

    _relay_tasks[loop] = loop.create_task(relay_loop())
