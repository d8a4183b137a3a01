"""Arguments of the operations only a pod's control socket has (not hyperstart).

Both ends (the shim's :mod:`~hyper.shim.control` and hyperd's :mod:`~hyper.shim.client`) use
these, so each field is checked once, with the same rules as :mod:`hyper.proto.messages`.

=================  =========================================================================
``status``         the status document as soon as its version is past ``after`` (long poll)
``attach``         the output of a container's current run (with replay), stdin to it, exit
``stop``           no more restarts; SIGTERM, SIGKILL after ``timeout``; pod shut down
``kill``           no more restarts; a signal to every container's main process
``processes``      the processes of a container (relayed to the guest)
``export``         a tar of a container's changes on ``stdout`` (relayed to the guest)
``volume_snapshot`` take (``create``) or drop (``delete``) a live snapshot of a volume's disk
=================  =========================================================================
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple

from hyper.errors import ProtocolError
from hyper.proto import messages


def _stream(args: dict[str, Any], key: str) -> int:
    value = args.get(key, 0)
    if value is None:
        return 0
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value < 2**31:
        raise ProtocolError(f"{key} must be a stream number (0: not connected)")
    return value


def _container(args: dict[str, Any]) -> str:
    if "container" not in args:
        raise ProtocolError("missing field 'container'")
    return messages.check_id(args["container"], "container")


def _process(args: dict[str, Any], default: str) -> str:
    value = args.get("process")
    return default if value is None else messages.check_id(value, "process")


class StatusQuery(NamedTuple):
    after: int = -1

    def to_wire(self) -> dict[str, Any]:
        return {"after": self.after}

    @classmethod
    def from_wire(cls, args: dict[str, Any]) -> StatusQuery:
        after = args.get("after", -1)
        if not isinstance(after, int) or isinstance(after, bool) or not -1 <= after < 2**53:
            raise ProtocolError("after must be an integer >= -1")
        return cls(after)


class Attach(NamedTuple):
    """``process`` names the exit event (default: the container's name)."""

    container: str
    stdin: int
    stdout: int
    stderr: int
    replay: bool
    process: str

    def to_wire(self) -> dict[str, Any]:
        return dict(self._asdict())

    @classmethod
    def from_wire(cls, args: dict[str, Any]) -> Attach:
        container = _container(args)
        stdin, stdout, stderr = (_stream(args, key) for key in ("stdin", "stdout", "stderr"))
        used = [s for s in (stdin, stdout, stderr) if s]
        if len(used) != len(set(used)):
            raise ProtocolError("stdio streams must be distinct")
        replay = args.get("replay", False)
        if not isinstance(replay, bool):
            raise ProtocolError("replay must be true or false")
        return cls(container, stdin, stdout, stderr, replay, _process(args, container))


class Stop(NamedTuple):
    timeout: float | None  # None: the configured stop timeout

    def to_wire(self) -> dict[str, Any]:
        return {} if self.timeout is None else {"timeout": self.timeout}

    @classmethod
    def from_wire(cls, args: dict[str, Any]) -> Stop:
        timeout = args.get("timeout")
        if timeout is None:
            return cls(None)
        if (
            not isinstance(timeout, int | float)
            or isinstance(timeout, bool)
            or not math.isfinite(timeout)
            or not 0 <= timeout <= 86400
        ):
            raise ProtocolError("timeout must be a number of seconds between 0 and 86400")
        return cls(float(timeout))


class Kill(NamedTuple):
    signal: int

    def to_wire(self) -> dict[str, Any]:
        return {"signal": self.signal}

    @classmethod
    def from_wire(cls, args: dict[str, Any]) -> Kill:
        signal = args.get("signal")
        if not isinstance(signal, int) or isinstance(signal, bool) or not 1 <= signal <= 64:
            raise ProtocolError("signal must be an integer between 1 and 64")
        return cls(signal)


class ContainerQuery(NamedTuple):
    """``processes``: which container."""

    container: str

    def to_wire(self) -> dict[str, Any]:
        return {"container": self.container}

    @classmethod
    def from_wire(cls, args: dict[str, Any]) -> ContainerQuery:
        return cls(_container(args))


class Export(NamedTuple):
    """``process`` names the exit event (default: ``export-<container>``)."""

    container: str
    stdout: int
    process: str

    def to_wire(self) -> dict[str, Any]:
        return dict(self._asdict())

    @classmethod
    def from_wire(cls, args: dict[str, Any]) -> Export:
        container = _container(args)
        stdout = _stream(args, "stdout")
        if not stdout:
            raise ProtocolError("export needs a stdout stream")
        return cls(container, stdout, _process(args, f"export-{container}"))


class VolumeSnapshot(NamedTuple):
    """``volume_snapshot``: an internal snapshot of an attached volume's disk, taken by QEMU,
    with the guest's file system frozen around it when ``freeze`` (and the agent can)."""

    disk: str
    name: str
    action: str  # "create" | "delete"
    freeze: bool = True

    def to_wire(self) -> dict[str, Any]:
        return dict(self._asdict())

    @classmethod
    def from_wire(cls, args: dict[str, Any]) -> VolumeSnapshot:
        disk = messages.check_id(args.get("disk", ""), "disk")
        name = messages.check_id(args.get("name", ""), "name")
        action, freeze = args.get("action"), args.get("freeze", True)
        if action not in ("create", "delete") or not isinstance(freeze, bool):
            raise ProtocolError("volume_snapshot: action create|delete, freeze true|false")
        return cls(disk, name, action, freeze)
