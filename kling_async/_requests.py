"""Every request class, as one type: what ``submit``, ``generate_many``, the journal and
the command accept."""

from __future__ import annotations

from ._image_request import ImageToVideo, MotionControl
from ._request import TextToVideo

VideoRequest = TextToVideo | ImageToVideo | MotionControl
REQUEST_TYPES = (TextToVideo, ImageToVideo, MotionControl)


def check_request(request: object, where: str) -> None:
    """TypeError unless ``request`` is one of the request classes."""
    if not isinstance(request, REQUEST_TYPES):
        raise TypeError(f"{where} takes a TextToVideo, ImageToVideo or MotionControl, got "
                        f"{type(request).__name__}")
