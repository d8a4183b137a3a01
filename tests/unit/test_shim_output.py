"""The fan-out of a container's output to attached clients: replay, order, slow clients."""

import asyncio
from typing import Any

from hyper.proto import frames, messages
from hyper.shim.output import ClientStream, RunOutput


class FakeClient:
    """The frames a client receives; it grants credit for what it got unless it is stalled."""

    def __init__(self, streams=(1, 2), window=4096, stalled=False):
        # ("data", stream, bytes), ("eof", stream), ("exit", Exit)
        self.events: list[tuple[Any, ...]] = []
        self.stalled = stalled
        self.sinks = {
            name: ClientStream(number, window, self.send)
            for name, number in zip(("stdout", "stderr"), streams, strict=False)
        }
        self.done = asyncio.Event()

    async def send(self, data: bytes) -> None:
        (frame,) = frames.Decoder().feed(data)
        if frame.payload:
            self.events.append(("data", frame.stream, frame.payload))
            if not self.stalled:
                sink = next(s for s in self.sinks.values() if s.stream == frame.stream)
                asyncio.get_running_loop().call_soon(sink.grant, len(frame.payload))
        else:
            self.events.append(("eof", frame.stream))

    async def on_exit(self, exit_: messages.Exit) -> None:
        self.events.append(("exit", exit_))
        self.done.set()

    def data(self, stream):
        return b"".join(e[2] for e in self.events if e[0] == "data" and e[1] == stream)


def test_replay_then_live_output_then_eof_then_exit():
    async def main():
        run = RunOutput()
        await run.publish("stdout", b"early ")
        await run.publish("stderr", b"warn ")
        replaying, live = FakeClient(), FakeClient()
        run.subscribe(replaying.sinks, replaying.on_exit, replay=True)
        run.subscribe(live.sinks, live.on_exit, replay=False)
        await run.publish("stdout", b"late")
        run.end(messages.Exit("web", 3, 0))
        for client in (replaying, live):
            await asyncio.wait_for(client.done.wait(), 5)
        assert replaying.data(1) == b"early late" and replaying.data(2) == b"warn "
        assert live.data(1) == b"late" and live.data(2) == b""
        for client in (replaying, live):
            kinds = [e[0] for e in client.events]
            assert kinds[-3:] == ["eof", "eof", "exit"]  # the streams end before the exit
            assert client.events[-1][1] == messages.Exit("web", 3, 0)
        assert not run.subscribers

    asyncio.run(main())


def test_replay_keeps_the_last_mebibyte():
    async def main():
        run = RunOutput(replay_bytes=10)
        for chunk in (b"0123456", b"789ab", b"cdef"):
            await run.publish("stdout", chunk)
        client = FakeClient(window=1 << 20)
        run.subscribe(client.sinks, client.on_exit, replay=True)
        run.end(messages.Exit("web", 0, 0))
        await asyncio.wait_for(client.done.wait(), 5)
        assert client.data(1) == b"6789abcdef"

    asyncio.run(main())


def test_attaching_after_the_end_gets_the_replay_and_the_exit():
    async def main():
        run = RunOutput()
        await run.publish("stdout", b"all of it")
        run.end(messages.Exit("web", 137, 9))
        client = FakeClient()
        run.subscribe(client.sinks, client.on_exit, replay=True)
        await asyncio.wait_for(client.done.wait(), 5)
        assert client.data(1) == b"all of it"
        assert client.events[-1] == ("exit", messages.Exit("web", 137, 9))

    asyncio.run(main())


def test_a_client_without_credit_is_dropped_and_holds_nobody_up():
    async def main():
        run = RunOutput()
        good, stuck = FakeClient(), FakeClient(stalled=True)
        run.subscribe(good.sinks, good.on_exit, replay=False)
        stuck_subscriber = run.subscribe(
            stuck.sinks, stuck.on_exit, replay=False, stall_timeout=0.3
        )
        payload = bytes(range(256)) * 4096  # 1 MiB: far more than the stuck client's window
        loop = asyncio.get_running_loop()
        started = loop.time()
        for offset in range(0, len(payload), 65536):
            await asyncio.wait_for(run.publish("stdout", payload[offset : offset + 65536]), 5)
        assert loop.time() - started < 5
        assert stuck_subscriber.dropped
        assert ("eof", 1) in stuck.events and len(stuck.data(1)) <= 4096  # its stream ended
        run.end(messages.Exit("web", 0, 0))
        await asyncio.wait_for(good.done.wait(), 5)
        await asyncio.wait_for(stuck.done.wait(), 5)  # it still learns of the exit
        assert good.data(1) == payload

    asyncio.run(main())


def test_a_detached_client_gets_nothing_more():
    async def main():
        run = RunOutput()
        client = FakeClient()
        subscriber = run.subscribe(client.sinks, client.on_exit, replay=False)
        subscriber.detach()
        await run.publish("stdout", b"after")
        run.end(messages.Exit("web", 0, 0))
        await asyncio.sleep(0)
        assert client.events == [] and not run.subscribers

    asyncio.run(main())
