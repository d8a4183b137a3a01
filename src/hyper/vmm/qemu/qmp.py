"""A thin typed wrapper over `qemu.qmp.QMPClient`: bounded waits, our error kinds, bounded events.

QEMU is treated as a peer that may misbehave (a hostile guest can make it emit events): events
are not queued (``qemu.qmp``'s default listener would keep every one of them forever); they are
logged at DEBUG and the last ``SHUTDOWN`` reason is remembered.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from qemu.qmp import (
    ConnectError,
    ExecInterruptedError,
    ExecuteError,
    Message,
    QMPClient,
    QMPError,
    Runstate,
)

from hyper.errors import FailedPrecondition, ProtocolError, Timeout, Unavailable


class _Client(QMPClient):
    """Hands every event to `Qmp._on_event` instead of queueing it."""

    def __init__(self, name: str, sink: Qmp) -> None:
        super().__init__(name)
        self._sink = sink

    async def _event_dispatch(self, msg: Message) -> None:
        self._sink._on_event(msg)


class Qmp:
    """One QMP session with one QEMU."""

    def __init__(self, name: str, logger: logging.Logger) -> None:
        self._logger = logger
        self._client = _Client(name, self)
        self.shutdown_reason: str | None = None
        """``data.reason`` of the last SHUTDOWN event: "guest-shutdown", "host-qmp-quit", ..."""
        self.version: str = ""
        self._expected: list[tuple[str, Callable[[dict[str, Any]], bool], asyncio.Future[None]]]
        self._expected = []

    def expect(
        self, name: str, match: Callable[[dict[str, Any]], bool] = lambda data: True
    ) -> asyncio.Future[None]:
        """A future resolved by the next event ``name`` whose data ``match``es (only events that
        someone expects are looked at beyond the log; call this before causing the event)."""
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._expected.append((name, match, future))
        return future

    def _on_event(self, msg: Message) -> None:
        name = msg.get("event")
        self._logger.debug("QMP event %s %s", name, msg.get("data", {}))
        data = msg.get("data")
        for entry in list(self._expected):
            wanted, match, future = entry
            if future.done():
                self._expected.remove(entry)
            elif wanted == name and isinstance(data, dict) and match(data):
                future.set_result(None)
                self._expected.remove(entry)
        if name == "SHUTDOWN" and isinstance(data, dict) and isinstance(data.get("reason"), str):
            self.shutdown_reason = data["reason"]

    async def connect(self, path: Path, timeout: float) -> None:
        """Connect, read the greeting and negotiate capabilities, all within `timeout` seconds."""
        try:
            async with asyncio.timeout(timeout):
                await self._client.connect(str(path))
        except TimeoutError:
            raise Timeout(f"QMP at {path} did not greet within {timeout} s") from None
        except ConnectError as exc:
            raise Unavailable(f"QMP at {path}: {exc}") from exc
        greeting = self._client.greeting
        qemu = greeting.QMP.version.get("qemu") if greeting is not None else None
        if isinstance(qemu, Mapping):
            self.version = ".".join(str(qemu.get(k)) for k in ("major", "minor", "micro"))
        self._logger.debug("QMP connected, QEMU %s", self.version)

    @property
    def connected(self) -> bool:
        return self._client.runstate == Runstate.RUNNING

    async def execute(
        self, command: str, arguments: Mapping[str, object] | None = None, timeout: float = 5.0
    ) -> Any:
        """Run one command; its ``return`` value, or one of our errors."""
        if not self.connected:
            raise FailedPrecondition(f"QMP is {self._client.runstate.name}, not RUNNING")
        self._logger.debug("QMP -> %s %s", command, dict(arguments or {}))
        try:
            async with asyncio.timeout(timeout):
                result = await self._client.execute(command, arguments)
        except TimeoutError:
            raise Timeout(f"QMP {command} got no answer within {timeout} s") from None
        except ExecuteError as exc:
            raise FailedPrecondition(f"QMP {command} failed: {exc.error_class}: {exc}") from exc
        except ExecInterruptedError as exc:
            raise Unavailable(f"QMP {command}: QEMU hung up") from exc
        except QMPError as exc:
            raise ProtocolError(f"QMP {command}: {exc}") from exc
        self._logger.debug("QMP <- %s %s", command, result)
        return result

    async def hung_up(self, timeout: float) -> bool:
        """Wait up to `timeout` for the server's end of file; True if it came.

        Events before the end of file are dispatched first, so afterwards `shutdown_reason` is
        final.
        """
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout):
                while self._client.runstate == Runstate.RUNNING:
                    await self._client.runstate_changed()
        return self._client.runstate != Runstate.RUNNING

    async def close(self) -> None:
        with contextlib.suppress(Exception):
            await self._client.disconnect()
