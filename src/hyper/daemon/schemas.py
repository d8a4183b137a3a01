"""The shapes of hyperd's API requests, as pydantic models.

pydantic because FastAPI builds both the validation and the OpenAPI document from them: a request
that does not fit is refused with a 422 naming the field before any handler runs, and the
document clients and fuzzers read is the same code. Every string and list is bounded; extra
fields are refused, so a misspelt option is an error rather than silently ignored.
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field

Text = Annotated[str, Field(max_length=4096)]
Arg = Annotated[str, Field(max_length=65536)]
Argv = Annotated[list[Arg], Field(max_length=4096)]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ContainerCreate(Strict):
    """A container in a pod of its own, like ``docker create``."""

    image: Annotated[str, Field(min_length=1, max_length=512)]
    name: Annotated[str, Field(max_length=63)] | None = None
    command: Argv | None = None
    entrypoint: Argv | None = None
    env: Annotated[list[Text], Field(max_length=4096)] = []
    workdir: Text = ""
    user: Annotated[str, Field(max_length=256)] = ""
    tty: bool = False
    stdin: bool = False
    hostname: Annotated[str, Field(max_length=63)] = ""
    memory: Annotated[str, Field(max_length=32)] | None = None
    cpus: Annotated[int, Field(ge=1, le=255)] | None = None
    restart: Annotated[str, Field(max_length=64)] = "no"
    labels: Annotated[dict[Annotated[str, Field(max_length=256)], Text], Field(max_length=256)] = {}
    auto_remove: bool = False
    volumes: Annotated[list[Annotated[str, Field(max_length=8200)]], Field(max_length=64)] = []
    network: Annotated[str, Field(max_length=63)] = ""
    """The tenant's network to join ("": its default network; "none": no NIC)."""
    ports: Annotated[list[Annotated[str, Field(max_length=64)]], Field(max_length=256)] = []
    """Published ports: ``[HOST_IP:]HOST_PORT:CONTAINER_PORT[/tcp|udp]``."""
    links: Annotated[list[Annotated[str, Field(max_length=128)]], Field(max_length=64)] = []
    """``CONTAINER[:ALIAS]``: the alias resolves to that container inside this one."""


class PodCreate(Strict):
    """A pod from a pod file's content (see ``hyper.model.pod``)."""

    spec: dict[str, Any]
    restart: Annotated[str, Field(max_length=64)] = "no"
    labels: Annotated[dict[Annotated[str, Field(max_length=256)], Text], Field(max_length=256)] = {}
    auto_remove: bool = False


class ExecConfig(Strict):
    """The first message on an exec websocket."""

    cmd: Annotated[list[Arg], Field(min_length=1, max_length=4096)]
    env: Annotated[list[Text], Field(max_length=4096)] = []
    workdir: Text = ""
    user: Annotated[str, Field(max_length=256)] = ""
    tty: bool = False
    stdin: bool = False
    rows: Annotated[int, Field(ge=1, le=65535)] = 24
    cols: Annotated[int, Field(ge=1, le=65535)] = 80


class Created(BaseModel):
    id: str
    name: str


class CommitRequest(Strict):
    """``docker commit``: a running container's changes as a new image."""

    container: Annotated[str, Field(min_length=1, max_length=256)]
    reference: Annotated[str, Field(max_length=512)] = ""
    comment: Text = ""
    author: Annotated[str, Field(max_length=1024)] = ""
    changes: Annotated[list[Text], Field(max_length=256)] = []


class LoginRequest(Strict):
    """Credentials hyperd checks against a registry, then keeps for its pulls and pushes."""

    registry: Annotated[str, Field(max_length=512)] = ""
    username: Annotated[str, Field(min_length=1, max_length=1024)]
    password: Annotated[str, Field(min_length=1, max_length=8192)]


class LogoutRequest(Strict):
    registry: Annotated[str, Field(max_length=512)] = ""
