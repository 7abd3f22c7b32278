# -*- test-case-name: tests.admin.test_dump -*-
"""
Reading a dump of devpi-server's format (spec 8.2-8.4): every name, index
type and file hash is checked before anything is written.
"""

from __future__ import annotations

import email.utils
import hashlib
import json
import os
import time
from dataclasses import dataclass, field
from typing import Any

from devpi_tx.admin.dumpformat import (
    DATAINDEX,
    FILE_TYPES,
    USER_KEYS,
    DumpError,
    ImportStats,
    Meter,
    ProgressCallback,
    order_indexes,
    version_of,
)
from devpi_tx.admin.fsck import digest_file
from devpi_tx.domain.releases import iso_time, when
from devpi_tx.model.errors import DomainError
from devpi_tx.model.ixconfig import COMMON_KEYS, INDEX_TYPES, MIRROR_KEYS, STAGE_DEFAULT_KEYS, validate_ixconfig
from devpi_tx.model.names import check_name, check_version, normalize_name
from devpi_tx.store.files import hashdir


@dataclass
class DumpFile:
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
class Project:
    stage: str
    name: str
    mirror: bool
    display: str = ""
    versions: dict[str, dict[str, Any]] = field(default_factory=dict)
    aliases: dict[str, str] = field(default_factory=dict)
    files: list[DumpFile] = field(default_factory=list)


@dataclass
class Plan:
    users: dict[str, dict[str, Any]]
    indexes: list[tuple[str, dict[str, Any]]]
    projects: list[Project]
    stats: ImportStats


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


class DumpReader:
    """Reads and checks a whole dump, hashing every file, before anything is written."""

    def __init__(self, dumpdir: str, skip: frozenset[str], root_pypi: bool) -> None:
        self._dir = dumpdir
        self._skip = skip
        self._root_pypi = root_pypi
        self.stats = ImportStats()

    def read(self, progress: ProgressCallback | None) -> Plan:
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
        projects: list[Project] = []
        for stage in order:
            projects += self._projects(stage, indexes[stage], configs[stage]["type"] == "mirror", dumpversion)
        self._verify(projects, progress)
        self.stats.users = len(users)
        self.stats.indexes = len(order)
        self.stats.projects = len(projects)
        self.stats.versions = sum(len(p.versions) for p in projects if not p.mirror)
        return Plan(users, [(s, configs[s]) for s in order], projects, self.stats)

    def _users(self, users: object) -> dict[str, dict[str, Any]]:
        if not isinstance(users, dict):
            raise DumpError(f"{DATAINDEX}: 'users' must be an object")
        for name, record in users.items():
            try:
                check_name("username", name)
            except DomainError as e:
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
        config = index.get("indexconfig") if isinstance(index, dict) else None
        if not isinstance(config, dict):
            raise DumpError(f"index {stage!r} has no indexconfig")
        ixtype = config.get("type")
        if not isinstance(ixtype, str):
            raise DumpError(f"index {stage!r} has no type")
        # skipped indexes are left out before they are checked, as devpi does:
        # a plugin's index may have a name this server would refuse
        if ixtype in self._skip or (stage == "root/pypi" and not self._root_pypi):
            self.stats.skipped.append(stage)
            return None
        try:
            check_name("username", user)
            check_name("index", name)
        except DomainError as e:
            raise DumpError(f"index {stage!r}: {e.message}") from None
        if ixtype not in INDEX_TYPES:
            raise DumpError(
                f"index {stage!r} has unknown type {ixtype!r}; leave such indexes out with --skip-import-type {ixtype}"
            )
        if user not in users and user != "root":
            raise DumpError(f"index {stage!r} belongs to user {user!r}, who is not in the dump")
        config = dict(config)
        if "pypi_whitelist" in config:
            config.setdefault("mirror_whitelist", config.pop("pypi_whitelist"))
        allowed = set(COMMON_KEYS) | set(STAGE_DEFAULT_KEYS)
        if ixtype == "mirror":
            # stage keys of old mirrors that validation drops quietly
            allowed = (
                set(COMMON_KEYS)
                | set(MIRROR_KEYS)
                | {"acl_toxresult_upload", "bases", "acl_upload", "mirror_whitelist"}
            )
        unknown = sorted(set(config) - allowed)
        if unknown:
            self.stats.warnings.append(f"index {stage}: left out unknown keys {', '.join(unknown)}")
        config = {k: v for k, v in config.items() if k in allowed}
        bases = config.get("bases")
        if isinstance(bases, list) and any(isinstance(b, str) and b.strip("/") == stage for b in bases):
            self.stats.warnings.append(f"index {stage}: left out itself as its own base")
            config["bases"] = [b for b in bases if not (isinstance(b, str) and b.strip("/") == stage)]
        try:
            return validate_ixconfig(config, stage, lambda u, i: True, creating=False)
        except DomainError as e:
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

    def _projects(self, stage: str, index: dict[str, Any], mirror: bool, dumpversion: int) -> list[Project]:
        raw = index.get("projects") or {}
        if not isinstance(raw, dict):
            raise DumpError(f"index {stage!r}: its projects are not an object")
        merged: dict[str, Project] = {}
        for name, versions in raw.items():
            if not isinstance(versions, dict) and versions != []:
                raise DumpError(f"index {stage!r}: the versions of {name!r} are not an object")
            project = merged.setdefault(normalize_name(name), Project(stage, normalize_name(name), mirror))
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
        except DomainError as e:
            raise DumpError(f"{where}: {e.message}") from None
        return meta

    def _file(self, stage: str, desc: object, mirror: bool, dumpversion: int) -> tuple[str, DumpFile]:
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
        item = DumpFile(where, kind, source, parts[-1], version, expected, mapping, log, upload_time, for_basename)
        return normalize_name(project), item

    def _verify(self, projects: list[Project], progress: ProgressCallback | None) -> None:
        files = [item for project in projects for item in project.files]
        meter = Meter(progress, "verify", len(files), sum(os.path.getsize(f.source) for f in files))
        for project in projects:
            for item in project.files:
                item.digests, item.size = digest_file(item.source, {"sha256", *item.expected})
                for algo, value in sorted(item.expected.items()):
                    if item.digests[algo] != value:
                        raise DumpError(
                            f"{item.where}: {algo} mismatch, the dump lists {value}, the file has {item.digests[algo]}"
                        )
                meter.add(item.size)
            self._place(project)
        meter.finish()

    def _place(self, project: Project) -> None:
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
        docs: dict[str, DumpFile] = {}
        placed: dict[str, DumpFile] = {}
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

    def _entry(self, project: Project, item: DumpFile, release: str) -> None:
        sha = item.digests["sha256"]
        stamp = str(item.mapping.get("last_modified") or "") or time.strftime(
            "%a, %d %b %Y %H:%M:%S GMT", time.gmtime()
        )
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
