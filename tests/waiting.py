"""Waiting on conditions, never on clocks: tests poll what they need to see, and the
timeout is a guard against a hung process (generous, for a loaded two-core machine)."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")
GUARD_S = 120.0


def wait_for(predicate: Callable[[], T], what: str, timeout: float = GUARD_S) -> T:
    """The first truthy value of `predicate`; AssertionError naming `what` after `timeout`."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(0.1)
