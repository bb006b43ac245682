"""The read schedule learns how long tasks really take, per model and clip length, and
how far their progress can be trusted."""

from __future__ import annotations

import json
import random

import anyio
import pytest

import kling_async as kling
from kling_async import _tasks
from kling_async._durations import KEEP, MIN_SAMPLES, PRIOR, Spread
from kling_async._schedule import (
    FINAL_SHARE,
    PROGRESS_MARGIN,
    STEP_SHARE,
    Timetable,
    pace_margin,
    predicted_remaining,
)
from kling_async._tasks import REPLAN_SLICE
from kling_async.testing import Emulator

from .conftest import make_client


def processing_at(emulator: Emulator, task_id: str, progress: int) -> None:
    """Make the Emulator report ``task_id`` as processing at ``progress`` % (a GET; batch
    reads leave it out) until ``emulator.corrupt(task_id, None)``."""
    emulator.corrupt(task_id, json.dumps({**emulator.task_json(task_id),
                                          "status": "processing",
                                          "progress": progress}).encode())


def test_a_spread_keeps_the_prior_until_it_has_learnt_enough() -> None:
    spread = Spread(random.Random(1))
    assert (spread.early, spread.late) == PRIOR
    spread.learn(total=100.0, running_at=30.0, done_at=35.0)  # one early outlier
    for _ in range(MIN_SAMPLES - 2):  # tasks ending at 0.9-1.0 of the estimate
        spread.learn(total=100.0, running_at=90.0, done_at=100.0)
    assert (spread.early, spread.late) == PRIOR  # a few samples leave the prior alone
    spread.learn(total=100.0, running_at=90.0, done_at=100.0)
    assert (spread.early, spread.late) == (0.3, 1.0)  # eight: learnt
    for _ in range(40):  # enough: the learnt edges replace the prior, both ways
        spread.learn(total=100.0, running_at=400.0, done_at=405.0)
    assert spread.early == 0.3  # the lowest 2 % of 48 samples is the lowest
    assert spread.late == 4.05


def test_a_coarse_bracket_errs_early() -> None:
    spread = Spread(random.Random(1))
    for _ in range(MIN_SAMPLES):  # found done 60 s after the previous read
        spread.learn(total=100.0, running_at=0.0, done_at=60.0)
    assert spread.early == 0.3  # the middle of the bracket, not its end
    assert spread.late == 0.6


def test_a_spread_samples_the_whole_stream_not_its_tail() -> None:
    # A large batch: completions arrive fastest first, so the latest ones are the slowest.
    spread = Spread(random.Random(2))
    for n in range(4 * KEEP):
        done = 0.8 + 0.4 * n / (4 * KEEP)
        spread.learn(total=1.0, running_at=done - 0.01, done_at=done)
    assert spread.early < 0.85
    assert spread.late > 1.15


async def test_reads_move_to_where_tasks_of_the_kind_end(emulator: Emulator) -> None:
    """Tasks estimated at 300 s that end within 10 %: once a client has seen a few, it
    reads the next task of that kind densely there, instead of every ``max_interval``
    until 80 % of the estimate."""
    # 300 API-s estimates last 3 s of real time for the client; the stepped Emulator's
    # tasks end only when finished here.
    poll = kling.PollPolicy(min_interval=0.05, max_interval=1.0, jitter=0.0, time_scale=100)
    request = kling.TextToVideo(prompt="a short clip")
    async with make_client(emulator, poll=poll) as client:
        first = [await client.submit(request) for _ in range(MIN_SAMPLES)]
        await anyio.sleep(0.3)
        for task in first:
            emulator.finish_task(task.id)
        with anyio.fail_after(10):
            for task in first:  # found at the first read, 1 s in: the end was 0-1 s
                assert (await client.wait_finished(task.id)).is_terminal

        before = emulator.statistics()
        task = await client.submit(request)
        await anyio.sleep(1.2)
        stats = emulator.statistics()
        reads = (stats.count("get") + stats.count("batch")
                 - before.count("get") - before.count("batch"))
        # With the prior: one read (at max_interval, 1 s) in 1.2 s. Learnt: from the
        # middle of the bracket (0.5 s) every min_interval up to its end (1 s).
        assert reads >= 5, reads
        emulator.finish_task(task.id)
        with anyio.fail_after(10):
            assert (await client.wait_finished(task.id)).status is kling.TaskStatus.COMPLETED


