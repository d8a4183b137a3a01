"""The schemas of the ``processes`` and ``export`` operations: round trips and refusals."""

from __future__ import annotations

from typing import Any

import pytest

from hyper.errors import ProtocolError
from hyper.proto import frames, messages

INFO = messages.ProcessInfo(
    pid=42,
    ppid=1,
    uid=65534,
    user="nobody",
    state="S",
    rss=4096 * 10,
    cpu_time=0.25,
    started=12.5,
    command="sleep 600",
)


def _info(**overrides: Any) -> dict[str, Any]:
    fields = INFO.to_wire()
    fields.update(overrides)
    return fields


def test_processes_request_round_trip() -> None:
    args = messages.Processes("c1").to_wire()
    assert args == {"container": "c1"}
    assert messages.Processes.from_wire(args) == messages.Processes("c1")


@pytest.mark.parametrize("args", [{}, {"container": "../c"}, {"container": 7}, {"container": ""}])
def test_processes_request_rejects(args: dict[str, Any]) -> None:
    with pytest.raises(ProtocolError):
        messages.Processes.from_wire(args)


def test_process_list_round_trip() -> None:
    listing = messages.ProcessList([INFO, INFO._replace(pid=43, cpu_time=3)], truncated=True)
    wire = listing.to_wire()
    parsed = messages.ProcessList.from_wire(wire)
    assert parsed == listing
    assert isinstance(parsed.processes[1].cpu_time, float)
    assert messages.ProcessList.from_wire({"processes": []}) == messages.ProcessList([], False)


@pytest.mark.parametrize(
    "overrides",
    [
        {"pid": 0},
        {"pid": 2**40},
        {"pid": True},
        {"ppid": -1},
        {"uid": 2**32},
        {"user": 5},
        {"user": "x" * 300},
        {"state": "RUNNING-LONG"},
        {"rss": -1},
        {"rss": 1.5},
        {"cpu_time": -0.1},
        {"cpu_time": float("nan")},
        {"cpu_time": "1"},
        {"started": float("inf")},
        {"command": "x" * (17 * 1024)},
        {"command": "a\0b"},
    ],
)
def test_process_info_rejects(overrides: dict[str, Any]) -> None:
    with pytest.raises(ProtocolError):
        messages.ProcessList.from_wire({"processes": [_info(**overrides)]})


@pytest.mark.parametrize(
    "result",
    [
        {},
        {"processes": {}},
        {"processes": ["x"]},
        {"processes": [_info()] * (messages.MAX_PROCESSES + 1)},
        {"processes": [_info()], "truncated": "no"},
        {"processes": [{k: v for k, v in _info().items() if k != "command"}]},
    ],
)
def test_process_list_rejects(result: dict[str, Any]) -> None:
    with pytest.raises(ProtocolError):
        messages.ProcessList.from_wire(result)


def test_a_full_process_list_fits_one_message_only_when_small() -> None:
    """The guest must bound its answer: the schema's maximum does not fit MAX_MSG by itself."""
    big = messages.ProcessList([INFO] * messages.MAX_PROCESSES).to_wire()
    assert len(messages.encode_result(1, big)) > frames.MAX_MSG


def test_export_round_trip() -> None:
    spec = messages.Export("c1", "export-1", 3, 4)
    assert messages.Export.from_wire(spec.to_wire()) == spec
    # what AgentClient.open_process sends: every stdio field, stdin 0
    wire = {"container": "c1", "process": "e", "stdin": 0, "stdout": 5, "stderr": 0}
    assert messages.Export.from_wire(wire) == messages.Export("c1", "e", 5, 0)


@pytest.mark.parametrize(
    "overrides",
    [
        {"stdout": 0},
        {"stdout": None},
        {"stdout": 2**40},
        {"stderr": 3},  # the same as stdout
        {"stdin": 7},
        {"container": "a/b"},
        {"process": ""},
        {"container": None},
    ],
)
def test_export_rejects(overrides: dict[str, Any]) -> None:
    args = messages.Export("c1", "e1", 3, 4).to_wire()
    args.update(overrides)
    with pytest.raises(ProtocolError):
        messages.Export.from_wire(args)
