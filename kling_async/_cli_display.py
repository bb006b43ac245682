"""What the command shows while it runs: rich progress bars, or plain lines."""

from __future__ import annotations

import shutil
import sys
from collections import Counter
from typing import Any, TextIO

from ._errors import APIError, TaskFailedError, TransportError
from ._events import BatchEvent, Failed, Progressed, Submitted, Succeeded

EXCERPT = 28  # characters of a prompt shown beside its bar


def excerpt(prompt: str, width: int = EXCERPT) -> str:
    """A one-line start of ``prompt``."""
    text = " ".join(prompt.split())
    return text if len(text) <= width else text[:width - 1] + "…"


def worth_retrying(error: BaseException) -> bool:
    """Whether the same request may succeed if submitted again later."""
    if isinstance(error, TaskFailedError):
        return error.retryable
    if isinstance(error, APIError):
        return error.status == 429 or error.status >= 500
    return isinstance(error, TransportError)


class Tally:
    """Counts of a batch's outcomes for the progress line and the closing summary."""

    def __init__(self, total: int) -> None:
        self.total = total
        self.submitted = 0
        self.succeeded = 0
        self.failed: Counter[str] = Counter()
        self.retryable: set[str] = set()  # failure reasons worth submitting again
        self.credits = 0.0  # used by succeeded tasks
        self.reserved = 0.0  # reserved by every submission seen

    def record(self, event: BatchEvent) -> None:
        """Count an event."""
        if isinstance(event, Submitted):
            self.submitted += 1
            usage = event.snapshot.usage
            if usage is not None and not event.resumed:
                self.reserved += usage.credits_reserved or 0.0
        elif isinstance(event, Succeeded):
            self.succeeded += 1
            usage = event.snapshot.usage
            if usage is not None:
                self.credits += usage.credits_used or usage.credits_reserved or 0.0
        elif isinstance(event, Failed):
            reason = str(getattr(event.error, "code", None) or type(event.error).__name__)
            self.failed[reason] += 1
            if worth_retrying(event.error):
                self.retryable.add(reason)

    @property
    def done(self) -> int:
        """Requests with a final outcome."""
        return self.succeeded + sum(self.failed.values())

    def line(self) -> str:
        """``3 submitted, 2 running, 1 done, 0 failed``."""
        failed = sum(self.failed.values())
        running = self.submitted - self.succeeded - failed
        return (f"{self.submitted} submitted, {max(running, 0)} running, "
                f"{self.succeeded} done, {failed} failed")


Row = tuple[str, str | None]  # an item's prompt and its own key


def label(index: int, key: str | None) -> str:
    """``#3`` or ``#3 [sku-123]``: how an item is named in the command's lines."""
    return f"#{index + 1}" + (f" [{key}]" if key else "")


class PlainDisplay:
    """One line per submission and outcome; for logs, pipes and CI."""

    def __init__(self, rows: list[Row], out: TextIO = sys.stdout) -> None:
        self.tally = Tally(len(rows))
        self._prompts = [prompt for prompt, _ in rows]
        self._out = out

    def __enter__(self) -> PlainDisplay:
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def event(self, event: BatchEvent) -> None:
        """Show one event."""
        self.tally.record(event)
        prefix = f"[{self.tally.done}/{self.tally.total}] {label(event.index, event.key)}"
        if isinstance(event, Submitted):
            shown = excerpt(self._prompts[event.index])
            if event.resumed:
                snap = event.snapshot
                text = (f"re-attached {event.task_id} ({snap.status.value} {snap.progress}%,"
                        f" paid in an earlier run) {shown!r}")
            else:
                text = f"submitted as {event.task_id} {shown!r}"
            print(f"{prefix} {text}", file=self._out, flush=True)
        elif isinstance(event, Succeeded):
            where = event.path or event.snapshot.video_url
            print(f"{prefix} done: {where}", file=self._out, flush=True)
        elif isinstance(event, Failed):
            print(f"{prefix} FAILED: {event.error}", file=self._out, flush=True)


class RichDisplay:
    """An overall bar plus one bar per running task, as many as the terminal holds."""

    def __init__(self, rows: list[Row]) -> None:
        from rich.progress import BarColumn, Progress, TaskProgressColumn, TextColumn

        self.tally = Tally(len(rows))
        self._prompts = [prompt for prompt, _ in rows]
        self._progress = Progress(TextColumn("{task.description}"), BarColumn(),
                                  TaskProgressColumn(), TextColumn("{task.fields[note]}"))
        self._overall = self._progress.add_task("batch", total=len(rows), note="")
        self._rows: dict[int, Any] = {}
        self._hidden: list[int] = []  # running rows that do not fit, oldest first
        self._room = max(shutil.get_terminal_size().lines - 4, 3)

    def __enter__(self) -> RichDisplay:
        self._progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._progress.stop()

    def event(self, event: BatchEvent) -> None:
        """Move the bars for one event."""
        self.tally.record(event)
        row = self._rows.get(event.index)
        if isinstance(event, Submitted) and row is None:
            visible = len(self._rows) - len(self._hidden) < self._room
            note = "re-attached (paid earlier)" if event.resumed else event.task_id
            self._rows[event.index] = self._progress.add_task(
                f"{label(event.index, event.key)} {excerpt(self._prompts[event.index])}",
                total=100,
                completed=event.snapshot.progress, note=note, visible=visible)
            if not visible:
                self._hidden.append(event.index)
        elif isinstance(event, Progressed) and row is not None:
            self._progress.update(row, completed=event.progress, note=event.status.value)
        elif isinstance(event, Succeeded | Failed):
            if row is not None:
                self._progress.remove_task(row)
                del self._rows[event.index]
                if event.index in self._hidden:
                    self._hidden.remove(event.index)
                elif self._hidden:
                    self._progress.update(self._rows[self._hidden.pop(0)], visible=True)
            if isinstance(event, Failed):
                self._progress.console.print(
                    f"{label(event.index, event.key)} failed: {event.error}")
        more = f" (+{len(self._hidden)} more not shown)" if self._hidden else ""
        self._progress.update(self._overall, completed=self.tally.done,
                              note=self.tally.line() + more)


def make_display(rows: list[Row]) -> PlainDisplay | RichDisplay:
    """Rich bars on a terminal when rich is installed, else plain lines."""
    if sys.stdout.isatty():
        try:
            return RichDisplay(rows)
        except ImportError:
            pass
    return PlainDisplay(rows)


class GenerateProgress:
    """``generate``'s progress: a bar on a terminal, a line per change elsewhere."""

    def __init__(self) -> None:
        self._bar: Any = None
        if sys.stdout.isatty():
            try:
                from rich.progress import BarColumn, Progress, TaskProgressColumn, TextColumn
            except ImportError:
                return
            self._bar = Progress(TextColumn("{task.fields[status]}"), BarColumn(),
                                 TaskProgressColumn())
            self._task = self._bar.add_task("clip", total=100, status="pending")

    def __enter__(self) -> GenerateProgress:
        if self._bar is not None:
            self._bar.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._bar is not None:
            self._bar.stop()

    def show(self, status: str, progress: int) -> None:
        """Show one update."""
        if self._bar is not None:
            self._bar.update(self._task, completed=progress, status=status)
        else:
            print(f"  {status} {progress}%", flush=True)
