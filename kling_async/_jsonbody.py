"""Untrusted JSON bytes to Python values: one reader for every answer and callback body.

Anything that is not plain, finite, reasonably sized JSON is refused with one
``ValueError``: invalid UTF-8, syntax errors, ``NaN``/``Infinity``, bodies over the size
cap, and nesting deep enough to exhaust the decoder (``RecursionError``).
"""

from __future__ import annotations

import json
from typing import Any

MAX_BODY = 8 * 1024 * 1024  # larger JSON answers are refused, not buffered


def _no_constants(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


_DECODER = json.JSONDecoder(parse_constant=_no_constants)


def parse_json(data: bytes | str) -> Any:
    """Decode ``data``; raise ``ValueError`` naming the reason it cannot be read."""
    if len(data) > MAX_BODY:
        raise ValueError(f"body of {len(data)} bytes is over the {MAX_BODY}-byte limit")
    try:
        text = data.decode("utf-8") if isinstance(data, bytes) else data
        return _DECODER.decode(text)
    except RecursionError:
        raise ValueError("JSON nested too deeply") from None
    except UnicodeDecodeError as exc:
        raise ValueError(f"not UTF-8: {exc.reason}") from None
