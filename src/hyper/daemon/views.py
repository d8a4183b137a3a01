"""How pods and containers look in the API's answers (JSON, snake_case), and list filters."""

from __future__ import annotations

from typing import Any

from hyper import errors
from hyper.state.db import ContainerRecord, PodRecord


def container(pod: PodRecord, record: ContainerRecord) -> dict[str, Any]:
    spec: dict[str, Any] = next(
        (c for c in pod.spec.get("containers", []) if c.get("name") == record.local_name), {}
    )
    return {
        "id": record.id,
        "name": record.name,
        "pod": {"id": pod.id, "name": pod.name},
        "tenant": pod.tenant,
        "image": record.image,
        "image_id": record.image_id,
        "command": spec.get("command"),
        "entrypoint": spec.get("entrypoint"),
        "tty": bool(spec.get("tty")),
        "stdin": bool(spec.get("stdin")),
        "state": record.state if pod.state != "starting" else "starting",
        "running": record.state in ("running", "restarting"),
        "pid": record.pid,
        "exit_code": record.exit_code,
        "signal": record.signal,
        "error": record.error,
        "restart_count": record.restart_count,
        "created_at": record.created_at,
        "started_at": record.started_at,
        "finished_at": record.finished_at,
        "labels": pod.labels,
        "restart_policy": pod.restart,
        "auto_remove": pod.auto_remove,
        "ports": list(pod.spec.get("ports", [])),
        "network": pod.spec.get("network", ""),
    }


def pod(record: PodRecord) -> dict[str, Any]:
    return {
        "id": record.id,
        "name": record.name,
        "tenant": record.tenant,
        "state": record.state,
        "error": record.error,
        "labels": record.labels,
        "restart_policy": record.restart,
        "auto_remove": record.auto_remove,
        "created_at": record.created_at,
        "started_at": record.started_at,
        "finished_at": record.finished_at,
        "vm_pid": record.vm_pid,
        "supervisor_pid": record.shim_pid,
        "spec": record.spec,
        "containers": [container(record, c) for c in record.containers],
    }


def check_filters(filters: list[str]) -> None:
    matches({"state": "", "name": "", "id": ""}, filters)


def matches(view: dict[str, Any], filters: list[str]) -> bool:
    """docker's ``--filter``: ``status=``, ``name=``, ``id=``, ``label=KEY[=VALUE]``, ``pod=``;
    different keys must all match, repeated keys match any."""
    wanted: dict[str, list[str]] = {}
    for item in filters:
        key, sep, value = item.partition("=")
        if not sep or key not in ("status", "name", "id", "label", "pod"):
            raise errors.InvalidArgument(
                f"bad filter {item!r}: use status=, name=, id=, label=KEY[=VALUE] or pod="
            )
        wanted.setdefault(key, []).append(value)
    return all(any(_match(view, key, value) for value in values) for key, values in wanted.items())


def _match(view: dict[str, Any], key: str, value: str) -> bool:
    if key == "status":
        return bool(view["state"] == value)
    if key == "name":
        return value in view["name"]
    if key == "id":
        return bool(view["id"].startswith(value))
    if key == "pod":
        pod_ = view.get("pod")
        return isinstance(pod_, dict) and value in (pod_.get("name"), pod_.get("id"))
    label, sep, expected = value.partition("=")
    labels = view.get("labels") or {}
    return label in labels and (not sep or labels[label] == expected)
