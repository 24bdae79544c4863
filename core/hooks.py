"""Extension points: an app owns a hook and calls it; the apps above subscribe or provide in ready().

That is how a lower layer reaches a higher one without importing it (election tells discovery about a
new leader, the consumer hands a frame to discovery, core asks sites for a site's next event number).
Three shapes:

- `Hook`: a broadcast. Every subscriber is called in order; one that fails is logged and the others
  still run (a subscriber never undoes what its owner did) — unless the hook is `raise_errors`: then
  it is part of its owner's write (called inside its transaction) and a failure undoes the write.
- `HandlerRegistry`: one handler per key (a frame type); the caller gets it and calls it itself, so
  its exceptions reach the caller.
- `Provider`: one function that answers the caller (is this a site?), provided by the app that knows;
  a default answers until then. Its exceptions reach the caller.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Generic, ParamSpec, TypeVar

logger = logging.getLogger("promsnmp.hooks")

P = ParamSpec("P")
H = TypeVar("H", bound=Callable)
R = TypeVar("R")


class Hook(Generic[P]):
    def __init__(self, name: str, *, raise_errors: bool = False):
        self.name = name
        self.raise_errors = raise_errors
        self._subscribers: list[Callable[P, object]] = []

    def subscribe(self, callback: Callable[P, object]) -> None:
        """Add `callback` once (ready() may run more than once in tests)."""
        if callback not in self._subscribers:
            self._subscribers.append(callback)

    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> None:
        for callback in list(self._subscribers):
            try:
                callback(*args, **kwargs)
            except Exception:
                if self.raise_errors:
                    raise
                logger.exception("%s subscriber %r failed", self.name, callback)


class HandlerRegistry(Generic[H]):
    def __init__(self, name: str):
        self.name = name
        self._handlers: dict[str, H] = {}

    def register(self, key: str, handler: H) -> None:
        self._handlers[key] = handler

    def unregister(self, key: str) -> None:
        self._handlers.pop(key, None)

    def get(self, key: str) -> H | None:
        return self._handlers.get(key)


class Provider(Generic[P, R]):
    def __init__(self, name: str, default: Callable[P, R]):
        self.name = name
        self._function = default

    def provide(self, function: Callable[P, R]) -> None:
        """Answer with `function` from now on (the last one provided wins)."""
        self._function = function

    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> R:
        return self._function(*args, **kwargs)
