# -*- test-case-name: tests.store.test_beacon -*-
"""
The newest committed serial of a server dir, shared by its processes through
a memory-mapped file: a request checks it without a system call and polls the
database only when another process committed something.

Next to the serial, a ring of the latest L{SLOTS} commits says which groups
(of cached pages: project names) each one touched, so that a process that has
not polled yet can still answer a cached page no missed commit touched.
Groups are kept as 8-byte hashes; a collision only makes a page wait for the
poll.  A commit that touched more than L{GROUPS_PER_SLOT} groups, or whose
groups are unknown, is marked as touching everything.
"""

from __future__ import annotations

import fcntl
import hashlib
import mmap
import os
import struct
from collections.abc import Iterable

SLOTS = 512
GROUPS_PER_SLOT = 6
_HEADER = 64
_SLOT = struct.Struct(f"<qq{GROUPS_PER_SLOT}Q")  # serial, flags, group hashes (0: none)
_SIZE = _HEADER + SLOTS * _SLOT.size
_SERIAL = struct.Struct("<q")
_ALL = 1


def group_hash(group: str) -> int:
    """The 8-byte hash of a group name (never 0, which marks an empty place)."""
    return int.from_bytes(hashlib.blake2b(group.encode("utf-8"), digest_size=8).digest(), "little") or 1


class SerialBeacon:
    def __init__(self, path: str) -> None:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            try:
                size = os.fstat(fd).st_size
                if size < 8:
                    os.pwrite(fd, _SERIAL.pack(-1), 0)
                if size < _SIZE:  # new, or written by an older version: slots start unknown
                    empty = _SLOT.pack(-1, 0, *[0] * GROUPS_PER_SLOT)
                    os.pwrite(fd, bytes(_HEADER - 8) + empty * SLOTS, 8)
            finally:
                fcntl.flock(fd, fcntl.LOCK_UN)
            self._map = mmap.mmap(fd, _SIZE)
        except BaseException:
            os.close(fd)
            raise
        self._fd = fd

    def read(self) -> int:
        return int(_SERIAL.unpack_from(self._map)[0])

    def update(self, serial: int, groups: Iterable[str] | None = None) -> None:
        """
        Record commit C{serial} and the groups it touched (C{None}: all of
        them), then raise the shared serial to C{serial} (never lowers it).
        """
        hashes = sorted({group_hash(g) for g in groups}) if groups is not None else None
        flags = 0
        if hashes is None or len(hashes) > GROUPS_PER_SLOT:
            flags, hashes = _ALL, []
        offset = _HEADER + (serial % SLOTS) * _SLOT.size
        fcntl.flock(self._fd, fcntl.LOCK_EX)
        try:
            # the slot's serial last: a reader that finds it complete finds its groups
            _SERIAL.pack_into(self._map, offset, -1)
            _SLOT.pack_into(self._map, offset, -1, flags, *hashes, *[0] * (GROUPS_PER_SLOT - len(hashes)))
            _SERIAL.pack_into(self._map, offset, serial)
            if serial > self.read():
                _SERIAL.pack_into(self._map, 0, serial)
        finally:
            fcntl.flock(self._fd, fcntl.LOCK_UN)

    def touched(self, known: int, newest: int) -> frozenset[int] | None:
        """
        The group hashes touched by the commits after C{known} up to
        C{newest}; C{None} when that is not known (a commit touched
        everything, or its slot is missing or was reused since).
        """
        if newest - known > SLOTS:
            return None
        found: set[int] = set()
        for serial in range(known + 1, newest + 1):
            offset = _HEADER + (serial % SLOTS) * _SLOT.size
            slot_serial, flags, *hashes = _SLOT.unpack_from(self._map, offset)
            if slot_serial != serial or flags & _ALL:
                return None
            found.update(h for h in hashes if h)
            if _SERIAL.unpack_from(self._map, offset)[0] != serial:  # rewritten while read
                return None
        return frozenset(found)

    def close(self) -> None:
        self._map.close()
        os.close(self._fd)
