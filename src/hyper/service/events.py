"""Lifecycle events (create, start, die, stop, destroy, ...), as ``docker events`` shows them.

Kept in memory: the last :data:`HISTORY` events for ``--since``, and a bounded queue per
subscriber. A subscriber that falls :data:`BACKLOG` events behind is cut off (its stream ends)
rather than making hyperd hold an unbounded backlog for a client that does not read.
"""

from __future__ import annotations

import asyncio
import collections
import time
from collections.abc import AsyncIterator
from dataclasses import asdict, dataclass, field
from typing import Any

HISTORY = 1024
BACKLOG = 256


@dataclass(frozen=True)
class Event:
    type: str  # "container" or "pod"
    action: str  # "create", "start", "die", "stop", "kill", "restart", "destroy", ...
    id: str
    name: str
    attributes: dict[str, str] = field(default_factory=dict)
    time: float = field(default_factory=time.time)
    tenant: str = ""
    """Whose object it is: a subscriber sees only the events of its scope."""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class EventBus:
    def __init__(self) -> None:
        self._history: collections.deque[Event] = collections.deque(maxlen=HISTORY)
        self._subscribers: set[asyncio.Queue[Event | None]] = set()

    def publish(self, event: Event) -> None:
        self._history.append(event)
        for queue in list(self._subscribers):
            if queue.qsize() >= BACKLOG:
                self._subscribers.discard(queue)
                queue.put_nowait(None)  # the end of this subscriber's stream
            else:
                queue.put_nowait(event)

    async def subscribe(
        self, *, since: float | None = None, until: float | None = None
    ) -> AsyncIterator[Event]:
        """Past events from ``since``, then live ones until ``until`` (or forever)."""
        queue: asyncio.Queue[Event | None] = asyncio.Queue()
        self._subscribers.add(queue)
        try:
            if since is not None:
                for event in list(self._history):
                    if event.time >= since and (until is None or event.time <= until):
                        yield event
            while True:
                timeout = None if until is None else until - time.time()
                if timeout is not None and timeout <= 0:
                    return
                try:
                    item: Event | None = await asyncio.wait_for(queue.get(), timeout)
                except TimeoutError:
                    return
                if item is None:
                    return
                if since is None or item.time >= since:
                    yield item
        finally:
            self._subscribers.discard(queue)

    def close(self) -> None:
        for queue in self._subscribers:
            queue.put_nowait(None)
        self._subscribers.clear()
