"""The API's OpenAPI document, as checked in at ``docs/api/openapi.json`` (``make openapi``).

Built from the same app hyperd serves, with no state behind it, so the document and the server
cannot drift apart: a unit test compares the two.
"""

from __future__ import annotations

import json
from typing import Any


def document() -> dict[str, Any]:
    from hyper.daemon.app import create_app

    return create_app(_NoServices()).openapi()  # type: ignore[arg-type]


class _NoServices:
    """Stands in for every service: the routes are built, never called."""

    def __getattr__(self, name: str) -> None:
        return None


if __name__ == "__main__":
    print(json.dumps(document(), indent=2, sort_keys=True))
