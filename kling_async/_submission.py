"""The paid POST: a slot first, then an exchange that is never abandoned once sent.

Each submission's exchange (``POST /v1/videos/generations`` with its Idempotency-Key,
retried only with that key) runs in the Client's task group, not in the caller's task.
If the caller is cancelled while a request may be on the wire, the exchange still gets
up to ``Timeouts.submit`` seconds to finish; the task it created is bound to the slot
and followed to its end (and recorded by ``on_bound``, e.g. in a journal), and only then
does the caller's cancellation propagate. An exchange whose outcome stays unknown keeps
its slot for ``RetryPolicy.unsettled_hold`` seconds unless settled with its key.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import anyio
import anyio.abc

from ._config import RetryPolicy
from ._convert import snapshot_from_wire
from ._errors import (
    APIError,
    ClientClosedError,
    ConnectError,
    KlingError,
    RateLimitError,
    ServerError,
    SubmissionUnknownError,
    request_id_of,
)
from ._http import Transport
from ._models import TaskSnapshot
from ._retry import Retrying
from ._tasks import TaskRegistry, Ticket

logger = logging.getLogger("kling_async")

CREATE_PATH = "/v1/videos/generations"
OnBound = Callable[[TaskSnapshot], Awaitable[None]]


def definitive(exc: BaseException) -> bool:
    """True when an answer proves this attempt created nothing (a 4xx refusal)."""
    if isinstance(exc, ConnectError):
        return True
    return (isinstance(exc, APIError) and not isinstance(exc, ServerError)
            and exc.code != "paid_outcome_unknown")


def _worth_retrying(exc: Exception) -> bool:
    return isinstance(exc, KlingError) and not definitive(exc)


class _Exchange:
    """One submission's POST attempts and their outcome."""

    def __init__(self, ticket: Ticket, body: Mapping[str, Any], on_bound: OnBound | None
                 ) -> None:
        self.ticket = ticket
        self.body = body
        self.on_bound = on_bound
        self.scope = anyio.CancelScope()
        self.done = anyio.Event()
        self.on_wire = False         # an attempt is between sending and its answer
        self.maybe_created = False   # some attempt may have created the task
        self.snapshot: TaskSnapshot | None = None
        self.error: BaseException | None = None

    def mark_sent(self) -> None:
        self.on_wire = True

    def attempt_ended(self, exc: BaseException | None) -> None:
        if self.on_wire and exc is not None and not definitive(exc):
            self.maybe_created = True
        self.on_wire = False


class Submitter:
    """Runs submissions for one Client (its task group owns the exchanges)."""

    def __init__(self, transport: Transport, registry: TaskRegistry, retry: RetryPolicy,
                 rng: random.Random, *, submit_timeout: float, time_scale: float,
                 tg: anyio.abc.TaskGroup) -> None:
        self._transport = transport
        self._registry = registry
        self._retry = retry
        self._rng = rng
        self._grace = submit_timeout
        self._hold = retry.unsettled_hold / time_scale
        self._tg = tg
        self._live: set[_Exchange] = set()

    async def submit(self, body: Mapping[str, Any], key: str,
                     on_bound: OnBound | None = None) -> TaskSnapshot:
        """Reserve a slot, POST, and return the task's first snapshot (see module doc)."""
        ticket = await self._registry.admit(key)
        exchange = _Exchange(ticket, body, on_bound)
        self._live.add(exchange)
        self._tg.start_soon(self._run, exchange)
        try:
            await exchange.done.wait()
        except BaseException:
            self._orphan(exchange)
            with anyio.CancelScope(shield=True):
                await exchange.done.wait()  # bounded: the grace deadline
            if exchange.snapshot is not None:
                logger.warning("a submission was cancelled after its POST was sent: task %s "
                               "exists and is followed until it ends", exchange.snapshot.id)
            raise
        if exchange.error is not None:
            raise exchange.error
        assert exchange.snapshot is not None
        return exchange.snapshot

    async def drain(self) -> None:
        """The Client is closing: stop exchanges not yet sent, let sent ones finish."""
        live = list(self._live)
        for exchange in live:
            self._orphan(exchange)
        with anyio.CancelScope(shield=True):
            for exchange in live:
                await exchange.done.wait()

    def _orphan(self, exchange: _Exchange) -> None:
        if exchange.on_wire or exchange.maybe_created:
            deadline = anyio.current_time() + self._grace
            exchange.scope.deadline = min(exchange.scope.deadline, deadline)
        else:
            exchange.scope.cancel()  # nothing reached the server: stop at once

    async def _run(self, exchange: _Exchange) -> None:
        ticket, registry = exchange.ticket, self._registry
        try:
            with exchange.scope:
                exchange.snapshot = await self._post(exchange)
        except (KlingError, ClientClosedError) as exc:
            exchange.error = exc
        except BaseException:  # the Client's task group is cancelled: it is closing
            exchange.error = ClientClosedError("the Client closed during this submission")
            registry.refuse(ticket)
            self._end(exchange)
            raise
        if exchange.snapshot is None and exchange.error is None:  # stopped by _orphan
            exchange.error = (
                SubmissionUnknownError(ticket.key, TimeoutError("no answer before the grace "
                                                                "period ended"))
                if exchange.maybe_created else
                ClientClosedError("the Client closed before this submission was sent"))
        if exchange.snapshot is not None:
            registry.bind(ticket, exchange.snapshot)
            if exchange.on_bound is not None:
                with anyio.CancelScope(shield=True):
                    try:
                        await exchange.on_bound(exchange.snapshot)
                    except Exception as exc:  # e.g. a journal that cannot be written
                        exchange.error = exc  # the task is followed; the caller hears why
        elif isinstance(exchange.error, SubmissionUnknownError):
            registry.hold_unsettled(ticket)
        else:
            registry.refuse(ticket)
        self._end(exchange)
        if ticket.settled is not None and ticket.state == "unsettled":
            with anyio.move_on_after(self._hold):
                await ticket.settled.wait()
            registry.expire(ticket)

    def _end(self, exchange: _Exchange) -> None:
        exchange.done.set()
        self._live.discard(exchange)

    async def _post(self, exchange: _Exchange) -> TaskSnapshot:
        ticket = exchange.ticket
        headers = {"Idempotency-Key": ticket.key}
        try:
            async for attempt in Retrying(self._retry, self._rng, retry_on=_worth_retrying,
                                          what=f"submission {ticket.key}",
                                          patient_with_429=True):
                with attempt:
                    if ticket.state == "waiting":
                        await self._registry.readmit(ticket, front=True)
                    try:
                        data, answer = await self._transport.request(
                            "POST", CREATE_PATH, exchange.body, headers=headers, paid=True,
                            before_send=exchange.mark_sent)
                        # A 200 that is no task is retried like any ambiguous answer.
                        snapshot = snapshot_from_wire(data, request_id_of(answer))
                    except BaseException as exc:
                        exchange.attempt_ended(exc)
                        if isinstance(exc, RateLimitError):
                            self._registry.rejected(ticket, keep_slot=exchange.maybe_created)
                        raise
                    exchange.attempt_ended(None)
                    return snapshot
        except KlingError as exc:
            if exchange.maybe_created:
                raise SubmissionUnknownError(ticket.key, exc) from exc
            raise
        raise AssertionError("unreachable: Retrying either returns or raises")
