# -*- test-case-name: tests.store.test_tempfiles,tests.web.test_zipbomb -*-
"""
Files on their way into the file store: copied aside under a temporary name
while hashed, fsynced, then renamed into place by the store at commit.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import time
import uuid
import zipfile
import zlib
from dataclasses import dataclass
from typing import BinaryIO

from zope.interface import implementer

from devpi_tx.store.interfaces import IFileStore

CHUNK = 64 * 1024


def unlink_if_present(path: str) -> None:
    """Remove C{path}; already gone is fine."""
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


@dataclass(frozen=True)
class PreparedFile:
    """A fsynced temporary file with its sha256 and size."""

    temp_path: str
    sha256: str
    size: int

    def discard(self) -> None:
        unlink_if_present(self.temp_path)


def temp_dir(files_dir: str) -> str:
    path = os.path.join(files_dir, ".tmp")
    os.makedirs(path, exist_ok=True)
    return path


STALE_TEMP_AGE = 3600.0
"""
Seconds after its last change that a temporary file counts as abandoned even
when its writer still runs: a write keeps its file busy (an upload is parsed
in one go once its body has arrived, a download writes as it receives).
"""


def _start_time(pid: int) -> str | None:
    """
    When process C{pid} started, in clock ticks since boot (C{/proc/PID/stat}
    field 22), or C{None} when there is no such process: with the pid it
    names one process for good, where a pid alone may be reused.
    """
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
    except OSError:
        return None
    fields = stat.rsplit(b")", 1)[-1].split()
    return fields[19].decode() if len(fields) > 19 else None


def _owner() -> str:
    pid = os.getpid()
    return f"{pid}.{_start_time(pid) or 0}"


def temp_name(files_dir: str) -> str:
    """A new temporary file name that records its writer: the process's pid and start time."""
    return os.path.join(temp_dir(files_dir), f"{uuid.uuid4().hex}-{_owner()}-tmp")


def _owner_alive(owner: str) -> bool:
    pid, _, started = owner.partition(".")
    if not pid.isdigit() or not started:
        return False
    return _start_time(int(pid)) == started


def remove_stale_temp_files(files_dir: str, now: float | None = None, max_age: float | None = None) -> list[str]:
    """
    Remove the temporary files that no live write owns: those whose writer
    process is gone (a crash, a kill; a reused pid does not count as the
    writer), names of any other form, and, with C{max_age}, files nobody
    changed for that long.  Their metadata never committed.  Returns the
    removed names.
    """
    path = os.path.join(files_dir, ".tmp")
    removed: list[str] = []
    if not os.path.isdir(path):
        return removed
    now = time.time() if now is None else now
    for name in os.listdir(path):
        full = os.path.join(path, name)
        parts = name.split("-")
        stale = len(parts) != 3 or parts[2] != "tmp" or not _owner_alive(parts[1])
        if not stale and max_age is not None:
            try:
                stale = now - os.stat(full).st_mtime > max_age
            except FileNotFoundError:
                continue
        if stale:
            try:
                os.unlink(full)
                removed.append(name)
            except (FileNotFoundError, IsADirectoryError):
                pass
    return removed


def prepare_stream(files_dir: str, source: BinaryIO) -> PreparedFile:
    """Copy C{source} to a temporary file, hashing it on the way."""
    path = temp_name(files_dir)
    digest = hashlib.sha256()
    size = 0
    try:
        with open(path, "wb") as out:
            while chunk := source.read(CHUNK):
                digest.update(chunk)
                out.write(chunk)
                size += len(chunk)
            out.flush()
            os.fsync(out.fileno())
    except BaseException:
        os.unlink(path)
        raise
    return PreparedFile(path, digest.hexdigest(), size)


def prepare_bytes(files_dir: str, data: bytes, fsync: bool = True) -> PreparedFile:
    path = temp_name(files_dir)
    with open(path, "wb") as out:
        out.write(data)
        out.flush()
        if fsync:
            os.fsync(out.fileno())
    return PreparedFile(path, hashlib.sha256(data).hexdigest(), len(data))


