"""
The newest committed serial of a server dir, shared by its processes through
an 8-byte memory-mapped file: a request checks it without a system call and
polls the database only when another process committed something.
"""

from __future__ import annotations

import fcntl
import mmap
import os
import struct

_FORMAT = "<q"


class SerialBeacon:
    def __init__(self, path: str) -> None:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            if os.fstat(fd).st_size < 8:
                os.pwrite(fd, struct.pack(_FORMAT, -1), 0)
            self._map = mmap.mmap(fd, 8)
        except BaseException:
            os.close(fd)
            raise
        self._fd = fd

    def read(self) -> int:
        return int(struct.unpack_from(_FORMAT, self._map)[0])

    def update(self, serial: int) -> None:
        """Raise the shared serial to C{serial} (never lowers it)."""
        fcntl.flock(self._fd, fcntl.LOCK_EX)
        try:
            if serial > self.read():
                struct.pack_into(_FORMAT, self._map, 0, serial)
        finally:
            fcntl.flock(self._fd, fcntl.LOCK_UN)

    def close(self) -> None:
        self._map.close()
        os.close(self._fd)
