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
