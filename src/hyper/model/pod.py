"""Pod and container specs: what a user asks for, as pure values.

A pod is one VM with one or more containers sharing its network and lifetime. The same spec comes
from ``hyper run`` flags or from a pod file (YAML or JSON)::

    name: web                  # optional; generated when absent
    hostname: web              # optional; defaults to the name
    cpus: 1                    # vCPUs of the VM
    memory: 256M               # RAM of the VM (K, M, G suffixes; a bare number is MiB)
    labels: {team: web}        # optional; free-form strings
    network: default           # the tenant's network to join; "none": no NIC
    ports: ["8080:80", "127.0.0.1:5353:53/udp"]   # published: [HOST_IP:]HOST:CONTAINER[/proto]
    links: ["db:database"]     # CONTAINER[:ALIAS]: the alias resolves to that container here
    containers:
      - name: server           # unique within the pod
        image: busybox
        command: [httpd, -f, -p, "8080"]   # replaces the image's Cmd
        entrypoint: []         # replaces the image's Entrypoint when given
        env: {GREETING: hi}    # or a list of "K=V"
        workdir: /
        user: ""               # name, uid, uid:gid or name:group
        tty: false
        stdin: false
        volumes: [data:/data, /cache, "logs:/var/log:ro"]   # see hyper.model.mount

Everything is validated here, with an error that names the field, before any VM starts.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from hyper.errors import InvalidArgument
from hyper.model.mount import Mount, parse_mounts
from hyper.model.ports import PortMap

NAME = re.compile(r"[a-zA-Z0-9][a-zA-Z0-9_.-]{0,62}")
_SIZE = re.compile(r"(\d+)\s*([kmgt]?)(i?b)?", re.IGNORECASE)
_POD_KEYS = {
    "name", "hostname", "cpus", "memory", "containers", "labels", "network", "ports", "links",
}  # fmt: skip
_CONTAINER_KEYS = {
    "name",
    "image",
    "command",
    "entrypoint",
    "env",
    "workdir",
    "user",
    "tty",
    "stdin",
    "volumes",
}


@dataclass(frozen=True)
class ContainerSpec:
    name: str
    image: str
    command: tuple[str, ...] | None = None
    entrypoint: tuple[str, ...] | None = None
    env: tuple[str, ...] = ()
    workdir: str = ""
    user: str = ""
    tty: bool = False
    stdin: bool = False
    volumes: tuple[Mount, ...] = ()

    def __post_init__(self) -> None:
        check_name(self.name, "container name")
        if not self.image:
            raise InvalidArgument(f"container {self.name}: an image is required")
        for entry in self.env:
            if "=" not in entry or entry.startswith("="):
                raise InvalidArgument(f"container {self.name}: env {entry!r} is not KEY=VALUE")
        if self.workdir and not self.workdir.startswith("/"):
            raise InvalidArgument(f"container {self.name}: workdir must be an absolute path")

    def to_dict(self) -> dict[str, Any]:
        """This container as an entry of a pod file's ``containers`` (argv always as lists)."""
        data: dict[str, Any] = {"name": self.name, "image": self.image}
        if self.command is not None:
            data["command"] = list(self.command)
        if self.entrypoint is not None:
            data["entrypoint"] = list(self.entrypoint)
        if self.env:
            data["env"] = list(self.env)
        if self.workdir:
            data["workdir"] = self.workdir
        if self.user:
            data["user"] = self.user
        if self.tty:
            data["tty"] = True
        if self.stdin:
            data["stdin"] = True
        if self.volumes:
            data["volumes"] = [str(m) for m in self.volumes]
        return data


@dataclass(frozen=True)
class PodSpec:
    name: str
    containers: tuple[ContainerSpec, ...]
    hostname: str = ""
    cpus: int = 0  # 0: the configured default
    memory_mb: int = 0  # 0: the configured default
    labels: dict[str, str] = field(default_factory=dict)
    network: str = ""  # "": the tenant's default network (when networking is on); "none"
    ports: tuple[PortMap, ...] = ()
    links: tuple[tuple[str, str], ...] = ()  # (container, alias)

    def __post_init__(self) -> None:
        check_name(self.name, "pod name")
        if self.network:
            check_name(self.network, "network")
        for target, alias in self.links:
            check_name(target, "linked container")
            check_name(alias, "link alias")
        bound = [(p.host_ip, p.host_port, p.protocol) for p in self.ports]
        if len(set(bound)) != len(bound):
            raise InvalidArgument(f"pod {self.name}: a host port is published twice")
        if not self.containers:
            raise InvalidArgument(f"pod {self.name}: at least one container is required")
        names = [c.name for c in self.containers]
        if len(set(names)) != len(names):
            raise InvalidArgument(f"pod {self.name}: container names must be unique")
        if self.hostname and not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9-]{0,62}", self.hostname):
            raise InvalidArgument(f"hostname {self.hostname!r} is not a valid host name")
        if not 0 <= self.cpus <= 255:
            raise InvalidArgument("cpus must be between 1 and 255")
        if self.memory_mb and not 64 <= self.memory_mb <= 1 << 20:
            raise InvalidArgument("memory must be between 64 MiB and 1 TiB")

    def to_dict(self) -> dict[str, Any]:
        """The spec in the pod file's format: ``pod_from_dict(spec.to_dict(), ...) == spec``."""
        data: dict[str, Any] = {
            "name": self.name,
            "containers": [c.to_dict() for c in self.containers],
        }
        if self.hostname:
            data["hostname"] = self.hostname
        if self.cpus:
            data["cpus"] = self.cpus
        if self.memory_mb:
            data["memory"] = self.memory_mb  # a bare number is MiB
        if self.labels:
            data["labels"] = dict(self.labels)
        if self.network:
            data["network"] = self.network
        if self.ports:
            data["ports"] = [str(p) for p in self.ports]
        if self.links:
            data["links"] = [f"{target}:{alias}" for target, alias in self.links]
        return data

    def container(self, name: str) -> ContainerSpec:
        for spec in self.containers:
            if spec.name == name:
                return spec
        raise InvalidArgument(f"pod {self.name} has no container {name!r}")


