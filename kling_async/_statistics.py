"""``ClientStatistics``: what a Client is doing, as one frozen record."""

from __future__ import annotations

import attrs


@attrs.frozen(kw_only=True)
class ClientStatistics:
    """What a Client is doing, for dashboards and tests.

    Attributes:
        in_flight: tasks holding a slot (submitted, not yet seen finished).
        capacity: slots available now (moves in adaptive mode).
        waiting: submissions waiting for a slot.
        tracked: task ids the poller follows.
        unsettled: idempotency keys of submissions whose outcome is unknown; each holds a
            slot until settled (submit again with the key) or ``unsettled_hold`` passes.
        requests_sent: HTTP requests sent, retries included.
        batch_reads / single_reads: poller reads by kind.
        statuses_read: task readings the poller has processed.
        rate_limited: 429 answers to submissions.
        batch_supported: whether the server has the batch read (None: not tried yet).
    """

    in_flight: int
    capacity: int
    waiting: int
    tracked: int
    unsettled: tuple[str, ...]
    requests_sent: int
    batch_reads: int
    single_reads: int
    statuses_read: int
    rate_limited: int
    batch_supported: bool | None
