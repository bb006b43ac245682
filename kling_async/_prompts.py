"""Reading a batch from a file: plain prompts (one a line), JSONL requests or a CSV table."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import attrs

from ._events import Item
from ._image_request import ImageToVideo, MotionControl
from ._request import Shot, TextToVideo
from ._requests import VideoRequest


class PromptFileError(ValueError):
    """The prompts file cannot be used (the message names the file, and the line)."""


_CLASSES = (TextToVideo, ImageToVideo, MotionControl)
_FIELDS = frozenset(a.name for c in _CLASSES for a in attrs.fields(c)) - {
    "shots", "allow_local_callback", "images", "elements"}
_IMAGE_FIELDS = ("image", "image_start", "image_end")
_TRUE = frozenset({"true", "yes", "on", "1"})
_FALSE = frozenset({"false", "no", "off", "0"})


def read_text(path: Path) -> str:
    """The file's text, or a :class:`PromptFileError` that says what is wrong with it."""
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise PromptFileError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise PromptFileError(f"{path} is a folder; give a prompts file (.txt, .jsonl, "
                              ".csv)") from None
    except PermissionError:
        raise PromptFileError(f"{path}: permission denied") from None
    except UnicodeDecodeError:
        raise PromptFileError(f"{path} is not UTF-8 text") from None
    except OSError as exc:
        raise PromptFileError(f"{path}: {exc.strerror or exc}") from None


def build_request(fields: dict[str, Any], defaults: dict[str, Any],
                  folder: Path = Path()) -> VideoRequest:
    """The request class that ``fields`` (over ``defaults``) describe: a ``video`` or a
    motion-control model makes a :class:`MotionControl`, an image or an image-to-video
    model an :class:`ImageToVideo`, anything else a :class:`TextToVideo`. ``image`` is the
    first frame (or the motion-control character); a value that is not an http(s) URL is
    a local file, relative to ``folder``. Defaults a class does not take are left out."""
    merged = {**defaults, **fields}
    model = str(merged.get("model") or "")
    cls: type[VideoRequest]
    if "video" in merged or model.endswith("motion-control"):
        cls = MotionControl
    elif model.endswith("image-to-video") or any(merged.get(f) for f in _IMAGE_FIELDS):
        cls = ImageToVideo
    else:
        cls = TextToVideo
    names = {a.name for a in attrs.fields(cls)}
    if cls is ImageToVideo and "image" in merged:
        merged["image_start"] = merged.pop("image")
    for name in ("image", "image_start", "image_end"):
        value = merged.get(name)
        if isinstance(value, str) and not value.startswith(("https://", "http://")):
            merged[name] = folder / value
    unknown = [k for k in fields if k not in names and k not in ("image", "id")]
    if unknown:
        raise ValueError(f"{cls.__name__} has no field {unknown[0]!r}")
    return cls(**{k: v for k, v in merged.items() if k in names})


def load_requests(path: Path, defaults: dict[str, Any]) -> list[Item]:
    """Read ``path`` into requests, checking every line before anything is sent.

    A ``.csv`` file has a header row: a ``prompt`` column and any request field
    (``model``, ``image``, ``image_end``, ``duration``, ``aspect_ratio``, ``quality``,
    ``sound``, ``negative_prompt``, ``watermark``, ``multi_shot``, ``callback_url``, ...);
    empty cells are left unset (see :func:`build_request`; images are paths relative to
    the file, or URLs). A
    ``.jsonl`` file (or one whose first entry starts with ``{``) holds one request object
    a line, e.g. ``{"prompt": "...", "duration": 8, "shots": [...]}``; any other file
    holds one prompt a line. Blank lines and lines starting with ``#`` are skipped.
    ``defaults`` fill fields a line does not set. A JSONL ``"id"`` or a CSV ``id`` column
    becomes the item's key, carried by its events and its result line.
    """
    text = read_text(path)
    rows: list[tuple[int, Any]]
    parse: Callable[[Any], dict[str, Any]]
    if path.suffix.lower() == ".csv":
        rows, parse = _csv_rows(path, text), _csv_fields
    else:
        lines = [(n, line.strip()) for n, line in enumerate(text.splitlines(), start=1)]
        rows = [(n, line) for n, line in lines if line and not line.startswith("#")]
        as_json = path.suffix == ".jsonl" or (bool(rows) and rows[0][1].startswith("{"))
        parse = _json_fields if as_json else _prompt_fields
    if not rows:
        raise PromptFileError(f"{path}: no prompts found")
    items = []
    for number, raw in rows:
        try:
            fields = parse(raw)
            key = fields.pop("id", None)
            items.append(Item(build_request(fields, defaults, path.parent),
                              key=None if key is None else str(key)))
        except (ValueError, TypeError, KeyError) as exc:
            raise PromptFileError(f"{path}:{number}: {exc}") from exc
    return items


def _prompt_fields(line: str) -> dict[str, Any]:
    return {"prompt": line}


def _json_fields(line: str) -> dict[str, Any]:
    data = json.loads(line)
    if not isinstance(data, dict):
        raise ValueError("each JSONL line must be an object")
    if "shots" in data:
        data["shots"] = [Shot(s["prompt"], s["duration"]) for s in data["shots"]]
    return data


def _csv_rows(path: Path, text: str) -> list[tuple[int, Any]]:
    reader = csv.DictReader(io.StringIO(text))
    columns = [c.strip() for c in reader.fieldnames or []]
    unknown = [c for c in columns if c not in _FIELDS and c not in ("id", "image")]
    if "prompt" not in columns or unknown:
        raise PromptFileError(
            f"{path}: the header must name a 'prompt' column and request fields only"
            + (f"; unknown: {', '.join(map(repr, unknown))}" if unknown else "")
            + f" (fields: {', '.join(sorted(_FIELDS))})")
    rows = []
    for row in reader:
        cells = {k.strip(): (v or "").strip() for k, v in row.items() if k is not None}
        if any(cells.values()) and not cells.get("prompt", "").startswith("#"):
            rows.append((reader.line_num, cells))
    return rows


def _csv_fields(cells: dict[str, str]) -> dict[str, Any]:
    return {name: _cell(name, value) for name, value in cells.items() if value}


def _cell(name: str, value: str) -> Any:
    if name in ("duration", "video_seconds"):
        try:
            return int(value)
        except ValueError:
            raise ValueError(f"{name} must be an integer; got {value!r}") from None
    if name in ("sound", "watermark", "keep_sound"):
        if value.lower() in _TRUE:
            return True
        if value.lower() in _FALSE:
            return False
        raise ValueError(f"{name} must be true or false; got {value!r}")
    return value
