"""JSON on the hot paths (the live stream, rows MariaDB builds as JSON) through orjson, where the text
need not be byte-for-byte what a user sent.

Not for job definitions: orjson refuses integers beyond 64 bits when writing and reads them back as
floats, and a job's body is sent exactly as it was given — those go through the standard library.
"""

from __future__ import annotations

import json
from typing import Any

import orjson


def dumps(obj: Any) -> str:
    """Compact JSON text; falls back to the standard library for what orjson refuses (huge integers)."""
    try:
        return orjson.dumps(obj).decode()
    except TypeError:
        return json.dumps(obj, separators=(",", ":"))


def loads(doc: str | bytes) -> Any:
    """Parse a document cronring built itself (no user-given numbers: big integers would become floats)."""
    return orjson.loads(doc)
