"""The event socket: /api/v1/ws?instanceId=ID&token=TOKEN. An adapter: authentication, group
membership and frame parsing here; every rule in instances/services.py."""

from __future__ import annotations

import asyncio
import json
import logging
from urllib.parse import parse_qs

from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncWebsocketConsumer
from django.utils import timezone
from prometheus_client import Gauge

from core.events import build_event, events_since, instance_group, site_group, token_group
from core.parsers import loads_strict
from core.timefmt import iso_z
from instances import services
from instances.failover import check_when_grace_ends
from instances.frames import FrameRejected, frame_handlers

logger = logging.getLogger("promsnmp.socket")
MAX_FRAME_BYTES = 65536
OUTAGE_RETRY_SECONDS = (0.5, 5)  # first and largest wait between tries to rejoin a channel layer that is down
# The spec's gauge: sockets this server holds open (accepted and authenticated), summed over the daphne
# processes that share PROMETHEUS_MULTIPROC_DIR (core.metrics); over pods, sum() it in PromQL.
SOCKETS = Gauge(
    "promsnmp_manager_websocket_connections_active",
    "Instance event sockets open on this server",
    multiprocess_mode="livesum",
)


class InstanceEventsConsumer(AsyncWebsocketConsumer):
    instance_id: str | None = None
    site_id: str | None = None
    token_id: str | None = None
    opened_at = None
    groups: list[str] = []
    expiry: asyncio.TimerHandle | None = None
    last_seq = 0  # the highest seq sent on this socket (or the site's when it opened)
    counted = False  # in SOCKETS

    @property
    def channel_receive(self):
        return self._channel_receive

    @channel_receive.setter
    def channel_receive(self, receive):
        """Channels sets this in __call__; a failing receive would crash the consumer and close the socket
        with 1011 whenever the channel layer (Redis) is down. Wrapped, the outage is waited out: the socket
        stays open, rejoins its groups when the layer is back and is sent what it missed meanwhile."""

        async def outlasting_outages():
            while True:
                try:
                    return await receive()
                except Exception:
                    logger.warning("channel layer unreachable; socket of %s waits", self.instance_id)
                delay = OUTAGE_RETRY_SECONDS[0]
                while True:
                    await asyncio.sleep(delay)
                    if await self._rejoin():
                        break
                    delay = min(delay * 2, OUTAGE_RETRY_SECONDS[1])

        self._channel_receive = outlasting_outages

    async def _rejoin(self) -> bool:
        """Join the groups again (a restarted Redis forgot them) and send what was missed; False while the
        layer is still down."""
        try:
            for group in self.groups:
                await self.channel_layer.group_add(group, self.channel_name)
        except Exception:
            return False
        if self.instance_id:
            await self._replay(self.last_seq)
        return True

    async def _replay(self, after: int) -> None:
        missed = await database_sync_to_async(events_since)(
            site_id=self.site_id, groups=self.groups[:2], last_seq=after
        )
        for event in missed:
            await self.event_message({"event": event})

    async def connect(self):
        query = parse_qs(self.scope.get("query_string", b"").decode("latin-1"))
        instance_id = (query.get("instanceId") or [""])[0]
        token = (query.get("token") or [""])[0] or self._bearer()
        last_seq = (query.get("lastSeq") or [None])[0]
        if last_seq is not None and not (last_seq.isascii() and last_seq.isdigit() and len(last_seq) <= 18):
            await self.accept()
            await self._end(4400, "bad_request", "lastSeq must be the highest seq you have seen (0 or more).")
            return
        try:
            grant = await database_sync_to_async(services.socket_authorize)(
                token=token, instance_id=instance_id
            )
        except services.SocketRefused as refused:
            # Accept, then close with the code: a client sees why, not a bare failed handshake. The reason
            # also goes in an error frame first (not every server passes a close reason on).
            await self.accept()
            error = "unauthorized" if refused.code == 4401 else "forbidden"
            await self._end(refused.code, error, refused.reason)
            return
        groups = [site_group(grant.site_id), instance_group(grant.instance_id), token_group(grant.token_id)]
        try:
            for group in groups:
                await self.channel_layer.group_add(group, self.channel_name)
        except Exception:
            # The channel layer (Redis) is unreachable: refuse cleanly, the client retries with backoff.
            logger.warning("socket refused: channel layer unavailable (%s)", grant.instance_id, exc_info=True)
            await self.accept()
            await self._end(4503, "unavailable", "Events are unavailable right now; reconnect later.")
            return
        self.instance_id, self.site_id, self.token_id, self.groups = (
            grant.instance_id,
            grant.site_id,
            grant.token_id,
            groups,
        )
        self.last_seq = grant.site_event_seq
        await self.accept()
        SOCKETS.inc()
        self.counted = True
        if grant.token_expires_at is not None:
            # The session ends with its credential: closed when the token expires, to the moment.
            delay = (grant.token_expires_at - timezone.now()).total_seconds()
            self.expiry = asyncio.get_running_loop().call_later(
                max(delay, 0), lambda: asyncio.ensure_future(self._expired())
            )
        self.opened_at = await database_sync_to_async(services.instance_socket_opened)(
            instance_id=grant.instance_id
        )
        if last_seq is not None:
            # Resume: what this socket's groups were sent after lastSeq. Joined first, then read, so nothing
            # falls between; an event may come twice (live and replayed): the client drops a seq it has.
            await self._replay(int(last_seq))

    async def _expired(self):
        await self._end(4401, "token_expired", "The token this socket was opened with has expired.")

    def _bearer(self) -> str:
        for name, value in self.scope.get("headers", []):
            if name == b"authorization":
                scheme, _, credential = value.decode("latin-1").partition(" ")
                if scheme.lower() == "bearer":
                    return credential.strip()
        return ""

    async def disconnect(self, code):
        if self.counted:
            SOCKETS.dec()
            self.counted = False
        if self.expiry is not None:
            self.expiry.cancel()
        for group in self.groups:
            try:
                await self.channel_layer.group_discard(group, self.channel_name)
            except Exception:  # the layer is down: its group memberships expire on their own
                logger.warning("could not leave %s", group, exc_info=True)
        if self.instance_id:
            await database_sync_to_async(services.instance_socket_closed)(
                instance_id=self.instance_id, opened_at=self.opened_at
            )
            check_when_grace_ends(self.instance_id)

    async def event_message(self, message):
        """An event published to one of our groups (core.events)."""
        self.last_seq = max(self.last_seq, message["event"].get("seq", 0))
        await self.send(text_data=json.dumps(message["event"], separators=(",", ":")))

    async def session_end(self, message):
        """Our token was revoked, our instance deregistered or its site deleted (core.events.end_sessions)."""
        end = message["end"]
        await self._end(end["code"], end["error"], end["detail"])

    async def receive(self, text_data=None, bytes_data=None):
        if self.instance_id is None:
            return
        if text_data is None or len(text_data) > MAX_FRAME_BYTES:
            await self._error("bad_frame", f"Send JSON text frames of at most {MAX_FRAME_BYTES} bytes.")
            return
        try:
            frame = loads_strict(text_data)  # bounded nesting, no NaN: json.loads recursed on 30000 `[`
        except ValueError as error:
            await self._error("parse_error", str(error))  # loads_strict says what is wrong
            return
        if not isinstance(frame, dict) or not isinstance(frame.get("type"), str):
            await self._error("bad_frame", 'A frame is a JSON object with a "type".')
            return
        if frame["type"] == "ping":
            try:
                await database_sync_to_async(services.instance_seen)(
                    instance_id=self.instance_id, token_id=self.token_id
                )
            except services.SessionEnded as ended:
                await self._end(ended.code, ended.error, ended.detail)
                return
            await self._send_event("pong", {"serverTime": iso_z(timezone.now())})
            return
        handler = frame_handlers.get(frame["type"])
        payload = frame.get("payload")
        if handler is None:
            await self._error("unknown_type", f"Unknown frame type {frame['type']!r}.")
            return
        if not isinstance(payload, dict):
            await self._error("bad_frame", 'The frame\'s "payload" must be an object.')
            return
        try:
            await database_sync_to_async(handler)(self.instance_id, self.site_id, payload)
        except FrameRejected as rejected:
            await self._error(rejected.code, rejected.detail, rejected.fields)
        except Exception:
            logger.exception("frame %s from %s failed", frame["type"], self.instance_id)
            await self._error("server_error", "The frame could not be handled; it has been logged.")

    async def _send_event(self, event_type: str, payload: dict):
        await self.send(text_data=json.dumps(build_event(event_type, self.site_id, payload)))

    async def _error(self, code: str, detail: str, fields: dict | None = None):
        await self._send_event("error", {"error": code, "detail": detail, "fields": fields or {}})

    async def _end(self, code: int, error: str, detail: str):
        """An error frame with the reason, then the close code (daphne does not pass close reasons on)."""
        frame = {
            "type": "error",
            "timestamp": iso_z(timezone.now()),
            "siteId": self.site_id,
            "payload": {"error": error, "detail": detail, "fields": {}},
        }
        await self.send(text_data=json.dumps(frame))
        await self.close(code=code, reason=detail[:120])
