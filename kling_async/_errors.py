"""Every error kling_async raises for the world or the API misbehaving.

    KlingError
    ├── APIError                    the server answered with an error status
    │   ├── InvalidRequestError     400 (and other 4xx without a class of their own)
    │   │   └── IdempotencyConflictError   409: a key reused with a different body
    │   ├── AuthenticationError     401
    │   ├── InsufficientCreditsError 402
    │   ├── PermissionDeniedError   403
    │   ├── NotFoundError           404
    │   ├── RateLimitError          429 (retry_after)
    │   └── ServerError             5xx
    ├── TransportError              no usable HTTP answer
    │   ├── ConnectError            the connection could not be made
    │   └── RequestTimeoutError     no answer in time (also a TimeoutError)
    ├── ResponseDecodeError         an answer we could not read
    ├── SubmissionUnknownError      a paid POST whose outcome is unknown (has the key)
    └── TaskFailedError             the task itself failed (has the snapshot)

Misuse (bad arguments, a closed client) raises ValueError, TypeError or RuntimeError,
never a KlingError, so ``except KlingError`` cannot hide a bug. Work still waiting on a
Client when it closes ends with :class:`ClientClosedError`, a ``RuntimeError``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from ._jsonbody import parse_json

if TYPE_CHECKING:
    from ._models import TaskSnapshot

_EXCERPT = 200


class KlingError(Exception):
    """Root of every error about the API or the network."""


class ImageFileError(KlingError, ValueError):
    """A local image cannot be used (missing, too large, wrong type or dimensions); found
    before anything was uploaded or paid for. Also a ``ValueError``."""


class CreditLimitError(KlingError):
    """A batch's ``max_credits`` would be passed: this request was not submitted.

    Attributes:
        limit: the ``max_credits`` given.
        committed: credits reserved by the batch's submissions so far (the server's
            ``usage.credits_reserved``, else the estimate).
        needed: this request's estimated credits.
    """

    def __init__(self, message: str, *, limit: float, committed: float,
                 needed: float | None) -> None:
        super().__init__(message)
        self.limit = limit
        self.committed = committed
        self.needed = needed


class ClientClosedError(RuntimeError):
    """The Client closed while this call was waiting on it.

    Raised in other tasks still inside a ``watch``, ``wait_finished``, a ``submit``
    waiting for a slot, or a ``generate_many`` block when the ``async with Client``
    block ends: they end within moments instead of hanging. Tasks already submitted keep
    running on the server; track them again from a new Client (``client.track``).
    """


class APIError(KlingError):
    """The server answered with an error status.

    Attributes:
        status: the HTTP status.
        code: the error code (``"rate_limit_exceeded"``...; integer codes become strings).
        message: the server's message, or an excerpt of a non-JSON body.
        type: the error type, when given.
        param: the request field at fault, when given.
        request_id: the server's request id, for support.
        suggestion: the server's ``fallback_suggestion``, when given.
    """

    def __init__(self, *, status: int, code: str | None = None, message: str = "",
                 type: str | None = None, param: str | None = None,
                 request_id: str | None = None, suggestion: str | None = None) -> None:
        self.status = status
        self.code = code
        self.message = message
        self.type = type
        self.param = param
        self.request_id = request_id
        self.suggestion = suggestion
        super().__init__(self._describe())

    def __reduce__(self) -> tuple[Any, ...]:
        return (_rebuild, (type(self), self.__dict__.copy()))

    def _advice(self) -> str:
        return ""

    def _describe(self) -> str:
        text = f"HTTP {self.status}"
        if self.code:
            text += f" {self.code}"
        if self.message:
            text += f": {self.message}"
        if self.param:
            text += f" (param: {self.param})"
        advice = self._advice()
        if advice:
            text += f". {advice}"
        if self.suggestion:
            text += f" Server suggests: {self.suggestion}"
        if self.request_id:
            text += f" [request id {self.request_id}]"
        return text


def _rebuild(cls: type[APIError], state: dict[str, Any]) -> APIError:
    error = cls.__new__(cls)
    error.__dict__.update(state)
    Exception.__init__(error, error._describe())
    return error


class InvalidRequestError(APIError):
    """400: the server rejected the request; fix it before sending it again."""

    def _advice(self) -> str:
        return "Fix the request; sending it again unchanged will fail the same way"


class IdempotencyConflictError(InvalidRequestError):
    """409: an Idempotency-Key was reused with a different request body."""

    def _advice(self) -> str:
        return "Use a new idempotency key for a different request"


class AuthenticationError(APIError):
    """401: the API key is missing, wrong or expired."""

    def _advice(self) -> str:
        return "Check EVOLINK_API_KEY (keys: https://evolink.ai/dashboard/keys)"


class InsufficientCreditsError(APIError):
    """402: not enough credits for this task."""

    def _advice(self) -> str:
        return "Top up credits at https://evolink.ai/dashboard/billing"


class PermissionDeniedError(APIError):
    """403: the key may not use this model, or the task belongs to another account."""

    def _advice(self) -> str:
        return "Check that this key may use the model and owns the task"


class NotFoundError(APIError):
    """404: no such task (or it expired), or no such model."""


class RateLimitError(APIError):
    """429: too many requests or too many unfinished tasks.

    Attributes:
        retry_after: seconds the server asked us to wait, when it said.
    """

    def __init__(self, *, retry_after: float | None = None, **fields: Any) -> None:
        self.retry_after = retry_after
        super().__init__(**fields)

    def _advice(self) -> str:
        if self.retry_after is not None:
            return f"Retry after {self.retry_after:g} s"
        return "Slow down or wait for running tasks to finish"


class ServerError(APIError):
    """5xx: the service failed; the request may be retried."""


class TransportError(KlingError):
    """No usable HTTP answer: the connection failed, dropped or timed out."""


class ConnectError(TransportError):
    """The connection could not be made, so the request never reached the server."""


class RequestTimeoutError(TransportError, TimeoutError):
    """No complete answer arrived within the configured timeout."""


class ResponseDecodeError(KlingError):
    """An answer could not be read as the documented JSON.

    Attributes:
        excerpt: the start of the body, for diagnosis.
    """

    def __init__(self, message: str, *, excerpt: str = "") -> None:
        self.excerpt = excerpt
        super().__init__(f"{message}: {excerpt!r}" if excerpt else message)

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.args[0],))


class SubmissionUnknownError(KlingError):
    """A paid submission may or may not have created a task, and retries could not tell.

    Submit again with the same key to settle it: the server replays the task the key
    created, or creates it once if it never did::

        snap = await client.submit(request, idempotency_key=err.idempotency_key)

    Attributes:
        idempotency_key: the key the submission was sent with.
    """

    def __init__(self, idempotency_key: str, cause: BaseException) -> None:
        self.idempotency_key = idempotency_key
        super().__init__(
            f"the outcome of a paid submission is unknown ({cause}); submit again with "
            f"idempotency_key={idempotency_key!r} to settle it without paying twice")

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.idempotency_key, RuntimeError(str(self.__cause__))))


# Failure codes that say "try again later" rather than "change the request" (the
# documented task failure codes; see evolink-api.md).
RETRYABLE_TASK_CODES = frozenset({
    "service_error", "generation_timeout", "resource_exhausted", "quota_exceeded",
    "service_unavailable", "unknown_error"})


class TaskFailedError(KlingError):
    """The task ended in ``failed``; its credits are refunded by the server.

    Attributes:
        snapshot: the final :class:`TaskSnapshot`.
        code: the failure code, e.g. ``"content_policy_violation"``.
        message: the server's explanation.
    """

    @property
    def retryable(self) -> bool:
        """True when the code says the same request may succeed later (an upstream
        error, a timeout, exhausted capacity), False when the request must change."""
        return self.code in RETRYABLE_TASK_CODES

    def __init__(self, snapshot: TaskSnapshot) -> None:
        self.snapshot = snapshot
        self.code = snapshot.error.code if snapshot.error else "unknown_error"
        self.message = snapshot.error.message if snapshot.error else "no reason given"
        super().__init__(f"task {snapshot.id} failed: {self.code}: {self.message}")

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.snapshot,))


_BY_STATUS: dict[int, type[APIError]] = {
    400: InvalidRequestError, 401: AuthenticationError, 402: InsufficientCreditsError,
    403: PermissionDeniedError, 404: NotFoundError, 409: IdempotencyConflictError,
    429: RateLimitError,
}
_REQUEST_ID_HEADERS = ("x-request-id", "x-oneapi-request-id")


def request_id_of(headers: Mapping[str, str]) -> str | None:
    """The server's id for an answer, from its headers (for support and logs)."""
    return next((headers[h] for h in _REQUEST_ID_HEADERS if h in headers), None)


