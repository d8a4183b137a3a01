import contextlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from hyper.errors import ProtocolError
from hyper.proto import messages


def _exec(**overrides):
    args = messages.Exec("c1", "p1", ["sh"], ["A=1"], "/", "", False, 1, 2, 3).to_wire()
    args.update(overrides)
    return args


def test_exec_round_trip():
    args = _exec()
    assert messages.Exec.from_wire(args).to_wire() == args


@pytest.mark.parametrize(
    "overrides",
    [
        {"argv": []},
        {"argv": "sh"},
        {"argv": ["sh\0"]},
        {"env": ["NOEQUALS"]},
        {"cwd": "relative"},
        {"container": "../etc"},
        {"process": ""},
        {"tty": "yes"},
        {"stdout": 2**40},
        {"stdin": 1, "stdout": 1},
        {"tty": True, "stderr": 3},
        {"rows": 0},
        {"argv": ["x"] * 5000},
    ],
)
def test_exec_rejects(overrides):
    with pytest.raises(ProtocolError):
        messages.Exec.from_wire(_exec(**overrides))


def test_parse_envelopes():
    assert messages.parse(messages.encode_request(1, "ping", {})) == messages.Request(1, "ping", {})
    result = messages.parse(messages.encode_result(2, {"a": 1}))
    assert isinstance(result, messages.Response) and result.result == {"a": 1}
    error = messages.parse(messages.encode_error(3, "NotFound", "nope"))
    assert isinstance(error, messages.Response)
    assert (error.ok, error.error_kind, error.error_message) == (False, "NotFound", "nope")
    event = messages.parse(messages.encode_event("exit", {"process": "p", "status": 1}))
    assert event == messages.Event("exit", {"process": "p", "status": 1})


def test_unknown_error_kind_becomes_internal():
    response = messages.parse(b'{"id":1,"ok":false,"error":{"kind":"Evil","message":"x"}}')
    assert isinstance(response, messages.Response) and response.error_kind == "Internal"


@pytest.mark.parametrize(
    "payload",
    [
        b"[]",
        b"nope",
        b'{"id":0,"ok":true}',
        b'{"id":true,"ok":true}',
        b'{"id":1}',
        b'{"id":1,"ok":true,"result":[]}',
        b"\xff\xfe",
        b'{"event":5}',
    ],
)
def test_parse_rejects(payload):
    with pytest.raises(ProtocolError):
        messages.parse(payload)


def test_exit_and_stats_bounds():
    with pytest.raises(ProtocolError):
        messages.Exit.from_wire({"process": "p", "status": 300})
    with pytest.raises(ProtocolError):
        messages.Stats.from_wire(
            {
                "memory_total": -1,
                "memory_available": 0,
                "cpu_user_us": 0,
                "cpu_system_us": 0,
                "processes": 0,
            }
        )


def test_setup_pod_validates_hostname_and_entropy():
    good = messages.SetupPod("web-1", 1, "00ff").to_wire()
    assert messages.SetupPod.from_wire(good).hostname == "web-1"
    for bad in ({"hostname": "a b"}, {"entropy": "xyz"}, {"sysctls": {"../x": "1"}}):
        with pytest.raises(ProtocolError):
            messages.SetupPod.from_wire({**good, **bad})


@given(
    st.recursive(
        st.none() | st.booleans() | st.integers() | st.text(max_size=20),
        lambda children: (
            st.lists(children, max_size=4)
            | st.dictionaries(
                st.sampled_from(
                    [
                        "id",
                        "op",
                        "ok",
                        "args",
                        "result",
                        "error",
                        "event",
                        "process",
                        "status",
                        "argv",
                        "kind",
                    ]
                ),
                children,
                max_size=6,
            )
        ),
        max_leaves=20,
    )
)
def test_parse_and_from_wire_never_crash(value):
    import json

    try:
        message = messages.parse(json.dumps(value).encode())
    except ProtocolError:
        return
    fields = (
        message.fields
        if isinstance(message, messages.Event)
        else (message.args if isinstance(message, messages.Request) else message.result)
    )
    for schema in (
        messages.Exec,
        messages.Exit,
        messages.Stats,
        messages.Ready,
        messages.HelloResult,
        messages.SetupPod,
        messages.AddContainer,
    ):
        with contextlib.suppress(ProtocolError):
            schema.from_wire(fields)
