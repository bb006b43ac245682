"""The task registry: the one owner of each task's life in a Client.

Per task it keeps the slot (a :class:`Ticket` from admit to bind | refuse |
hold_unsettled; once bound, its entry's ``slot`` flag until the final reading), the
schedule entry (an :class:`~kling_async._entry.Entry`), the subscribers and the last
and final state. The poller reads what :meth:`TaskRegistry.pop_due` hands it and reports
back; slot counting is an :class:`~kling_async._slots.Admission`. See
docs/architecture.md.
"""

from __future__ import annotations

import itertools
import logging
import random
from collections import OrderedDict, deque
from collections.abc import Iterable, Iterator
from typing import Literal

import anyio
import anyio.lowlevel
import attrs

from ._config import PollPolicy
from ._durations import Durations
from ._entry import TERMINAL, Entry, keep_reading, new_entry
from ._errors import ClientClosedError, KlingError
from ._models import TaskSnapshot, TaskStatus
from ._schedule import (
    FINAL_PHASE,
    MIN_PROGRESS,
    Timetable,
    error_delay,
    next_delay,
    predicted_remaining,
    scaled_total,
)
from ._slots import Admission
from ._watch import TaskUpdate, TaskUpdates, entry_update, update_of

logger = logging.getLogger("kling_async")

MAX_DECODE_ERRORS = 5    # unreadable answers in a row before an id is given up
FINISHED_CACHE = 10_000  # final readings kept for late watchers and wait_finished()
REPLAN_SLICE = 1_000  # entries replanned between two turns of the event loop
_RANK = {TaskStatus.PENDING.value: 0, TaskStatus.UNKNOWN.value: 0,
         TaskStatus.PROCESSING.value: 1, TaskStatus.COMPLETED.value: 2,
         TaskStatus.FAILED.value: 2}
TicketState = Literal["waiting", "reserved", "unsettled", "bound", "released"]
_HOLDING = frozenset({"reserved", "unsettled", "bound"})


@attrs.define(eq=False)
class Ticket:
    """A submission's claim on a slot, named by its idempotency key, until the task it
    created is bound (then its entry's ``slot`` flag holds the slot) or it is released."""

    key: str
    state: TicketState = "waiting"
    task_id: str | None = None
    settled: anyio.Event | None = None  # while unsettled: set when the hold ends


