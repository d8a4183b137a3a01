"""hyperstart's ``processes``: /proc parsing (a fake /proc and the real one), the bounds of the
answer, user names from the container's passwd, and the operation through the agent."""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from hyper.proto import frames, messages
from hyperstart import ps
from tests.unit.test_hyperstart_agent import Guest, Host, exec_args


def fake_process(
    proc: Path,
    pid: int,
    *,
    comm: str = "sleep",
    state: str = "S",
    ppid: int = 1,
    uid: int = 0,
    utime: int = 0,
    stime: int = 0,
    start: int = 0,
    rss: int = 0,
    cmdline: bytes = b"",
) -> None:
    directory = proc / str(pid)
    directory.mkdir(parents=True)
    rest = [state, ppid, pid, pid, 0, -1, 4194560, 10, 0, 0, 0, utime, stime, 0, 0, 20, 0, 1, 0]
    rest += [start, 12345678, rss, 18446744073709551615]
    (directory / "stat").write_text(f"{pid} ({comm}) " + " ".join(map(str, rest)) + "\n")
    (directory / "status").write_text(
        f"Name:\t{comm}\nState:\t{state} (sleeping)\nUid:\t{uid + 1}\t{uid}\t{uid}\t{uid}\n"
    )
    (directory / "cmdline").write_bytes(cmdline)


@pytest.fixture
def proc(tmp_path: Path) -> Path:
    root = tmp_path / "proc"
    root.mkdir()
    (root / "self").mkdir()  # not a process
    return root


