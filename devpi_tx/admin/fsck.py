# -*- test-case-name: tests.admin.test_fsck -*-
"""
File consistency check of a server directory, like C{devpi-fsck}: every
file entry whose file was stored (it has C{last_modified}) must have its
file under C{+files} with the recorded size and sha256.

Missing files of private stages are errors, missing files of mirrors only
warnings (a mirror fetches them again); a size or checksum mismatch is an
error everywhere.  The exit status of the command is L{FsckReport.status}:
0 without errors (warnings allowed), 1 with errors.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from devpi_tx.domain import keys
from devpi_tx.service.serverdir import ServerDir
from devpi_tx.store.factory import open_store_now
from devpi_tx.store.files import CHUNK, wheel_metadata
from devpi_tx.store.interfaces import ITransaction, StorageError

FATAL = "fatal: There have been errors during consistency check."


def digest_file(
    path: str, algorithms: Iterable[str] = ("sha256",), copy_to: str | None = None, fsync: bool = True
) -> tuple[dict[str, str], int]:
    """
    Stream C{path} through the named hashes, optionally copying it to
    C{copy_to} (fsynced unless the caller syncs everything at the end);
    returns C{(hex digests, size)}.
    """
    hashers = {name: hashlib.new(name) for name in algorithms}
    size = 0
    out = open(copy_to, "wb") if copy_to is not None else None
    try:
        with open(path, "rb") as source:
            while chunk := source.read(CHUNK):
                for hasher in hashers.values():
                    hasher.update(chunk)
                if out is not None:
                    out.write(chunk)
                size += len(chunk)
        if out is not None:
            out.flush()
            if fsync:
                os.fsync(out.fileno())
    finally:
        if out is not None:
            out.close()
    return {name: h.hexdigest() for name, h in hashers.items()}, size


@dataclass
class FsckReport:
    """
    What a check found.  C{lines} are the report lines in order, each with
    its level (C{INFO}, C{WARNING} or C{ERROR}).
    """

    serial: int = -1
    checked: int = 0
    errors: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    lines: list[tuple[str, str]] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """Whether there were no errors (warnings are allowed)."""
        return not self.errors

    @property
    def status(self) -> int:
        """The exit status: 1 if there were errors, else 0."""
        return 0 if self.ok else 1

    def add(self, level: str, message: str) -> None:
        self.lines.append((level, message))
        if level == "ERROR":
            self.errors.append(message)
        elif level == "WARNING":
            self.warnings.append(message)

    def text(self) -> str:
        """The report as printed by the command line."""
        out = [f"{level:<7} {message}" for level, message in self.lines]
        if self.errors:
            out.append(FATAL)
        return "\n".join(out) + "\n"


def _metadata_problem(wheel_path: str, meta_path: str, entry: dict[str, Any]) -> str | None:
    expected = entry["core_metadata"].get("sha256") if isinstance(entry["core_metadata"], dict) else None
    if os.path.isfile(meta_path):
        got = digest_file(meta_path)[0]["sha256"]
    else:
        data = wheel_metadata(wheel_path)
        if data is None:
            return "no metadata in the wheel"
        got = hashlib.sha256(data).hexdigest()
    if expected is not None and got != expected:
        return f"metadata sha256 mismatch, expected {expected}, got {got}"
    return None


async def _check(
    tx: ITransaction, files_dir: str, checksum: bool, report: FsckReport, refetch: list[str] | None = None
) -> None:
    report.serial = tx.serial
    report.add("INFO", f"Checking at serial {tx.serial}")
    kinds: dict[str, str | None] = {}
    missing = mirror_missing = 0
    for key, entry in await tx.items(keys.FILES):
        if not isinstance(entry, dict) or not entry.get("last_modified"):
            continue
        relpath = keys.name_in(key, keys.FILES)
        stage = "/".join(relpath.split("/", 2)[:2])
        if stage not in kinds:
            config = await tx.get(keys.index(stage))
            kinds[stage] = config.get("type") if isinstance(config, dict) else None
        report.checked += 1
        path = os.path.join(files_dir, relpath)
        if not os.path.isfile(path):
            if kinds[stage] == "mirror":
                mirror_missing += 1
                report.add("WARNING", f"Missing file {relpath}")
                if refetch is not None:
                    refetch.append(relpath)
            else:
                missing += 1
                report.add("ERROR", f"Missing file {relpath}")
            continue
        problem = _problem(path, entry, checksum)
        # an upload's PEP 658 file is derived from its wheel (an import leaves it
        # to be extracted on request); mirrors only relay upstream's
        if problem is None and checksum and entry.get("core_metadata") and kinds[stage] != "mirror":
            problem = _metadata_problem(path, os.path.join(files_dir, keys.metadata_relpath(relpath)), entry)
        if problem is not None:
            if refetch is not None and kinds[stage] == "mirror":
                refetch.append(relpath)
                report.add("WARNING", f"{relpath} - {problem}; it will be fetched again")
            else:
                report.add("ERROR", f"{relpath} - {problem}")
    report.add("INFO", f"Finished with a total of {report.checked} files.")
    if mirror_missing:
        report.add("WARNING", f"A total of {mirror_missing} files are missing in mirrors.")
    if missing:
        report.add("ERROR", f"A total of {missing} files are missing.")


def _problem(path: str, entry: dict[str, object], checksum: bool) -> str | None:
    size = os.path.getsize(path)
    expected_size = entry.get("size")
    if isinstance(expected_size, int) and size != expected_size:
        return f"size mismatch, expected {expected_size}, got {size}"
    if not checksum:
        return None
    hashes = entry.get("hashes")
    expected = dict(hashes) if isinstance(hashes, dict) else {}
    spec = entry.get("hash_spec")
    if isinstance(spec, str) and "=" in spec:
        algo, _, value = spec.partition("=")
        expected.setdefault(algo, value)
    expected = {a: str(v).lower() for a, v in expected.items() if a in hashlib.algorithms_available}
    if not expected:
        return None
    got = digest_file(path, expected)[0]
    for algo in sorted(expected):
        if got[algo] != expected[algo]:
            return f"{algo} mismatch, expected {expected[algo]}, got {got[algo]}"
    return None


async def _forget_downloads(tx: ITransaction, relpaths: list[str]) -> None:
    """Mark mirror files as not downloaded, so the next request fetches them again."""
    for relpath in relpaths:
        entry = await tx.get(keys.file(relpath))
        if isinstance(entry, dict) and entry.get("last_modified"):
            entry = {k: v for k, v in entry.items() if k not in ("last_modified", "size")}
            tx.set(keys.file(relpath), entry)
            tx.remove_file(relpath)


def fsck(serverdir: str, *, checksum: bool = True, refetch_mirror: bool = False) -> FsckReport:
    """
    Check every stored file of the server directory against its entry in
    one read snapshot; C{checksum=False} checks only existence and size.
    With C{refetch_mirror}, missing or damaged mirror files are forgotten
    (in one write) so that the next request downloads them again.
    """
    sdir = ServerDir(serverdir)
    if not sdir.is_initialised():
        raise StorageError(f"{serverdir} contains no server data")
    report = FsckReport()
    report.add("INFO", f"serverdir: {sdir.path}")
    report.add("INFO", f"uuid: {sdir.nodeinfo()['uuid']}")
    store = open_store_now(sdir.database, sdir.files)
    try:
        broken: list[str] | None = [] if refetch_mirror else None
        store.read_now(lambda tx: _check(tx, sdir.files, checksum, report, broken))
        if broken:
            store.write_now(lambda tx: _forget_downloads(tx, broken))
            report.add("INFO", f"{len(broken)} mirror files will be fetched again on their next request.")
    finally:
        store.close()
    return report
