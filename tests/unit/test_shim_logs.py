"""Container logs in docker's json-file format: writing, rotation, reading, following."""

import asyncio
import json
import time
from typing import Any

import pytest

from hyper.shim.logs import (
    MAX_LINE,
    LogWriter,
    end_position,
    follow_logs,
    format_time,
    log_files,
    parse_time,
    read_logs,
)


def writer(tmp_path, max_bytes=1 << 20, max_files=3):
    return LogWriter(tmp_path / "c", max_bytes=max_bytes, max_files=max_files)


def raw_lines(tmp_path):
    return [json.loads(line) for line in (tmp_path / "c" / "log.jsonl").read_text().splitlines()]


def texts(entries):
    return [(e.stream, e.log) for e in entries]


def test_lines_of_both_streams_in_docker_format(tmp_path):
    log = writer(tmp_path)
    log.write("stdout", b"one\ntw")
    log.write("stderr", b"oops\n")
    log.write("stdout", b"o\n")
    lines = raw_lines(tmp_path)
    assert [(x["stream"], x["log"]) for x in lines] == [
        ("stdout", "one\n"),
        ("stderr", "oops\n"),
        ("stdout", "two\n"),
    ]
    assert set(lines[0]) == {"log", "stream", "time"}
    stamp = lines[0]["time"]
    assert stamp.endswith("Z") and len(stamp.split(".")[1]) == 10  # 9 digits and Z
    assert abs(parse_time(stamp) / 1e9 - time.time()) < 60


def test_partial_line_is_flushed_at_the_end_of_the_stream(tmp_path):
    log = writer(tmp_path)
    log.write("stdout", b"no newline")
    assert raw_lines(tmp_path) == []
    log.end("stdout")
    assert [x["log"] for x in raw_lines(tmp_path)] == ["no newline"]
    log.write("stderr", b"x")
    log.close()
    assert [x["log"] for x in raw_lines(tmp_path)] == ["no newline", "x"]


def test_long_line_is_cut_at_16_kib_without_splitting_characters(tmp_path):
    log = writer(tmp_path)
    log.write("stdout", b"a" * (MAX_LINE * 2 + 5))
    assert [len(x["log"]) for x in raw_lines(tmp_path)] == [MAX_LINE, MAX_LINE]
    log.write("stdout", b"\n" + b"b" * (MAX_LINE - 1) + "é".encode() + b"c\n")
    logs = [x["log"] for x in raw_lines(tmp_path)]
    assert logs[2] == "aaaaa\n"
    assert logs[3] == "b" * (MAX_LINE - 1)  # é (2 bytes) would straddle the cut
    assert logs[4] == "éc\n"


def test_invalid_utf8_is_replaced(tmp_path):
    log = writer(tmp_path)
    log.write("stdout", b"\xff\xfe ok \xc3\n")
    assert raw_lines(tmp_path)[0]["log"] == "\ufffd\ufffd ok \ufffd\n"


def test_time_format_round_trip():
    ns = 1_714_557_600_123_456_789
    assert format_time(ns) == "2024-05-01T10:00:00.123456789Z"
    assert parse_time(format_time(ns)) == ns
    assert parse_time("2024-05-01T10:00:00Z") == 1_714_557_600 * 10**9
    assert parse_time("2024-05-01T12:00:00.5+02:00") == 1_714_557_600 * 10**9 + 500_000_000


def test_rotation_keeps_max_files_and_reading_spans_them_in_order(tmp_path):
    log = writer(tmp_path, max_bytes=400, max_files=3)
    for i in range(100):
        log.write("stdout" if i % 2 else "stderr", f"line {i}\n".encode())
    directory = tmp_path / "c"
    assert [p.name for p in log_files(directory)] == ["log.jsonl.2", "log.jsonl.1", "log.jsonl"]
    assert all(p.stat().st_size <= 400 for p in log_files(directory))
    numbers = [int(e.log.split()[1]) for e in read_logs(directory)]
    assert numbers == list(range(numbers[0], 100)) and numbers[0] > 0  # the oldest were dropped


def test_single_file_rotation_truncates(tmp_path):
    log = writer(tmp_path, max_bytes=300, max_files=1)
    for i in range(20):
        log.write("stdout", f"line {i}\n".encode())
    directory = tmp_path / "c"
    assert [p.name for p in log_files(directory)] == ["log.jsonl"]
    assert read_logs(directory, tail=1).__next__().log == "line 19\n"