def test_a_spread_says_once_that_it_replaced_its_prior() -> None:
    spread = Spread(random.Random(1))
    said = [spread.learn(total=100.0, running_at=90.0, done_at=95.0) for _ in range(12)]
    assert said == [n == MIN_SAMPLES - 1 for n in range(12)]


def test_pace_is_shaded_by_what_tasks_that_ended_from_its_stage_taught() -> None:
    spread = Spread(random.Random(1))
    assert pace_margin(spread, 65) == PROGRESS_MARGIN  # nothing learnt: the fixed margin
    for _ in range(MIN_SAMPLES):  # ends in the final phase say nothing of pace below it
        spread.stage(95).learn(total=100.0, running_at=91.0, done_at=93.0)
    assert pace_margin(spread, 65) == PROGRESS_MARGIN
    for _ in range(MIN_SAMPLES):  # last seen at 60-69 %, then done at 0.65 of that pace
        spread.stage(65).learn(total=100.0, running_at=65.0, done_at=70.0)
    assert pace_margin(spread, 61) == 0.65
    assert pace_margin(spread, 78) == 0.65  # the nearest learnt stage below
    assert pace_margin(spread, 45) == 0.65  # none at or below: the nearest above
    for _ in range(MIN_SAMPLES):  # tasks that ended later than their pace said
        spread.stage(25).learn(total=100.0, running_at=130.0, done_at=135.0)
    assert pace_margin(spread, 25) == PROGRESS_MARGIN  # learning is never bolder
    assert pace_margin(spread, 45) == PROGRESS_MARGIN  # at or below comes first


@pytest.mark.parametrize(("learners", "replan_slice"), [(1, REPLAN_SLICE), (5, 2)])
async def test_a_batch_planned_on_trusted_progress_is_replanned_once_it_is_learnt(
        emulator: Emulator, monkeypatch: pytest.MonkeyPatch, learners: int,
        replan_slice: int) -> None:
    """Progress that climbs to 70 % and then jumps to done: the pace of a reading at 35 %
    says the end is twice as far as it is. Tasks planned on that before any of their kind
    ended are planned again once eight have ended, instead of each paying the lag; the
    readers do it a slice of entries at a time (here also in slices of 2), and none is
    left out."""
    monkeypatch.setattr(_tasks, "REPLAN_SLICE", replan_slice)
    poll = kling.PollPolicy(min_interval=0.05, max_interval=10.0, jitter=0.0,
                            time_scale=100)  # 300 API-s estimates: 3 s for the client
    request = kling.TextToVideo(prompt="a clip whose progress stops at 70 %")

    async with make_client(emulator, poll=poll) as client:
        teachers = [await client.submit(request) for _ in range(MIN_SAMPLES)]
        for task in teachers:
            processing_at(emulator, task.id, 35)
        await anyio.sleep(1.0)
        ids = [(await client.submit(request)).id for _ in range(learners)]
        created = anyio.current_time()
        for task_id in ids:
            processing_at(emulator, task_id, 35)
        await anyio.sleep(2.9)  # each was read at 35 % at the estimate's edge (2.4 s in)
        for task in teachers:  # the teachers end now: found at their next read, 4.45 s in
            emulator.corrupt(task.id, None)
            emulator.finish_task(task.id)
        for task_id in ids:
            processing_at(emulator, task_id, 40)
        seen_after: dict[str, float] = {}
        with anyio.fail_after(10):
            async with client.watch(ids) as updates:
                async for update in updates:
                    if update.progress == 40:
                        seen_after.setdefault(update.task_id, anyio.current_time() - created)
                        if len(seen_after) == learners:
                            break
        for task in teachers:
            assert (await client.wait_finished(task.id)).is_terminal
    # Planned on the prior, each learner's next read was 4.45 s after its creation (its
    # reading at 2.4 s said 2.05 s more); replanned when the eighth teacher ended (1 s
    # sooner), it is read then.
    assert max(seen_after.values()) < 4.0, seen_after


