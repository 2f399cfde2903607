"""How requests are spread over instances: like the proxy, by predicted load, or round robin."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TypeVar

ROUTING = ("least_loaded", "round_robin")
T = TypeVar("T")


class Picker:
    """Picks one of ``items``: the smallest ``load`` (ties: lowest index), or the next in turn."""

    def __init__(self, items: Sequence[T], policy: str, load: Callable[[T], float]) -> None:
        if policy not in ROUTING:
            raise ValueError(f"unknown routing policy {policy!r}; choose one of {', '.join(ROUTING)}")
        self._items = list(items)
        self._policy = policy
        self._load = load
        self._turn = 0

    def pick(self) -> T:
        if len(self._items) == 1:
            return self._items[0]
        if self._policy == "round_robin":
            item = self._items[self._turn % len(self._items)]
            self._turn += 1
            return item
        return min(self._items, key=self._load)
