"""The per-pod supervisor (shim) on real QEMU: started as hyperd starts it, driven through its
control socket and files, and checked for what it leaves behind."""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import shutil
import signal
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from hyper import errors
from hyper.images.store import ImageStore
from hyper.model.pod import pod_from_dict
from hyper.model.restart import RestartPolicy
from hyper.sandbox.rundir import sweep
from hyper.shim import launch
from hyper.shim.client import ShimClient
from hyper.shim.logs import read_logs
from hyper.shim.spec import ShimSpec, write_spec
from tests.integration.conftest import pids_mentioning

pytestmark = pytest.mark.vm

IMAGES = Path("/var/lib/hyper/images")  # the machine's store, where `hyper pull busybox` put it
BOOT = 180.0  # TCG boots in seconds; generous for a loaded machine


@dataclass
class Env:
    config: Path
    run_dir: Path
    root: Path

    def state_dir(self, command, *, restart="no", stdin=False, image="busybox", name="c"):
        state = self.root / f"pod-{secrets.token_hex(3)}"
        state.mkdir(mode=0o700)
        pod = pod_from_dict(
            {"containers": [{"name": name, "image": image, "command": command, "stdin": stdin}]},
            default_name=f"shim-{secrets.token_hex(3)}",
        )
        write_spec(state, ShimSpec(id=secrets.token_hex(32), pod=pod,
                                   restart=RestartPolicy.parse(restart)))  # fmt: skip
        return state

    def control(self, state: Path) -> Path:
        pod_id: str = json.loads((state / "spec.json").read_text())["id"]
        return self.run_dir / "pods" / pod_id[:16] / "control.sock"

    def pod_dirs(self) -> list[Path]:
        pods = self.run_dir / "pods"
        return sorted(pods.iterdir()) if pods.exists() else []


@pytest.fixture
def env(tmp_path: Path):
    if shutil.which("qemu-system-x86_64") is None:
        pytest.skip("qemu-system-x86_64 is not installed")
    try:
        ImageStore(IMAGES).resolve("busybox")
    except (errors.HyperError, OSError) as exc:
        pytest.skip(f"the busybox image is not in {IMAGES}: {exc}")
    run_dir = Path(tempfile.mkdtemp(prefix="hyper-shim-"))  # short: unix socket paths
    config = tmp_path / "config.toml"
    config.write_text(
        f'[paths]\nstate_dir = "{IMAGES.parent}"\nrun_dir = "{run_dir}"\n'
        "[vm]\nboot_timeout = 120.0\n[container]\nstop_timeout = 5.0\n"
    )
    yield Env(config, run_dir, tmp_path)
    leftovers = env_leftovers(run_dir)
    for pid in leftovers:
        os.kill(pid, signal.SIGKILL)
    pods = [p.name for p in sorted((run_dir / "pods").glob("*"))]
    shutil.rmtree(run_dir, ignore_errors=True)
    assert not leftovers, f"processes left behind: {leftovers}"
    assert not pods, f"pod directories left behind: {pods}"


def env_leftovers(run_dir: Path) -> list[int]:
    return pids_mentioning(str(run_dir))


def status(state: Path) -> dict[str, Any]:
    document: dict[str, Any] = json.loads((state / "status.json").read_text())
    return document


def logs(state: Path, name: str = "c") -> list[tuple[str, str]]:
    return [(e.stream, e.log) for e in read_logs(state / "containers" / name)]


async def exited(process: asyncio.subprocess.Process, timeout: float = 60.0) -> int:
    try:
        return await asyncio.wait_for(process.wait(), timeout)
    except TimeoutError:
        process.kill()
        raise AssertionError(f"the shim did not exit within {timeout:g} s") from None


