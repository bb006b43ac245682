"""Exception groups from task groups: hand users the one exception they expect."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def single_exceptions() -> Iterator[None]:
    """Re-raise a lone exception out of an exception group unchanged.

    A Client block contains a task group, so without this a ``ValueError`` raised in the
    user's own code would come out wrapped in an ``ExceptionGroup``. Genuine multiples
    stay grouped, with a note.
    """
    try:
        yield
    except BaseExceptionGroup as group:
        leaves = _leaves(group)
        if len(leaves) == 1:
            only = leaves[0]
            context = only.__context__
            try:
                raise only from only.__cause__
            finally:
                only.__context__ = context
                del only, leaves
        group.add_note("kling_async: several tasks failed at once; see each exception below")
        raise


def _leaves(group: BaseExceptionGroup[BaseException]) -> list[BaseException]:
    found: list[BaseException] = []
    for exc in group.exceptions:
        if isinstance(exc, BaseExceptionGroup):
            found.extend(_leaves(exc))
        else:
            found.append(exc)
    return found
