"""How long tasks really take, learnt per model and clip length from the tasks a Client
has followed from their creation to their completion.

A duration is kept as a share of the server's ``estimated_time``: the early edge of a
kind of task is the low end of the shares seen (ends are rarely sooner), its late edge
the high end. Until 8 completions of a kind are known, the prior is 0.8-1.2 (the spread
the API's estimates had when measured); from then on the completions replace it, so
estimates that are wrong by any factor, either way, stop costing reads or lag after the
first tasks of a kind.

Progress is learnt the same way, per kind and progress stage (10-19 %, ..., 80-89 %):
where a task completed as a share of the end its last reading's pace implied. A reading
is shaded by what the nearest learnt stage (8 tasks ended from there) below the final
phase taught, at or below its own first, if that is more careful than the schedule's
fixed margin; a server whose progress climbs to 70 % and then jumps to done is learnt,
not assumed away. The final phase (from 90 %) is learnt apart, per percent at which tasks
were first seen in it: where they ended as a multiple of when that was, so the dense
reads of the 90s start where tasks of the kind really end, not as soon as 90 % is seen.
"""

from __future__ import annotations

import bisect
import random

PRIOR = (0.8, 1.2)    # shares of the estimate before anything is learnt
MIN_SAMPLES = 8       # completions of a kind before its learnt spread replaces the prior
KEEP = 256            # completions of each kind remembered: a uniform sample of the last
MEMORY = 8 * KEEP     # ...this many (not the latest: those are the slowest of a batch)
EDGE_QUANTILE = 0.02  # the edges leave out this share of the ends at each side
PRECISE = 0.1         # an end bracketed within this share of the estimate is "precise"

Kind = tuple[str, "int | None"]  # (model, seconds of video)
STAGE_WIDTH = 10      # percent of progress per stage


class Spread:
    """The multiples of a reference (the estimate; for a :meth:`stage`, the end a
    reading's pace implied) between which tasks of one kind end (``early``, ``late``),
    learnt from their completions; shared by every entry of that kind."""

    __slots__ = ("_finals", "_highs", "_lows", "_nearest", "_parent", "_rng", "_seen",
                 "_sorted", "_stages", "early", "late")

    def __init__(self, rng: random.Random, parent: Spread | None = None) -> None:
        self.early, self.late = PRIOR
        self._lows: list[float] = []
        self._highs: list[float] = []
        self._sorted: tuple[list[float], list[float]] = ([], [])  # the same, in order
        self._rng = rng
        self._seen = 0
        self._stages: dict[int, Spread] = {}
        self._finals: dict[int, Spread] = {}
        # learnt_stage's answers, by (stage, below): read for every reading, they change
        # only when a stage is first learnt (which empties this)
        self._nearest: dict[tuple[int, int], Spread | None] = {}
        self._parent = parent

    @property
    def learnt(self) -> bool:
        """Whether enough completions replaced the prior."""
        return len(self._lows) >= MIN_SAMPLES

    def stage(self, progress: int) -> Spread:
        """The spread, around the end their pace implied, of tasks of this kind whose
        last reading before completing was at ``progress``'s stage."""
        return self._child(self._stages, progress // STAGE_WIDTH)

    def learnt_stage(self, progress: int, below: int) -> Spread | None:
        """The learnt stage nearest ``progress``'s: at or below it first (tasks that ended
        from there were at least that far along), else above it but under ``below``
        percent (a task not that far along yet may end as those did); or None."""
        own = progress // STAGE_WIDTH
        key = (own, below)
        try:
            return self._nearest[key]
        except KeyError:
            pass
        nearest = None
        for number in (*range(own, -1, -1), *range(own + 1, below // STAGE_WIDTH)):
            stage = self._stages.get(number)
            if stage is not None and stage.learnt:
                nearest = stage
                break
        self._nearest[key] = nearest
        return nearest

    def final(self, progress: int) -> Spread:
        """The spread, as multiples of the time (since creation) at which they were first
        seen in the final phase, of the ends of tasks of this kind first seen there at
        ``progress`` percent."""
        return self._child(self._finals, progress)

    def _child(self, children: dict[int, Spread], key: int) -> Spread:
        child = children.get(key)
        if child is None:
            child = children[key] = Spread(self._rng, parent=self)
        return child

    def learnt_final(self, progress: int) -> Spread | None:
        """:meth:`final` of ``progress`` once it is learnt, else None."""
        final = self._finals.get(progress)
        return final if final is not None and final.learnt else None

    def learn(self, *, total: float, running_at: float, done_at: float) -> bool:
        """A task of this kind whose reference (the estimate, or the end its pace implied)
        was ``total`` seconds was still running ``running_at`` seconds after its creation
        and found completed at ``done_at``.

        The end lies between the two. A bracket wider than ``PRECISE`` of the reference
        (the task ended between two far-apart reads) counts at its middle for the early
        edge, so a coarse bracket errs early (more reads), never late (lag). True when
        this completion replaced the prior (what was planned with it may be replanned).
        """
        if total <= 0 or done_at < running_at:
            return False
        low, high = running_at / total, done_at / total
        self._seen += 1
        slot = len(self._lows) if len(self._lows) < KEEP else self._rng.randrange(
            min(self._seen, MEMORY))  # reservoir sampling over the last MEMORY
        if slot >= KEEP:
            return False
        if high - low > PRECISE:
            low = (low + high) / 2
        lows, highs = self._sorted
        if slot == len(self._lows):
            self._lows.append(low)
            self._highs.append(high)
        else:  # the sample it replaces leaves the ordered copies
            del lows[bisect.bisect_left(lows, self._lows[slot])]
            del highs[bisect.bisect_left(highs, self._highs[slot])]
            self._lows[slot], self._highs[slot] = low, high
        bisect.insort(lows, low)
        bisect.insort(highs, high)
        if len(lows) < MIN_SAMPLES:  # too few to move the prior (one early outlier
            return False             # would make every task of the kind read densely)
        cut = int(len(lows) * EDGE_QUANTILE)
        self.early, self.late = lows[cut], highs[len(highs) - 1 - cut]
        if len(self._lows) > MIN_SAMPLES:
            return False
        if self._parent is not None:  # learnt just now: the parent's lookups change
            self._parent._nearest.clear()
        return True


class Durations:
    """The learnt :class:`Spread` of each kind of task."""

    def __init__(self, rng: random.Random) -> None:
        self._kinds: dict[Kind, int] = {}
        self.spreads: list[Spread] = []  # by index (what a registry entry keeps)
        self._rng = rng

    def index(self, kind: Kind) -> int:
        """Where in :attr:`spreads` the (live) spread of ``kind`` is: the prior until
        it is learnt."""
        index = self._kinds.get(kind)
        if index is None:
            index = self._kinds[kind] = len(self.spreads)
            self.spreads.append(Spread(self._rng))
        return index
