"""Fault injection for the Emulator: scripted ("fail the next N calls") or by rate."""

from __future__ import annotations

import random
from collections import Counter, deque
from typing import Literal

import attrs

Route = Literal["create", "get", "batch", "list", "credits", "file", "upload", "*"]
ROUTES: tuple[str, ...] = ("create", "get", "batch", "list", "credits", "file", "upload")
FaultKind = Literal["error", "html", "reset", "slow", "malformed", "body"]

_CODES = {
    400: ("invalid_request", "Invalid request parameters", "invalid_request_error"),
    401: ("unauthorized", "Invalid or expired token", "authentication_error"),
    402: ("insufficient_quota", "Insufficient quota. Please top up your account.",
          "insufficient_quota"),
    403: ("permission_denied", "You don't have permission to access this resource",
          "invalid_request_error"),
    404: ("task_not_found", "The requested task could not be found", "invalid_request_error"),
    429: ("rate_limit_exceeded", "Too many requests, please try again later",
          "rate_limit_error"),
    500: ("internal_error", "Internal server error", "api_error"),
    502: ("upstream_error", "Upstream AI service unavailable", "upstream_error"),
    503: ("service_unavailable", "Service temporarily unavailable",
          "service_unavailable_error"),
    504: ("gateway_timeout", "Gateway timeout", "api_error"),
}


def envelope(status: int, code: str | None = None, message: str | None = None,
             type_: str | None = None, param: str | None = None) -> dict[str, object]:
    """Build the documented ``{"error": {...}}`` body for ``status``."""
    default_code, default_message, default_type = _CODES.get(
        status, ("error", "Request failed", "api_error"))
    error: dict[str, object] = {
        "code": code or default_code,
        "message": message or default_message,
        "type": type_ or default_type,
    }
    if param is not None:
        error["param"] = param
    return {"error": error}


@attrs.frozen(kw_only=True)
class Fault:
    """One misbehaviour of the Emulator. Build it with the class methods.

    ``after_commit`` applies to ``create``: the task is created (and paid for) first,
    then the answer is lost, which is the case an idempotency key exists for.
    """

    kind: FaultKind
    status: int = 500
    code: str | None = None
    retry_after: float | None = None
    seconds: float = 0.0
    after_commit: bool = False
    legacy_envelope: bool = False
    body: bytes = attrs.field(default=b"", repr=lambda b: f"<{len(b)} bytes>")

    @classmethod
    def error(cls, status: int, *, code: str | None = None, retry_after: float | None = None,
              after_commit: bool = False, legacy_envelope: bool = False) -> Fault:
        """Answer with ``status`` and the documented JSON envelope.

        ``legacy_envelope`` uses the older shape with an integer ``code``.
        """
        return cls(kind="error", status=status, code=code, retry_after=retry_after,
                   after_commit=after_commit, legacy_envelope=legacy_envelope)

    @classmethod
    def html(cls, status: int = 502, *, after_commit: bool = False) -> Fault:
        """Answer with ``status`` and an HTML page, as a proxy in front of the API would."""
        return cls(kind="html", status=status, after_commit=after_commit)

    @classmethod
    def raw(cls, body: bytes, status: int = 200, *, after_commit: bool = False) -> Fault:
        """Answer with ``status`` and ``body`` exactly as given (declared as JSON): for
        hostile answers such as ``b"[" * 200_000`` or JSON that is not a task."""
        return cls(kind="body", status=status, body=body, after_commit=after_commit)

    @classmethod
    def reset(cls, *, after_commit: bool = False) -> Fault:
        """Send the headers and part of the body, then drop the connection."""
        return cls(kind="reset", after_commit=after_commit)

    @classmethod
    def slow(cls, seconds: float, *, after_commit: bool = True) -> Fault:
        """Wait ``seconds`` of real time before answering (longer than a read timeout)."""
        return cls(kind="slow", seconds=seconds, after_commit=after_commit)

    @classmethod
    def malformed_json(cls, *, after_commit: bool = False) -> Fault:
        """Answer 200 with a truncated JSON body."""
        return cls(kind="malformed", status=200, after_commit=after_commit)


class FaultPlan:
    """Which fault, if any, the next request of a route meets."""

    def __init__(self, rng: random.Random) -> None:
        self._rng = rng
        self._scripted: dict[str, deque[Fault]] = {}
        self._rates: dict[str, list[tuple[Fault, float]]] = {}
        #: How many faults of each kind were served, e.g. ``{"error 503": 12, "reset": 3}``.
        self.injected: Counter[str] = Counter()

    def fail_next(self, route: Route, fault: Fault, times: int = 1) -> None:
        """Make the next ``times`` requests of ``route`` meet ``fault``."""
        _check_route(route)
        if times < 1:
            raise ValueError(f"times must be >= 1, got {times!r}")
        self._scripted.setdefault(route, deque()).extend([fault] * times)

    def set_rate(self, route: Route, fault: Fault, rate: float) -> None:
        """Make each request of ``route`` meet ``fault`` with probability ``rate``."""
        _check_route(route)
        if not 0.0 <= rate <= 1.0:
            raise ValueError(f"rate must be within [0, 1], got {rate!r}")
        self._rates.setdefault(route, []).append((fault, rate))

    def clear(self) -> None:
        """Remove every scripted fault and rate."""
        self._scripted.clear()
        self._rates.clear()

    def draw(self, route: str) -> Fault | None:
        """Return the fault for the next request of ``route`` (scripted ones first)."""
        for key in (route, "*"):
            queue = self._scripted.get(key)
            if queue:
                return self._count(queue.popleft())
        for key in (route, "*"):
            for fault, rate in self._rates.get(key, ()):
                if self._rng.random() < rate:
                    return self._count(fault)
        return None

    def _count(self, fault: Fault) -> Fault:
        label = f"{fault.kind} {fault.status}" if fault.kind in ("error", "html") else fault.kind
        self.injected[label] += 1
        return fault


def _check_route(route: str) -> None:
    if route != "*" and route not in ROUTES:
        raise ValueError(f"unknown route {route!r}; expected one of {', '.join(ROUTES)} or '*'")
