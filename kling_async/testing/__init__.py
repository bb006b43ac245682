"""Test aids for kling_async users: a faithful EvoLink server on loopback.

``Emulator`` serves the same HTTP API as EvoLink (create, task reads, batch reads,
credits, result files, callbacks) with the documented validation and errors, a credits
ledger, account limits, idempotency keys and fault injection, on ``127.0.0.1`` only.
It never imports the SDK's wire converter, so the two sides check each other.
"""

from ._emulator import DEFAULT_API_KEY as DEFAULT_API_KEY
from ._emulator import Emulator as Emulator
from ._faults import Fault as Fault
from ._state import Statistics as Statistics

__all__ = ["DEFAULT_API_KEY", "Emulator", "Fault", "Statistics"]