def _text(value: object) -> str | None:
    if value is None or isinstance(value, (dict, list)):
        return None
    return str(value)


def error_from_response(status: int, body: bytes, headers: Mapping[str, str],
                        retry_after: float | None = None) -> APIError:
    """Turn an error answer into the right :class:`APIError` subclass.

    Reads the current envelope (string codes) and the older one (integer codes,
    ``param``, ``fallback_suggestion``); a body that is not JSON (an HTML 502 page)
    still gives the right class, with a short excerpt as the message.
    """
    request_id = request_id_of(headers)
    fields: dict[str, Any] = {"status": status, "request_id": request_id}
    try:
        data = parse_json(body)
    except ValueError:
        data = None
    error = data.get("error") if isinstance(data, dict) else None
    if isinstance(error, dict):
        fields.update(code=_text(error.get("code")), message=_text(error.get("message")) or "",
                      type=_text(error.get("type")), param=_text(error.get("param")),
                      suggestion=_text(error.get("fallback_suggestion")))
    elif isinstance(error, str):
        fields["message"] = error
    else:
        excerpt = " ".join(body[:_EXCERPT].decode("utf-8", "replace").split())
        fields["message"] = f"non-JSON error body: {excerpt}" if excerpt else "empty body"
    message = fields.get("message") or ""
    if request_id is None and isinstance(message, str) and "(request id: " in message:
        fields["request_id"] = message.rsplit("(request id: ", 1)[1].rstrip(") ")
    if status == 429:
        return RateLimitError(retry_after=retry_after, **fields)
    if status >= 500:
        return ServerError(**fields)
    return _BY_STATUS.get(status, InvalidRequestError)(**fields)
