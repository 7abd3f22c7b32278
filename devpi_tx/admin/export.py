# -*- test-case-name: tests.admin.test_dump -*-
"""
Export and import in devpi-server's dump format (spec section 8): a
directory with C{dataindex.json} and the files below C{<user>/<index>/}.
We write dump version 2 and read versions 1 and 2.

Both are one-shot commands that run before the reactor: they use the store
with its inline runners.  An export reads one snapshot and writes
C{dataindex.json} last.  An import reads and checks the whole dump first
(names, index types, every file's hash), then builds the new server in a
staging directory inside the target and moves it into place at the end,
so a failed import leaves the target as it was.
"""

from __future__ import annotations

import json
import os
import sys
import uuid
from collections.abc import AsyncIterator, Mapping
from typing import Any, TextIO

from devpi_tx import __version__
from devpi_tx.admin.dumpformat import (
    DATAINDEX,
    DUMPVERSION,
    DumpError,
    ExportStats,
    Meter,
    ProgressCallback,
    hard_link,
    order_indexes,
    version_of,
)
from devpi_tx.admin.fsck import digest_file
from devpi_tx.domain import keys
from devpi_tx.model.names import normalize_name
from devpi_tx.service.serverdir import ServerDir
from devpi_tx.store.factory import open_store_now
from devpi_tx.store.interfaces import ITransaction, StorageError


def _mapping(entry: Mapping[str, Any]) -> dict[str, Any]:
    fields = ("last_modified", "hash_spec", "hashes", "project", "version", "url")
    return {k: entry[k] for k in fields if k in entry}


# -- export -------------------------------------------------------------------

_FileTask = tuple[dict[str, Any], str, int]


def export_dump(
    serverdir: str,
    dumpdir: str,
    *,
    hard_links: bool = False,
    include_mirrored_files: bool = False,
    progress: ProgressCallback | None = None,
) -> ExportStats:
    """
    Write the users, indexes, projects and files of C{serverdir} to the new
    or empty directory C{dumpdir}, as devpi-export does.  Mirrors export only
    their configuration unless C{include_mirrored_files}.

    @raise DumpError: the export cannot be done or a stored file is missing
        or damaged; C{dumpdir} then has no C{dataindex.json}.
    """
    sdir = ServerDir(serverdir)
    if not sdir.is_initialised():
        raise DumpError(f"{serverdir} contains no server data")
    if os.path.exists(dumpdir) and (not os.path.isdir(dumpdir) or os.listdir(dumpdir)):
        raise DumpError(f"export directory {dumpdir} must not exist or be empty")
    try:
        store = open_store_now(sdir.database, sdir.files)
    except StorageError as e:
        raise DumpError(str(e)) from None
    try:
        os.makedirs(dumpdir, exist_ok=True)
        exporter = _Exporter(sdir.files, dumpdir, hard_links, include_mirrored_files, progress)
        return store.read_now(exporter.run)
    finally:
        store.close()


