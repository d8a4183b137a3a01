"""AgentClient.processes and AgentClient.export against a scripted peer."""

from __future__ import annotations

import asyncio

import pytest

from hyper import errors
from hyper.proto import frames, messages
from tests.unit.test_agent_client import connected, msg, run

INFO = messages.ProcessInfo(7, 1, 0, "root", "S", 4096, 0.5, 3.0, "sleep 600")


def test_processes_are_validated_dicts() -> None:
    async def scenario() -> None:
        client, peer = await connected()
        task = asyncio.create_task(client.handshake(5))
        await peer.handshake()
        await task
        call = asyncio.create_task(client.processes("c1"))
        request = await peer.request()
        assert (request.op, request.args) == ("processes", {"container": "c1"})
        result = messages.ProcessList([INFO], truncated=False).to_wire()
        await peer.send(frames.encode(frames.MSG, 0, messages.encode_result(request.id, result)))
        assert await call == [INFO._asdict()]

        bad = asyncio.create_task(client.processes("c1"))
        request = await peer.request()
        await peer.send(msg({"id": request.id, "ok": True, "result": {"processes": [{"pid": 0}]}}))
        with pytest.raises(errors.ProtocolError):
            await bad
        await client.close()

    run(scenario())


def test_export_is_a_process_with_the_tar_on_stdout() -> None:
    async def scenario() -> None:
        client, peer = await connected()
        task = asyncio.create_task(client.handshake(5))
        await peer.handshake()
        await task
        started = asyncio.create_task(client.export("c1", "export-1"))
        request = await peer.request()
        assert request.op == "export"
        spec = messages.Export.from_wire(request.args)
        assert (spec.container, spec.process) == ("c1", "export-1")
        assert spec.stderr and spec.stderr != spec.stdout
        await peer.send(msg({"id": request.id, "ok": True, "result": {"pid": 9}}))
        process = await started
        assert process.pid == 9
        await peer.send(frames.encode(frames.DATA, spec.stdout, b"tar bytes"))
        await peer.send(frames.encode(frames.DATA, spec.stdout))
        await peer.send(frames.encode(frames.DATA, spec.stderr))
        await peer.send(msg({"event": "exit", "process": "export-1", "status": 0}))
        assert process.stdout is not None and process.stdin is None
        assert await process.stdout.read_all() == b"tar bytes"
        assert (await process.wait()).status == 0

        failing = asyncio.create_task(client.export("nope"))
        request = await peer.request()
        await peer.send(
            frames.encode(frames.MSG, 0, messages.encode_error(request.id, "NotFound", "no c"))
        )
        with pytest.raises(errors.NotFound):
            await failing
        await client.close()

    run(scenario())