def test_the_final_phase_is_read_from_where_tasks_first_seen_there_ended() -> None:
    policy = kling.PollPolicy(min_interval=1.0, max_interval=600.0)
    spread = Spread(random.Random(1))

    def at_90(elapsed: float, first: tuple[int, float] | None) -> tuple[float, float]:
        return predicted_remaining(policy, elapsed=elapsed, estimate=300.0, progress=90,
                                   spread=spread, final_seen=first)

    before = at_90(250.0, (90, 250.0))
    by_pace = 250.0 * 100 / 90
    assert before == ((100 - 90) / 100 * by_pace * FINAL_SHARE, STEP_SHARE)  # by percent
    for _ in range(MIN_SAMPLES):  # first seen at 90 % 250 s in, running until 300 s
        spread.final(90).learn(total=250.0, running_at=300.0, done_at=302.0)
    assert at_90(250.0, (90, 250.0)) == (pytest.approx(50.0), 1.0)  # the whole way
    assert at_90(280.0, (90, 250.0)) == (pytest.approx(20.0), 1.0)
    assert at_90(250.0, (93, 250.0)) == before  # first seen at another percent: not learnt
    assert at_90(250.0, None) == before
    # Between the learnt edges: every min_interval, whatever the percent says (a task
    # may end from any point in the 90s); past the latest end seen: by percent again.
    assert at_90(301.0, (90, 250.0)) == (0.0, 1.0)
    assert at_90(303.0, (90, 250.0)) == at_90(303.0, None)


async def test_tasks_first_seen_in_the_final_phase_teach_where_the_90s_end(
        emulator: Emulator) -> None:
    """Eight tasks first seen at 90 % 1.2 s after their creation end 1.2 s later. A task
    of their kind, first read (at 90 %) about 2.3 s in (where their ends taught the
    estimate's edge to be), is not read again until about 4.5 s, where without them it is
    read every 0.07-0.1 s (half of half the expected time of the last 10 %)."""
    poll = kling.PollPolicy(min_interval=0.05, max_interval=10.0, jitter=0.0,
                            time_scale=200)  # 300 API-s estimates: 1.5 s for the client
    request = kling.TextToVideo(prompt="a clip that creeps through the 90s")

    def reads() -> int:
        stats = emulator.statistics()
        return stats.count("get") + stats.count("batch")

    async with make_client(emulator, poll=poll) as client:
        teachers = [await client.submit(request) for _ in range(MIN_SAMPLES)]
        for task in teachers:
            processing_at(emulator, task.id, 90)
        await anyio.sleep(2.4)  # each first read (at 90 %) at the estimate's edge, 1.2 s
        for task in teachers:
            emulator.corrupt(task.id, None)
            emulator.finish_task(task.id)
        with anyio.fail_after(10):
            for task in teachers:
                assert (await client.wait_finished(task.id)).is_terminal
        learner = await client.submit(request)
        created = anyio.current_time()
        processing_at(emulator, learner.id, 90)
        with anyio.fail_after(10):  # its first read, at 90 %
            async with client.watch([learner.id]) as updates:
                async for update in updates:
                    if update.progress == 90:
                        break
        await anyio.sleep(0.1)
        before, since = reads(), anyio.current_time() - created
        await anyio.sleep(max(created + 4.0 - anyio.current_time(), 0.0))
        quiet = reads() - before  # up to 4 s in: before the learnt edge
        await anyio.sleep(max(created + 4.9 - anyio.current_time(), 0.0))
        emulator.corrupt(learner.id, None)
        emulator.finish_task(learner.id)
        with anyio.fail_after(10):
            assert (await client.wait_finished(learner.id)).is_terminal
        lag = anyio.current_time() - created - 4.9

        async with make_client(emulator, poll=poll) as elsewhere:  # not created here
            adopted = await elsewhere.submit(request)
        processing_at(emulator, adopted.id, 90)
        client.track([adopted.id])  # first read at once, already at 90 %: no anchor
        await anyio.sleep(0.1)
        before = reads()
        await anyio.sleep(0.5)
        adopted_reads = reads() - before
        emulator.corrupt(adopted.id, None)
        emulator.finish_task(adopted.id)
        with anyio.fail_after(10):
            assert (await client.wait_finished(adopted.id)).is_terminal
    assert since < 3.0, since
    assert quiet == 0, quiet  # by percent alone: one read every 0.07-0.1 s
    assert lag < 0.5, lag  # read densely again from the edge (about 4.5 s) on
    # A task first seen already in the 90s says nothing of where they began: by percent.
    assert adopted_reads >= 3, adopted_reads


