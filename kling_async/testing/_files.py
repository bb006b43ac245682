"""Result files: a real, playable MP4, optionally padded, served with ETag and Range."""

from __future__ import annotations

import functools
import re
import struct
from importlib import resources

from aiohttp import web

_RANGE = re.compile(r"^bytes=(\d*)-(\d*)$")


@functools.cache
def sample_mp4() -> bytes:
    """The bundled one-second 64x36 H.264 clip (about 2 KB)."""
    return resources.files(__package__).joinpath("sample.mp4").read_bytes()


@functools.lru_cache(maxsize=64)
def result_bytes(size: int | None, tag: bytes = b"") -> bytes:
    """The sample clip plus an MP4 ``free`` box holding ``tag`` (so every task's file
    differs), padded to ``size`` bytes when asked.

    A ``free`` box is skipped by every player, so the file stays playable.
    """
    clip = sample_mp4()
    box = max(8 + len(tag), (size or 0) - len(clip))
    if box == 8:
        return clip
    return clip + struct.pack(">I", box) + b"free" + tag + bytes(box - 8 - len(tag))


def parse_range(header: str, length: int) -> tuple[int, int] | None:
    """Return the inclusive ``(start, end)`` of a single-range header, or None if unusable."""
    match = _RANGE.match(header.strip())
    if match is None:
        return None
    first, last = match.groups()
    if not first and not last:
        return None
    if not first:
        start, end = max(length - int(last), 0), length - 1
    else:
        start = int(first)
        end = min(int(last), length - 1) if last else length - 1
    if start > end or start >= length:
        return None
    return start, end


async def send_file(request: web.Request, data: bytes, etag: str,
                    reset_after: int | None = None) -> web.StreamResponse:
    """Stream ``data`` honouring ``Range``; drop the connection after ``reset_after`` bytes."""
    length = len(data)
    start, end, status = 0, length - 1, 200
    headers = {"Content-Type": "video/mp4", "ETag": etag, "Accept-Ranges": "bytes"}
    range_header = request.headers.get("Range")
    if range_header is not None and request.headers.get("If-Range", etag) == etag:
        parsed = parse_range(range_header, length)
        if parsed is None:
            return web.Response(status=416, headers={"Content-Range": f"bytes */{length}"})
        start, end = parsed
        status = 206
        headers["Content-Range"] = f"bytes {start}-{end}/{length}"
    headers["Content-Length"] = str(end - start + 1)
    response = web.StreamResponse(status=status, headers=headers)
    await response.prepare(request)
    chunk = 256 * 1024
    sent = 0
    for offset in range(start, end + 1, chunk):
        piece = data[offset:min(offset + chunk, end + 1)]
        if reset_after is not None and sent + len(piece) > reset_after:
            await response.write(piece[: max(reset_after - sent, 0)])
            _drop(request)
            return response
        await response.write(piece)
        sent += len(piece)
    await response.write_eof()
    return response


def _drop(request: web.Request) -> None:
    """Abort the TCP connection under ``request`` (a reset in the middle of a body)."""
    transport = request.transport
    if transport is not None:
        transport.abort()
