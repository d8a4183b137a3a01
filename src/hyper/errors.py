"""The few kinds of error the system raises.

Like containerd's errdefs: every failure is one of a handful of kinds, with the cause chained.
Front ends map a kind to an exit code or a status code at the edge, and nowhere else.
"""

from __future__ import annotations


class HyperError(Exception):
    """Base of every error the project raises on purpose."""

    exit_code = 125  # what `docker run` returns when the daemon-side failed


class InvalidArgument(HyperError):
    """The caller asked for something malformed or impossible."""


class NotFound(HyperError):
    """The named object does not exist (or is not visible to the caller)."""


class AlreadyExists(HyperError):
    """An object with that name or id exists already."""


class FailedPrecondition(HyperError):
    """The object is in a state that does not allow the operation."""


class Unavailable(HyperError):
    """A component needed for the operation is missing or not answering."""


class ProtocolError(HyperError):
    """A peer (the guest agent, QEMU) sent something that breaks the protocol.

    The peer is treated as hostile: the connection that raised this is closed.
    """


class Timeout(HyperError):
    """An operation did not finish within its bound."""


class Internal(HyperError):
    """A bug or an unexpected failure of the host."""


class ResourceExhausted(HyperError):
    """The caller asked too often (e.g. with refused credentials); it may retry later."""

    def __init__(self, message: str, retry_after: float = 0) -> None:
        super().__init__(message)
        self.retry_after = retry_after  # seconds after which a retry may succeed (0: unknown)


class Unauthenticated(HyperError):
    """The peer (a registry) wants credentials, or refused the ones given."""

    exit_code = 1  # like `docker pull`/`docker login` when the registry refuses


class PermissionDenied(HyperError):
    """The caller is known but not allowed to do this (a registry's 403)."""

    exit_code = 1


def by_kind(kind: str, default: type[HyperError] = Internal) -> type[HyperError]:
    """The class named ``kind``, as an error's kind travels over a wire (the agent protocol,
    a supervisor's ready line, the REST API); ``default`` for a name that is not one."""
    found = globals().get(kind)
    if isinstance(found, type) and issubclass(found, HyperError):
        return found
    return default


def start_failure_status(kind: str) -> int:
    """docker's exit status for a process that could not start, from the error's kind: 127
    when the program is not found, 126 when it cannot be invoked, 125 when hyper failed."""
    if kind == "NotFound":
        return 127
    if kind in ("InvalidArgument", "FailedPrecondition"):
        return 126
    return 125
