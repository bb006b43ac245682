"""The public surface: a sorted, complete __all__, public module names, a real version."""

from __future__ import annotations

from importlib.metadata import version

import kling_async
import kling_async.testing


def test_all_is_sorted_and_complete() -> None:
    names = kling_async.__all__
    assert names == sorted(names)
    public = {n for n in vars(kling_async) if not n.startswith("_")} - {"annotations"}
    assert public <= set(names) | {"package_version", "testing"}
    for name in names:
        assert hasattr(kling_async, name), name


def test_exported_classes_report_the_public_module() -> None:
    for name in kling_async.__all__:
        obj = getattr(kling_async, name)
        if isinstance(obj, type):
            assert obj.__module__ == "kling_async", name


def test_public_names_have_docstrings() -> None:
    for module in (kling_async, kling_async.testing):
        for name in module.__all__:
            obj = getattr(module, name)
            if isinstance(obj, type) or callable(obj):
                assert obj.__doc__, name


def test_version_comes_from_metadata() -> None:
    assert kling_async.__version__ == version("kling-async")


def test_testing_is_not_imported_by_the_package() -> None:
    import subprocess
    import sys

    code = "import sys, kling_async; print('aiohttp.web' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout.strip()
    assert out == "False"
