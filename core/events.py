"""The event bus: publish an event to a site's or an instance's sockets, after the transaction commits.

Groups: `site.<siteId>` (every socket of the site) and `instance.<instanceId>` (one instance's sockets).
In the embedded default the channel layer lives in memory on the server's event loop; a publish from
a thread that is not a request's (the embedded beat) is handed to that loop, or it would only be
delivered when the loop next woke for something else.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from asgiref.sync import async_to_sync, sync_to_async
from channels.layers import InMemoryChannelLayer, get_channel_layer
from django.db import transaction
from django.utils import timezone

from core.timefmt import iso_z

logger = logging.getLogger("promsnmp.events")

_server_loop: asyncio.AbstractEventLoop | None = None
_pending: set[asyncio.Future] = set()  # keeps sends scheduled from async code alive until done
_sequencer = None  # site id → next event number (registered by the sites app)


def set_sequencer(sequencer) -> None:
    global _sequencer
    _sequencer = sequencer


def set_server_loop(loop: asyncio.AbstractEventLoop) -> None:
    global _server_loop
    _server_loop = loop


def remember_server_loop(app):
    """ASGI wrapper that notes the server's event loop on the first connection."""

    async def wrapper(scope, receive, send):
        if _server_loop is None:
            set_server_loop(asyncio.get_running_loop())
        return await app(scope, receive, send)

    return wrapper


def site_group(site_id: str) -> str:
    return f"site.{site_id}"


def instance_group(instance_id: str) -> str:
    return f"instance.{instance_id}"


def build_event(event_type: str, site_id: str, payload: dict[str, Any]) -> dict[str, Any]:
    return {"type": event_type, "timestamp": iso_z(timezone.now()), "siteId": site_id, "payload": payload}


def publish(*, group: str, event_type: str, site_id: str, payload: dict[str, Any]) -> None:
    """Send after commit; nothing is sent for a change that rolls back."""
    transaction.on_commit(lambda: _send(group, build_event(event_type, site_id, payload)))


def _send(group: str, event: dict[str, Any]) -> None:
    layer = get_channel_layer()
    if layer is None:
        return
    message = {"type": "event.message", "event": event}

    async def numbered_send():
        # Numbered when sent, not when made: the numbers follow the order of commits.
        if _sequencer is not None:
            event["seq"] = await sync_to_async(_sequencer)(event["siteId"])
        await layer.group_send(group, message)

    try:
        try:
            asyncio.get_running_loop()
            in_event_loop = True
        except RuntimeError:
            in_event_loop = False
        if not in_event_loop and _sequencer is not None:
            event["seq"] = _sequencer(event["siteId"])
        if in_event_loop:
            task = asyncio.ensure_future(numbered_send())
            _pending.add(task)
            task.add_done_callback(_pending.discard)
        elif (
            isinstance(layer, InMemoryChannelLayer) and _server_loop is not None and _server_loop.is_running()
        ):
            asyncio.run_coroutine_threadsafe(layer.group_send(group, message), _server_loop).result(timeout=5)
        else:
            async_to_sync(layer.group_send)(group, message)
    except Exception:
        # The change is committed; a lost event is recovered by heartbeat and version checks.
        logger.exception("could not publish %s to %s", event["type"], group)
