import pytest

from hyper.errors import InvalidArgument
from hyper.model.pod import parse_memory, pod_from_dict


def test_pod_file():
    spec = pod_from_dict(
        {
            "memory": "1G",
            "cpus": 2,
            "containers": [
                {"name": "a", "image": "busybox", "command": "echo hi", "env": {"K": "V"}},
                {"name": "b", "image": "busybox", "command": ["true"], "tty": True},
            ],
        },
        default_name="demo",
    )
    assert (spec.name, spec.memory_mb, spec.cpus) == ("demo", 1024, 2)
    assert spec.container("a").command == ("/bin/sh", "-c", "echo hi")
    assert spec.container("a").env == ("K=V",)
    assert spec.container("b").tty


@pytest.mark.parametrize(
    "data",
    [
        [],
        {"containers": []},
        {"containers": [{"image": "busybox", "bogus": 1}]},
        {"containers": [{"name": "a", "image": "x"}, {"name": "a", "image": "x"}]},
        {"containers": [{"name": "../a", "image": "x"}]},
        {"containers": [{"name": "a", "image": "x", "tty": "yes"}]},
        {"containers": [{"name": "a", "image": "x", "workdir": "rel"}]},
        {"memory": "lots", "containers": [{"name": "a", "image": "x"}]},
        {"cpus": 1000, "containers": [{"name": "a", "image": "x"}]},
    ],
)
def test_bad_pod_files(data):
    with pytest.raises(InvalidArgument):
        pod_from_dict(data, default_name="p")


def test_memory_sizes():
    assert [parse_memory(v) for v in ("512", "512M", "1g", "1GiB", "2048k")] == [
        512,
        512,
        1024,
        1024,
        2,
    ]
    with pytest.raises(InvalidArgument):
        parse_memory("1000k")
