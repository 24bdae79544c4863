"""The failover check at the end of a lost socket's grace, run by the server process that saw the close
(issue 12 §2): a leader whose event socket closed is replaced when FAILOVER_GRACE_SECONDS end, not at
the next periodic health check. The rule is instances/election.py's (leader_check_lost_sockets); this
module only keeps the timers on the server's event loop (daphne, in both run modes)."""

from __future__ import annotations

import asyncio
import logging
import weakref

from channels.db import database_sync_to_async

from instances import election

logger = logging.getLogger("promsnmp.election")


class _LostSocketChecks:
    """The grace ends of one event loop's closed sockets, checked in batches: while one check runs, the
    ends that fall due wait and go in the next (a proxy that drops every socket makes a few queries,
    not one per socket)."""

    def __init__(self):
        self.due: list[str] = []
        self.task: asyncio.Task | None = None  # held here: the loop holds its tasks weakly

    def grace_ended(self, instance_id: str) -> None:
        self.due.append(instance_id)
        if self.task is None:
            self.task = asyncio.get_running_loop().create_task(self._check())

    async def _check(self) -> None:
        try:
            while self.due:
                batch, self.due = self.due, []
                try:
                    await database_sync_to_async(election.leader_check_lost_sockets)(instance_ids=batch)
                except Exception:  # the periodic health check remains
                    logger.exception("failover check of %d closed sockets failed", len(batch))
        finally:
            self.task = None


_lost_socket_checks: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _LostSocketChecks] = (
    weakref.WeakKeyDictionary()
)


def check_when_grace_ends(instance_id: str) -> None:
    """A socket closed: look at its instance's leadership the moment the failover grace ends, not at the
    next periodic health check. A stale look (it reconnected or heartbeated meanwhile) changes nothing."""
    loop = asyncio.get_running_loop()
    checks = _lost_socket_checks.get(loop) or _lost_socket_checks.setdefault(loop, _LostSocketChecks())
    loop.call_later(election.lost_socket_check_delay(), checks.grace_ended, instance_id)