def test_tail_since_until(tmp_path):
    directory = tmp_path / "c"
    directory.mkdir()
    base = 1_700_000_000 * 10**9
    with open(directory / "log.jsonl.1", "w") as f:
        for i in range(5):
            f.write(
                json.dumps(
                    {"log": f"{i}\n", "stream": "stdout", "time": format_time(base + i * 10**9)}
                )
                + "\n"
            )
    with open(directory / "log.jsonl", "w") as f:
        f.write("{broken line from a crash\n")
        for i in range(5, 10):
            f.write(
                json.dumps(
                    {"log": f"{i}\n", "stream": "stderr", "time": format_time(base + i * 10**9)}
                )
                + "\n"
            )
        f.write('{"log": "partial, no newline yet"')

    def numbers(**kw):
        return [int(e.log) for e in read_logs(directory, **kw)]

    assert numbers() == list(range(10))
    assert numbers(tail=3) == [7, 8, 9]
    assert numbers(tail=0) == []
    assert numbers(tail=100) == list(range(10))
    assert numbers(since=base / 1e9 + 3) == list(range(3, 10))
    assert numbers(until=base / 1e9 + 6) == list(range(7))
    assert numbers(since=base / 1e9 + 2, until=base / 1e9 + 8, tail=2) == [7, 8]
    assert list(read_logs(tmp_path / "missing")) == []


def test_reader_position_is_where_reading_stopped(tmp_path):
    log = writer(tmp_path)
    log.write("stdout", b"a\nb\n")
    reader = read_logs(tmp_path / "c", since=time.time() + 3600)  # filters everything out
    assert list(reader) == []
    assert reader.position == end_position(tmp_path / "c")


async def collect(agen, count, timeout=5.0):
    got: list[Any] = []
    async with asyncio.timeout(timeout):
        while len(got) < count:
            got.append(await anext(agen))
    return got


def test_follow_sees_new_entries_across_rotations_without_gaps_or_repeats(tmp_path):
    async def main():
        directory = tmp_path / "c"
        log = writer(tmp_path, max_bytes=500, max_files=3)
        log.write("stdout", b"before\n")
        reader = read_logs(directory)
        assert texts(reader) == [("stdout", "before\n")]
        stop = asyncio.Event()
        agen = follow_logs(directory, start_after=reader.position, stop=stop, poll=0.01)
        seen = []
        for batch in range(6):
            for i in range(4):  # ~4 x 70 bytes: a rotation every other batch
                log.write("stdout", f"batch {batch} line {i}\n".encode())
            seen += await collect(agen, 4)
        assert [e.log for e in seen] == [
            f"batch {b} line {i}\n" for b in range(6) for i in range(4)
        ]
        assert len(log_files(directory)) == 3
        stop.set()
        with pytest.raises(StopAsyncIteration):
            async with asyncio.timeout(5):
                await anext(agen)

    asyncio.run(main())


def test_follow_from_now_and_before_the_log_exists(tmp_path):
    async def main():
        directory = tmp_path / "c"
        stop = asyncio.Event()
        agen = follow_logs(directory, start_after=None, stop=stop, poll=0.01)
        waiting = asyncio.ensure_future(anext(agen))
        for _ in range(3):  # let the follower look at the missing log first (yields, no timing)
            await asyncio.sleep(0)
        log = writer(tmp_path)
        log.write("stderr", b"first\n")
        async with asyncio.timeout(5):
            assert (await waiting).log == "first\n"
        stop.set()
        await agen.aclose()

        log.write("stdout", b"old\n")
        agen = follow_logs(directory, start_after=None, stop=stop, poll=0.01)
        stop.clear()
        waiting = asyncio.ensure_future(anext(agen))
        for _ in range(3):
            await asyncio.sleep(0)
        log.write("stdout", b"new\n")
        async with asyncio.timeout(5):
            assert (await waiting).log == "new\n"
        await agen.aclose()

    asyncio.run(main())


def test_follow_a_reader_left_behind_restarts_at_the_oldest_file(tmp_path):
    async def main():
        directory = tmp_path / "c"
        log = writer(tmp_path, max_bytes=200, max_files=2)
        log.write("stdout", b"gone soon\n")
        position = read_logs(directory).position
        for i in range(30):
            log.write("stdout", f"l{i}\n".encode())
        stop = asyncio.Event()
        agen = follow_logs(directory, start_after=position, stop=stop, poll=0.01)
        oldest = next(iter(read_logs(directory)))
        assert (await collect(agen, 1))[0].log == oldest.log
        await agen.aclose()

    asyncio.run(main())
