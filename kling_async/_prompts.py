"""Reading a batch from a file: plain prompts (one per line) or JSONL requests."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ._request import Shot, TextToVideo


class PromptFileError(ValueError):
    """A line of a prompts file is not a valid request (the message names the line)."""


def load_requests(path: Path, defaults: dict[str, Any]) -> list[TextToVideo]:
    """Read ``path`` into requests, checking every line before anything is sent.

    A ``.jsonl`` file (or one whose first entry starts with ``{``) holds one request
    object per line, e.g. ``{"prompt": "...", "duration": 8, "shots": [...]}``; any other
    file holds one prompt per line. Blank lines and lines starting with ``#`` are skipped.
    ``defaults`` fill fields a line does not set.
    """
    lines = [(number, line.strip()) for number, line in
             enumerate(path.read_text(encoding="utf-8").splitlines(), start=1)]
    lines = [(n, text) for n, text in lines if text and not text.startswith("#")]
    if not lines:
        raise PromptFileError(f"{path}: no prompts found")
    as_json = path.suffix == ".jsonl" or lines[0][1].startswith("{")
    requests = []
    for number, text in lines:
        try:
            fields: dict[str, Any] = dict(defaults)
            if as_json:
                data = json.loads(text)
                if not isinstance(data, dict):
                    raise ValueError("each JSONL line must be an object")
                if "shots" in data:
                    data["shots"] = [Shot(s["prompt"], s["duration"]) for s in data["shots"]]
                fields.update(data)
            else:
                fields["prompt"] = text
            requests.append(TextToVideo(**fields))
        except (ValueError, TypeError, KeyError) as exc:
            raise PromptFileError(f"{path}:{number}: {exc}") from exc
    return requests