def test_reads_stat_status_and_cmdline(proc: Path) -> None:
    ticks = ps.CLOCK_TICKS
    fake_process(
        proc,
        42,
        comm="odd) name (x",
        state="R",
        ppid=7,
        uid=65534,
        utime=3 * ticks,
        stime=ticks // 2,
        start=10 * ticks,
        rss=25,
        cmdline=b"sleep\x00600\x00",
    )
    fake_process(proc, 43, comm="kworker/0:1", state="I", ppid=2)
    listing = ps.collect([43, 42, 99], str(proc), {65534: "nobody"})
    assert not listing.truncated
    first, second = listing.processes
    assert first == messages.ProcessInfo(
        pid=42,
        ppid=7,
        uid=65534,
        user="nobody",
        state="R",
        rss=25 * ps.PAGE_SIZE,
        cpu_time=3 + (ticks // 2) / ticks,
        started=10.0,
        command="sleep 600",
    )
    assert (second.pid, second.user, second.command) == (43, "0", "[kworker/0:1]")
    assert messages.ProcessList.from_wire(listing.to_wire()) == listing


def test_the_answer_fits_one_message(proc: Path) -> None:
    for pid in range(1, 101):
        fake_process(proc, pid, cmdline=b"x" * 5000)
    listing = ps.collect(list(range(1, 101)), str(proc))
    assert listing.truncated
    assert 10 < len(listing.processes) < 100
    assert all(len(p.command) == ps.COMMAND_LIMIT for p in listing.processes)
    assert [p.pid for p in listing.processes] == list(range(1, len(listing.processes) + 1))
    assert len(messages.encode_result(2**40, listing.to_wire())) <= frames.MAX_MSG


def test_at_most_max_processes(proc: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ps, "MAX_PROCESSES", 3)
    for pid in range(1, 6):
        fake_process(proc, pid)
    listing = ps.collect(list(range(1, 6)), str(proc))
    assert ([p.pid for p in listing.processes], listing.truncated) == ([1, 2, 3], True)


def test_the_real_proc_for_this_process() -> None:
    info = ps.read(os.getpid(), names={os.geteuid(): "me"})
    assert info is not None
    assert (info.pid, info.ppid, info.uid, info.user) == (
        os.getpid(),
        os.getppid(),
        os.geteuid(),
        "me",
    )
    assert info.state in ("R", "S")
    assert info.rss > 1 << 20
    assert info.cpu_time > 0
    with open("/proc/uptime") as file:
        assert 0 < info.started <= float(file.read().split()[0])
    assert (
        info.command
        == " ".join(Path("/proc/self/cmdline").read_bytes().decode().split("\0")).strip()
    )
    assert ps.read(2**22 + 1) is None


@pytest.fixture
def child() -> Iterator[tuple[int, int]]:
    """A shell and its sleeping child: (shell pid, sleep pid)."""
    shell = subprocess.Popen(
        ["sh", "-c", "sleep 1000 & echo $!; wait"], stdout=subprocess.PIPE, text=True
    )
    assert shell.stdout is not None
    grandchild = int(shell.stdout.readline())
    yield shell.pid, grandchild
    os.kill(grandchild, 9)
    shell.wait(timeout=30)


def test_descendants_on_the_real_proc(child: tuple[int, int]) -> None:
    shell, sleeper = child
    assert ps.descendants({shell}) == sorted({shell, sleeper})
    assert ps.descendants({sleeper}) == [sleeper]
    assert ps.descendants({2**22 + 1}) == []


def test_passwd_names_do_not_follow_symlinks(tmp_path: Path) -> None:
    root = tmp_path / "root"
    (root / "etc").mkdir(parents=True)
    (root / "etc" / "passwd").write_text(
        "root:x:0:0:root:/root:/bin/sh\n#comment\nbad\nnobody:x:65534:65534::/:/bin/false\n"
        "again:x:0:0::/:/bin/sh\n"
    )
    assert ps.passwd_names(str(root)) == {0: "root", 65534: "nobody"}
    (root / "etc" / "passwd").unlink()
    (root / "etc" / "passwd").symlink_to("/etc/passwd")
    assert ps.passwd_names(str(root)) == {}
    (root / "etc" / "passwd").unlink()
    os.rename(root / "etc", root / "real-etc")
    (root / "etc").symlink_to("real-etc")
    assert ps.passwd_names(str(root)) == {}
    assert ps.passwd_names(str(tmp_path / "missing")) == {}


# ---------------------------------------------------------------- through the agent


@pytest.fixture
def host() -> Iterator[Host]:
    guest = Guest()
    guest.host.hello()
    guest.host.ok("add_container", messages.AddContainer("c1", "d", "erofs", 8).to_wire())
    yield guest.host
    guest.stop()


def test_processes_lists_what_runs_in_the_container(host: Host) -> None:
    sleeper = host.ok("exec", exec_args("p1", ["sleep", "1000"]))["pid"]
    shell = host.ok("exec", exec_args("p2", ["sh", "-c", "sleep 999 & echo $!; wait"], stdout=1))
    host.wait(lambda: bytes(host.streams.get(1, b"")).endswith(b"\n"))
    grandchild = int(bytes(host.streams[1]))
    host.ok("exec", exec_args("p3", ["true"]))
    assert host.exit_of("p3").status == 0

    listing = messages.ProcessList.from_wire(host.ok("processes", {"container": "c1"}))
    by_pid = {p.pid: p for p in listing.processes}
    assert set(by_pid) == {sleeper, shell["pid"], grandchild}
    assert by_pid[sleeper].command == "sleep 1000"
    assert by_pid[sleeper].user == "root"  # uid 0 named from the container's (here: host) passwd
    assert by_pid[grandchild].ppid == shell["pid"]
    assert by_pid[grandchild].command == "sleep 999"
    json.dumps(listing.to_wire())

    host.ok("signal", {"process": "p1", "signal": 9})
    host.exit_of("p1")
    listing = messages.ProcessList.from_wire(host.ok("processes", {"container": "c1"}))
    assert {p.pid for p in listing.processes} == {shell["pid"], grandchild}
    os.kill(grandchild, 9)
    assert host.exit_of("p2").status == 0


def test_processes_errors(host: Host) -> None:
    assert host.call("processes", {"container": "nope"}).error_kind == "NotFound"
    assert host.call("processes", {"container": "../x"}).error_kind == "InvalidArgument"
    assert messages.ProcessList.from_wire(host.ok("processes", {"container": "c1"})) == (
        messages.ProcessList([], False)
    )
