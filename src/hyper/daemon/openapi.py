"""The API's OpenAPI document, as checked in at ``docs/api/openapi.json`` (``make openapi``).

Built from the same app hyperd serves, with no state behind it, so the document and the server
cannot drift apart: a unit test compares the two.
"""

from __future__ import annotations

import json
from typing import Any


def document() -> dict[str, Any]:
    from types import SimpleNamespace

    from hyper.daemon.app import create_app

    no_services = SimpleNamespace(pods=None, events=None)  # routes only: never called
    return create_app(no_services).openapi()  # type: ignore[arg-type]


if __name__ == "__main__":
    print(json.dumps(document(), indent=2, sort_keys=True))
