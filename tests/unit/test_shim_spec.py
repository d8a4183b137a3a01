"""spec.json (hyperd to shim) and the control socket's own operations."""

import pytest

from hyper.errors import InvalidArgument, ProtocolError
from hyper.images.digest import Digest
from hyper.model.pod import pod_from_dict
from hyper.model.restart import RestartPolicy
from hyper.shim import ops
from hyper.shim.spec import LogOptions, ShimSpec, read_spec, write_spec

POD = {"name": "web", "containers": [{"name": "a", "image": "busybox", "command": ["true"]}]}
ID = "ab" * 32


def test_spec_round_trip(tmp_path):
    spec = ShimSpec(
        id=ID,
        pod=pod_from_dict(POD, default_name="x"),
        restart=RestartPolicy.parse("on-failure:2"),
        rows=50,
        cols=132,
        log=LogOptions(max_bytes=4096, max_files=1),
        images={"a": Digest.parse("sha256:" + "c" * 64)},
        tenant="acme",
    )
    write_spec(tmp_path, spec)
    assert read_spec(tmp_path) == spec
    assert (tmp_path / "spec.json").stat().st_mode & 0o777 == 0o600


def test_spec_defaults():
    spec = ShimSpec.from_dict({"id": ID, "pod": POD})
    assert (spec.restart, spec.rows, spec.cols, spec.log) == (RestartPolicy(), 24, 80, LogOptions())


@pytest.mark.parametrize(
    "data",
    [
        [],
        {"pod": POD},
        {"id": "AB" * 32, "pod": POD},
        {"id": ID},
        {"id": ID, "pod": POD, "restart": {"policy": "sometimes"}},
        {"id": ID, "pod": POD, "console": {"rows": 0}},
        {"id": ID, "pod": POD, "log": {"max_files": 0}},
        {"id": ID, "pod": POD, "log": {"max_bytes": "10M"}},
        {"id": ID, "pod": POD, "images": ["sha256:" + "c" * 64]},
        {"id": ID, "pod": POD, "images": {"b": "sha256:" + "c" * 64}},  # no container b
        {"id": ID, "pod": POD, "images": {"a": "sha256:../../etc"}},
        {"id": ID, "pod": POD, "tenant": "../acme"},
        {"id": ID, "pod": POD, "tenant": ["acme"]},
    ],
)
def test_bad_specs(data):
    with pytest.raises(InvalidArgument):
        ShimSpec.from_dict(data)


def test_missing_spec(tmp_path):
    with pytest.raises(InvalidArgument, match="does not exist"):
        read_spec(tmp_path)


def test_ops_round_trip():
    for value in (
        ops.StatusQuery(5),
        ops.Attach("web", 1, 3, 5, True, "attach-1"),
        ops.Stop(2.5),
        ops.Stop(None),
        ops.Kill(9),
        ops.ContainerQuery("web"),
        ops.Export("web", 3, "export-1"),
    ):
        assert type(value).from_wire(value.to_wire()) == value
    assert ops.Attach.from_wire({"container": "web"}) == ops.Attach("web", 0, 0, 0, False, "web")


@pytest.mark.parametrize(
    ("op", "args"),
    [
        (ops.StatusQuery, {"after": "1"}),
        (ops.StatusQuery, {"after": -2}),
        (ops.Attach, {}),
        (ops.Attach, {"container": "../x"}),
        (ops.Attach, {"container": "a", "stdout": 1, "stderr": 1}),
        (ops.Attach, {"container": "a", "replay": 1}),
        (ops.Attach, {"container": "a", "stdin": -1}),
        (ops.Stop, {"timeout": -1}),
        (ops.Stop, {"timeout": float("nan")}),
        (ops.Stop, {"timeout": True}),
        (ops.Kill, {"signal": 0}),
        (ops.Kill, {}),
        (ops.Export, {"container": "a"}),
    ],
)
def test_ops_reject(op, args):
    with pytest.raises(ProtocolError):
        op.from_wire(args)
