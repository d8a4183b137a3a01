"""The host side of the agent protocol against a scripted, possibly hostile, peer."""

import asyncio
import json
import socket

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hyper import errors
from hyper.agent.client import AgentClient, AgentState
from hyper.proto import frames, messages


def msg(obj) -> bytes:
    return frames.encode(frames.MSG, 0, json.dumps(obj).encode())


READY = msg({"event": "ready", "versions": [1], "agent": "fake"})


class Peer:
    """The guest end of a socketpair, driven by the test, with the real codec."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.decoder = frames.Decoder()
        self.reader: asyncio.StreamReader
        self.writer: asyncio.StreamWriter

    async def open(self):
        self.reader, self.writer = await asyncio.open_connection(sock=self.sock)

    async def send(self, data: bytes) -> None:
        self.writer.write(data)
        await self.writer.drain()

    async def frame(self) -> frames.Frame:
        while True:
            got = self.decoder.feed(b"") if self.decoder.pending else []
            if got:
                return got[0]
            data = await asyncio.wait_for(self.reader.read(65536), 5)
            assert data, "the client closed the connection"
            pending = self.decoder.feed(data)
            if pending:
                self.backlog = pending[1:]
                return pending[0]

    async def request(self) -> messages.Request:
        while True:
            if getattr(self, "backlog", None):
                frame = self.backlog.pop(0)
            else:
                frame = await self.frame()
            if frame.kind == frames.MSG:
                message = messages.parse(frame.payload)
                assert isinstance(message, messages.Request)
                return message

    async def handshake(self):
        await self.send(READY)
        hello = await self.request()
        assert hello.op == "hello"
        await self.send(
            frames.encode(
                frames.MSG,
                0,
                messages.encode_result(
                    hello.id, {"version": 1, "agent": "fake", "kernel": "6.1-test"}
                ),
            )
        )


async def connected(window: int = 4096, call_timeout: float = 5.0):
    a, b = socket.socketpair()
    reader, writer = await asyncio.open_connection(sock=a)
    client = AgentClient(reader, writer, window=window, call_timeout=call_timeout)
    peer = Peer(b)
    await peer.open()
    return client, peer


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, 30))


def test_handshake_and_call():
    async def scenario():
        client, peer = await connected()
        task = asyncio.create_task(client.handshake(5))
        await peer.handshake()
        hello = await task
        assert hello.kernel == "6.1-test" and client.state is AgentState.READY
        call = asyncio.create_task(client.ping())
        request = await peer.request()
        assert request.op == "ping"
        await peer.send(
            frames.encode(frames.MSG, 0, messages.encode_error(request.id, "NotFound", "gone"))
        )
        with pytest.raises(errors.NotFound, match="gone"):
            await call
        await client.close()

    run(scenario())


def test_exec_streams_and_exit_in_order():
    async def scenario():
        client, peer = await connected()
        task = asyncio.create_task(client.handshake(5))
        await peer.handshake()
        await task
        started = asyncio.create_task(client.exec("c", "p", ["cat"], stdin=True))
        request = await peer.request()
        spec = messages.Exec.from_wire(request.args)
        await peer.send(msg({"id": request.id, "ok": True, "result": {"pid": 42}}))
        process = await started
        assert process.pid == 42
        await peer.send(frames.encode(frames.DATA, spec.stdout, b"out"))
        await peer.send(frames.encode(frames.DATA, spec.stderr, b"err"))
        await peer.send(frames.encode(frames.DATA, spec.stdout))
        await peer.send(frames.encode(frames.DATA, spec.stderr))
        await peer.send(msg({"event": "exit", "process": "p", "status": 3, "signal": 0}))
        assert await process.stdout.read_all() == b"out"
        assert await process.stderr.read_all() == b"err"
        assert (await process.wait()).status == 3
        await client.close()

    run(scenario())


def test_flooding_beyond_credit_closes_the_connection():
    async def scenario():
        client, peer = await connected(window=4096)
        task = asyncio.create_task(client.handshake(5))
        await peer.handshake()
        await task
        started = asyncio.create_task(client.exec("c", "p", ["yes"]))
        request = await peer.request()
        spec = messages.Exec.from_wire(request.args)
        await peer.send(msg({"id": request.id, "ok": True, "result": {"pid": 1}}))
        process = await started
        for _ in range(3):  # 3 x 2 KiB > the 4 KiB window, nobody reading
            await peer.send(frames.encode(frames.DATA, spec.stdout, b"y" * 2048))
        reason = await asyncio.wait_for(client.closed(), 5)
        assert isinstance(reason, errors.ProtocolError) and "credit" in str(reason)
        with pytest.raises(errors.ProtocolError):
            await process.wait()
        await client.close()

    run(scenario())


def test_silent_agent_times_out():
    async def scenario():
        client, _peer = await connected(call_timeout=0.2)
        with pytest.raises(errors.Timeout, match="did not announce"):
            await client.handshake(0.2)
        await client.close()

    run(scenario())


def test_agent_that_hangs_up_fails_pending_calls():
    async def scenario():
        client, peer = await connected()
        task = asyncio.create_task(client.handshake(5))
        await peer.handshake()
        await task
        call = asyncio.create_task(client.stats())
        await peer.request()
        peer.writer.close()
        with pytest.raises(errors.Unavailable, match="closed"):
            await call
        await client.close()

    run(scenario())


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.lists(
        st.one_of(
            st.binary(max_size=64),
            st.builds(
                lambda k, s, p: frames.HEADER.pack(k, 0, s, len(p)) + p,
                st.integers(0, 4),
                st.integers(0, 9),
                st.binary(max_size=40),
            ),
            st.builds(lambda n: frames.HEADER.pack(frames.MSG, 0, 0, n), st.integers(0, 2**32 - 1)),
            st.sampled_from(
                [
                    msg({"id": 1, "ok": True, "result": {"pid": "x"}}),
                    msg({"id": 99, "ok": True}),
                    msg({"event": "exit", "process": "p", "status": 999}),
                    msg({"event": "exit", "process": "p", "status": 1}),
                    msg({"id": 1, "op": "evil", "args": {}}),
                    frames.encode(frames.DATA, 3, b"z" * 100),
                    frames.encode(frames.DATA, 1),
                    frames.encode_window(2, 5),
                ]
            ),
        ),
        max_size=12,
    )
)
def test_hostile_bytes_after_handshake_never_crash_or_hang(chunks):
    """Whatever the guest sends, the client either keeps working or closes with a clear error;
    a pending call always ends (with a result or an error), within its bound."""

    async def scenario():
        client, peer = await connected(call_timeout=1.0)
        task = asyncio.create_task(client.handshake(5))
        await peer.handshake()
        await task
        call = asyncio.create_task(client.exec("c", "p", ["x"], stdin=True))
        for chunk in chunks:
            await peer.send(chunk)
        try:
            await asyncio.wait_for(call, 5)
        except errors.HyperError as exc:
            assert str(exc)
        if client.state is AgentState.CLOSED:
            assert isinstance(client.close_reason, errors.HyperError)
            assert str(client.close_reason)
        await client.close()
        peer.writer.close()

    run(scenario())
