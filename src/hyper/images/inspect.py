"""What ``hyper images``, ``hyper inspect`` and ``hyper history`` show, as docker shows it.

An image's id is its config digest (docker's); ``RepoTags`` are the tags of every reference in
the store whose image has that id, ``RepoDigests`` ``name@<digest>`` for each of those
references, where the digest is the one the reference points at (the index of a pulled
multi-platform image, as docker records it). ``Size`` is the bytes of the layers as stored
(compressed, as a registry serves them); docker shows the unpacked size.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from typing import Any

from hyper.errors import HyperError
from hyper.images import oci
from hyper.images.digest import Digest
from hyper.images.image import Image
from hyper.images.reference import Reference, parse
from hyper.images.store import TenantImages

log = logging.getLogger(__name__)

MISSING = "<missing>"


@dataclass(frozen=True)
class Entry:
    """One reference of the store, resolved."""

    reference: Reference
    target: Digest
    """What the reference points at: a manifest or an index."""
    image: Image


def entries(store: TenantImages) -> list[Entry]:
    found = []
    for key, target in sorted(store.refs.read().items()):
        try:
            ref = parse(key)
            found.append(Entry(ref, target, store.resolve(ref)))
        except HyperError as exc:
            log.warning("image %s is damaged: %s", key, exc)
    return found


def summaries(store: TenantImages) -> list[dict[str, Any]]:
    """One row per reference, as ``docker images`` lists them (most recent first)."""
    rows = []
    created: dict[Digest, str] = {}
    for entry in entries(store):
        image = entry.image
        if image.config_digest not in created:
            created[image.config_digest] = str(_config(store, image).get("created") or "")
        rows.append(
            {
                "Repository": entry.reference.familiar_name,
                "Tag": entry.reference.tag or "<none>",
                "Digest": str(entry.target),
                "Id": image.id,
                "Created": created[image.config_digest],
                "Size": image.size,
                "Reference": entry.reference.canonical,
            }
        )
    rows.sort(key=lambda r: (r["Created"], r["Reference"]), reverse=True)
    return rows


def inspect(store: TenantImages, image: Image) -> dict[str, Any]:
    """A ``docker image inspect``-like document."""
    config = _config(store, image)
    tags: list[str] = []
    digests: list[str] = []
    for entry in entries(store):
        if entry.image.config_digest != image.config_digest:
            continue
        if entry.reference.tag is not None:
            tags.append(f"{entry.reference.familiar_name}:{entry.reference.tag}")
        repo_digest = f"{entry.reference.familiar_name}@{entry.target}"
        if repo_digest not in digests:
            digests.append(repo_digest)
    return {
        "Id": image.id,
        "RepoTags": tags,
        "RepoDigests": digests,
        "Parent": "",
        "Comment": config.get("comment", ""),
        "Created": config.get("created", ""),
        "Author": config.get("author", ""),
        "Architecture": config.get("architecture", ""),
        "Variant": config.get("variant", ""),
        "Os": config.get("os", ""),
        "Config": config.get("config") or {},
        "RootFS": {"Type": "layers", "Layers": [str(d) for d in image.diff_ids]},
        "Size": image.size,
        "Descriptor": {
            "mediaType": image.media_type,
            "digest": str(image.digest),
            "size": store.content.size(image.digest),
        },
        "Layers": [layer.to_json() for layer in image.layers],
    }


def history(store: TenantImages, image: Image) -> list[dict[str, Any]]:
    """``docker history``: newest first; each step that made a layer gets that layer's id and
    size, the others (``empty_layer``) size 0; the top step carries the image id."""
    config = _config(store, image)
    steps = config.get("history")
    if not isinstance(steps, list) or not all(isinstance(s, dict) for s in steps):
        steps = [{} for _ in image.layers]
    rows = []
    layers = list(zip(image.layers, image.diff_ids, strict=True))
    for step in steps:
        empty = step.get("empty_layer") is True
        layer = None if empty or not layers else layers.pop(0)
        rows.append(
            {
                "Id": MISSING,
                "Created": str(step.get("created", "")),
                "CreatedBy": str(step.get("created_by", "")),
                "Comment": str(step.get("comment", "")),
                "Size": layer[0].size if layer else 0,
                "Layer": str(layer[1]) if layer else "",
                "Tags": [],
            }
        )
    for extra, diff_id in layers:  # more layers than steps: a config without full history
        rows.append(
            {
                "Id": MISSING,
                "Created": "",
                "CreatedBy": "",
                "Comment": "",
                "Size": extra.size,
                "Layer": str(diff_id),
                "Tags": [],
            }
        )
    rows.reverse()
    if rows:
        rows[0]["Id"] = image.id
        rows[0]["Tags"] = inspect(store, image)["RepoTags"]
    return rows


def _config(store: TenantImages, image: Image) -> dict[str, Any]:
    doc = json.loads(store.content.read(image.config_digest, oci.MAX_DOCUMENT_BYTES))
    assert isinstance(doc, dict)  # parsed and checked when the image was resolved
    return doc
