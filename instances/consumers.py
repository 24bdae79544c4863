"""The event socket: /api/v1/ws?instanceId=ID&token=TOKEN. An adapter: authentication, group
membership and frame parsing here; every rule in instances/services.py."""

from __future__ import annotations

import json
import logging
from urllib.parse import parse_qs

from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncWebsocketConsumer
from django.utils import timezone

from core.events import build_event, instance_group, site_group
from core.timefmt import iso_z
from instances import services
from instances.frames import FrameRejected, frame_handler

logger = logging.getLogger("promsnmp.socket")
MAX_FRAME_BYTES = 65536


class InstanceEventsConsumer(AsyncWebsocketConsumer):
    instance_id: str | None = None
    site_id: str | None = None
    opened_at = None
    groups: list[str] = []

    async def connect(self):
        query = parse_qs(self.scope.get("query_string", b"").decode("latin-1"))
        instance_id = (query.get("instanceId") or [""])[0]
        token = (query.get("token") or [""])[0] or self._bearer()
        try:
            grant = await database_sync_to_async(services.socket_authorize)(
                token=token, instance_id=instance_id
            )
        except services.SocketRefused as refused:
            # Accept, then close with the code: a client sees why, not a bare failed handshake. The reason
            # also goes in an error frame first (not every server passes a close reason on).
            await self.accept()
            error = "unauthorized" if refused.code == 4401 else "forbidden"
            await self.send(
                text_data=json.dumps(
                    {
                        "type": "error",
                        "timestamp": iso_z(timezone.now()),
                        "siteId": None,
                        "payload": {"error": error, "detail": refused.reason, "fields": {}},
                    }
                )
            )
            await self.close(code=refused.code, reason=refused.reason)
            return
        self.instance_id, self.site_id = grant.instance_id, grant.site_id
        self.groups = [site_group(grant.site_id), instance_group(grant.instance_id)]
        for group in self.groups:
            await self.channel_layer.group_add(group, self.channel_name)
        await self.accept()
        self.opened_at = await database_sync_to_async(services.instance_socket_opened)(
            instance_id=grant.instance_id
        )

    def _bearer(self) -> str:
        for name, value in self.scope.get("headers", []):
            if name == b"authorization":
                scheme, _, credential = value.decode("latin-1").partition(" ")
                if scheme.lower() == "bearer":
                    return credential.strip()
        return ""

    async def disconnect(self, code):
        for group in self.groups:
            await self.channel_layer.group_discard(group, self.channel_name)
        if self.instance_id:
            await database_sync_to_async(services.instance_socket_closed)(
                instance_id=self.instance_id, opened_at=self.opened_at
            )

    async def event_message(self, message):
        """An event published to one of our groups (core.events)."""
        await self.send(text_data=json.dumps(message["event"], separators=(",", ":")))

    async def receive(self, text_data=None, bytes_data=None):
        if self.instance_id is None:
            return
        if text_data is None or len(text_data) > MAX_FRAME_BYTES:
            await self._error("bad_frame", f"Send JSON text frames of at most {MAX_FRAME_BYTES} bytes.")
            return
        try:
            frame = json.loads(text_data)
        except ValueError:
            await self._error("parse_error", "The frame is not valid JSON.")
            return
        if not isinstance(frame, dict) or not isinstance(frame.get("type"), str):
            await self._error("bad_frame", 'A frame is a JSON object with a "type".')
            return
        if frame["type"] == "ping":
            await database_sync_to_async(services.instance_seen)(instance_id=self.instance_id)
            await self._send_event("pong", {"serverTime": iso_z(timezone.now())})
            return
        handler = frame_handler(frame["type"])
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
