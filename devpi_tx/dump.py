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

import email.utils
import hashlib
import json
import os
import shutil
import sys
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TextIO

from devpi_tx import __version__, keys
from devpi_tx.files import hashdir, prepare_bytes, temp_name, wheel_metadata
from devpi_tx.fsck import digest_file, run_now
from devpi_tx.interfaces import ITransaction
from devpi_tx.model import (
    COMMON_KEYS,
    INDEX_TYPES,
    MIRROR_KEYS,
    STAGE_DEFAULT_KEYS,
    APIError,
    check_name,
    check_version,
    normalize_name,
    validate_ixconfig,
)
from devpi_tx.releases import iso_time, when
from devpi_tx.serverdir import DATABASE, FILES, NODEINFO, ServerDir
from devpi_tx.store.sqlite import SQLiteStore, StorageError

DUMPVERSION = "2"
DATAINDEX = "dataindex.json"
USER_KEYS = frozenset(
    ["username", "pwhash", "pwsalt", "email", "title", "description", "custom_data", "created", "modified", "indexes"]
)
FILE_TYPES = ("releasefile", "doczip", "toxresult")
_SUFFIXES = (".tar.gz", ".tar.bz2", ".tar.xz", ".tgz", ".zip", ".whl", ".egg", ".exe", ".msi", ".dmg", ".rpm", ".deb")


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


