"""``python -m dicomnode.web.openapi [--check]``: write (or check) ``dicomnode/web/openapi.json``, the shipped copy
of the document the console serves at ``/api/v1/openapi.json`` (``tests/web`` checks that the two are equal)."""

from __future__ import annotations

import sys
import tempfile
from typing import Any


def current_document() -> dict[str, Any]:
    """The API's OpenAPI document, from an app built over a node that is not started (in a temporary folder)."""
    from dicomnode.config import parse_config
    from dicomnode.node import Node
    from dicomnode.web.app import create_app, openapi_document

    with tempfile.TemporaryDirectory(prefix="dicomnode-openapi-") as tmp:
        node = Node(parse_config({"node": {"data_dir": tmp}}))
        try:
            return openapi_document(create_app(node))
        finally:
            node.db.close()


def main(argv: list[str] | None = None) -> int:
    from dicomnode.web.app import SHIPPED_OPENAPI, openapi_text

    argv = sys.argv[1:] if argv is None else argv
    text = openapi_text(current_document())
    if "--check" in argv:
        same = SHIPPED_OPENAPI.exists() and SHIPPED_OPENAPI.read_text() == text
        print(f"{SHIPPED_OPENAPI}: {'up to date' if same else 'differs; run python -m dicomnode.web.openapi'}")
        return 0 if same else 1
    SHIPPED_OPENAPI.write_text(text)
    print(f"wrote {SHIPPED_OPENAPI}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
