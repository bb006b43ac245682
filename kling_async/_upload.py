"""Local images to EvoLink's file hosting (``POST /api/v1/files/upload/base64``), once per
file per Client, checked before they are sent.

The upload host receives the file and the key, nothing else: no file name, no path, no
user agent. Files expire after 72 hours on the service.
"""

from __future__ import annotations

import base64
import hashlib
import random
import struct
from pathlib import Path
from typing import Any

import aiohttp
import anyio
import attrs

from ._config import RetryPolicy, Timeouts
from ._errors import (
    ImageFileError,
    ResponseDecodeError,
    error_from_response,
)
from ._http import Secret, network_errors, read_capped, transient
from ._jsonbody import parse_json
from ._request_rules import ANY_IMAGE, MAX_UPLOAD, MODELS, ImageLimits
from ._requests import VideoRequest
from ._retry import Retrying, parse_retry_after

UPLOAD_PATH = "/api/v1/files/upload/base64"
_TYPES = {b"\x89PNG\r\n\x1a\n": "image/png", b"\xff\xd8\xff": "image/jpeg",
          b"GIF87a": "image/gif", b"GIF89a": "image/gif"}


def image_type(data: bytes) -> str | None:
    """The MIME type from the file's first bytes, or None."""
    for magic, kind in _TYPES.items():
        if data.startswith(magic):
            return kind
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "image/webp"
    return None


def image_size(data: bytes, kind: str) -> tuple[int, int] | None:
    """(width, height) of a PNG or JPEG from its header, None if unreadable."""
    if kind == "image/png" and len(data) >= 24:
        width, height = struct.unpack(">II", data[16:24])
        return int(width), int(height)
    if kind != "image/jpeg":
        return None
    at = 2
    while at + 9 < len(data):
        if data[at] != 0xFF:
            return None
        marker = data[at + 1]
        length = int.from_bytes(data[at + 2:at + 4], "big")
        if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):
            height, width = struct.unpack(">HH", data[at + 5:at + 9])
            return int(width), int(height)
        at += 2 + length
    return None


def check_image_bytes(data: bytes, limits: ImageLimits, what: str) -> str:
    """The image's MIME type, or ImageFileError naming what is wrong with ``what``."""
    if len(data) > limits.max_bytes:
        raise ImageFileError(f"{what} is {len(data):,} bytes; at most "
                             f"{limits.max_bytes:,} are allowed")
    kind = image_type(data)
    if kind is None or kind not in limits.types:
        allowed = ", ".join(t.removeprefix("image/") for t in limits.types)
        raise ImageFileError(f"{what} is not a {allowed} image")
    if limits.min_side or limits.max_ratio:
        size = image_size(data, kind)
        if size is None:
            raise ImageFileError(f"{what}: its dimensions cannot be read")
        width, height = size
        if min(width, height) < limits.min_side:
            raise ImageFileError(f"{what} is {width}x{height} px; each side must be at least "
                                 f"{limits.min_side} px")
        ratio = max(width, height) / max(1, min(width, height))
        if limits.max_ratio is not None and ratio > limits.max_ratio:
            raise ImageFileError(f"{what} is {width}x{height} px; its sides must be within "
                                 f"1:{limits.max_ratio:g} of each other")
    return kind


