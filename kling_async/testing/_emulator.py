"""``Emulator``: a faithful EvoLink server on loopback, as an async context manager."""

from __future__ import annotations

import ipaddress
import random
from collections import deque
from collections.abc import Iterable
from types import TracebackType
from typing import TYPE_CHECKING, Any, Self

import aiohttp
import anyio
import anyio.abc
import attrs
from aiohttp import web

from ._callbacks import CallbackSender
from ._clock import EmulatorClock
from ._faults import Fault, FaultPlan, Route
from ._files import result_bytes
from ._handlers import Routes
from ._state import FAILURE_MESSAGES, Account, Statistics, World

if TYPE_CHECKING:
    from kling_async import Client

DEFAULT_API_KEY = "sk-emulator-0000000000000000"
_TICK = 0.005  # real seconds between settlement/callback sweeps


class Emulator:
    """A real EvoLink-compatible HTTP server on ``127.0.0.1``, for tests and demos.

    It serves ``POST /v1/videos/generations``, ``GET /v1/tasks/{id}``,
    ``POST /v1/tasks/batch``, ``GET /v1/tasks``, ``GET /v1/credits`` and the result files,
    with the documented validation, errors, credits ledger, limits, idempotency keys and
    callbacks. Tasks move ``pending -> processing -> completed | failed`` on API time:
    real time multiplied by ``time_scale`` plus whatever :meth:`advance` adds.

    Example::

        async with Emulator(time_scale=0) as emu:          # time moves only when told
            async with kling.Client(emu.api_key, base_url=emu.url) as client:
                snap = await client.submit(kling.TextToVideo(prompt="a cat"))
                emu.advance(400)                             # every task is done now
                done = await client.wait_finished(snap.id)

    Args:
        api_key: the key of the default account.
        balance: that account's credits.
        max_concurrent_tasks: unfinished tasks allowed per account (429 beyond it).
        requests_per_second: request rate allowed per account (429 beyond it).
        time_scale: API seconds per real second; ``0`` for a clock moved only by
            :meth:`advance`.
        estimated_time: the ``estimated_time`` every task reports (API seconds);
            real durations are spread ``± duration_spread`` around it times
            ``duration_factor`` (1.0; 5.0 makes every estimate five times too short).
        progress_ceiling: progress climbs steadily to this percent and the task
            completes from there (``None``: it creeps through the 90s first).
        failure_rate: share of tasks that fail, with a code from ``failure_codes``.
        batch_endpoint: switch ``POST /v1/tasks/batch`` off (404) to test fallbacks.
        list_endpoint: switch ``GET /v1/tasks`` off (404).
        allow_local_callbacks: accept ``http://`` and loopback ``callback_url`` values.
            Callbacks are only ever delivered to loopback addresses.
        callback_duplicates: extra copies of every callback.
        callback_delay: API seconds to wait before the first one.
        result_size: pad result files to this many bytes (a ``free`` box keeps the clip
            playable); ``None`` serves the bundled 2 KB clip.
        result_ttl: API seconds a result link stays valid (24 hours, as documented).
        seed: seed for ids, timelines and fault rates (``None``: random).
        host: where to listen; only loopback hosts are accepted.
        port: the port, 0 for any free one.
    """

    def __init__(self, *, api_key: str = DEFAULT_API_KEY, balance: float = 1_000_000.0,
                 max_concurrent_tasks: int | None = None,
                 requests_per_second: float | None = None, time_scale: float = 100.0,
                 estimated_time: float = 300.0, duration_spread: float = 0.2,
                 duration_factor: float = 1.0, failure_rate: float = 0.0,
                 progress_ceiling: int | None = None,
                 failure_codes: Iterable[str] = tuple(FAILURE_MESSAGES),
                 batch_endpoint: bool = True, list_endpoint: bool = True,
                 allow_local_callbacks: bool = False, callback_duplicates: int = 0,
                 callback_delay: float = 0.0, result_size: int | None = None,
                 result_ttl: float = 24 * 3600.0, seed: int | None = None,
                 host: str = "127.0.0.1", port: int = 0) -> None:
        if host != "localhost" and not ipaddress.ip_address(host).is_loopback:
            raise ValueError(f"the Emulator listens on loopback only, not {host!r}")
        self.api_key = api_key
        self.clock = EmulatorClock(time_scale)
        rng = random.Random(seed)
        if not 0 <= duration_spread < 1 or not duration_factor > 0:
            raise ValueError("duration_spread must be in [0, 1) and duration_factor > 0")
        if progress_ceiling is not None and not 1 <= progress_ceiling <= 99:
            raise ValueError("progress_ceiling must be 1-99 (or None)")
        self.world = World(self.clock, rng, estimated_time=estimated_time,
                           duration_spread=duration_spread, failure_rate=failure_rate,
                           duration_factor=duration_factor,
                           failure_codes=tuple(failure_codes),
                           progress_ceiling=progress_ceiling)
        self.faults = FaultPlan(random.Random(rng.random()))
        self.callbacks = CallbackSender(self.clock, duplicates=callback_duplicates,
                                        delay=callback_delay)
        self.batch_endpoint = batch_endpoint
        self.list_endpoint = list_endpoint
        self.allow_local_callbacks = allow_local_callbacks
        self.result_size = result_size
        self.result_ttl = result_ttl
        self.request_seq = 0
        #: The last 1,000 create bodies received, oldest first (to check what a client sent).
        self.received: deque[dict[str, Any]] = deque(maxlen=1000)
        #: Raw bodies that ``GET /v1/tasks/{id}`` answers instead of the task (see corrupt()).
        self.corrupted: dict[str, bytes] = {}
        self._host, self._port = host, port
        self._url: str | None = None
        self._runner: web.AppRunner | None = None
        self._session: aiohttp.ClientSession | None = None
        self._tg: anyio.abc.TaskGroup | None = None
        self.add_account(api_key, balance=balance, max_concurrent_tasks=max_concurrent_tasks,
                         requests_per_second=requests_per_second)

    # -- configuration ------------------------------------------------------------------

    def add_account(self, api_key: str, *, balance: float = 1_000_000.0,
                    max_concurrent_tasks: int | None = None,
                    requests_per_second: float | None = None,
                    models: Iterable[str] | None = None) -> None:
        """Add another account (its tasks are invisible to the others: 403)."""
        self.world.accounts[api_key] = Account(
            key=api_key, balance=balance, max_concurrent_tasks=max_concurrent_tasks,
            requests_per_second=requests_per_second,
            models=None if models is None else frozenset(models))

    def fail_next(self, route: Route, fault: Fault, times: int = 1) -> None:
        """Make the next ``times`` requests of ``route`` (or ``"*"``) meet ``fault``."""
        self.faults.fail_next(route, fault, times)

    def set_fault_rate(self, route: Route, fault: Fault, rate: float) -> None:
        """Make each request of ``route`` (or ``"*"``) meet ``fault`` with probability ``rate``."""
        self.faults.set_rate(route, fault, rate)

    def clear_faults(self) -> None:
        """Remove every scripted fault and fault rate."""
        self.faults.clear()

    def fail_next_tasks(self, code: str, count: int = 1) -> None:
        """Make the next ``count`` created tasks fail with the task error ``code``."""
        self.world.scripted_failures.extend([code] * count)

    def client(self, **options: Any) -> Client:
        """A ``kling_async.Client`` for this Emulator: its key and URL, and a poll policy
        matched to its time scale (``PollPolicy.scaled``). ``options`` override any
        Client argument. Use it as ``async with emu.client() as client:``."""
        from kling_async import Client, PollPolicy

        options.setdefault("poll", PollPolicy.scaled(self.clock.time_scale))
        options.setdefault("base_url", self.url)
        return Client(options.pop("api_key", self.api_key), **options)

    # -- time and tasks -----------------------------------------------------------------

    def advance(self, seconds: float) -> None:
        """Move API time forward by ``seconds`` and settle whatever ended."""
        self.clock.advance(seconds)
        self.settle()

    def finish_task(self, task_id: str, failure_code: str | None = None) -> None:
        """End ``task_id`` now: completed, or failed with ``failure_code``."""
        self.world.finish(task_id, failure_code)
        self.settle()

    def corrupt(self, task_id: str, body: bytes | None) -> None:
        """Make ``GET /v1/tasks/{task_id}`` answer 200 with ``body`` as is (None: stop).

        For hostile-input tests: wrong types, truncated JSON, HTML, invalid UTF-8, huge
        bodies. Batch reads leave such a task out, so clients fall back to a GET.
        """
        if body is None:
            self.corrupted.pop(task_id, None)
        else:
            self.corrupted[task_id] = body

    def result_file(self, task_id: str) -> bytes:
        """The bytes of ``task_id``'s result file (each task's file is different)."""
        return result_bytes(self.result_size, task_id.encode())

    def task_json(self, task_id: str) -> dict[str, Any]:
        """The JSON ``GET /v1/tasks/{task_id}`` would answer now (e.g. to fake a callback)."""
        return self.world.snapshot(self.world.tasks[task_id], self.url)

    def settle(self) -> None:
        """Settle tasks that ended and queue their callbacks (runs on every request)."""
        for task in self.world.settle_due():
            if task.callback_url:
                self.callbacks.schedule(task.callback_url, self.world.snapshot(task, self.url))

    def statistics(self) -> Statistics:
        """Counters of requests, connections, tasks, idempotency keys and callbacks."""
        self.settle()
        return attrs.evolve(self.world.statistics(), callbacks_sent=self.callbacks.sent,
                            callbacks_failed=self.callbacks.failed,
                            callbacks_undeliverable=self.callbacks.undeliverable)

    def reset_statistics(self) -> None:
        """Zero the counters; tasks, balances and keys stay."""
        self.world.reset_statistics()
        self.callbacks.sent = self.callbacks.failed = self.callbacks.undeliverable = 0

    # -- lifecycle ----------------------------------------------------------------------

    @property
    def url(self) -> str:
        """Base URL of the running server, e.g. ``http://127.0.0.1:54321``."""
        if self._url is None:
            raise RuntimeError("the Emulator is not running: use `async with Emulator() as emu`")
        return self._url

    async def __aenter__(self) -> Self:
        if self._runner is not None:
            raise RuntimeError("an Emulator can be started only once")
        self._runner = web.AppRunner(Routes(self).app(), access_log=None,
                                     handler_cancellation=True)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self._host, self._port)
        await site.start()
        host, port = self._runner.addresses[0][:2]
        self._url = f"http://{host}:{port}"
        self._session = aiohttp.ClientSession()
        self._tg = anyio.create_task_group()
        await self._tg.__aenter__()
        self._tg.start_soon(self._sweep)
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None,
                        exc: BaseException | None, tb: TracebackType | None) -> None:
        assert self._tg is not None
        assert self._runner is not None
        assert self._session is not None
        self._tg.cancel_scope.cancel()
        try:
            await self._tg.__aexit__(None, None, None)
        finally:
            with anyio.CancelScope(shield=True), anyio.move_on_after(5):
                await self._session.close()
                await self._runner.cleanup()

    async def _sweep(self) -> None:
        assert self._session is not None
        assert self._tg is not None
        while True:
            self.settle()
            for attempt, url, body in self.callbacks.pop_due():
                self._tg.start_soon(self.callbacks.deliver, self._session, attempt, url, body)
            await anyio.sleep(_TICK)

