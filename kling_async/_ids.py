"""Identifiers: task ids and idempotency keys, checked before anything is sent."""

from __future__ import annotations

import secrets

TASK_ID_PREFIX = "task-unified-"
_KEY_ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789._-"


def new_idempotency_key() -> str:
    """A fresh ``Idempotency-Key``: ``kling-`` and 26 random characters of
    ``[A-Za-z0-9_-]`` (156 bits, from one call to the system's random source)."""
    return "kling-" + secrets.token_urlsafe(20)[:26]


def check_idempotency_key(key: object) -> str:
    """Refuse keys the API would refuse, before any request."""
    if not isinstance(key, str) or not 16 <= len(key) <= 96 or any(
            c not in _KEY_ALPHABET for c in key):
        raise ValueError("idempotency_key must be 16-96 characters of [A-Za-z0-9._-]")
    return key


def check_task_id(task_id: str) -> str:
    """Refuse ids that cannot be EvoLink task ids, before any request."""
    if not isinstance(task_id, str):
        raise TypeError(f"task_id must be a string, got {type(task_id).__name__}")
    if not task_id.startswith(TASK_ID_PREFIX) or len(task_id) > 128 or any(
            c.isspace() or c == "/" for c in task_id):
        raise ValueError(f"{task_id!r} is not a task id: ids start with {TASK_ID_PREFIX!r}")
    return task_id
