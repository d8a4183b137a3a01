"""`-v` values: the three kinds, and container paths that must never reach the guest."""

from __future__ import annotations

import pytest

from hyper.errors import InvalidArgument
from hyper.model.mount import Mount, MountKind, parse_mount, parse_mounts
from hyper.model.pod import pod_from_dict


@pytest.mark.parametrize(
    ("text", "expected", "kind"),
    [
        ("data:/data", Mount("data", "/data"), MountKind.VOLUME),
        ("data:/data:ro", Mount("data", "/data", True), MountKind.VOLUME),
        ("data:/data:rw", Mount("data", "/data"), MountKind.VOLUME),
        ("/cache", Mount("", "/cache"), MountKind.ANONYMOUS),
        ("/cache:ro", Mount("", "/cache", True), MountKind.ANONYMOUS),
        ("/srv/tools:/tools:ro", Mount("/srv/tools", "/tools", True), MountKind.BIND),
    ],
)
def test_the_three_kinds(text, expected, kind):
    mount = parse_mount(text)
    assert mount == expected and mount.kind is kind
    assert parse_mount(str(mount)) == mount


@pytest.mark.parametrize(
    "text",
    [
        "",
        "data:relative",
        "data:/",
        "data:/a/../../etc",
        "data:/a/./b",
        "data:/proc/x",
        "data:/sys",
        "data:/dev/sda",
        "bad name:/data",
        "../x:/data",
        "a:b:c:d",
        "data:/x\0y",
        "/a/../b:/data",
    ],
)
def test_hostile_or_malformed_values_are_refused(text):
    with pytest.raises(InvalidArgument):
        parse_mount(text)


def test_two_mounts_on_one_path_are_refused():
    with pytest.raises(InvalidArgument, match="same container path"):
        parse_mounts(["a:/data", "b:/data"])


def test_a_pod_file_carries_volumes_and_round_trips():
    spec = pod_from_dict(
        {"containers": [{"name": "c", "image": "busybox", "volumes": ["d:/data:ro", "/x"]}]},
        "p",
    )
    assert spec.containers[0].volumes == (Mount("d", "/data", True), Mount("", "/x"))
    assert pod_from_dict(spec.to_dict(), "p") == spec