class Uploader:
    """One Client's uploads: checked, retried like reads, and cached by content."""

    def __init__(self, *, files_url: str, api_key: Secret, timeouts: Timeouts,
                 retry: RetryPolicy, rng: random.Random) -> None:
        self._url = files_url.rstrip("/") + UPLOAD_PATH
        self._host = files_url.rstrip("/")
        self._key = api_key
        self._timeout = aiohttp.ClientTimeout(total=None, sock_connect=timeouts.connect,
                                              sock_read=timeouts.submit)
        self._retry = retry
        self._rng = rng
        self._session: aiohttp.ClientSession | None = None
        self._done: dict[str, str] = {}  # sha256 of the bytes -> URL
        self._locks: dict[str, anyio.Lock] = {}
        self.uploads = 0

    async def close(self) -> None:
        """Close the upload pool (shielded, a few seconds at most)."""
        session, self._session = self._session, None
        if session is not None:
            with anyio.CancelScope(shield=True), anyio.move_on_after(5):
                await session.close()

    async def upload(self, source: str | Path | bytes, limits: ImageLimits = ANY_IMAGE,
                     what: str | None = None) -> str:
        """The hosted URL of ``source`` (a path or the bytes of an image)."""
        label = what or (f"image {str(source)!r}" if not isinstance(source, bytes)
                         else "image bytes")
        data = source if isinstance(source, bytes) else await _read(Path(source), label)
        kind = check_image_bytes(data, limits, label)
        digest = hashlib.sha256(data).hexdigest()
        async with self._locks.setdefault(digest, anyio.Lock()):
            if digest not in self._done:
                self._done[digest] = await self._send(data, kind)
                self.uploads += 1
        return self._done[digest]

    async def resolve(self, request: VideoRequest) -> VideoRequest:
        """``request`` with every local ``Path`` in its upload fields replaced by a URL."""
        limits = MODELS[request.model].images
        changes: dict[str, Any] = {}
        for field in attrs.fields(type(request)):
            if not field.metadata.get("upload"):
                continue
            value = getattr(request, field.name)
            what = f"{type(request).__name__}.{field.name}"
            if isinstance(value, Path):
                changes[field.name] = await self.upload(value, limits, f"{what} {str(value)!r}")
            elif isinstance(value, tuple) and any(isinstance(v, Path) for v in value):
                changes[field.name] = tuple([
                    await self.upload(v, limits, f"{what}[{n}] {str(v)!r}")
                    if isinstance(v, Path) else v for n, v in enumerate(value)])
        return attrs.evolve(request, **changes) if changes else request

    async def _send(self, data: bytes, kind: str) -> str:
        if self._session is None:
            self._session = aiohttp.ClientSession(
                headers={"Authorization": f"Bearer {self._key.reveal()}"},
                skip_auto_headers=("User-Agent",), timeout=self._timeout)
        body = {"base64_data": f"data:{kind};base64,{base64.b64encode(data).decode()}"}
        async for attempt in Retrying(self._retry, self._rng, what="image upload",
                                      retry_on=transient):
            with attempt:
                return await self._attempt(self._session, body)
        raise AssertionError("unreachable: Retrying either returns or raises")

    async def _attempt(self, session: aiohttp.ClientSession, body: dict[str, str]) -> str:
        with network_errors("image upload", host=self._host, stalled="no answer in time",
                            closed=lambda: self._session is None):
            async with session.post(self._url, json=body) as response:
                raw = await read_capped(response)  # a hostile host's answer is bounded too
                status, headers = response.status, response.headers
        if status >= 400:
            raise error_from_response(status, raw, headers,
                                      parse_retry_after(headers.get("Retry-After")))
        try:
            answer = parse_json(raw)
            url = answer["data"]["file_url"]
        except (ValueError, KeyError, TypeError) as exc:
            raise ResponseDecodeError("the upload answer has no data.file_url",
                                      excerpt=raw[:200].decode("utf-8", "replace")) from exc
        if not isinstance(url, str) or not url.startswith(("https://", "http://")):
            raise ResponseDecodeError("the upload answer's file_url is not a URL",
                                      excerpt=repr(url)[:200])
        return url


async def _read(path: Path, what: str) -> bytes:
    try:
        size = (await anyio.Path(path).stat()).st_size
        if size > MAX_UPLOAD:
            raise ImageFileError(f"{what} is {size:,} bytes; uploads are at most "
                                 f"{MAX_UPLOAD:,}")
        return await anyio.Path(path).read_bytes()
    except OSError as exc:
        raise ImageFileError(f"{what} cannot be read: {exc.strerror or exc}") from exc