class TaskRegistry:
    """Slots, schedules, subscribers and states of every task a Client follows."""

    def __init__(self, admission: Admission, policy: PollPolicy, rng: random.Random) -> None:
        self.admission = admission
        self._policy = policy
        self._rng = rng
        self._entries: dict[str, Entry] = {}
        # subscribers by task id (kept here, not in the entries: see _entry)
        self._watchers: dict[str, TaskUpdates | set[TaskUpdates]] = {}
        self._tickets: dict[str, Ticket] = {}  # by key, until bound or released
        # final readings as their entries (see _entry), or updates of ids given up
        self._finished: OrderedDict[str, Entry | TaskUpdate] = OrderedDict()
        self._channels: set[TaskUpdates] = set()
        self._due = Timetable()
        self._durations = Durations(rng)
        self._spreads = self._durations.spreads  # by an entry's "kind"
        # replans under way: (kind, progress range, the entries not looked at yet)
        self._replans: deque[tuple[int, range, Iterator[Entry]]] = deque()
        self._closed: str | None = None

    # -- admission ------------------------------------------------------------------------

    async def admit(self, key: str) -> Ticket:
        """A reserved slot for the submission keyed ``key``; waits FIFO for one.

        A key whose earlier submission is unsettled takes over that slot at once.
        Cancelling the wait spends nothing.
        """
        self._check_open()
        ticket = self._tickets.get(key)
        if ticket is not None:
            if ticket.state != "unsettled":
                raise RuntimeError(f"a submission with idempotency key {key!r} is already "
                                   "in progress")
            self._end_hold(ticket)  # its slot passes to this submission, which settles it
            ticket = self._tickets[key] = Ticket(key=key, state="reserved")
            return ticket
        ticket = self._tickets[key] = Ticket(key=key)
        await self.readmit(ticket)
        return ticket

    async def readmit(self, ticket: Ticket, *, front: bool = False) -> None:
        """Wait for a slot again (after a 429), ahead of others when ``front``."""
        try:
            await self.admission.reserve(ticket.key, front=front)
        except BaseException:
            self._tickets.pop(ticket.key, None)
            raise
        ticket.state = "reserved"

    def rejected(self, ticket: Ticket, *, keep_slot: bool) -> None:
        """The server answered 429 (account full): shrink, and give the slot back while
        waiting to retry, unless an earlier attempt may have created the task."""
        self.admission.on_rejected()
        if not keep_slot:
            self._release(ticket, keep_key=True)
            ticket.state = "waiting"

    def bind(self, ticket: Ticket, snapshot: TaskSnapshot) -> None:
        """The submission created (or replayed) ``snapshot``: follow it with the slot."""
        self._tickets.pop(ticket.key, None)
        if self._closed is not None:
            logger.warning("task %s was created while the Client closed; it is not followed"
                           " (track it from a new Client)", snapshot.id)
            self._release(ticket)
            return
        entry = self._entry(snapshot.id)
        if not entry["status"]:  # first seen at its creation
            entry["timed"] = not snapshot.is_terminal
        if snapshot.is_terminal or entry["slot"]:
            self._release(ticket)  # a finished task, or a replay of one already counted
        else:
            ticket.state, ticket.task_id = "bound", snapshot.id
            entry["slot"] = True  # from here on the entry holds the slot; the ticket is done
            self.admission.bind(ticket.key, snapshot.id)
            self.admission.on_accepted()
        self._absorb(entry, snapshot, anyio.current_time())

    def refuse(self, ticket: Ticket) -> None:
        """The submission definitively created nothing: its slot comes back."""
        self._release(ticket)

    def hold_unsettled(self, ticket: Ticket) -> None:
        """The outcome stayed unknown: keep the slot (the task may run), list the key."""
        ticket.state, ticket.settled = "unsettled", anyio.Event()
        self._tickets[ticket.key] = ticket
        logger.warning("the outcome of submission %s is unknown; its slot stays reserved "
                       "until it is settled (submit again with idempotency_key=%r)",
                       ticket.key, ticket.key)

    def expire(self, ticket: Ticket) -> None:
        """An unsettled hold ran out: give its slot back."""
        if ticket.state == "unsettled":
            logger.warning("released the slot held for unsettled submission %s", ticket.key)
            self._release(ticket)

    def adopt(self, task_ids: Iterable[str]) -> None:
        """Follow tasks from an earlier run, each counting against the slots."""
        self._check_open()
        for task_id in task_ids:
            if task_id in self._finished:
                continue
            entry = self._entry(task_id)
            if not entry["slot"]:
                self.admission.adopt(task_id)
                entry["slot"] = True
            if not entry["status"]:
                self._schedule_at(entry, anyio.current_time())

    def _release(self, ticket: Ticket, *, keep_key: bool = False) -> None:
        if ticket.state in _HOLDING:
            self.admission.release(ticket.task_id or ticket.key)
        self._end_hold(ticket)
        if not keep_key and self._tickets.get(ticket.key) is ticket:
            del self._tickets[ticket.key]

    @staticmethod
    def _end_hold(ticket: Ticket) -> None:
        ticket.state = "released"
        if ticket.settled is not None:
            ticket.settled.set()

    # -- following ------------------------------------------------------------------------

    @property
    def tracked(self) -> int:
        """Ids being followed now."""
        return len(self._entries)

    @property
    def unsettled(self) -> tuple[str, ...]:
        """Idempotency keys of submissions whose outcome is unknown (slots held)."""
        return tuple(k for k, t in self._tickets.items() if t.state == "unsettled")

    def subscribe(self, channel: TaskUpdates, task_ids: Iterable[str]) -> None:
        """Deliver updates of ``task_ids`` to ``channel``, starting with what is known."""
        self._check_open()
        self._channels.add(channel)
        for task_id in task_ids:
            final = self.final(task_id)
            if final is not None:
                channel.push(final)
                continue
            entry = self._entry(task_id)
            _watch(self._watchers, task_id, channel)
            if entry["status"]:  # read before: that reading first
                channel.push_reading(entry)
            elif entry["seq"] == 0:
                self._schedule_at(entry, anyio.current_time())

    def unsubscribe(self, channel: TaskUpdates, task_ids: Iterable[str]) -> None:
        """Stop delivering to ``channel``; ids nobody needs any more stop being read."""
        self._channels.discard(channel)
        for task_id in task_ids:
            entry = self._entries.get(task_id)
            if entry is None:
                continue
            _unwatch(self._watchers, task_id, channel)
            if task_id not in self._watchers and not entry["slot"]:
                del self._entries[task_id]

    def final(self, task_id: str) -> TaskUpdate | None:
        """The final update of a recently finished id, if remembered."""
        kept = self._finished.get(task_id)
        if kept is None or isinstance(kept, TaskUpdate):
            return kept
        return entry_update(kept)

    def observe(self, snapshot: TaskSnapshot) -> None:
        """Take a reading made elsewhere (``client.get()``) if the id is followed."""
        entry = self._entries.get(snapshot.id)
        if entry is not None:
            self._absorb(entry, snapshot, anyio.current_time())

    def hint(self, snapshot: TaskSnapshot) -> bool:
        """Take an unverified claim (a callback). Terminal claims are confirmed by a read
        first; stale or out-of-order claims are ignored. Returns True if it was used."""
        entry = self._entries.get(snapshot.id)
        if entry is None or self._closed is not None:
            return False
        now = anyio.current_time()
        if snapshot.is_terminal:
            entry["urgent_since"] = now
            if not entry["reading"]:
                self._schedule_at(entry, now, confirm=True)
            return True
        if entry["status"] and (_RANK[snapshot.status.value], snapshot.progress) <= (
                _RANK[entry["status"]], entry["progress"]):
            return False
        self._absorb(entry, snapshot, now)
        return True

    def close(self) -> None:
        """The Client is closing: every waiter and watcher ends with ClientClosedError."""
        self._closed = "the Client closed while this call was waiting on it"
        if self.unsettled:
            logger.warning("closing with unsettled submissions (idempotency keys %s); submit "
                           "them again with their key to settle them", ", ".join(self.unsettled))
        self.admission.close()
        for channel in self._channels:
            channel.close(self._closed)
        self._channels.clear()

    def _check_open(self) -> None:
        if self._closed is not None:
            raise ClientClosedError("the Client is closed")

    def _entry(self, task_id: str) -> Entry:
        entry = self._entries.get(task_id)
        if entry is None:
            entry = self._entries[task_id] = new_entry(task_id, anyio.current_time())
        return entry

    # -- what the poller reads and reports ------------------------------------------------

    def pop_due(self, now: float, *, ride_gap: float | None, limit: int) -> list[Entry]:
        """Up to ``limit`` entries to read now (one chunk), marked as being read.

        With a ``ride_gap`` (batch reads), a chunk that is sent anyway is filled with ids
        due within ``min_interval`` (one request either way), as long as each was last
        read at least ``ride_gap`` seconds ago: a ride-along is never sooner than that
        after the read before it.
        """
        policy = self._policy
        horizon = now + (policy.min_interval if ride_gap is not None else 0.0)
        floor = now - (ride_gap or 0.0)
        due: list[Entry] = []
        early: list[tuple[float, int, str]] = []  # too recently read to ride along
        pop, followed = self._due.pop_until, self._entries.get
        while len(due) < limit and (item := pop(horizon)) is not None:
            entry = followed(item[2])
            if entry is None or entry["seq"] != item[1] or entry["reading"]:
                continue  # stale; a read in progress reschedules its entry when it ends
            if item[0] > now:
                if not due:
                    self._due.put_back(item)  # nothing to ride along with
                    break
                if entry["last_read"] > floor:
                    early.append(item)
                    if len(early) < limit:
                        continue
                    break  # the chunk stays partial rather than scanning further
            entry["reading"] = True
            entry["last_read"] = now
            due.append(entry)
        for item in early:
            self._due.put_back(item)
        return due

    async def wait_due(self) -> None:
        """Sleep until the earliest entry is due or an earlier one is scheduled (only
        let other tasks run while a replan is under way: see :meth:`replan_some`)."""
        if self._replans:
            await anyio.lowlevel.checkpoint()
        else:
            await self._due.wait()

    def report(self, entry: Entry, snapshot: TaskSnapshot, now: float | None = None
               ) -> None:
        """A reading of ``entry`` by the poller (``now``: when its answer arrived; one
        clock read serves a whole batch answer)."""
        self._answered(entry)
        self._absorb(entry, snapshot, anyio.current_time() if now is None else now)

    @staticmethod
    def _answered(entry: Entry) -> None:
        """``entry``'s read is over; a callback's claim made before it was sent is
        confirmed by it."""
        entry["reading"] = False
        urgent_since = entry["urgent_since"]
        if urgent_since is not None and entry["last_read"] >= urgent_since:
            entry["urgent_since"] = None

    def report_unchanged(self, entries: list[Entry], now: float | None = None) -> None:
        """Readings whose status and progress are those already known (nothing to
        publish, nothing to rebuild): only the next reads are scheduled, pushed together
        (the hot path of polling)."""
        now = anyio.current_time() if now is None else now
        items = []
        followed, answered, next_item = self._entries.get, self._answered, self._next_item
        for entry in entries:
            answered(entry)
            if followed(entry["task_id"]) is entry:  # still followed
                items.append(next_item(entry, entry["progress"], now))
        self._due.add_many(items)

    def unreadable(self, entry: Entry, exc: KlingError) -> None:
        """The answer about ``entry`` could not be read: retry, or give up after a few."""
        entry["decode_errors"] += 1
        if entry["decode_errors"] >= MAX_DECODE_ERRORS:
            self.give_up(entry, exc)
        else:
            self.retry_later(entry, exc)

    def retry_later(self, entry: Entry, exc: KlingError) -> None:
        """A transient failure reading ``entry``: back off."""
        entry["reading"] = False
        entry["errors"] += 1
        logger.debug("reading %s failed (%s); retrying later", entry["task_id"],
                     type(exc).__name__)
        now = anyio.current_time()
        self._schedule_at(entry, now + error_delay(self._policy, entry["errors"], self._rng))

    def left_out(self, entry: Entry) -> None:
        """A batch answer left ``entry`` out (unknown or foreign): a GET says which."""
        entry["reading"] = False
        entry["needs_get"] = True
        self._schedule_at(entry, anyio.current_time())

    def give_up(self, entry: Entry, exc: KlingError) -> None:
        """``entry`` cannot be followed (404, 403, garbage): its final update is ``exc``."""
        entry["reading"] = False
        self._finish(entry, exc)

    def read_done(self, chunk: list[Entry]) -> None:
        """A chunk's read ended; claims that arrived meanwhile are confirmed now, and an
        entry whose read ended without a report (cancelled) is read again."""
        now = anyio.current_time()
        for entry in chunk:
            if entry["task_id"] not in self._entries:
                continue
            if entry["urgent_since"] is not None:
                entry["reading"] = False
                self._schedule_at(entry, now, confirm=True)
            elif entry["reading"]:
                entry["reading"] = False
                self._schedule_at(entry, now)

    # -- state changes --------------------------------------------------------------------

    def _absorb(self, entry: Entry, snapshot: TaskSnapshot, now: float) -> None:
        status, progress = entry["status"], entry["progress"]  # of the last reading
        if snapshot.estimated_time is None and entry["estimate"] is not None:
            snapshot = attrs.evolve(snapshot, estimated_time=entry["estimate"])
        if status and snapshot.progress < progress:
            snapshot = attrs.evolve(snapshot, progress=progress)  # never backwards
        keep_reading(entry, snapshot)
        if entry["kind"] < 0:
            entry["kind"] = self._durations.index((snapshot.model, snapshot.video_duration))
        changed = not status or (status, progress) != (snapshot.status.value,
                                                         snapshot.progress)
        if snapshot.is_terminal:
            if changed:
                self._publish(entry, update_of(entry["task_id"], snapshot))
            if snapshot.status is TaskStatus.COMPLETED and entry["timed"]:
                self._learn(entry, progress if status else None, now)
            self._finish(entry)
        else:
            if changed:
                self._publish(entry, reading=snapshot)
            if (snapshot.progress >= FINAL_PHASE and status
                    and progress < FINAL_PHASE):  # seen entering it, not already in it
                entry["final_seen"] = (snapshot.progress, now - entry["first_seen"])
            self._next_read(entry, snapshot.progress, now)

    def _next_read(self, entry: Entry, progress: int, now: float) -> None:
        if self._entries.get(entry["task_id"]) is entry:  # still followed
            self._due.add(*self._next_item(entry, progress, now))

    def _next_item(self, entry: Entry, progress: int, now: float
                   ) -> tuple[float, int, str]:
        """The timetable item of ``entry``'s next read after a reading at ``now``."""
        entry["errors"] = entry["decode_errors"] = 0
        entry["running_at"] = now
        return self._item(entry, self._planned(entry, progress, now))

    def _planned(self, entry: Entry, progress: int, at: float) -> float:
        """When to read ``entry`` next after a reading at ``at`` that found ``progress``."""
        remaining, share = predicted_remaining(
            self._policy, elapsed=at - entry["first_seen"], estimate=entry["estimate"],
            progress=progress, spread=self._spreads[entry["kind"]],
            final_seen=entry["final_seen"])
        return at + next_delay(self._policy, remaining, share, self._rng)

    def _learn(self, entry: Entry, last: int | None, now: float) -> None:
        """A task followed from its creation completed (``last``: the progress of the
        reading before, if any): its duration teaches its kind's spread (the end lies
        between the last reading that found it running and now); against the end that
        reading's pace implied, the spread of its stage; against when it was first seen
        in the final phase, the spread of that percent's ends."""
        spread = self._spreads[entry["kind"]]
        running_at = max(entry["running_at"] - entry["first_seen"], 0.0)
        done_at = now - entry["first_seen"]
        if spread.learn(total=scaled_total(self._policy, entry["estimate"]),
                        running_at=running_at, done_at=done_at):
            self._replan(entry["kind"], range(MIN_PROGRESS))  # waiting for the estimate's edge
        if entry["final_seen"] is not None:  # (it only ever plans later: nothing to replan)
            progress, since = entry["final_seen"]
            spread.final(progress).learn(total=since, running_at=running_at, done_at=done_at)
        # Only stages paced by progress: ends in the final phase never shade a pace.
        if (last is not None and MIN_PROGRESS <= last < FINAL_PHASE
                and running_at > 0 and spread.stage(last).learn(
                    total=running_at * 100.0 / last, running_at=running_at,
                    done_at=done_at)):
            self._replan(entry["kind"], range(MIN_PROGRESS, FINAL_PHASE))

    def _replan(self, kind: int, progress: range) -> None:
        """What ``kind`` (its index in the spreads) learnt replaced a prior: the next
        read of each of its tasks whose last reading (at ``progress``) was planned with
        that prior is planned again, and moved if that comes sooner. The tasks of a
        batch were planned before any of them ended: a prior wrong by far would
        otherwise cost each its lag once. Once per prior, at most 11 per kind. The
        poller's readers do it, :data:`REPLAN_SLICE` entries at a time (at 20,000 tasks
        in one go, it stalled the event loop for about 100 ms)."""
        self._replans.append((kind, progress, iter(list(self._entries.values()))))
        self._due.wake()

    def replan_some(self) -> None:
        """The next slice of the replans under way (see :meth:`_replan`), if any."""
        if not self._replans:
            return
        now = anyio.current_time()
        kind, progress, entries = self._replans[0]
        items, seen = [], 0
        followed = self._entries.get
        for entry in itertools.islice(entries, REPLAN_SLICE):
            seen += 1
            status = entry["status"]
            if (entry["kind"] != kind or not status or entry["reading"]
                    or entry["errors"] or status in TERMINAL
                    or entry["progress"] not in progress
                    or followed(entry["task_id"]) is not entry):
                continue
            when = self._planned(entry, entry["progress"], entry["running_at"])
            if when < entry["due"]:
                items.append(self._item(entry, max(when, now)))
        if seen < REPLAN_SLICE:
            self._replans.popleft()
        self._due.add_many(items)

    def _finish(self, entry: Entry, error: KlingError | None = None) -> None:
        """``entry`` is final: its last reading is terminal, or it is given up (``error``:
        why; that update is published here)."""
        task_id = entry["task_id"]
        final: Entry | TaskUpdate = entry
        if error is not None:
            final = entry_update(entry, error)
            self._publish(entry, final)
        self._entries.pop(task_id, None)
        self._watchers.pop(task_id, None)  # late subscribers get the final from _finished
        self._finished[task_id] = final
        if len(self._finished) > FINISHED_CACHE:
            self._finished.popitem(last=False)
        if entry["slot"]:
            entry["slot"] = False
            self.admission.release(task_id)

    def _publish(self, entry: Entry, final: TaskUpdate | None = None, *,
                 reading: TaskSnapshot | None = None) -> None:
        """Tell ``entry``'s subscribers of its ``final`` update, or of a new unfinished
        ``reading`` (see :meth:`TaskUpdates.push_reading`)."""
        watchers = self._watchers.get(entry["task_id"])
        if watchers is None:
            return
        for channel in watchers if isinstance(watchers, set) else (watchers,):
            if final is None:
                channel.push_reading(entry, reading)
            else:
                channel.push(final)

    def _schedule_at(self, entry: Entry, when: float, *, confirm: bool = False) -> None:
        if self._entries.get(entry["task_id"]) is entry:  # still followed
            self._due.add(*self._item(entry, when, confirm=confirm))

    def _item(self, entry: Entry, when: float, *, confirm: bool = False
              ) -> tuple[float, int, str]:
        """``entry``'s timetable item for a read at ``when``, or later: the read floor
        (only a callback's confirming read may be sooner); older items turn stale."""
        if not confirm:
            floor = entry["last_read"] + self._policy.min_interval
            if when < floor:  # (not max(): this runs for every reading)
                when = floor
        seq = entry["seq"] = entry["seq"] + 1
        entry["due"] = when
        return when, seq, entry["task_id"]


def _watch(watchers: dict[str, TaskUpdates | set[TaskUpdates]], task_id: str,
           channel: TaskUpdates) -> None:
    known = watchers.get(task_id)
    if known is None or known is channel:
        watchers[task_id] = channel
    elif isinstance(known, set):
        known.add(channel)
    else:
        watchers[task_id] = {known, channel}


def _unwatch(watchers: dict[str, TaskUpdates | set[TaskUpdates]], task_id: str,
             channel: TaskUpdates) -> None:
    known = watchers.get(task_id)
    if known is channel:
        del watchers[task_id]
    elif isinstance(known, set):
        known.discard(channel)
        if len(known) == 1:
            watchers[task_id] = next(iter(known))
