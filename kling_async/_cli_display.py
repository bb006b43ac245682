"""What the command shows while a batch runs: rich progress bars, or plain lines."""

from __future__ import annotations

import sys
from collections import Counter
from typing import Any, TextIO

from ._batch import BatchEvent, Failed, Progressed, Submitted, Succeeded


class Tally:
    """Counts of a batch's outcomes for the closing summary."""

    def __init__(self, total: int) -> None:
        self.total = total
        self.succeeded = 0
        self.failed: Counter[str] = Counter()
        self.credits = 0.0

    def record(self, event: BatchEvent) -> None:
        """Count a final event."""
        if isinstance(event, Succeeded):
            self.succeeded += 1
            usage = event.snapshot.usage
            if usage is not None:
                self.credits += usage.credits_used or usage.credits_reserved or 0.0
        elif isinstance(event, Failed):
            reason = getattr(event.error, "code", None) or type(event.error).__name__
            self.failed[str(reason)] += 1

    @property
    def done(self) -> int:
        """Requests with a final outcome."""
        return self.succeeded + sum(self.failed.values())


class PlainDisplay:
    """One line per submission and outcome; for logs, pipes and CI."""

    def __init__(self, total: int, out: TextIO = sys.stdout) -> None:
        self.tally = Tally(total)
        self._out = out

    def __enter__(self) -> PlainDisplay:
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def event(self, event: BatchEvent) -> None:
        """Show one event."""
        if isinstance(event, Succeeded | Failed):
            self.tally.record(event)
        prefix = f"[{self.tally.done}/{self.tally.total}] #{event.index}"
        if isinstance(event, Submitted):
            print(f"{prefix} submitted as {event.task_id}", file=self._out, flush=True)
        elif isinstance(event, Succeeded):
            where = event.path or event.snapshot.video_url
            print(f"{prefix} done: {where}", file=self._out, flush=True)
        elif isinstance(event, Failed):
            print(f"{prefix} FAILED: {event.error}", file=self._out, flush=True)


class RichDisplay:
    """An overall progress bar plus one bar per running task (needs the ``cli`` extra)."""

    def __init__(self, total: int) -> None:
        from rich.progress import BarColumn, Progress, TaskProgressColumn, TextColumn

        self.tally = Tally(total)
        self._progress = Progress(TextColumn("{task.description}"), BarColumn(),
                                  TaskProgressColumn(), TextColumn("{task.fields[note]}"))
        self._overall = self._progress.add_task("batch", total=total, note="")
        self._rows: dict[int, Any] = {}

    def __enter__(self) -> RichDisplay:
        self._progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._progress.stop()

    def event(self, event: BatchEvent) -> None:
        """Move the bars for one event."""
        row = self._rows.get(event.index)
        if isinstance(event, Submitted) and row is None:
            self._rows[event.index] = self._progress.add_task(
                f"#{event.index}", total=100, note=event.task_id)
        elif isinstance(event, Progressed) and row is not None:
            self._progress.update(row, completed=event.progress, note=event.status.value)
        elif isinstance(event, Succeeded | Failed):
            self.tally.record(event)
            if row is not None:
                self._progress.remove_task(row)
                del self._rows[event.index]
            if isinstance(event, Failed):
                self._progress.console.print(f"#{event.index} failed: {event.error}")
            self._progress.update(self._overall, completed=self.tally.done,
                                  note=f"{self.tally.succeeded} ok, "
                                       f"{sum(self.tally.failed.values())} failed")


def make_display(total: int) -> PlainDisplay | RichDisplay:
    """Rich bars on a terminal when rich is installed, else plain lines."""
    if sys.stdout.isatty():
        try:
            return RichDisplay(total)
        except ImportError:
            pass
    return PlainDisplay(total)
