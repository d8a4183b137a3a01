"""The host's end of a booting guest: the agent socket, and the handshake with hyperstart.

Shared by pods (cold boots and clones) and by the template builder. The socket listens before
QEMU starts, so QEMU connects to it as a client.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
from pathlib import Path

from hyper import errors
from hyper.agent.client import AgentClient
from hyper.vmm.qemu.driver import QemuVm


def listen(path: Path) -> socket.socket:
    """A non-blocking unix socket listening at ``path`` (0600)."""
    if len(os.fsencode(path)) >= 108:
        raise errors.InvalidArgument(
            f"the socket path {path} is too long for a unix socket: choose a shorter paths.run_dir"
        )
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.bind(os.fspath(path))
        os.chmod(path, 0o600)
        sock.listen(1)
        sock.setblocking(False)
    except BaseException:
        sock.close()
        raise
    return sock


async def connect_agent(
    listener: socket.socket, vm: QemuVm, timeout: float, logger: logging.Logger
) -> AgentClient:
    """Accept QEMU's connection and shake hands with hyperstart, within ``timeout`` seconds;
    cut short (Unavailable) if QEMU exits meanwhile."""
    loop = asyncio.get_running_loop()
    exited = asyncio.ensure_future(vm.wait())
    accept = asyncio.ensure_future(loop.sock_accept(listener))
    try:
        await asyncio.wait({accept, exited}, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
        if exited.done():
            if accept.done() and not accept.cancelled() and accept.exception() is None:
                accept.result()[0].close()
            raise errors.Unavailable(f"the VM exited during boot: {exited.result().reason}")
        if not accept.done():
            raise errors.Timeout(f"QEMU did not connect to the agent socket within {timeout:g} s")
        conn, _ = accept.result()
        reader, writer = await asyncio.open_connection(sock=conn)
        agent = AgentClient(reader, writer, logger=logger.getChild("agent"))
        hello = asyncio.ensure_future(agent.handshake(timeout))
        await asyncio.wait({hello, exited}, return_when=asyncio.FIRST_COMPLETED)
        if not hello.done():
            hello.cancel()
            await asyncio.gather(hello, return_exceptions=True)  # retrieved, whatever it was
            await agent.close()
            raise errors.Unavailable(f"the VM exited during boot: {exited.result().reason}")
        try:
            hello.result()
        except BaseException:
            await agent.close()
            raise
        return agent
    finally:
        for task in (accept, exited):
            if not task.done():
                task.cancel()
