"""Credit-based flow control for stdio streams, with no I/O.

Each side may send DATA on a stream only while it holds credit for it. A stream starts with the
window agreed in the handshake; the receiver hands credit back with WINDOW frames as its consumer
drains what arrived. The sender never waits for an acknowledgement of each chunk (no
stop-and-wait), yet the receiver never holds more than one window per stream: a peer that sends
beyond its credit is flooding and breaks the protocol.
"""

from __future__ import annotations

from hyper.errors import ProtocolError

DEFAULT_WINDOW = 256 * 1024


class SendCredit:
    """What this side may still send on one stream."""

    __slots__ = ("available",)

    def __init__(self, window: int) -> None:
        self.available = window

    def take(self, wanted: int) -> int:
        """Reserve up to ``wanted`` bytes; returns how many may be sent now (maybe 0)."""
        granted = min(wanted, self.available)
        self.available -= granted
        return granted

    def grant(self, increment: int) -> None:
        if self.available + increment > 2**31:
            raise ProtocolError("peer granted more credit than any window allows")
        self.available += increment


class ReceiveWindow:
    """What the peer may still send on one stream, and when to give credit back."""

    __slots__ = ("_outstanding", "_unacked", "window")

    def __init__(self, window: int) -> None:
        self.window = window
        self._outstanding = window  # credit the peer holds
        self._unacked = 0  # consumed bytes not yet granted back

    def received(self, size: int) -> None:
        if size > self._outstanding:
            raise ProtocolError(
                f"peer sent {size} bytes with only {self._outstanding} bytes of credit"
            )
        self._outstanding -= size

    def consumed(self, size: int) -> int:
        """Note that ``size`` bytes were drained; returns credit to grant now (0: not yet).

        Credit goes back in batches of at least half a window, so a busy stream costs one
        WINDOW frame per half window, not one per chunk.
        """
        self._unacked += size
        if self._unacked * 2 >= self.window or self._outstanding == 0:
            grant, self._unacked = self._unacked, 0
            self._outstanding += grant
            return grant
        return 0