async def until(predicate, timeout: float, what: str):
    """Poll a file-based condition (the shim gives no other signal) with a deadline."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        await asyncio.sleep(0.05)
    raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")


async def read_until(stream, marker: bytes, timeout: float = 30.0) -> bytes:
    data = b""
    async with asyncio.timeout(timeout):
        while marker not in data:
            chunk = await stream.read()
            assert chunk, f"the stream ended before {marker!r}: {data!r}"
            data += chunk
    return data


def test_a_pod_runs_to_completion_and_leaves_nothing(env):
    async def main():
        state = env.state_dir(["sh", "-c", "echo out; echo err >&2; exit 3"])
        shim, ready = await launch.spawn(state, config=env.config, timeout=BOOT)
        assert ready["ok"] is True and ready["pid"] == shim.pid and ready["vm_pid"] > 0
        assert await exited(shim) == 0
        assert not launch.alive(ready["vm_pid"])
        return state, ready

    state, ready = asyncio.run(main())
    final = status(state)
    assert final["pod"]["state"] == "exited" and final["pod"]["finished_at"]
    assert (final["shim_pid"], final["vm_pid"]) == (ready["pid"], ready["vm_pid"])
    container = final["containers"]["c"]
    assert (container["state"], container["exit_code"], container["restart_count"]) == (
        "exited",
        3,
        0,
    )
    assert sorted(logs(state)) == [("stderr", "err\n"), ("stdout", "out\n")]
    assert not env.control(state).exists() and env.pod_dirs() == []
    assert "pod " in (state / "shim.log").read_text()


def test_on_failure_restarts_in_the_same_vm_up_to_the_limit(env):
    async def main():
        # The writable layer survives a restart: each run appends to the same file.
        state = env.state_dir(
            ["sh", "-c", "echo x >> /runs; echo run $(wc -l < /runs); exit 3"],
            restart="on-failure:2",
        )
        shim, _ = await launch.spawn(state, config=env.config, timeout=BOOT)
        assert await exited(shim) == 0
        return state

    state = asyncio.run(main())
    container = status(state)["containers"]["c"]
    assert (container["state"], container["restart_count"], container["exit_code"]) == (
        "exited",
        2,
        3,
    )
    assert logs(state) == [("stdout", "run 1\n"), ("stdout", "run 2\n"), ("stdout", "run 3\n")]


def test_attach_with_replay_and_stdin(env):
    async def main():
        state = env.state_dir(["sh", "-c", "echo ready; read x; echo got $x"], stdin=True)
        shim, _ = await launch.spawn(state, config=env.config, timeout=BOOT)
        await until(lambda: ("stdout", "ready\n") in logs(state), 30, "the container's first line")
        client = await ShimClient.connect(env.control(state))
        current = await client.status()
        assert current["containers"]["c"]["state"] == "running"
        process = await client.attach("c", stdin=True, replay=True)
        assert process.result is False  # no TTY
        assert process.stdin is not None and process.stdout is not None
        await process.stdin.write(b"hi\n")
        assert await read_until(process.stdout, b"got hi\n") == b"ready\ngot hi\n"
        async with asyncio.timeout(30):
            assert await process.stdout.read() == b""
            exit_ = await process.wait()
        assert (exit_.status, exit_.signal) == (0, 0)
        final = await client.status(after=current["version"], timeout=60)
        assert final["version"] > current["version"]
        await client.close()
        assert await exited(shim) == 0

    asyncio.run(main())


def test_a_client_leaving_does_not_disturb_the_pod_and_another_reattaches(env):
    async def main():
        state = env.state_dir(["sh", "-c", 'while read x; do echo "line $x"; done'], stdin=True)
        shim, _ = await launch.spawn(state, config=env.config, timeout=BOOT)
        first = await ShimClient.connect(env.control(state))
        process = await first.attach("c", stdin=True)
        assert process.stdin is not None and process.stdout is not None
        await process.stdin.write(b"a\n")
        await read_until(process.stdout, b"line a\n")
        await first.close()  # gone without closing stdin: the container must not notice

        second = await ShimClient.connect(env.control(state))
        assert (await second.status())["containers"]["c"]["state"] == "running"
        process = await second.attach("c", stdin=True)
        assert process.stdin is not None and process.stdout is not None
        await process.stdin.write(b"b\n")
        await read_until(process.stdout, b"line b\n")
        await process.stdin.close()  # EOF: the loop ends, the container exits 0
        async with asyncio.timeout(30):
            assert (await process.wait()).status == 0
        await second.close()
        assert await exited(shim) == 0
        return state

    state = asyncio.run(main())
    assert logs(state) == [("stdout", "line a\n"), ("stdout", "line b\n")]
    assert status(state)["containers"]["c"]["exit_code"] == 0


def test_stop_kills_a_container_that_ignores_sigterm_after_the_timeout(env):
    async def main():
        state = env.state_dir(["sh", "-c", 'trap "" TERM; echo ready; sleep 600 & wait'],
                              restart="always")  # fmt: skip
        shim, _ = await launch.spawn(state, config=env.config, timeout=BOOT)
        await until(lambda: ("stdout", "ready\n") in logs(state), 30, "the trap to be set")
        client = await ShimClient.connect(env.control(state))
        started = time.monotonic()
        await client.stop(timeout=1.0)
        took = time.monotonic() - started
        final = status(state)  # stop answers once the final status is written
        assert await exited(shim) == 0
        return state, took, final

    state, took, final = asyncio.run(main())
    assert 1.0 <= took < 30, took
    assert final == status(state)
    container = final["containers"]["c"]
    assert final["pod"]["state"] == "exited"
    assert (container["exit_code"], container["signal"], container["restart_count"]) == (
        137,
        9,
        0,
    )


def test_kill_signals_every_main_process_and_stops_restarts(env):
    async def main():
        state = env.state_dir(["sh", "-c", "echo ready; sleep 600 & wait"], restart="always")
        shim, _ = await launch.spawn(state, config=env.config, timeout=BOOT)
        await until(lambda: ("stdout", "ready\n") in logs(state), 30, "the container to run")
        client = await ShimClient.connect(env.control(state))
        await client.kill(signal.SIGKILL)
        assert await exited(shim) == 0
        return state

    state = asyncio.run(main())
    container = status(state)["containers"]["c"]
    assert (container["exit_code"], container["signal"], container["restart_count"]) == (
        137,
        9,
        0,
    )


def test_the_vm_dies_with_its_shim(env):
    async def main():
        state = env.state_dir(["sleep", "600"])
        shim, ready = await launch.spawn(state, config=env.config, timeout=BOOT)
        assert launch.alive(ready["vm_pid"])
        shim.kill()
        assert await exited(shim) == -signal.SIGKILL
        async with asyncio.timeout(10):
            await launch.wait_exit(ready["vm_pid"])  # PDEATHSIG
        return state, ready

    state, ready = asyncio.run(main())
    assert not launch.alive(ready["vm_pid"])
    last = status(state)
    assert last["pod"]["state"] == "running" and last["pod"]["finished_at"] is None
    assert len(env.pod_dirs()) == 1  # its lock is free: the next sweep takes it
    assert len(sweep(env.run_dir / "pods")) == 1
    assert env.pod_dirs() == []


def test_a_vm_that_dies_fails_the_pod(env):
    async def main():
        state = env.state_dir(["sleep", "600"], restart="always")
        shim, ready = await launch.spawn(state, config=env.config, timeout=BOOT)
        client = await ShimClient.connect(env.control(state))
        running = await client.status()
        os.kill(ready["vm_pid"], signal.SIGKILL)
        failed = await client.status(after=running["version"], timeout=30)
        while failed["pod"]["state"] != "failed":
            failed = await client.status(after=failed["version"], timeout=30)
        assert await exited(shim) == 1
        return state

    state = asyncio.run(main())
    final = status(state)
    assert final["pod"]["state"] == "failed" and final["pod"]["finished_at"]
    assert "VM exited" in final["pod"]["error"]
    container = final["containers"]["c"]
    assert (container["state"], container["exit_code"], container["restart_count"]) == (
        "exited",
        255,
        0,
    )
    assert "VM exited" in container["error"]
    assert env.pod_dirs() == []


def test_processes_and_export_are_relayed(env):
    async def main():
        state = env.state_dir(["sh", "-c", "echo data > /made-here; echo ready; sleep 600"])
        shim, _ = await launch.spawn(state, config=env.config, timeout=BOOT)
        await until(lambda: ("stdout", "ready\n") in logs(state), 30, "the container to run")
        client = await ShimClient.connect(env.control(state))
        found = await client.processes("c")
        assert any("sleep" in json.dumps(p) for p in found), found
        export = await client.export("c")
        assert export.stdout is not None
        async with asyncio.timeout(60):
            tar = await export.stdout.read_all()
            assert (await export.wait()).status == 0
        assert b"made-here" in tar
        await client.stop(timeout=1.0)
        assert await exited(shim) == 0

    asyncio.run(main())


def test_a_reader_gone_before_the_ready_line_does_not_stop_the_shim(env):
    async def main():
        state = env.state_dir(["sh", "-c", "echo still here"])
        shim = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "hyper.shim", str(state), "--config", str(env.config),
            stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.DEVNULL, start_new_session=True,
        )  # fmt: skip
        assert shim.stdout is not None
        shim._transport.get_pipe_transport(1).close()  # type: ignore[attr-defined]
        assert await exited(shim, BOOT) == 0  # EPIPE on the ready line, and carried on
        return state

    state = asyncio.run(main())
    assert status(state)["containers"]["c"]["exit_code"] == 0
    assert logs(state) == [("stdout", "still here\n")]


def test_a_boot_failure_is_reported_and_cleaned_up(env):
    async def main():
        state = env.state_dir(["true"], image="no-such-image-here")
        with pytest.raises(errors.NotFound, match="no-such-image-here"):
            await launch.spawn(state, config=env.config, timeout=BOOT)
        return state

    state = asyncio.run(main())
    final = status(state)
    assert final["pod"]["state"] == "failed" and "no-such-image-here" in final["pod"]["error"]
    assert env.pod_dirs() == []


def test_wait_exit_and_alive_for_a_process_that_is_not_a_child():
    async def main():
        sleeper = await asyncio.create_subprocess_exec("sleep", "600")
        assert launch.alive(sleeper.pid)
        waiting = asyncio.ensure_future(launch.wait_exit(sleeper.pid))
        await asyncio.sleep(0)
        assert not waiting.done()
        sleeper.kill()
        async with asyncio.timeout(10):
            await waiting
        await sleeper.wait()
        assert not launch.alive(sleeper.pid)
        await launch.wait_exit(sleeper.pid)  # gone already: returns at once

    asyncio.run(main())
