# -*- test-case-name: tests.admin.test_dump -*-
"""
Import of devpi-server's dump format (spec 8.4): the whole dump is read and
checked first (names, index types, every file's hash), then the new server
is built in a staging directory inside the target and moved into place at
the end, so a failed import leaves the target as it was.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import time
import uuid
from collections.abc import Iterable, Iterator
from typing import Any

from devpi_tx.admin.dumpformat import (
    DumpError,
    ImportStats,
    Meter,
    ProgressCallback,
    hard_link,
)
from devpi_tx.admin.dumpread import DumpReader, Plan, Project
from devpi_tx.admin.fsck import digest_file
from devpi_tx.domain import keys
from devpi_tx.service.serverdir import DATABASE, FILES, NODEINFO, ServerDir
from devpi_tx.store.factory import open_store_now
from devpi_tx.store.files import wheel_metadata
from devpi_tx.store.interfaces import ITransaction


def import_dump(
    serverdir: str,
    dumpdir: str,
    *,
    hard_links: bool = False,
    skip_import_types: Iterable[str] = (),
    root_pypi: bool = True,
    root_passwd: str | None = None,
    root_passwd_hash: str | None = None,
    progress: ProgressCallback | None = None,
) -> ImportStats:
    """
    Create the new server directory C{serverdir} from the dump in
    C{dumpdir}, as devpi-import does.  The server starts like a fresh one
    (root user with C{root_passwd} or C{root_passwd_hash}, C{root/pypi}
    unless not C{root_pypi}); the dump's root record then replaces root's,
    except for the password when one was given here.  Indexes of a type in
    C{skip_import_types} are left out, and so is the dump's C{root/pypi}
    without C{root_pypi}.

    @raise DumpError: naming the offending entry; C{serverdir} is then as it was.
    """
    _check_target(serverdir)
    plan = DumpReader(dumpdir, frozenset(skip_import_types), root_pypi).read(progress)
    _Writer(serverdir, plan, hard_links, progress).write(root_passwd, root_passwd_hash, root_pypi)
    return plan.stats


def _check_target(serverdir: str) -> None:
    if not os.path.exists(serverdir):
        return
    if not os.path.isdir(serverdir):
        raise DumpError(f"{serverdir} is not a directory")
    for name in (NODEINFO, DATABASE):
        if os.path.exists(os.path.join(serverdir, name)):
            raise DumpError(f"{serverdir} already contains server data ({name}): import needs a new server directory")
    files = os.path.join(serverdir, FILES)
    if os.path.isdir(files) and os.listdir(files):
        raise DumpError(f"{files} is not empty: import needs a new server directory")


BATCH_FILES = 500
"""Projects go in one transaction each until it holds this many files: fewer commits, bounded memory."""


def _batches(projects: list[Project], limit: int) -> Iterator[list[Project]]:
    batch: list[Project] = []
    files = 0
    for project in projects:
        if batch and files + len(project.files) > limit:
            yield batch
            batch, files = [], 0
        batch.append(project)
        files += len(project.files)
    if batch:
        yield batch


class _Writer:
    """Builds the new server in a staging directory and moves it into place."""

    def __init__(self, serverdir: str, plan: Plan, hard_links: bool, progress: ProgressCallback | None) -> None:
        self._target = serverdir
        self._plan = plan
        self._hard_links = hard_links
        self._progress = progress
        self._made_dirs: set[str] = set()

    def write(self, root_passwd: str | None, root_passwd_hash: str | None, root_pypi: bool) -> None:
        created = not os.path.exists(self._target)
        os.makedirs(self._target, exist_ok=True)
        staging = os.path.join(self._target, f".import-{uuid.uuid4().hex}")
        moved: list[str] = []
        store = None
        try:
            sdir = ServerDir(staging)
            # the dump's root hash replaces the initial one anyway: hashing an
            # empty password first would cost argon2's 64 MiB for nothing
            initial_hash = root_passwd_hash
            dump_root = self._plan.users.get("root") or {}
            if root_passwd is None and initial_hash is None and isinstance(dump_root.get("pwhash"), str):
                initial_hash = dump_root["pwhash"]
            sdir.initialise(root_password=root_passwd or "", root_pwhash=initial_hash, root_pypi=root_pypi)
            store = open_store_now(sdir.database, sdir.files)
            keep_password = root_passwd is not None or root_passwd_hash is not None
            store.write_now(lambda tx: self._users(tx, keep_password))
            store.write_now(self._indexes)
            files = [item for project in self._plan.projects for item in project.files]
            meter = Meter(self._progress, "import", len(files), sum(item.size for item in files))
            for batch in _batches(self._plan.projects, BATCH_FILES):

                def write_batch(tx: ITransaction, batch: list[Project] = batch) -> None:
                    for project in batch:
                        self._project(tx, sdir.files, project, meter)

                store.write_now(write_batch)
            store.close()
            store = None
            # files were written without a sync each: one sync before the server exists
            os.sync()
            # the node info goes last: without it the directory is no server yet
            for name in sorted(os.listdir(staging), key=lambda n: n == NODEINFO):
                os.replace(os.path.join(staging, name), os.path.join(self._target, name))
                moved.append(name)
            meter.finish()
        except BaseException as e:
            if store is not None:
                store.close()
            shutil.rmtree(staging, ignore_errors=True)
            for name in moved:
                path = os.path.join(self._target, name)
                shutil.rmtree(path, ignore_errors=True) if os.path.isdir(path) else os.unlink(path)
            if created:
                shutil.rmtree(self._target, ignore_errors=True)
            if not isinstance(e, Exception):
                raise
            reason = str(e) if isinstance(e, DumpError) else f"{type(e).__name__}: {e}"
            raise DumpError(f"{reason}; nothing was imported into {self._target}") from e
        os.rmdir(staging)

    async def _users(self, tx: ITransaction, keep_root_password: bool) -> None:
        for name, given in self._plan.users.items():
            record = {k: v for k, v in given.items() if k not in ("username", "indexes") and v is not None}
            current = await tx.get(keys.user(name))
            if current is None:
                record.setdefault("created", "1970-01-01T00:00:00Z")
                tx.set(keys.user(name), record)
                continue
            # the dump's root record replaces the new one, except for a password given here
            if keep_root_password or "pwhash" not in record:
                record = {k: v for k, v in record.items() if k != "pwsalt"}
                record["pwhash"] = current["pwhash"]
            tx.set(keys.user(name), record)

    def _indexes(self, tx: ITransaction) -> None:
        for stage, config in self._plan.indexes:
            tx.set(keys.index(stage), config)

    def _project(self, tx: ITransaction, files_dir: str, project: Project, meter: Meter) -> None:
        stats = self._plan.stats
        records: dict[str, dict[str, Any]] = {}
        if not project.mirror:
            tx.set(
                keys.project(project.stage, project.name),
                {"name": project.display or project.name, "created": time.time()},
            )
            records = {v: dict(meta, **{"+elinks": []}) for v, meta in project.versions.items()}
        for item in project.files:
            # the staging directory is the "aside" of the whole import: files go
            # straight to their place in it, and it is removed if anything fails
            target = os.path.join(files_dir, item.relpath)
            parent = os.path.dirname(target)
            if parent not in self._made_dirs:
                os.makedirs(parent, exist_ok=True)
                self._made_dirs.add(parent)
            if self._hard_links is False or hard_link(item.source, target, stats.warnings) is None:
                self._hard_links = False
                if digest_file(item.source, copy_to=target, fsync=False)[0]["sha256"] != item.digests["sha256"]:
                    raise DumpError(f"{item.where} changed while it was imported")
            entry = dict(item.entry)
            if item.link is not None:
                link = dict(item.link)
                data = wheel_metadata(target) if item.basename.endswith(".whl") and item.kind == "releasefile" else None
                if data is not None:
                    # the PEP 658 file is extracted from the wheel when first asked for
                    link["core_metadata"] = entry["core_metadata"] = {"sha256": hashlib.sha256(data).hexdigest()}
                records[item.version]["+elinks"].append(link)
            tx.set(keys.file(item.relpath), entry)
            stats.files += 1
            stats.bytes += item.size
            meter.add(item.size)
        for version, record in records.items():
            tx.set(keys.version(project.stage, project.name, version), record)