class _Exporter:
    def __init__(
        self, files_dir: str, dumpdir: str, hard_links: bool, mirrored: bool, progress: ProgressCallback | None
    ) -> None:
        self._files = files_dir
        self._dumpdir = dumpdir
        self._hard_links = hard_links
        self._mirrored = mirrored
        self._progress = progress
        self.stats = ExportStats()

    def _warn(self, message: str) -> None:
        # the projects are walked more than once
        if message not in self.stats.warnings:
            self.stats.warnings.append(message)

    async def run(self, tx: ITransaction) -> ExportStats:
        indexes = [(keys.name_in(k, keys.INDEXES), c) for k, c in await tx.items(keys.INDEXES)]
        for cycle in order_indexes({stage: c.get("bases", []) for stage, c in indexes})[1]:
            self.stats.warnings.append(f"bases cycle {' -> '.join(cycle)}: devpi-server cannot import it")
        total_files = total_bytes = 0
        for stage, config in indexes:
            async for _, _, files in self._projects(tx, stage, config):
                total_files += len(files)
                total_bytes += sum(size for _, _, size in files)
        self._meter = Meter(self._progress, "export", total_files, total_bytes)
        users = {
            keys.name_in(k, keys.USERS): {"username": keys.name_in(k, keys.USERS), **v}
            for k, v in await tx.items(keys.USERS)
        }
        self.stats.users = len(users)
        partial = os.path.join(self._dumpdir, DATAINDEX + ".partial")
        try:
            with open(partial, "w") as out:
                head = {"dumpversion": DUMPVERSION, "pythonversion": list(sys.version_info), "devpi_tx": __version__}
                out.write(json.dumps(head, indent=1)[:-2] + ',\n "users": ' + json.dumps(users, indent=1))
                out.write(',\n "indexes": {')
                for number, (stage, config) in enumerate(indexes):
                    out.write(("," if number else "") + "\n  " + json.dumps(stage) + ": ")
                    await self._write_index(out, tx, stage, config)
                out.write("\n }\n}\n")
                out.flush()
            os.sync()  # the files and the index reach the disk before the dump is named complete
        except BaseException:
            os.unlink(partial)
            raise
        os.replace(partial, os.path.join(self._dumpdir, DATAINDEX))
        self._meter.finish()
        return self.stats

    async def _write_index(self, out: TextIO, tx: ITransaction, stage: str, config: dict[str, Any]) -> None:
        self.stats.indexes += 1
        out.write('{"indexconfig": ' + json.dumps(config))
        if config.get("type") == "mirror" and not self._mirrored:
            out.write("}")
            return
        out.write(',\n   "projects": {')
        sep = ""
        async for project, versions, _ in self._projects(tx, stage, config):
            out.write(f"{sep}\n    {json.dumps(project)}: {json.dumps(versions)}")
            sep = ","
            self.stats.projects += 1
            self.stats.versions += len(versions)
        out.write('},\n   "files": [')
        sep = ""
        async for _, _, files in self._projects(tx, stage, config):
            for desc, relpath, _ in files:
                self._copy(relpath, desc)
                out.write(f"{sep}\n    {json.dumps(desc)}")
                sep = ","
        out.write("]}")

    async def _projects(
        self, tx: ITransaction, stage: str, config: dict[str, Any]
    ) -> AsyncIterator[tuple[str, dict[str, Any], list[_FileTask]]]:
        """Per project: its versions' metadata and the files to dump."""
        if config.get("type") == "mirror":
            if self._mirrored:
                async for item in self._mirror_projects(tx, stage):
                    yield item
            return
        prefix = keys.project_prefix(stage)
        for pkey, precord in await tx.items(prefix):
            project = pkey[len(prefix) :]
            vprefix = keys.version_prefix(stage, project)
            versions: dict[str, Any] = {}
            files: list[_FileTask] = []
            for vkey, record in await tx.items(vprefix):
                version = vkey[len(vprefix) :]
                meta = {k: v for k, v in record.items() if not k.startswith("+")}
                meta["name"] = meta.get("name") or precord.get("name") or project
                meta["version"] = meta.get("version") or version
                versions[version] = meta
                links = record.get("+elinks", [])
                by_path = {link["entrypath"]: link for link in links}
                for link in links:
                    task = await self._task(tx, stage, project, version, link, by_path)
                    if task is not None:
                        files.append(task)
            yield project, versions, files

    async def _task(
        self,
        tx: ITransaction,
        stage: str,
        project: str,
        version: str,
        link: dict[str, Any],
        by_path: dict[str, dict[str, Any]],
    ) -> _FileTask | None:
        entrypath = link["entrypath"]
        basename = entrypath.rsplit("/", 1)[1]
        entry = await tx.get(keys.file(entrypath))
        if entry is None:
            raise DumpError(f"{stage}: the file entry of {entrypath} is missing")
        desc: dict[str, Any] = {"type": link["rel"], "projectname": project, "version": version}
        if link["rel"] == "releasefile":
            desc["relpath"] = f"{stage}/{project}/{version}/{basename}"
        elif link["rel"] == "doczip":
            desc["relpath"] = f"{stage}/{project}-{version}.doc.zip"
        else:
            release = by_path.get(link.get("for_entrypath", ""))
            if release is None:
                self._warn(f"{stage}: tox result {entrypath} without its release file, not exported")
                return None
            desc["relpath"] = f"{stage}/{project}/{release['hash_spec']}/{basename}"
            desc["for_entrypath"] = release["entrypath"]
        desc["entrymapping"] = _mapping(entry)
        desc["log"] = link.get("_log", [])
        if link.get("upload_time"):
            desc["upload_time"] = link["upload_time"]
        return desc, entrypath, int(entry.get("size", 0))

    async def _mirror_projects(
        self, tx: ITransaction, stage: str
    ) -> AsyncIterator[tuple[str, dict[str, Any], list[_FileTask]]]:
        grouped: dict[str, list[tuple[str, dict[str, Any]]]] = {}
        for key, entry in await tx.items(keys.file_prefix(stage)):
            relpath = keys.name_in(key, keys.FILES)
            if not entry.get("last_modified"):
                continue
            if not entry.get("project") or not (entry.get("version") or version_of(relpath)):
                self._warn(f"{stage}: {relpath} has no project or version, not exported")
                continue
            grouped.setdefault(normalize_name(entry["project"]), []).append((relpath, entry))
        for project in sorted(grouped):
            versions: dict[str, Any] = {}
            files: list[_FileTask] = []
            for relpath, entry in grouped[project]:
                version = entry.get("version") or version_of(relpath)
                versions.setdefault(version, {"name": entry["project"], "version": version})
                basename = relpath.rsplit("/", 1)[1]
                desc: dict[str, Any] = {
                    "type": "releasefile",
                    "projectname": project,
                    "version": version,
                    "relpath": f"{stage}/{project}/{version}/{basename}",
                    "entrymapping": _mapping(entry),
                    "log": [],
                }
                files.append((desc, relpath, int(entry.get("size", 0))))
            yield project, versions, files

    def _copy(self, relpath: str, desc: dict[str, Any]) -> None:
        source = os.path.join(self._files, relpath)
        if not os.path.isfile(source):
            raise DumpError(f"the file of {relpath} is missing from {self._files}")
        target = os.path.join(self._dumpdir, desc["relpath"])
        if os.path.exists(target):
            # two files would share a dump path (a doc zip of "a" 1-2 and of "a-1" 2):
            # only the basename matters to an importer
            desc["relpath"] = f"{os.path.dirname(desc['relpath'])}/+{uuid.uuid4().hex[:8]}/{os.path.basename(target)}"
            target = os.path.join(self._dumpdir, desc["relpath"])
        os.makedirs(os.path.dirname(target), exist_ok=True)
        size = hard_link(source, target, self.stats.warnings) if self._hard_links else None
        if size is None:
            self._hard_links = False
            # one sync of the whole dump before dataindex.json, not one per file
            digests, size = digest_file(source, copy_to=target, fsync=False)
            expected = desc["entrymapping"].get("hashes", {}).get("sha256")
            if expected and digests["sha256"] != expected:
                raise DumpError(f"the stored file {relpath} does not match its sha256 {expected} (check with fsck)")
        self.stats.files += 1
        self.stats.bytes += size
        self._meter.add(size)
