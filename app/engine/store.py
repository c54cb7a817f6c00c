"""A bounded in-memory store of analyses: least recently used out first, sized in bytes."""

from __future__ import annotations

import threading
from collections import OrderedDict
from typing import Generic, Protocol, TypeVar


class Sized(Protocol):
    id: str

    @property
    def nbytes(self) -> int: ...


T = TypeVar("T", bound=Sized)


class AnalysisStore(Generic[T]):
    """Keeps analyses while their bytes fit ``budget_bytes``; items grow (renders are cached) and are re-measured."""

    def __init__(self, budget_bytes: int) -> None:
        self.budget_bytes = budget_bytes
        self._items: OrderedDict[str, T] = OrderedDict()
        self._sizes: dict[str, int] = {}
        self._total = 0
        self._lock = threading.Lock()

    def get(self, key: str) -> T | None:
        with self._lock:
            item = self._items.get(key)
            if item is not None:
                self._items.move_to_end(key)
            return item

    def put(self, item: T) -> None:
        with self._lock:
            if item.id in self._items:
                self._total -= self._sizes[item.id]
            self._items[item.id] = item
            self._items.move_to_end(item.id)
            self._sizes[item.id] = item.nbytes
            self._total += self._sizes[item.id]
            self._evict()

    def remeasure(self, key: str) -> None:
        """Call after an item grew (a render was cached) so the budget still holds."""
        with self._lock:
            item = self._items.get(key)
            if item is None:
                return
            self._total += item.nbytes - self._sizes[key]
            self._sizes[key] = item.nbytes
            self._evict()

    @property
    def total_bytes(self) -> int:
        return self._total

    def __len__(self) -> int:
        return len(self._items)

    def _evict(self) -> None:
        # The newest item stays even when it alone exceeds the budget: the user who just asked for it gets it.
        while self._total > self.budget_bytes and len(self._items) > 1:
            key, _ = self._items.popitem(last=False)
            self._total -= self._sizes.pop(key)
