"""hyperd's side of a shim's control socket: typed calls on top of :class:`AgentClient`.

The control socket speaks the agent protocol, so this is the agent client plus the operations
only a shim has (:mod:`hyper.shim.ops`). A connection is cheap and disposable: closing it (or
hyperd dying) never disturbs the pod; a new hyperd connects again and carries on.
"""

from __future__ import annotations

import asyncio
import itertools
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from hyper import errors
from hyper.agent.client import AgentClient, AgentState, Process
from hyper.proto import messages
from hyper.shim import ops

FOREVER = 365 * 86400.0  # a long poll without a timeout
STOP_MARGIN = 60.0  # beyond the stop timeout: the VM's shutdown and the final status


class ShimClient:
    """One connection to one shim. :meth:`connect`, then call; :meth:`close` when done."""

    def __init__(self, agent: AgentClient, *, stop_timeout: float = 10.0) -> None:
        self.agent = agent
        self.stop_timeout = stop_timeout  # the shim's default, for the bound of stop()
        self._ids = itertools.count(1)

    @classmethod
    async def connect(
        cls, path: Path, timeout: float = 10.0, *, stop_timeout: float = 10.0
    ) -> ShimClient:
        """Connect to the control socket at ``path`` and shake hands, within ``timeout``.

        Unavailable if nobody listens there (the shim is gone or has not started serving)."""
        try:
            reader, writer = await asyncio.wait_for(
                asyncio.open_unix_connection(os.fspath(path)), timeout
            )
        except TimeoutError:
            raise errors.Timeout(
                f"no answer from the shim at {path} within {timeout:g} s"
            ) from None
        except (FileNotFoundError, ConnectionRefusedError) as exc:
            raise errors.Unavailable(f"no shim listens at {path}: {exc.strerror}") from None
        except OSError as exc:
            raise errors.Unavailable(f"cannot connect to the shim at {path}: {exc}") from None
        agent = AgentClient(reader, writer)
        try:
            await agent.handshake(timeout)
        except BaseException:
            await agent.close()
            raise
        return cls(agent, stop_timeout=stop_timeout)

    @property
    def is_closed(self) -> bool:
        return self.agent.state is AgentState.CLOSED

    async def close(self) -> None:
        await self.agent.close()

    async def closed(self) -> BaseException | None:
        """Until the connection ends (the shim exited, or closed it); returns why."""
        return await self.agent.closed()

    # ------------------------------------------------------------ the pod

    async def status(self, after: int = -1, timeout: float | None = None) -> dict[str, Any]:
        """The status document (see docs/shim.md) once its version is greater than ``after``;
        ``after=-1`` answers at once. ``timeout`` None waits as long as it takes."""
        return await self.agent.call(
            "status", ops.StatusQuery(after).to_wire(), FOREVER if timeout is None else timeout
        )

    async def stop(self, timeout: float | None = None) -> None:
        """No more restarts; SIGTERM the main processes, SIGKILL after ``timeout`` (None: the
        shim's configured default); returns once the pod is down and the final status written."""
        grace = self.stop_timeout if timeout is None else timeout
        await self.agent.call("stop", ops.Stop(timeout).to_wire(), grace + STOP_MARGIN)

    async def kill(self, signal: int) -> None:
        """No more restarts; send ``signal`` to every container's main process."""
        await self.agent.call("kill", ops.Kill(signal).to_wire())

    async def stats(self) -> messages.Stats:
        return await self.agent.stats()

    # ------------------------------------------------------------ containers

    async def attach(
        self,
        container: str,
        *,
        stdin: bool = False,
        stdout: bool = True,
        stderr: bool = True,
        replay: bool = False,
    ) -> Process:
        """The output of the container's current run (``replay``: from up to 1 MiB before now)
        on the process's streams, its stdin, and its end as the process's exit. The process's
        ``result`` is whether the container has a TTY (then all output is on stdout)."""
        process_id = f"attach-{next(self._ids)}"
        request = ops.Attach(container, 0, 0, 0, replay, process_id)
        return await self.agent.open_process(
            "attach",
            request.to_wire(),
            process_id=process_id,
            stdin=stdin,
            stdout=stdout,
            stderr=stderr,
            parse=lambda result: bool(result.get("tty", False)),
        )

    async def exec(
        self,
        container: str,
        process_id: str,
        argv: Sequence[str],
        *,
        env: Sequence[str] = (),
        cwd: str = "/",
        user: str = "",
        tty: bool = False,
        stdin: bool = False,
        stdout: bool = True,
        stderr: bool = True,
        rows: int = 24,
        cols: int = 80,
    ) -> Process:
        """Another process in a running container (``docker exec``), named ``process_id`` on
        this connection: signal and resize it by that name."""
        return await self.agent.exec(
            container,
            process_id,
            list(argv),
            env=list(env),
            cwd=cwd,
            user=user,
            tty=tty,
            stdin=stdin,
            stdout=stdout,
            stderr=stderr,
            rows=rows,
            cols=cols,
        )

    async def signal(self, process: str, signal: int) -> None:
        """Signal a process: an exec's id, or a container's name for its main process."""
        await self.agent.signal(process, signal)

    async def resize(self, process: str, rows: int, cols: int) -> None:
        await self.agent.resize(process, rows, cols)

    async def volume_snapshot(self, disk: str, name: str, *, delete: bool = False) -> str:
        """Take (or drop) a live snapshot of an attached volume; its consistency."""
        action = "delete" if delete else "create"
        result = await self.agent.call(
            "volume_snapshot", ops.VolumeSnapshot(disk, name, action).to_wire(), timeout=120.0
        )
        consistency = result.get("consistency", "")
        if delete:
            return ""
        if consistency not in ("application", "crash"):
            raise errors.ProtocolError(f"unknown snapshot consistency {consistency!r}")
        return str(consistency)

    async def processes(self, container: str) -> list[dict[str, Any]]:
        result = await self.agent.call("processes", ops.ContainerQuery(container).to_wire())
        found = result.get("processes")
        if not isinstance(found, list) or not all(isinstance(p, dict) for p in found):
            raise errors.ProtocolError("processes must be a list of objects")
        return found

    async def export(self, container: str) -> Process:
        """A tar of the container's changes on the process's stdout; its exit status says
        whether the tar is complete."""
        process_id = f"export-{next(self._ids)}"
        return await self.agent.open_process(
            "export",
            ops.Export(container, 0, process_id).to_wire(),
            process_id=process_id,
            stdout=True,
            stderr=False,
        )