async def test_a_task_that_rides_along_early_is_read_again_within_max_interval(
        emulator: Emulator) -> None:
    """A batch read that is sent anyway takes tasks due soon along. The failure-detection
    budget counts from that early read: a task failing right after it is noticed within
    ``max_interval``, not ``max_interval`` plus how early it was read."""
    poll = kling.PollPolicy(min_interval=0.4, max_interval=1.0, jitter=0.0)
    request = kling.TextToVideo(prompt="a clip")  # 300 s estimates: read every 1 s
    async with make_client(emulator, poll=poll) as client:
        others = [await client.submit(request) for _ in range(10)]
        started = anyio.current_time()
        await anyio.sleep(0.3)
        rider = await client.submit(request)  # due 1.3 s in: rides along at 1.0 s
        with anyio.fail_after(5):  # the batch read's answer is in
            while client.statistics().statuses_read < 11:
                await anyio.sleep(0.005)
        read_at = anyio.current_time()
        emulator.finish_task(rider.id, failure_code="content_policy_violation")
        for task in others:  # over, and seen over here: no batch read at 2 s to ride
            emulator.finish_task(task.id, failure_code="content_policy_violation")
            await client.get(task.id)  # (failed: nothing learnt, nothing replanned)
        with anyio.fail_after(10), pytest.raises(kling.TaskFailedError):
            await client.wait_finished(rider.id)
        lag = anyio.current_time() - read_at
    assert read_at - started < 1.25, read_at - started  # the ride-along read, not its own
    assert lag < 1.15, lag  # 1.3 s if its next read were planned from when it was due


async def test_every_sleeper_wakes_when_the_earliest_read_comes_due() -> None:
    """One sleeper keeps the time for all (as the poller's readers do: take what is due,
    else sleep): every sleeper takes its item when it comes due, an earlier item added
    meanwhile moves that time, and a time keeper that leaves (cancelled) leaves the
    others to wake on time, one of them keeping it."""
    timetable = Timetable()
    took: dict[str, tuple[float, float]] = {}  # sleeper -> (its item's due time, when)

    async def reader(name: str) -> None:
        while (item := timetable.pop_until(anyio.current_time())) is None:
            await timetable.wait()
        took[name] = (item[0], anyio.current_time())

    start = anyio.current_time()
    for seq in range(3):
        timetable.add(start + 5.0, seq, f"later-{seq}")
    with anyio.fail_after(4):
        async with anyio.create_task_group() as tg:
            for name in "abc":
                tg.start_soon(reader, name)
            await anyio.sleep(0.05)
            for seq in range(3):  # sooner than the time being kept
                timetable.add(start + 0.15, 10 + seq, f"sooner-{seq}")
    assert sorted(took) == ["a", "b", "c"]
    for due, at in took.values():
        assert due == start + 0.15
        assert due <= at < due + 0.5

    timetable, took = Timetable(), {}
    start = anyio.current_time()
    for seq in range(2):
        timetable.add(start + 0.2, seq, f"task-{seq}")
    with anyio.fail_after(4):
        async with anyio.create_task_group() as tg:
            with anyio.CancelScope() as keeper:
                async with anyio.create_task_group() as inner:
                    inner.start_soon(reader, "keeper")  # the first asleep keeps the time
                    await anyio.sleep(0.02)
                    for name in "de":
                        tg.start_soon(reader, name)
                    await anyio.sleep(0.03)
                    keeper.cancel()
    assert sorted(took) == ["d", "e"]
    for due, at in took.values():
        assert due <= at < due + 0.5