class _Meter:
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
        store = SQLiteStore(sdir.database, sdir.files)
    except StorageError as e:
        raise DumpError(str(e)) from None
    try:
        os.makedirs(dumpdir, exist_ok=True)
        exporter = _Exporter(sdir.files, dumpdir, hard_links, include_mirrored_files, progress)
        return run_now(store.read(exporter.run))
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

    def run(self, tx: ITransaction) -> ExportStats:
        indexes = [(k[len("i/") :], c) for k, c in tx.items("i/")]
        for cycle in order_indexes({stage: c.get("bases", []) for stage, c in indexes})[1]:
            self.stats.warnings.append(f"bases cycle {' -> '.join(cycle)}: devpi-server cannot import it")
        total_files = total_bytes = 0
        for stage, config in indexes:
            for _, _, files in self._projects(tx, stage, config):
                total_files += len(files)
                total_bytes += sum(size for _, _, size in files)
        self._meter = _Meter(self._progress, "export", total_files, total_bytes)
        users = {k[len("u/") :]: {"username": k[len("u/") :], **v} for k, v in tx.items("u/")}
        self.stats.users = len(users)
        partial = os.path.join(self._dumpdir, DATAINDEX + ".partial")
        try:
            with open(partial, "w") as out:
                head = {"dumpversion": DUMPVERSION, "pythonversion": list(sys.version_info), "devpi_tx": __version__}
                out.write(json.dumps(head, indent=1)[:-2] + ',\n "users": ' + json.dumps(users, indent=1))
                out.write(',\n "indexes": {')
                for number, (stage, config) in enumerate(indexes):
                    out.write(("," if number else "") + "\n  " + json.dumps(stage) + ": ")
                    self._write_index(out, tx, stage, config)
                out.write("\n }\n}\n")
                out.flush()
                os.fsync(out.fileno())
        except BaseException:
            os.unlink(partial)
            raise
        os.replace(partial, os.path.join(self._dumpdir, DATAINDEX))
        self._meter.finish()
        return self.stats

    def _write_index(self, out: TextIO, tx: ITransaction, stage: str, config: dict[str, Any]) -> None:
        self.stats.indexes += 1
        out.write('{"indexconfig": ' + json.dumps(config))
        if config.get("type") == "mirror" and not self._mirrored:
            out.write("}")
            return
        out.write(',\n   "projects": {')
        sep = ""
        for project, versions, _ in self._projects(tx, stage, config):
            out.write(f"{sep}\n    {json.dumps(project)}: {json.dumps(versions)}")
            sep = ","
            self.stats.projects += 1
            self.stats.versions += len(versions)
        out.write('},\n   "files": [')
        sep = ""
        for _, _, files in self._projects(tx, stage, config):
            for desc, relpath, _ in files:
                self._copy(relpath, desc)
                out.write(f"{sep}\n    {json.dumps(desc)}")
                sep = ","
        out.write("]}")

    def _projects(
        self, tx: ITransaction, stage: str, config: dict[str, Any]
    ) -> Iterator[tuple[str, dict[str, Any], list[_FileTask]]]:
        """Per project: its versions' metadata and the files to dump."""
        if config.get("type") == "mirror":
            if self._mirrored:
                yield from self._mirror_projects(tx, stage)
            return
        prefix = keys.project_prefix(stage)
        for pkey, precord in tx.items(prefix):
            project = pkey[len(prefix) :]
            vprefix = keys.version_prefix(stage, project)
            versions: dict[str, Any] = {}
            files: list[_FileTask] = []
            for vkey, record in tx.items(vprefix):
                version = vkey[len(vprefix) :]
                meta = {k: v for k, v in record.items() if not k.startswith("+")}
                meta["name"] = meta.get("name") or precord.get("name") or project
                meta["version"] = meta.get("version") or version
                versions[version] = meta
                links = record.get("+elinks", [])
                by_path = {link["entrypath"]: link for link in links}
                for link in links:
                    task = self._task(tx, stage, project, version, link, by_path)
                    if task is not None:
                        files.append(task)
            yield project, versions, files

    def _task(
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
        entry = tx.get(keys.file(entrypath))
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

    def _mirror_projects(
        self, tx: ITransaction, stage: str
    ) -> Iterator[tuple[str, dict[str, Any], list[_FileTask]]]:
        grouped: dict[str, list[tuple[str, dict[str, Any]]]] = {}
        for key, entry in tx.items(keys.file_prefix(stage)):
            relpath = key[len("f/") :]
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
        size = _link(source, target, self.stats.warnings) if self._hard_links else None
        if size is None:
            self._hard_links = False
            digests, size = digest_file(source, copy_to=target)
            expected = desc["entrymapping"].get("hashes", {}).get("sha256")
            if expected and digests["sha256"] != expected:
                raise DumpError(f"the stored file {relpath} does not match its sha256 {expected} (check with fsck)")
        self.stats.files += 1
        self.stats.bytes += size
        self._meter.add(size)


def version_of(filename: str) -> str:
    """The version in a release, doc or tox result file name; C{""} if there is none."""
    basename = filename.rsplit("/", 1)[-1].split(".toxresult-", 1)[0]
    if basename.endswith(".doc.zip"):
        stem = basename[: -len(".doc.zip")]
    else:
        stem = next((basename[: -len(s)] for s in _SUFFIXES if basename.endswith(s)), "")
    if basename.endswith((".whl", ".egg")):
        parts = stem.split("-")
        return parts[1] if len(parts) > 1 else ""
    return stem.rpartition("-")[2] if "-" in stem else ""


def _link(source: str, target: str, warnings: list[str]) -> int | None:
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


# -- import -------------------------------------------------------------------


@dataclass
class _File:
    where: str
    kind: str
    source: str
    basename: str
    version: str
    expected: dict[str, str]
    mapping: dict[str, Any]
    log: list[Any] | None
    upload_time: str | None
    for_basename: str = ""
    size: int = 0
    digests: dict[str, str] = field(default_factory=dict)
    relpath: str = ""
    entry: dict[str, Any] = field(default_factory=dict)
    link: dict[str, Any] | None = None


@dataclass
class _Project:
    stage: str
    name: str
    mirror: bool
    display: str = ""
    versions: dict[str, dict[str, Any]] = field(default_factory=dict)
    aliases: dict[str, str] = field(default_factory=dict)
    files: list[_File] = field(default_factory=list)


@dataclass
class _Plan:
    users: dict[str, dict[str, Any]]
    indexes: list[tuple[str, dict[str, Any]]]
    projects: list[_Project]
    stats: ImportStats


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
    plan = _Reader(dumpdir, frozenset(skip_import_types), root_pypi).read(progress)
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


def _expected_hashes(mapping: dict[str, Any], where: str) -> dict[str, str]:
    """The hashes a dump gives for a file: C{hashes}, C{md5} (2.x) and C{hash_spec} folded."""
    hashes = mapping.get("hashes") or {}
    if not isinstance(hashes, dict):
        raise DumpError(f"{where}: its hashes are not an object")
    result = {str(k): str(v).lower() for k, v in hashes.items()}
    specs = [f"md5={mapping['md5']}"] if mapping.get("md5") else []
    if mapping.get("hash_spec"):
        specs.append(str(mapping["hash_spec"]))
    for spec in specs:
        algo, _, value = spec.partition("=")
        if result.setdefault(algo, value.lower()) != value.lower():
            raise DumpError(f"{where}: its hash_spec and hashes disagree")
    for algo in result:
        if algo not in hashlib.algorithms_available:
            raise DumpError(f"{where}: unknown hash type {algo!r}")
    return result


def _iso_from_http(stamp: str) -> str:
    try:
        return iso_time(email.utils.parsedate_to_datetime(stamp).timestamp())
    except (TypeError, ValueError):
        return iso_time(time.time())


class _Reader:
    """Reads and checks a whole dump, hashing every file, before anything is written."""

    def __init__(self, dumpdir: str, skip: frozenset[str], root_pypi: bool) -> None:
        self._dir = dumpdir
        self._skip = skip
        self._root_pypi = root_pypi
        self.stats = ImportStats()

    def read(self, progress: ProgressCallback | None) -> _Plan:
        path = os.path.join(self._dir, DATAINDEX)
        if not os.path.isfile(path):
            raise DumpError(f"{path} not found: {self._dir} is not a dump directory")
        try:
            with open(path, "rb") as f:
                data = json.load(f)
        except (ValueError, UnicodeDecodeError) as e:
            raise DumpError(f"{path} is not valid JSON: {e}") from None
        if not isinstance(data, dict):
            raise DumpError(f"{path} does not hold a JSON object")
        raw = data.get("dumpversion")
        dumpversion = int(raw) if isinstance(raw, (int, str)) and str(raw).isdigit() else 0
        if dumpversion not in (1, 2):
            raise DumpError(f"incompatible dumpversion: {raw!r} (versions 1 and 2 can be imported)")
        users = self._users(data.get("users"))
        indexes = data.get("indexes")
        if not isinstance(indexes, dict):
            raise DumpError(f"{DATAINDEX}: 'indexes' must be an object")
        configs: dict[str, dict[str, Any]] = {}
        for stage, index in indexes.items():
            config = self._index(stage, index, users)
            if config is not None:
                configs[stage] = config
        order = self._order(configs)
        projects: list[_Project] = []
        for stage in order:
            projects += self._projects(stage, indexes[stage], configs[stage]["type"] == "mirror", dumpversion)
        self._verify(projects, progress)
        self.stats.users = len(users)
        self.stats.indexes = len(order)
        self.stats.projects = len(projects)
        self.stats.versions = sum(len(p.versions) for p in projects if not p.mirror)
        return _Plan(users, [(s, configs[s]) for s in order], projects, self.stats)

    def _users(self, users: object) -> dict[str, dict[str, Any]]:
        if not isinstance(users, dict):
            raise DumpError(f"{DATAINDEX}: 'users' must be an object")
        for name, record in users.items():
            try:
                check_name("username", name)
            except APIError as e:
                raise DumpError(f"user {name!r}: {e.message}") from None
            if not isinstance(record, dict):
                raise DumpError(f"user {name!r}: the record is not an object")
            unknown = sorted(set(record) - USER_KEYS)
            if unknown:
                raise DumpError(f"user {name!r} has unknown keys: {', '.join(unknown)}")
            if not isinstance(record.get("pwhash") or "", str):
                raise DumpError(f"user {name!r}: its pwhash is not a string")
        return users

    def _index(self, stage: str, index: object, users: dict[str, Any]) -> dict[str, Any] | None:
        user, _, name = stage.partition("/")
        try:
            check_name("username", user)
            check_name("index", name)
        except APIError as e:
            raise DumpError(f"index {stage!r}: {e.message}") from None
        config = index.get("indexconfig") if isinstance(index, dict) else None
        if not isinstance(config, dict):
            raise DumpError(f"index {stage!r} has no indexconfig")
        ixtype = config.get("type")
        if not isinstance(ixtype, str):
            raise DumpError(f"index {stage!r} has no type")
        if ixtype in self._skip or (stage == "root/pypi" and not self._root_pypi):
            self.stats.skipped.append(stage)
            return None
        if ixtype not in INDEX_TYPES:
            raise DumpError(
                f"index {stage!r} has unknown type {ixtype!r}; "
                f"leave such indexes out with --skip-import-type {ixtype}"
            )
        if user not in users and user != "root":
            raise DumpError(f"index {stage!r} belongs to user {user!r}, who is not in the dump")
        config = dict(config)
        if "pypi_whitelist" in config:
            config.setdefault("mirror_whitelist", config.pop("pypi_whitelist"))
        allowed = set(COMMON_KEYS) | set(STAGE_DEFAULT_KEYS)
        if ixtype == "mirror":
            # stage keys of old mirrors that validation drops quietly
            allowed = set(COMMON_KEYS) | set(MIRROR_KEYS) | {"acl_toxresult_upload", "bases", "acl_upload", "mirror_whitelist"}
        unknown = sorted(set(config) - allowed)
        if unknown:
            self.stats.warnings.append(f"index {stage}: left out unknown keys {', '.join(unknown)}")
        config = {k: v for k, v in config.items() if k in allowed}
        try:
            return validate_ixconfig(config, user, lambda u, i: True, creating=False)
        except APIError as e:
            raise DumpError(f"index {stage!r}: {e.message}") from None

    def _order(self, configs: dict[str, dict[str, Any]]) -> list[str]:
        bases = {stage: list(config.get("bases", [])) for stage, config in configs.items()}
        known = set(configs) | ({"root/pypi"} if self._root_pypi else set())
        for stage, names in bases.items():
            missing = [b for b in names if b not in known]
            if missing:
                self.stats.warnings.append(f"index {stage}: bases not in the dump: {', '.join(missing)}")
        order, cycles = order_indexes(bases)
        for cycle in cycles:
            self.stats.warnings.append(f"bases cycle {' -> '.join(cycle)}: imported as it is")
        return order

    def _projects(self, stage: str, index: dict[str, Any], mirror: bool, dumpversion: int) -> list[_Project]:
        raw = index.get("projects") or {}
        if not isinstance(raw, dict):
            raise DumpError(f"index {stage!r}: its projects are not an object")
        merged: dict[str, _Project] = {}
        for name, versions in raw.items():
            if not isinstance(versions, dict) and versions != []:
                raise DumpError(f"index {stage!r}: the versions of {name!r} are not an object")
            project = merged.setdefault(normalize_name(name), _Project(stage, normalize_name(name), mirror))
            for key, meta in (versions or {}).items():
                meta = self._metadata(stage, name, key, meta)
                project.versions[meta["version"]] = meta
                project.aliases[key] = meta["version"]
                project.display = project.display or meta["name"]
        files = index.get("files") or []
        if not isinstance(files, list):
            raise DumpError(f"index {stage!r}: its files are not a list")
        orphans: list[str] = []
        for desc in files:
            norm, item = self._file(stage, desc, mirror, dumpversion)
            owner = merged.get(norm)
            if owner is None:
                orphans.append(item.where)
                continue
            item.version = owner.aliases.get(item.version, item.version)
            if item.version not in owner.versions:
                raise DumpError(f"{item.where}: version {item.version!r} of {norm!r} is not in the dump's projects")
            owner.files.append(item)
        if orphans:
            raise DumpError(f"some files weren't imported, their projects are not in the dump: {'; '.join(orphans)}")
        return list(merged.values())

    def _metadata(self, stage: str, project: str, key: str, meta: object) -> dict[str, Any]:
        where = f"index {stage!r}: {project} {key}"
        if not isinstance(meta, dict):
            raise DumpError(f"{where}: the metadata is not an object")
        meta = {k: v for k, v in meta.items() if not k.startswith("+") and k != ":action"}
        if not meta.get("version"):
            self.stats.warnings.append(f"{where}: no version in the metadata, using {key!r}")
            meta["version"] = key
        meta["name"] = meta.get("name") or project
        if not isinstance(meta["version"], str) or not isinstance(meta["name"], str):
            raise DumpError(f"{where}: name and version must be strings")
        try:
            check_version(meta["version"])
        except APIError as e:
            raise DumpError(f"{where}: {e.message}") from None
        return meta

    def _file(self, stage: str, desc: object, mirror: bool, dumpversion: int) -> tuple[str, _File]:
        relpath = desc.get("relpath") if isinstance(desc, dict) else None
        if not isinstance(desc, dict) or not isinstance(relpath, str) or not relpath:
            raise DumpError(f"index {stage!r}: a file without relpath: {str(desc)[:200]}")
        where = f"index {stage!r}: file {relpath}"
        parts = relpath.split("/")
        if relpath.startswith("/") or "\\" in relpath or any(p in ("", ".", "..") for p in parts):
            raise DumpError(f"{where} is not a path inside the dump")
        kind = desc.get("type")
        if kind not in FILE_TYPES or (mirror and kind != "releasefile"):
            raise DumpError(f"{where} has type {kind!r}, which a{' mirror' if mirror else ' stage'} cannot hold")
        source = os.path.join(self._dir, *parts)
        if not os.path.isfile(source):
            raise DumpError(f"{where} is missing from the dump")
        project = desc.get("projectname")
        if not isinstance(project, str) or not project:
            raise DumpError(f"{where} has no projectname")
        version = (desc.get("version") if dumpversion >= 2 else None) or version_of(relpath)
        if not isinstance(version, str) or not version:
            raise DumpError(f"{where} has no version")
        mapping = desc.get("entrymapping") or {}
        if not isinstance(mapping, dict):
            raise DumpError(f"{where}: its entrymapping is not an object")
        expected = _expected_hashes(mapping, where)
        for_basename = ""
        if kind == "toxresult":
            if not isinstance(desc.get("for_entrypath"), str):
                raise DumpError(f"{where} has no for_entrypath")
            for_basename = desc["for_entrypath"].rsplit("/", 1)[-1]
            # exports of devpi-server 6.5.0 to 6.9.0 gave tox results the release's hash
            algo, _, value = parts[-2].partition("=") if len(parts) == 5 else ("", "", "")
            if value and expected.get(algo) == value.lower():
                expected = {}
        if mirror and not isinstance(mapping.get("url"), str):
            raise DumpError(f"{where} has no url in its entrymapping")
        log = desc.get("log")
        if log is not None and not isinstance(log, list):
            raise DumpError(f"{where}: its log is not a list")
        upload_time = desc.get("upload_time") if isinstance(desc.get("upload_time"), str) else None
        item = _File(where, kind, source, parts[-1], version, expected, mapping, log, upload_time, for_basename)
        return normalize_name(project), item

    def _verify(self, projects: list[_Project], progress: ProgressCallback | None) -> None:
        files = [item for project in projects for item in project.files]
        meter = _Meter(progress, "verify", len(files), sum(os.path.getsize(f.source) for f in files))
        for project in projects:
            for item in project.files:
                item.digests, item.size = digest_file(item.source, {"sha256", *item.expected})
                for algo, value in sorted(item.expected.items()):
                    if item.digests[algo] != value:
                        raise DumpError(f"{item.where}: {algo} mismatch, the dump lists {value}, the file has {item.digests[algo]}")
                meter.add(item.size)
            self._place(project)
        meter.finish()

    def _place(self, project: _Project) -> None:
        """Where each file of C{project} goes, and its entry and link."""
        stage = project.stage
        releases: dict[tuple[str, str], str] = {}
        for item in project.files:
            sha = item.digests["sha256"]
            if item.kind == "releasefile":
                item.relpath = f"{stage}/+f/{hashdir(sha)}/{item.basename}"
                releases[(item.version, item.basename)] = item.relpath
            elif item.kind == "doczip":
                item.relpath = f"{stage}/+f/{hashdir(sha)}/{project.name}-{item.version}.doc.zip"
        docs: dict[str, _File] = {}
        placed: dict[str, _File] = {}
        for item in list(project.files):
            release = ""
            if item.kind == "toxresult":
                release = releases.get((item.version, item.for_basename), "")
                if not release:
                    raise DumpError(f"{item.where}: its release file {item.for_basename} is not in the dump")
                if item.basename.startswith(item.for_basename + ".toxresult-"):
                    item.relpath = release + item.basename[len(item.for_basename) :]
                else:
                    item.relpath = f"{release}.toxresult-{time.strftime('%Y%m%d%H%M%S')}-{len(placed)}"
            elif item.kind == "doczip" and item.version in docs:
                self.stats.warnings.append(f"{docs[item.version].where}: an older doc zip of the version, left out")
                project.files.remove(docs[item.version])
                del placed[docs[item.version].relpath]
            if item.relpath in placed:
                raise DumpError(f"{item.where} and {placed[item.relpath].where} would both be stored at {item.relpath}")
            placed[item.relpath] = item
            if item.kind == "doczip":
                docs[item.version] = item
            self._entry(project, item, release)

    def _entry(self, project: _Project, item: _File, release: str) -> None:
        sha = item.digests["sha256"]
        stamp = str(item.mapping.get("last_modified") or "") or time.strftime("%a, %d %b %Y %H:%M:%S GMT", time.gmtime())
        item.entry = {
            "hash_spec": f"sha256={sha}",
            "hashes": {"sha256": sha},
            "size": item.size,
            "last_modified": stamp,
            "project": project.name,
            "version": item.version,
        }
        if project.mirror:
            item.entry.update(hashes=dict(item.digests), url=item.mapping["url"])
            return
        log = item.log
        if log is None:
            log = [{"what": "upload", "who": "<import>", "when": when(), "dst": project.stage}]
        item.link = {
            "rel": item.kind,
            "entrypath": item.relpath,
            "hash_spec": f"sha256={sha}",
            "hashes": {"sha256": sha},
            "size": item.size,
            "upload_time": item.upload_time or _iso_from_http(stamp),
            "_log": log,
        }
        if release:
            item.link["for_entrypath"] = release


class _Writer:
    """Builds the new server in a staging directory and moves it into place."""

    def __init__(self, serverdir: str, plan: _Plan, hard_links: bool, progress: ProgressCallback | None) -> None:
        self._target = serverdir
        self._plan = plan
        self._hard_links = hard_links
        self._progress = progress

    def write(self, root_passwd: str | None, root_passwd_hash: str | None, root_pypi: bool) -> None:
        created = not os.path.exists(self._target)
        os.makedirs(self._target, exist_ok=True)
        staging = os.path.join(self._target, f".import-{uuid.uuid4().hex}")
        moved: list[str] = []
        store = None
        try:
            sdir = ServerDir(staging)
            sdir.initialise(root_password=root_passwd or "", root_pwhash=root_passwd_hash, root_pypi=root_pypi)
            store = SQLiteStore(sdir.database, sdir.files)
            keep_password = root_passwd is not None or root_passwd_hash is not None
            run_now(store.write(lambda tx: self._users(tx, keep_password)))
            run_now(store.write(self._indexes))
            files = [item for project in self._plan.projects for item in project.files]
            meter = _Meter(self._progress, "import", len(files), sum(item.size for item in files))
            for project in self._plan.projects:
                run_now(store.write(lambda tx, p=project: self._project(tx, sdir.files, p, meter)))  # type: ignore[misc]
            store.close()
            store = None
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

    def _users(self, tx: ITransaction, keep_root_password: bool) -> None:
        for name, given in self._plan.users.items():
            record = {k: v for k, v in given.items() if k not in ("username", "indexes") and v is not None}
            current = tx.get(keys.user(name))
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

    def _project(self, tx: ITransaction, files_dir: str, project: _Project, meter: _Meter) -> None:
        stats = self._plan.stats
        records: dict[str, dict[str, Any]] = {}
        if not project.mirror:
            tx.set(keys.project(project.stage, project.name), {"name": project.display or project.name, "created": time.time()})
            records = {v: dict(meta, **{"+elinks": []}) for v, meta in project.versions.items()}
        for item in project.files:
            temp = temp_name(files_dir)
            if self._hard_links is False or _link(item.source, temp, stats.warnings) is None:
                self._hard_links = False
                if digest_file(item.source, copy_to=temp)[0]["sha256"] != item.digests["sha256"]:
                    raise DumpError(f"{item.where} changed while it was imported")
            tx.place_file(temp, item.relpath)
            entry = dict(item.entry)
            if item.link is not None:
                link = dict(item.link)
                data = wheel_metadata(temp) if item.basename.endswith(".whl") and item.kind == "releasefile" else None
                if data is not None:
                    meta = prepare_bytes(files_dir, data)
                    tx.place_file(meta.temp_path, keys.metadata_relpath(item.relpath))
                    link["core_metadata"] = entry["core_metadata"] = {"sha256": meta.sha256}
                records[item.version]["+elinks"].append(link)
            tx.set(keys.file(item.relpath), entry)
            stats.files += 1
            stats.bytes += item.size
            meter.add(item.size)
        for version, record in records.items():
            tx.set(keys.version(project.stage, project.name, version), record)
