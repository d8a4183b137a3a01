"""Per-second usage from usage events: a pure function, no I/O, no clock.

The ledger (:mod:`hyper.tenancy.ledger`) records when each billable object started and stopped
consuming: a pod while it runs (its vCPUs and memory), a volume while it exists (its size), a
floating IP while a tenant holds it. :func:`compute` pairs each object's events into intervals,
clips them to the window ``[since, until)`` and integrates: vCPU-seconds, GiB-seconds of memory
and of volumes, FIP-seconds. An interval still open is counted up to ``until``: the caller
passes the present as ``until`` (or earlier), never the future.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field, fields
from typing import Any

GIB = float(1 << 30)
MIB_PER_GIB = 1024.0


class Kind(enum.StrEnum):
    POD = "pod"
    VOLUME = "volume"
    FIP = "fip"


class Event(enum.StrEnum):
    START = "start"
    STOP = "stop"


@dataclass(frozen=True)
class UsageEvent:
    seq: int
    """Order of recording: the ledger's row id."""
    tenant: str
    object_id: str
    kind: Kind
    event: Event
    at: float
    """When it happened (seconds since the epoch), which may be long before it was recorded."""
    vcpus: int = 0
    memory_mb: int = 0
    bytes: int = 0
    name: str = ""


@dataclass
class Amounts:
    seconds: float = 0.0
    vcpu_seconds: float = 0.0
    memory_gib_seconds: float = 0.0
    volume_gib_seconds: float = 0.0
    fip_seconds: float = 0.0

    def add(self, other: Amounts) -> None:
        for f in fields(self):
            setattr(self, f.name, getattr(self, f.name) + getattr(other, f.name))

    def to_dict(self) -> dict[str, float]:
        return {f.name: round(getattr(self, f.name), 3) for f in fields(self)}


@dataclass
class ObjectUsage:
    tenant: str
    object_id: str
    kind: Kind
    name: str
    amounts: Amounts = field(default_factory=Amounts)

    def to_dict(self) -> dict[str, Any]:
        return {
            "tenant": self.tenant,
            "id": self.object_id,
            "kind": self.kind.value,
            "name": self.name,
            **self.amounts.to_dict(),
        }


@dataclass
class UsageReport:
    since: float
    until: float
    objects: list[ObjectUsage]
    """One per object that consumed anything in the window, in order of first event."""

    @property
    def total(self) -> Amounts:
        total = Amounts()
        for item in self.objects:
            total.add(item.amounts)
        return total

    def by_tenant(self) -> dict[str, Amounts]:
        found: dict[str, Amounts] = {}
        for item in self.objects:
            found.setdefault(item.tenant, Amounts()).add(item.amounts)
        return found

    def to_dict(self) -> dict[str, Any]:
        return {
            "since": self.since,
            "until": self.until,
            "objects": [item.to_dict() for item in self.objects],
            "total": self.total.to_dict(),
        }


def compute(events: Iterable[UsageEvent], since: float, until: float) -> UsageReport:
    """The usage in ``[since, until)`` of the objects whose events are given (each object's
    events in the order they were recorded; other objects' may be interleaved)."""
    if not (math.isfinite(since) and math.isfinite(until)) or until < since:
        raise ValueError(f"the window [{since}, {until}) is not one")
    usage: dict[tuple[str, str], ObjectUsage] = {}
    for started, stopped_at in intervals(sorted(events, key=lambda e: e.seq)):
        _account(usage, started, until if stopped_at is None else stopped_at, since, until)
    return UsageReport(since, until, [u for u in usage.values() if u.amounts.seconds > 0])


def intervals(events: Iterable[UsageEvent]) -> Iterator[tuple[UsageEvent, float | None]]:
    """Each object's intervals, ``(its start event, when it stopped)``, from events in the
    order they were recorded: the closed ones as they close, then the open ones (``None``)."""
    open_: dict[tuple[str, str], UsageEvent] = {}
    for event in events:
        key = (event.tenant, event.object_id)
        started = open_.pop(key, None)
        if started is not None:
            yield started, event.at
        if event.event is Event.START:
            open_[key] = event
    for started in open_.values():
        yield started, None


def interval(start: UsageEvent, seconds: float) -> Amounts:
    """What ``start``'s object consumes in ``seconds`` (at most 0 is nothing)."""
    if seconds <= 0:
        return Amounts()
    part = Amounts(seconds=seconds)
    if start.kind is Kind.POD:
        part.vcpu_seconds = start.vcpus * seconds
        part.memory_gib_seconds = start.memory_mb / MIB_PER_GIB * seconds
    elif start.kind is Kind.VOLUME:
        part.volume_gib_seconds = start.bytes / GIB * seconds
    else:
        part.fip_seconds = seconds
    return part


def _account(
    usage: dict[tuple[str, str], ObjectUsage],
    start: UsageEvent,
    stop_at: float,
    since: float,
    until: float,
) -> None:
    key = (start.tenant, start.object_id)
    item = usage.setdefault(key, ObjectUsage(start.tenant, start.object_id, start.kind, start.name))
    item.name = start.name or item.name
    item.amounts.add(interval(start, min(stop_at, until) - max(start.at, since)))
