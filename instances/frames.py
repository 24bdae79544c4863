"""Frames an instance sends on its socket, by type. Apps register their handlers in ready() (discovery
registers discovery_progress and discovery_complete), so the consumer depends on no sibling app."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from core.hooks import HandlerRegistry

# (instance id, site id, payload) → None; runs in a thread (sync ORM allowed).
FrameHandler = Callable[[str, str, dict[str, Any]], None]
frame_handlers: HandlerRegistry[FrameHandler] = HandlerRegistry("frame_handlers")


class FrameRejected(Exception):
    """A frame that is well-formed JSON but wrong: answered with an error frame."""

    def __init__(self, code: str, detail: str, fields: dict | None = None):
        super().__init__(detail)
        self.code, self.detail, self.fields = code, detail, fields or {}
