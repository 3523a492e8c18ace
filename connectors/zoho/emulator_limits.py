"""Zoho CRM API limits for the emulator: editions, the rolling 24-hour credit window, call costs.

From /work/shared/api/zoho.md §4 ("notes §4"): credits come back 24 hours after the call that spent
them (K93); a plain call costs 1 credit; the concurrency cap depends on the edition. Going over
either answers HTTP 429.
"""

from __future__ import annotations

import math
import threading
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

CREDIT_WINDOW = 86400.0  # seconds: the rolling window credits are counted over (K93)
RECORDS_PER_CREDIT = 10  # records per credit in a batch write: UNCONFIRMED third-party figure (notes §4)


@dataclass(frozen=True)
class Edition:
    """Credits per 24 h are `base + users * per_user`, capped at `max_credits` (None: no cap)."""

    base_credits: int
    credits_per_user: int
    max_credits: int | None
    concurrency: int  # requests in flight at once, per org

    def credits(self, users: int) -> int:
        total = self.base_credits + users * self.credits_per_user
        return total if self.max_credits is None else min(total, self.max_credits)


# Credits from K93 (the maxima quoted there); concurrency from Airbyte's table (notes §4).
EDITIONS = {
    "free": Edition(5_000, 0, 5_000, 5),
    "standard": Edition(50_000, 250, 100_000, 10),
    "professional": Edition(50_000, 500, 1_000_000, 15),
    "enterprise": Edition(50_000, 1_000, 2_000_000, 20),
    "ultimate": Edition(50_000, 2_000, None, 25),
}

# Credits per call by kind; a write costs `write` per started block of 10 records (notes §4).
DEFAULT_COSTS = {"read": 1, "write": 1, "delete": 1, "watch": 1, "settings": 1}


def write_cost(per_block: int, records: int) -> int:
    """Credits for a batch insert/update/upsert of `records` records: 1 per started 10, at least 1."""
    return per_block * max(1, math.ceil(records / RECORDS_PER_CREDIT))


class CreditWindow:
    """Credits spent in the last 24 hours, each returning 24 hours after its call (K93)."""

    def __init__(self, clock: Callable[[], float], budget: int) -> None:
        self.clock = clock
        self.budget = budget
        self._lock = threading.Lock()
        self._spent: deque[tuple[float, int]] = deque()  # (epoch seconds, credits), oldest first

    def used(self) -> int:
        with self._lock:
            self._forget(self.clock())
            return sum(cost for _, cost in self._spent)

    def charge(self, cost: int) -> float | None:
        """Spend `cost` credits now; if they are not there, spend nothing and return the wait in seconds."""
        now = self.clock()
        with self._lock:
            self._forget(now)
            used = sum(c for _, c in self._spent)
            if used + cost <= self.budget:
                self._spent.append((now, cost))
                return None
            for at, spent in self._spent:  # the wait until enough of the oldest credits come back
                used -= spent
                if used + cost <= self.budget:
                    return max(1.0, at + CREDIT_WINDOW - now)
            return CREDIT_WINDOW  # `cost` alone exceeds the budget

    def clear(self) -> None:
        with self._lock:
            self._spent.clear()

    def _forget(self, now: float) -> None:
        while self._spent and self._spent[0][0] <= now - CREDIT_WINDOW:
            self._spent.popleft()