def prepare_copy(files_dir: str, source_path: str) -> PreparedFile:
    """A hard link to (or else a copy of) a stored file, for a push."""
    path = temp_name(files_dir)
    try:
        os.link(source_path, path)
    except OSError:
        shutil.copyfile(source_path, path)
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK):
            digest.update(chunk)
    return PreparedFile(path, digest.hexdigest(), os.path.getsize(path))


METADATA_LIMIT = 4 * 1024 * 1024
"""
The most bytes of a wheel's C{METADATA} that are read: real ones are a few
KiB (long READMEs reach a few hundred); a wheel is a zip, so a small upload
can inflate to gigabytes.
"""


class MetadataTooLarge(Exception):
    """A wheel's C{METADATA} is larger than the limit it was read with."""

    def __init__(self, limit: int) -> None:
        super().__init__(limit)
        self.limit = limit


def read_limited(member: BinaryIO, limit: int) -> bytes:
    """
    Read C{member} to its end, in chunks, taking at most C{limit + 1} bytes
    from it whatever it claims its size is.

    @raise MetadataTooLarge: when there are more than C{limit} bytes.
    """
    chunks: list[bytes] = []
    total = 0
    while total <= limit:
        chunk = member.read(min(CHUNK, limit + 1 - total))
        if not chunk:
            return b"".join(chunks)
        chunks.append(chunk)
        total += len(chunk)
    raise MetadataTooLarge(limit)


def read_wheel_metadata(path: str, limit: int = METADATA_LIMIT) -> bytes | None:
    """
    The C{METADATA} member of a wheel's C{.dist-info} directory, or C{None}
    if C{path} is not a readable wheel.  At most C{limit + 1} inflated
    bytes are read: a member that declares more is refused unread, one that
    declares less but inflates to more is cut off.

    @raise MetadataTooLarge: the member holds more than C{limit} bytes.
    @raise OSError: C{path} cannot be read.
    """
    try:
        with zipfile.ZipFile(path) as zf:
            infos = [
                i for i in zf.infolist() if i.filename.count("/") == 1 and i.filename.endswith(".dist-info/METADATA")
            ]
            if len(infos) != 1:
                return None
            if infos[0].file_size > limit:
                raise MetadataTooLarge(limit)
            with zf.open(infos[0]) as member:
                return read_limited(member, limit)  # type: ignore[arg-type]
    except (zipfile.BadZipFile, zlib.error, EOFError, NotImplementedError, KeyError, ValueError):
        return None


def wheel_metadata(path: str, limit: int = METADATA_LIMIT) -> bytes | None:
    """
    Like L{read_wheel_metadata}, but C{None} also when the metadata is over
    C{limit} or the file cannot be read.
    """
    try:
        return read_wheel_metadata(path, limit)
    except (MetadataTooLarge, OSError):
        return None


def hashdir(sha256: str) -> str:
    return f"{sha256[:3]}/{sha256[3:16]}"


@implementer(IFileStore)
class LocalFileStore:
    """L{IFileStore} in a directory of this host (C{<serverdir>/+files}); temp files in its C{.tmp}."""

    def __init__(self, files_dir: str) -> None:
        self.files_dir = files_dir

    def local_path(self, relpath: str) -> str:
        return os.path.join(self.files_dir, relpath)

    def exists(self, relpath: str) -> bool:
        return os.path.exists(self.local_path(relpath))

    def open(self, relpath: str) -> BinaryIO:
        return open(self.local_path(relpath), "rb")

    def prepare_stream(self, source: BinaryIO) -> PreparedFile:
        return prepare_stream(self.files_dir, source)

    def prepare_bytes(self, data: bytes, fsync: bool = True) -> PreparedFile:
        return prepare_bytes(self.files_dir, data, fsync)

    def prepare_copy(self, relpath: str) -> PreparedFile:
        return prepare_copy(self.files_dir, self.local_path(relpath))

    def temp_path(self) -> str:
        return temp_name(self.files_dir)
