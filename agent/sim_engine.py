"""The simulator's scheduler pieces: a FIFO batch gate (``max_num_seqs``) and an LRU prefix cache."""

from __future__ import annotations

import asyncio
from collections import OrderedDict, deque


class BatchGate:
    """At most ``limit`` holders at once; the rest wait in FIFO order.

    ``running`` and ``waiting`` are exact at every moment: a released slot passes straight to the oldest
    waiter, and a waiter that is cancelled leaves the queue (or passes on a slot it was just handed).
    """

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.running = 0
        self._waiters: deque[asyncio.Future[None]] = deque()

    @property
    def waiting(self) -> int:
        return len(self._waiters)

    async def acquire(self) -> None:
        if self.running < self.limit and not self._waiters:
            self.running += 1
            return
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append(fut)
        try:
            await fut
        except asyncio.CancelledError:
            if fut.done() and not fut.cancelled():
                self.release()  # the slot was ours already: hand it on
            else:
                self._waiters.remove(fut)
            raise

    def release(self) -> None:
        while self._waiters:
            fut = self._waiters.popleft()
            if not fut.done():
                fut.set_result(None)  # the slot moves to the waiter; `running` is unchanged
                return
        self.running -= 1

    def set_limit(self, limit: int) -> None:
        """Change the limit; a larger one admits waiters at once, a smaller one lets the excess finish."""
        self.limit = limit
        while self.running < self.limit and self._waiters:
            fut = self._waiters.popleft()
            if not fut.done():
                self.running += 1
                fut.set_result(None)


class PrefixCache:
    """Remembers recently seen prompt prefixes (bounded LRU)."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self._entries: OrderedDict[str, None] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    def seen(self, prefix: str) -> bool:
        """Whether ``prefix`` was seen before; either way it becomes the most recent entry."""
        entries = self._entries
        if prefix in entries:
            entries.move_to_end(prefix)
            return True
        entries[prefix] = None
        while len(entries) > self.capacity:
            entries.popitem(last=False)
        return False

    def clear(self) -> None:
        self._entries.clear()
