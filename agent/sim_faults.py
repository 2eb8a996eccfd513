"""Fault injection for the vLLM simulator: per-request faults drawn from a seeded RNG, and crash strategies."""

from __future__ import annotations

import os
import random
from collections.abc import Callable
from enum import Enum
from typing import Protocol


class Fault(Enum):
    NONE = "none"
    ERROR = "error"  # answer 500 with vLLM's error body
    HANG = "hang"  # never answer; hold until the client goes away


class FaultDice:
    """Decides each inference request's fault; the same seed gives the same sequence of decisions."""

    def __init__(self, seed: int) -> None:
        self._rng = random.Random(seed)  # noqa: S311 - fault injection, not cryptography

    def reseed(self, seed: int) -> None:
        self._rng.seed(seed)

    def roll(self, error_rate: float, hang_rate: float) -> Fault:
        if error_rate <= 0 and hang_rate <= 0:
            return Fault.NONE  # no draw: requests served while faults are off do not advance the sequence
        r = self._rng.random()
        if r < error_rate:
            return Fault.ERROR
        if r < error_rate + hang_rate:
            return Fault.HANG
        return Fault.NONE


class CrashStrategy(Protocol):
    """What "the process dies" means: `ExitProcess` for a real server, `CallbackCrash` in tests."""

    def crash(self) -> None: ...


class ExitProcess:
    """Exit at once with status 1, as a crashing vLLM would: no cleanup, in-flight requests die."""

    def crash(self) -> None:
        os._exit(1)


class CallbackCrash:
    """Call ``callback`` instead of exiting (an in-process simulator closes its listener and connections)."""

    def __init__(self, callback: Callable[[], None]) -> None:
        self._callback = callback

    def crash(self) -> None:
        self._callback()
