# -*- test-case-name: tests.mirror.test_mirror,tests.store.test_beacon -*-
"""
Rendered simple pages, grouped by project so that a commit drops exactly the
pages of the projects it touched (all of them when an index config changed).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from devpi_tx.domain import keys
from devpi_tx.store.interfaces import IStore
from devpi_tx.web.paths import LIST

Page = tuple[bytes, bytes, tuple[tuple[bytes, bytes], ...], float | None]
"""Content type, body, extra headers, expiry time (C{None}: until a commit)."""


def page_groups(changes: dict[str, Any]) -> set[str] | None:
    """
    The groups of pages a commit's changes touch: the projects whose
    documents changed, L{LIST} when projects came or went; C{None} for all
    pages (an index config changed).
    """
    projects: set[str] = set()
    for key in changes:
        parsed = keys.parse(key)
        if parsed is None:
            continue
        if parsed.kind == "index":
            return None
        if parsed.kind in ("project", "version", "mirror"):
            projects.add(parsed.project)
            if parsed.kind == "project":
                projects.add(LIST)
    return projects


class PageCache:
    def __init__(self, store: IStore, clock: Callable[[], float] = time.monotonic, max_pages: int = 50000) -> None:
        self._clock = clock
        self._pages: dict[str, dict[tuple[Any, ...], Page]] = {}
        self._dropped: dict[str, int] = {}
        self._dropped_before: dict[str, int] = {}
        self._all_dropped = -1
        self._count = 0
        self._max = max_pages
        self.hits = 0
        self.misses = 0
        store.subscribe(self._changed)

    def _changed(self, serial: int, changes: dict[str, Any]) -> None:
        projects = page_groups(changes)
        if projects is None:
            self.clear(serial)
            return
        for project in projects:
            self._count -= len(self._pages.pop(project, {}))
            self._dropped_before[project] = self._dropped.get(project, -1)
            self._dropped[project] = serial

    def clear(self, serial: int) -> None:
        self._pages.clear()
        self._dropped.clear()
        self._dropped_before.clear()
        self._count = 0
        self._all_dropped = serial

    def get(self, project: str, key: tuple[Any, ...]) -> Page | None:
        found = self._pages.get(project, {}).get(key)
        if found is not None and found[3] is not None and found[3] <= self._clock():
            found = None
        if found is None:
            self.misses += 1
        else:
            self.hits += 1
        return found

    def put(self, project: str, key: tuple[Any, ...], serial: int, value: Page, own_write: int | None = None) -> bool:
        """
        Keep C{value}, computed at C{serial}, unless a newer commit dropped
        it; whether it was kept.  C{own_write} is the serial of a commit the
        computation made itself and whose result C{value} shows (a mirror
        page it fetched and stored): that one does not make it stale.
        """
        if serial < self._all_dropped:
            return False
        dropped = self._dropped.get(project, -1)
        if serial < dropped and not (dropped == own_write and self._dropped_before.get(project, -1) <= serial):
            return False
        if self._count >= self._max:
            self.clear(self._all_dropped)
        group = self._pages.setdefault(project, {})
        if key not in group:
            self._count += 1
        group[key] = value
        return True
