"""Restart policies of containers, and the back-off between restarts: pure decisions.

Docker's policies and spelling (``no``, ``always``, ``on-failure[:N]``). The supervisor of a pod
asks :meth:`RestartPolicy.should_restart` when a container's main process exits, and
:class:`Backoff` how long to wait first, so a crash loop costs at most one start per 10 s while a
container that ran for a while restarts at once.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from hyper.errors import InvalidArgument

PolicyName = Literal["no", "on-failure", "always"]
_NAMES: tuple[PolicyName, ...] = ("no", "on-failure", "always")

BACKOFF_INITIAL = 0.1
BACKOFF_MAX = 10.0
BACKOFF_RESET_AFTER = 10.0  # a run that lasted this long starts the back-off over


@dataclass(frozen=True)
class RestartPolicy:
    policy: PolicyName = "no"
    max_retries: int = 0  # on-failure only; 0: unlimited

    def __post_init__(self) -> None:
        if self.policy not in _NAMES:
            raise InvalidArgument(
                f"restart policy {self.policy!r} is not one of: no, always, on-failure[:N]"
            )
        if isinstance(self.max_retries, bool) or not isinstance(self.max_retries, int):
            raise InvalidArgument("the restart policy's max_retries must be a whole number")
        if self.max_retries < 0:
            raise InvalidArgument("the restart policy's max_retries cannot be negative")
        if self.max_retries and self.policy != "on-failure":
            raise InvalidArgument(
                f"a maximum retry count only applies to on-failure, not to {self.policy!r}"
            )

    @classmethod
    def parse(cls, text: str) -> RestartPolicy:
        """``no``, ``always``, ``on-failure`` or ``on-failure:N`` (N >= 0; 0: unlimited)."""
        name, sep, count = text.strip().partition(":")
        if name not in _NAMES:
            raise InvalidArgument(
                f"restart policy {text!r} is not one of: no, always, on-failure[:N]"
            )
        if not sep:
            return cls(name)
        if name != "on-failure":
            raise InvalidArgument(f"restart policy {text!r}: only on-failure takes a count")
        if not count.isdigit():
            raise InvalidArgument(
                f"restart policy {text!r}: the retry count must be a whole number >= 0"
            )
        return cls(name, int(count))

    def __str__(self) -> str:
        return f"on-failure:{self.max_retries}" if self.max_retries else self.policy

    def to_dict(self) -> dict[str, Any]:
        return {"policy": self.policy, "max_retries": self.max_retries}

    @classmethod
    def from_dict(cls, data: Any) -> RestartPolicy:
        if not isinstance(data, dict):
            raise InvalidArgument("a restart policy is a mapping with policy and max_retries")
        unknown = set(data) - {"policy", "max_retries"}
        if unknown:
            raise InvalidArgument(f"unknown restart policy field(s): {', '.join(sorted(unknown))}")
        return cls(data.get("policy", "no"), data.get("max_retries", 0))

    def should_restart(self, status: int, restart_count: int) -> bool:
        """Whether a main process that ended with ``status`` (exit code, or 128 + signal)
        restarts, given how often it was restarted already."""
        if self.policy == "always":
            return True
        if self.policy == "on-failure":
            return status != 0 and (self.max_retries == 0 or restart_count < self.max_retries)
        return False


class Backoff:
    """The delay before each restart: 100 ms, doubling up to 10 s; reset by a 10 s run."""

    def __init__(
        self,
        initial: float = BACKOFF_INITIAL,
        maximum: float = BACKOFF_MAX,
        reset_after: float = BACKOFF_RESET_AFTER,
    ) -> None:
        self.initial = initial
        self.maximum = maximum
        self.reset_after = reset_after
        self._next = initial

    def delay(self, ran_for: float) -> float:
        """The wait before restarting a process that ran for ``ran_for`` seconds."""
        if ran_for >= self.reset_after:
            self._next = self.initial
        delay = self._next
        self._next = min(self._next * 2, self.maximum)
        return delay
