"""PodSpec.to_dict is the exact inverse of pod_from_dict: what hyperd writes to spec.json."""

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from hyper.errors import InvalidArgument
from hyper.model.pod import ContainerSpec, PodSpec, pod_from_dict

names = st.from_regex(r"[a-z0-9][a-z0-9_.-]{0,20}", fullmatch=True)
words = st.text(st.characters(blacklist_categories=["Cs"], blacklist_characters="\0"), max_size=8)
argvs = st.none() | st.lists(words, max_size=3).map(tuple)
envs = st.lists(st.tuples(st.from_regex(r"[A-Z_]{1,6}", fullmatch=True), words), max_size=3).map(
    lambda pairs: tuple(f"{k}={v}" for k, v in pairs)
)


@st.composite
def pods(draw):
    container_names = draw(st.lists(names, min_size=1, max_size=3, unique=True))
    containers = tuple(
        ContainerSpec(
            name=name,
            image=draw(
                st.sampled_from(["busybox", "docker.io/library/alpine:3", "x@sha256:" + "a" * 64])
            ),
            command=draw(argvs),
            entrypoint=draw(argvs),
            env=draw(envs),
            workdir=draw(st.sampled_from(["", "/", "/tmp/x"])),
            user=draw(st.sampled_from(["", "nobody", "1000:1000"])),
            tty=draw(st.booleans()),
            stdin=draw(st.booleans()),
        )
        for name in container_names
    )
    return PodSpec(
        name=draw(names),
        containers=containers,
        hostname=draw(st.sampled_from(["", "web", "a-b-1"])),
        cpus=draw(st.integers(0, 8)),
        memory_mb=draw(st.sampled_from([0, 64, 256, 4096])),
        labels=draw(st.dictionaries(words, words, max_size=3)),
    )


@given(pods())
def test_round_trip(spec):
    data = spec.to_dict()
    assert pod_from_dict(json.loads(json.dumps(data)), default_name="other") == spec


def test_shape_is_the_pod_file_format():
    spec = pod_from_dict(
        {"name": "web", "memory": "1G", "containers": [{"name": "a", "image": "busybox",
                                                         "command": "echo hi", "env": {"K": "V"}}]},
        default_name="x",
    )  # fmt: skip
    assert spec.to_dict() == {
        "name": "web",
        "memory": 1024,
        "containers": [
            {
                "name": "a",
                "image": "busybox",
                "command": ["/bin/sh", "-c", "echo hi"],
                "env": ["K=V"],
            }
        ],
    }


def test_empty_entrypoint_survives():
    spec = PodSpec(name="p", containers=(ContainerSpec(name="a", image="i", entrypoint=()),))
    assert pod_from_dict(spec.to_dict(), default_name="p").containers[0].entrypoint == ()


@pytest.mark.parametrize("labels", [[], {"a": 1}, "x"])
def test_bad_labels(labels):
    with pytest.raises(InvalidArgument, match="labels"):
        pod_from_dict({"labels": labels, "containers": [{"image": "i"}]}, default_name="p")
