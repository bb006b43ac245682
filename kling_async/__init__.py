"""kling_async: an asyncio-native SDK for Kling text-to-video on EvoLink.

    import kling_async as kling

    async with kling.Client() as client:
        snap = await client.submit(kling.TextToVideo(prompt="A cat running on grass"))
        done = await client.wait_finished(snap.id)
        print(done.video_url)

See README.md for batches, progress events, callbacks and the Emulator
(``kling_async.testing``).
"""

from __future__ import annotations

from ._client import Client as Client
from ._config import AdaptiveLimit as AdaptiveLimit
from ._config import PollPolicy as PollPolicy
from ._config import RetryPolicy as RetryPolicy
from ._config import Timeouts as Timeouts
from ._download import DownloadError as DownloadError
from ._download import ResultExpiredError as ResultExpiredError
from ._errors import APIError as APIError
from ._errors import AuthenticationError as AuthenticationError
from ._errors import ClientClosedError as ClientClosedError
from ._errors import ConnectError as ConnectError
from ._errors import CreditLimitError as CreditLimitError
from ._errors import IdempotencyConflictError as IdempotencyConflictError
from ._errors import ImageFileError as ImageFileError
from ._errors import InsufficientCreditsError as InsufficientCreditsError
from ._errors import InvalidRequestError as InvalidRequestError
from ._errors import KlingError as KlingError
from ._errors import NotFoundError as NotFoundError
from ._errors import PermissionDeniedError as PermissionDeniedError
from ._errors import RateLimitError as RateLimitError
from ._errors import RequestTimeoutError as RequestTimeoutError
from ._errors import ResponseDecodeError as ResponseDecodeError
from ._errors import ServerError as ServerError
from ._errors import SubmissionUnknownError as SubmissionUnknownError
from ._errors import TaskFailedError as TaskFailedError
from ._errors import TransportError as TransportError
from ._events import BatchEvent as BatchEvent
from ._events import Failed as Failed
from ._events import Item as Item
from ._events import Progressed as Progressed
from ._events import Submitted as Submitted
from ._events import Succeeded as Succeeded
from ._ids import new_idempotency_key as new_idempotency_key
from ._image_request import ImageToVideo as ImageToVideo
from ._image_request import MotionControl as MotionControl
from ._journal import Journal as Journal
from ._journal import JournalEntry as JournalEntry
from ._models import Credits as Credits
from ._models import TaskError as TaskError
from ._models import TaskSnapshot as TaskSnapshot
from ._models import TaskStatus as TaskStatus
from ._models import Usage as Usage
from ._redis_budget import RedisBudget as RedisBudget
from ._request import Shot as Shot
from ._request import TextToVideo as TextToVideo
from ._statistics import ClientStatistics as ClientStatistics
from ._sync import SyncClient as SyncClient
from ._version import package_version
from ._watch import TaskUpdate as TaskUpdate
from ._watch import TaskUpdates as TaskUpdates

__version__ = package_version()

__all__ = [
    "APIError",
    "AdaptiveLimit",
    "AuthenticationError",
    "BatchEvent",
    "Client",
    "ClientClosedError",
    "ClientStatistics",
    "ConnectError",
    "CreditLimitError",
    "Credits",
    "DownloadError",
    "Failed",
    "IdempotencyConflictError",
    "ImageFileError",
    "ImageToVideo",
    "InsufficientCreditsError",
    "InvalidRequestError",
    "Item",
    "Journal",
    "JournalEntry",
    "KlingError",
    "MotionControl",
    "NotFoundError",
    "PermissionDeniedError",
    "PollPolicy",
    "Progressed",
    "RateLimitError",
    "RedisBudget",
    "RequestTimeoutError",
    "ResponseDecodeError",
    "ResultExpiredError",
    "RetryPolicy",
    "ServerError",
    "Shot",
    "SubmissionUnknownError",
    "Submitted",
    "Succeeded",
    "SyncClient",
    "TaskError",
    "TaskFailedError",
    "TaskSnapshot",
    "TaskStatus",
    "TaskUpdate",
    "TaskUpdates",
    "TextToVideo",
    "Timeouts",
    "TransportError",
    "Usage",
    "__version__",
    "new_idempotency_key",
]

for _name in __all__:
    _obj = globals()[_name]
    if isinstance(_obj, type) and _obj.__module__.startswith("kling_async."):
        _obj.__module__ = "kling_async"
del _name, _obj
