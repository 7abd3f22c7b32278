# -*- test-case-name: tests.admin.test_dump -*-
"""
What export and import share of devpi-server's dump format (spec section 8):
its names and limits, errors, progress, statistics, and the rules that
order indexes and read versions from file names.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TextIO

from devpi_tx.model.names import split_filename

DUMPVERSION = "2"
DATAINDEX = "dataindex.json"
USER_KEYS = frozenset(
    ["username", "pwhash", "pwsalt", "email", "title", "description", "custom_data", "created", "modified", "indexes"]
)
FILE_TYPES = ("releasefile", "doczip", "toxresult")


class DumpError(Exception):
    """An export or import cannot be done; the message says which entry is at fault."""


@dataclass(frozen=True)
class Progress:
    """
    How far an export or import got.  C{phase} is C{"export"}, C{"verify"}
    (import: hashing the dump's files) or C{"import"}; C{done} is set on
    the last call of a phase.
    """

    phase: str
    files: int
    bytes: int
    total_files: int
    total_bytes: int
    done: bool = False


ProgressCallback = Callable[[Progress], None]


@dataclass
class ExportStats:
    users: int = 0
    indexes: int = 0
    projects: int = 0
    versions: int = 0
    files: int = 0
    bytes: int = 0
    warnings: list[str] = field(default_factory=list)


@dataclass
class ImportStats(ExportStats):
    skipped: list[str] = field(default_factory=list)


def progress_printer(stream: TextIO | None = None, every: int = 100) -> ProgressCallback:
    """
    A progress callback for the command line: a bar redrawn in place on a
    terminal, otherwise a plain line every C{every} files and per phase end.
    """
    out = sys.stderr if stream is None else stream
    tty = out.isatty()

    def show(p: Progress) -> None:
        text = f"{p.phase}: {p.files}/{p.total_files} files, {p.bytes / 1e6:.1f}/{p.total_bytes / 1e6:.1f} MB"
        if tty:
            filled = 30 * p.bytes // p.total_bytes if p.total_bytes else (30 if p.done else 0)
            out.write(f"\r[{'#' * filled}{'.' * (30 - filled)}] {text}" + ("\n" if p.done else ""))
        elif p.done or (p.files and p.files % every == 0):
            out.write(text + "\n")
        out.flush()

    return show


class Meter:
    def __init__(self, callback: ProgressCallback | None, phase: str, files: int, size: int) -> None:
        self._callback = callback
        self._phase = phase
        self._totals = (files, size)
        self.files = self.bytes = 0
        self._report(False)

    def add(self, size: int) -> None:
        self.files += 1
        self.bytes += size
        self._report(False)

    def finish(self) -> None:
        self._report(True)

    def _report(self, done: bool) -> None:
        if self._callback is not None:
            self._callback(Progress(self._phase, self.files, self.bytes, *self._totals, done=done))


def version_of(filename: str) -> str:
    """The version in a release, doc or tox result file name; C{""} if there is none."""
    basename = filename.rsplit("/", 1)[-1].split(".toxresult-", 1)[0]
    if basename.endswith(".doc.zip"):
        stem = basename[: -len(".doc.zip")]
        return stem.rpartition("-")[2] if "-" in stem else ""
    found = split_filename(basename)
    return found[1] if found else ""


def hard_link(source: str, target: str, warnings: list[str]) -> int | None:
    """Hard link C{target} to C{source}; its size, or C{None} (and a warning) if that fails."""
    try:
        os.link(source, target)
    except OSError as e:
        warnings.append(f"cannot hard link {source} ({e.strerror}), copying files instead")
        return None
    return os.path.getsize(target)


def order_indexes(bases: Mapping[str, Sequence[str]]) -> tuple[list[str], list[list[str]]]:
    """
    The indexes of C{bases} (index -> its bases) ordered so that bases come
    first, and the cycles that had to be broken for that (each as a path
    that ends where it starts).  Bases outside C{bases} and self references
    are ignored.  Every index is visited once, so this always ends.
    """
    order: list[str] = []
    state: dict[str, int] = {}  # 1: on the current path, 2: placed
    cycles: list[list[str]] = []
    for start in bases:
        if start in state:
            continue
        state[start] = 1
        path = [start]
        stack: list[Iterator[str]] = [iter(bases[start])]
        while stack:
            for base in stack[-1]:
                if base not in bases or base == path[-1] or state.get(base) == 2:
                    continue
                if state.get(base) == 1:
                    cycles.append([*path[path.index(base) :], base])
                    continue
                state[base] = 1
                path.append(base)
                stack.append(iter(bases[base]))
                break
            else:
                stack.pop()
                node = path.pop()
                state[node] = 2
                order.append(node)
    return order, cycles
