"""The installed version, read from package metadata."""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version


def package_version() -> str:
    """Return the installed distribution's version (``0+unknown`` from a bare checkout)."""
    try:
        return version("kling-async")
    except PackageNotFoundError:
        return "0+unknown"
