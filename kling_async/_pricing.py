"""Published per-second prices of the Kling models on EvoLink, in credits.

Source: the model pages on evolink.ai (read 2026-11; see ``evolink-api.md`` section 6 in
the project's reference notes). A price that is not published (4k, for instance) is
absent, and an estimate that needs it is ``None``: never a guess. The server's own
``usage.credits_reserved`` is the authority once a task is submitted.
"""

from __future__ import annotations

import math

PRICES_SOURCE = "evolink.ai model pages, read 2026-11"

_V3 = {("720p", False): 5.4, ("720p", True): 8.1, ("1080p", False): 7.1982,
       ("1080p", True): 10.8}
_TURBO = {("720p", False): 7.2, ("1080p", False): 9.0}
_O3 = {("720p", False): 5.4, ("720p", True): 7.2036, ("1080p", False): 7.2036,
       ("1080p", True): 9.0018}
_MOTION = {("720p", False): 8.1648, ("1080p", False): 10.88368}

# model -> (quality, sound) -> credits per second of video
PER_SECOND: dict[str, dict[tuple[str, bool], float]] = {
    "kling-v3-text-to-video": _V3,
    "kling-v3-image-to-video": _V3,
    "kling-v3-turbo-text-to-video": _TURBO,
    "kling-v3-turbo-image-to-video": _TURBO,
    "kling-o3-text-to-video": _O3,
    "kling-o3-image-to-video": _O3,
    "kling-v3-motion-control": _MOTION,
}


def estimate(model: str, quality: str, sound: bool, seconds: float | None) -> float | None:
    """Credits for ``seconds`` of ``model`` video, or None if a price is not published."""
    price = PER_SECOND.get(model, {}).get((quality, sound))
    if price is None or seconds is None:
        return None
    return round(price * math.ceil(seconds), 4)
