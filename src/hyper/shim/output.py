"""One run of a container's main process, as seen by attached clients: a fan-out with replay.

The shim reads the main process's output once (into the log) and hands each chunk to every
attached client. A client gets its own queue and writer task, so clients never wait for each
other; the reader waits only while a client's queue is over a bound, and a client that grants
no credit for :data:`STALL_TIMEOUT` seconds is dropped (its streams end, it still gets the exit
event), so no client holds up the log or the container for longer than that. The last
:data:`REPLAY_BYTES` of the run are kept for clients that attach with ``replay``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import Awaitable, Callable

from hyper import errors
from hyper.agent.streams import InputStream, SendFrame
from hyper.proto import messages

_log = logging.getLogger(__name__)

REPLAY_BYTES = 1 << 20
QUEUE_BYTES = 256 * 1024  # per client, before the reader waits for it
STALL_TIMEOUT = 10.0

OnExit = Callable[[messages.Exit], Awaitable[None]]


class ClientStream(InputStream):
    """A stream to a control client that remembers when the client last granted credit."""

    def __init__(self, stream: int, window: int, send: SendFrame) -> None:
        super().__init__(stream, window, send)
        self.last_grant = asyncio.get_running_loop().time()

    def grant(self, increment: int) -> None:
        self.last_grant = asyncio.get_running_loop().time()
        super().grant(increment)


class Subscriber:
    """One attached client of one run."""

    def __init__(
        self,
        run: RunOutput,
        sinks: dict[str, ClientStream],
        on_exit: OnExit,
        stall_timeout: float,
    ) -> None:
        self._run = run
        self.sinks = sinks
        self._on_exit = on_exit
        self._stall = stall_timeout
        self._queue: deque[tuple[str, bytes]] = deque()
        self.queued = 0
        self._exit: messages.Exit | None = None
        self._ended = False
        self.dropped = False
        self._wake = asyncio.Event()
        self._room = asyncio.Event()
        self._room.set()
        loop = asyncio.get_running_loop()
        self._progress = loop.time()
        self.task = loop.create_task(self._write(), name="attach-writer")

    def put(self, stream: str, data: bytes) -> None:
        if self.dropped or stream not in self.sinks:
            return
        self._queue.append((stream, data))
        self.queued += len(data)
        if self.queued > QUEUE_BYTES:
            self._room.clear()
        self._wake.set()

    def end(self, exit_: messages.Exit) -> None:
        self._exit = exit_
        self._ended = True
        self._wake.set()

    async def wait_room(self) -> None:
        """Until this client's queue is under its bound (or the client was dropped)."""
        await self._room.wait()

    def detach(self) -> None:
        """The client went away: forget it without sending anything more."""
        self.task.cancel()
        self._release()

    def _release(self) -> None:
        self.dropped = True
        self._queue.clear()
        self.queued = 0
        self._room.set()
        self._run._subscribers.discard(self)

    def _stalled(self) -> bool:
        last = max([self._progress, *(s.last_grant for s in self.sinks.values())])
        return asyncio.get_running_loop().time() - last >= self._stall

    async def _write(self) -> None:
        try:
            while True:
                while not self._queue and not self._ended:
                    self._wake.clear()
                    await self._wake.wait()
                if not self._queue:
                    break
                stream, data = self._queue.popleft()
                if not await self._send(self.sinks[stream], data):
                    _log.info(
                        "dropping an attached client that gave no credit for %gs", self._stall
                    )
                    self.dropped = True
                    self._queue.clear()
                    self.queued = 0
                    self._room.set()
                    for sink in self.sinks.values():
                        await sink.close()
                    while not self._ended:
                        self._wake.clear()
                        await self._wake.wait()
                    break
                self.queued -= len(data)
                self._progress = asyncio.get_running_loop().time()
                if self.queued <= QUEUE_BYTES:
                    self._room.set()
            for sink in self.sinks.values():
                await sink.close()
            if self._exit is not None:
                await self._on_exit(self._exit)
        except (errors.HyperError, ConnectionError, OSError, ValueError) as exc:
            _log.debug("an attached client went away: %s", exc)
        finally:
            self._release()

    async def _send(self, sink: ClientStream, data: bytes) -> bool:
        """Write ``data``; False if the client let STALL_TIMEOUT pass without credit."""
        write = asyncio.ensure_future(sink.write(data))
        try:
            while not write.done():
                last = max(self._progress, sink.last_grant)
                left = last + self._stall - asyncio.get_running_loop().time()
                if left <= 0:
                    return False
                await asyncio.wait({write}, timeout=left)
            write.result()
            return True
        finally:
            if not write.done():
                write.cancel()
                with contextlib.suppress(asyncio.CancelledError, errors.HyperError):
                    await write


class RunOutput:
    """The output of one run of a container's main process."""

    def __init__(self, *, replay_bytes: int = REPLAY_BYTES) -> None:
        self._replay: deque[tuple[str, bytes]] = deque()
        self._replay_size = 0
        self._replay_limit = replay_bytes
        self._subscribers: set[Subscriber] = set()
        self.exit: messages.Exit | None = None

    @property
    def subscribers(self) -> frozenset[Subscriber]:
        return frozenset(self._subscribers)

    def subscribe(
        self,
        sinks: dict[str, ClientStream],
        on_exit: OnExit,
        *,
        replay: bool,
        stall_timeout: float = STALL_TIMEOUT,
    ) -> Subscriber:
        subscriber = Subscriber(self, sinks, on_exit, stall_timeout)
        if replay:
            for stream, data in self._replay:
                subscriber.put(stream, data)
        if self.exit is not None:
            subscriber.end(self.exit)
        else:
            self._subscribers.add(subscriber)
        return subscriber

    async def publish(self, stream: str, data: bytes) -> None:
        """Hand a chunk to every client; waits (boundedly) for clients whose queue is full."""
        self._remember(stream, data)
        subscribers = list(self._subscribers)
        for subscriber in subscribers:
            subscriber.put(stream, data)
        for subscriber in subscribers:
            await subscriber.wait_room()

    def end(self, exit_: messages.Exit) -> None:
        """The run ended: every client's streams end, then it gets the exit event."""
        self.exit = exit_
        for subscriber in list(self._subscribers):
            subscriber.end(exit_)

    def _remember(self, stream: str, data: bytes) -> None:
        self._replay.append((stream, data))
        self._replay_size += len(data)
        while self._replay_size > self._replay_limit:
            old_stream, old = self._replay.popleft()
            excess = self._replay_size - self._replay_limit
            if excess < len(old):
                self._replay.appendleft((old_stream, old[excess:]))
                self._replay_size -= excess
            else:
                self._replay_size -= len(old)
