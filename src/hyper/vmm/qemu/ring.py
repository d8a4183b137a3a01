"""A bounded byte buffer that keeps the most recent bytes: QEMU's stderr, the guest's console.

A hostile guest can print forever; what we keep of it must not grow with what it prints.
"""

from __future__ import annotations

import asyncio
import logging


class ByteRing:
    """The last `capacity` bytes written to it."""

    def __init__(self, capacity: int) -> None:
        if capacity <= 0:
            raise ValueError("capacity must be positive")
        self.capacity = capacity
        self._data = bytearray()
        self.total = 0
        """Bytes written since creation, kept or not."""

    def write(self, chunk: bytes) -> None:
        self.total += len(chunk)
        if len(chunk) >= self.capacity:
            self._data[:] = chunk[-self.capacity :]
            return
        self._data += chunk
        excess = len(self._data) - self.capacity
        if excess > 0:
            del self._data[:excess]

    def tail(self, limit: int | None = None) -> bytes:
        data = bytes(self._data)
        return data if limit is None else data[-limit:]

    def text(self, limit: int | None = None) -> str:
        return self.tail(limit).decode("utf-8", errors="replace")


async def drain(reader: asyncio.StreamReader, ring: ByteRing, logger: logging.Logger) -> None:
    """Copy everything `reader` yields into `ring` until end of file."""
    try:
        while chunk := await reader.read(65536):
            ring.write(chunk)
    except (ConnectionError, OSError) as exc:
        logger.debug("stream ended: %s", exc)
