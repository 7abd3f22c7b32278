# -*- test-case-name: tests.store.test_store -*-
"""
One piece of work per key at a time: callers asking for a key that is
already being worked on wait for the same result.
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine, Hashable
from typing import Any, TypeVar

from twisted.internet.defer import Deferred
from twisted.python.failure import Failure

T = TypeVar("T")


class Coalescer:
    def __init__(self) -> None:
        self._waiting: dict[Hashable, list[Deferred[Any]]] = {}

    def busy(self, key: Hashable) -> bool:
        return key in self._waiting

    def run(self, key: Hashable, start: Callable[[], Coroutine[Any, Any, T]]) -> Deferred[T]:
        """The result of C{start()}, started unless work for C{key} is under way."""
        mine: Deferred[T] = Deferred()
        if key in self._waiting:
            self._waiting[key].append(mine)
            return mine
        self._waiting[key] = [mine]

        def finish(result: Any) -> None:
            for waiter in self._waiting.pop(key, []):
                if isinstance(result, Failure):
                    waiter.errback(result)
                else:
                    waiter.callback(result)

        Deferred.fromCoroutine(start()).addBoth(finish)
        return mine