def check_name(value: str, what: str) -> str:
    if not isinstance(value, str) or not NAME.fullmatch(value):
        raise InvalidArgument(
            f"{what} {value!r} is invalid: use letters, digits, '_', '.', '-' (at most 63)"
        )
    return value


def parse_memory(value: str | int) -> int:
    """A memory size in MiB from ``512``, ``512M``, ``1g``, ``1GiB``, ``2048k``."""
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    match = _SIZE.fullmatch(str(value).strip())
    if not match:
        raise InvalidArgument(f"memory size {value!r} is not understood (try 512M or 1G)")
    number, unit = int(match.group(1)), match.group(2).lower()
    factor = {"": 1 << 20, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}[unit]
    mib = number * factor // (1 << 20)
    if mib * (1 << 20) != number * factor:
        raise InvalidArgument(f"memory size {value!r} is not a whole number of MiB")
    return mib


def parse_env(value: Any, where: str) -> tuple[str, ...]:
    if isinstance(value, dict):
        return tuple(f"{k}={v}" for k, v in value.items())
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return tuple(value)
    raise InvalidArgument(f"{where}: env must be a mapping or a list of KEY=VALUE")


def _argv(value: Any, where: str) -> tuple[str, ...] | None:
    if value is None:
        return None
    if isinstance(value, str):
        return ("/bin/sh", "-c", value)
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return tuple(value)
    raise InvalidArgument(f"{where} must be a list of strings or a shell string")


def pod_from_dict(data: Any, default_name: str) -> PodSpec:
    """Build a pod spec from a parsed pod file, rejecting unknown keys."""
    if not isinstance(data, dict):
        raise InvalidArgument("a pod file holds a mapping at the top level")
    unknown = set(data) - _POD_KEYS
    if unknown:
        raise InvalidArgument(f"unknown pod field(s): {', '.join(sorted(unknown))}")
    raw_containers = data.get("containers")
    if not isinstance(raw_containers, list) or not raw_containers:
        raise InvalidArgument("a pod file needs a non-empty list of containers")
    containers = []
    for index, raw in enumerate(raw_containers):
        where = f"containers[{index}]"
        if not isinstance(raw, dict):
            raise InvalidArgument(f"{where} must be a mapping")
        unknown = set(raw) - _CONTAINER_KEYS
        if unknown:
            raise InvalidArgument(f"{where}: unknown field(s): {', '.join(sorted(unknown))}")
        for key in ("tty", "stdin"):
            if not isinstance(raw.get(key, False), bool):
                raise InvalidArgument(f"{where}.{key} must be true or false")
        for key in ("name", "image", "workdir", "user"):
            if not isinstance(raw.get(key, ""), str):
                raise InvalidArgument(f"{where}.{key} must be a string")
        containers.append(
            ContainerSpec(
                name=raw.get("name", f"c{index}"),
                image=raw.get("image", ""),
                command=_argv(raw.get("command"), f"{where}.command"),
                entrypoint=_argv(raw.get("entrypoint"), f"{where}.entrypoint"),
                env=parse_env(raw.get("env", []), where),
                workdir=raw.get("workdir", ""),
                user=raw.get("user", ""),
                tty=raw.get("tty", False),
                stdin=raw.get("stdin", False),
                volumes=parse_mounts(raw.get("volumes", []), f"{where}.volumes"),
            )
        )
    cpus = data.get("cpus", 0)
    if not isinstance(cpus, int) or isinstance(cpus, bool):
        raise InvalidArgument("cpus must be a whole number")
    name = data.get("name", default_name)
    hostname = data.get("hostname", "")
    if not isinstance(name, str) or not isinstance(hostname, str):
        raise InvalidArgument("name and hostname must be strings")
    labels = data.get("labels", {})
    if not isinstance(labels, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in labels.items()
    ):
        raise InvalidArgument("labels must be a mapping of strings to strings")
    return PodSpec(
        name=name,
        containers=tuple(containers),
        hostname=hostname,
        cpus=cpus,
        memory_mb=parse_memory(data["memory"]) if "memory" in data else 0,
        labels=dict(labels),
        network=_string(data.get("network", ""), "network"),
        ports=tuple(PortMap.parse(p) for p in _strings(data.get("ports", []), "ports")),
        links=tuple(parse_link(link) for link in _strings(data.get("links", []), "links")),
    )


def parse_link(text: str) -> tuple[str, str]:
    """``CONTAINER[:ALIAS]`` (docker's --link): the alias defaults to the container's name."""
    target, _, alias = text.partition(":")
    return check_name(target, "linked container"), check_name(alias or target, "link alias")


def _string(value: Any, where: str) -> str:
    if not isinstance(value, str):
        raise InvalidArgument(f"{where} must be a string")
    return value


def _strings(value: Any, where: str) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise InvalidArgument(f"{where} must be a list of strings")
    return value
