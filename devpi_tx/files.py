"""
Files on their way into the file store: copied aside under a temporary name
while hashed, fsynced, then renamed into place by the store at commit.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import uuid
import zipfile
from dataclasses import dataclass
from typing import BinaryIO

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


def temp_name(files_dir: str) -> str:
    """A new temporary file name that records the writing process's pid."""
    return os.path.join(temp_dir(files_dir), f"{uuid.uuid4().hex}-{os.getpid()}-tmp")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove_stale_temp_files(files_dir: str) -> list[str]:
    """
    Remove temporary files whose writing process is gone (a crash or a
    kill): their metadata never committed.  Returns the removed names.
    """
    path = os.path.join(files_dir, ".tmp")
    removed = []
    if not os.path.isdir(path):
        return removed
    for name in os.listdir(path):
        parts = name.split("-")
        pid = int(parts[-2]) if len(parts) >= 3 and parts[-2].isdigit() else None
        if pid is None or pid == os.getpid() or not _alive(pid):
            try:
                os.unlink(os.path.join(path, name))
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


def wheel_metadata(path: str) -> bytes | None:
    """
    The C{METADATA} member of a wheel's C{.dist-info} directory, or C{None}
    if C{path} is not a readable wheel.
    """
    try:
        with zipfile.ZipFile(path) as zf:
            names = [
                n
                for n in zf.namelist()
                if n.count("/") == 1 and n.endswith(".dist-info/METADATA")
            ]
            if len(names) != 1:
                return None
            return zf.read(names[0])
    except (zipfile.BadZipFile, OSError, KeyError):
        return None


def hashdir(sha256: str) -> str:
    return f"{sha256[:3]}/{sha256[3:16]}"
