# -*- test-case-name: tests.web.test_api_packages,tests.events.test_hooks -*-
"""
Projects, versions and files of private stages: uploads, docs, tox results,
deletion and push (spec section 4).  Every function runs inside one
L{ITransaction}; file contents arrive as L{PreparedFile}s.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from devpi_tx.domain import keys
from devpi_tx.domain.users import get_ixconfig
from devpi_tx.model.errors import Conflict, DomainError, Forbidden, Invalid, NotAuthenticated, NotFound
from devpi_tx.model.names import (
    check_filename,
    check_metadata,
    check_version,
    empty_metadata,
    normalize_name,
    version_key,
)
from devpi_tx.model.policy import Identity, Policy
from devpi_tx.store.files import MetadataTooLarge, PreparedFile, hashdir, read_wheel_metadata
from devpi_tx.store.interfaces import ITransaction


@dataclass
class Upload:
    """An uploaded release file, prepared outside the transaction."""

    filename: str
    content: PreparedFile
    core_metadata_sha256: str | None = None
    """Of a wheel's PEP 658 metadata, which is extracted from the wheel when asked for."""


@dataclass
class StoreResult:
    """What a store did: C{identical} means nothing changed."""

    relpath: str = ""
    identical: bool = False
    unused: list[PreparedFile] = field(default_factory=list)


def when(now: float | None = None) -> list[int]:
    return list(time.gmtime(time.time() if now is None else now)[:6])


def iso_time(now: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(now)) + f".{int(now % 1 * 1e6):06d}Z"


def http_date(now: float) -> str:
    return time.strftime("%a, %d %b %Y %H:%M:%S GMT", time.gmtime(now))


async def _require_stage(tx: ITransaction, stage: str) -> dict[str, Any]:
    config = await get_ixconfig(tx, stage)
    if config.get("type") != "stage":
        raise NotFound("cannot submit to mirror index")
    return config


def _check_upload(identity: Identity, policy: Policy, config: Mapping[str, Any]) -> None:
    if not policy.may_upload(identity, config):
        if identity.user is None:
            raise NotAuthenticated("no permission to submit")
        raise Forbidden("no permission to submit")


async def version_record(
    tx: ITransaction, stage: str, project: str, version: str, metadata: Mapping[str, Any]
) -> tuple[str, dict[str, Any]]:
    vkey = keys.version(stage, project, version)
    record = await tx.get(vkey)
    if record is None and "_" in version:
        alt = keys.version(stage, project, version.replace("_", "-"))
        if await tx.get(alt) is not None:
            vkey, record = alt, await tx.get(alt)
    if record is None:
        record = empty_metadata()
        record["+elinks"] = []
    record.update(metadata)
    return vkey, record


async def ensure_project(tx: ITransaction, stage: str, name: str) -> str:
    project = normalize_name(name)
    if await tx.get(keys.project(stage, project)) is None:
        tx.set(keys.project(stage, project), {"name": name, "created": time.time()})
    return project


async def register(
    tx: ITransaction,
    stage: str,
    metadata: dict[str, Any],
    identity: Identity,
    policy: Policy,
) -> None:
    """C{:action=submit}: replace a version's metadata with the form's."""
    config = await _require_stage(tx, stage)
    _check_upload(identity, policy, config)
    check_metadata(metadata)
    project = await ensure_project(tx, stage, metadata["name"])
    vkey, record = await version_record(tx, stage, project, metadata["version"], {})
    record.update(empty_metadata())
    record.update(metadata)
    tx.set(vkey, record)


def new_link(
    relpath: str,
    rel: str,
    content: PreparedFile,
    log: list[dict[str, Any]],
    now: float,
    **extra: Any,
) -> dict[str, Any]:
    link = {
        "rel": rel,
        "entrypath": relpath,
        "hash_spec": f"sha256={content.sha256}",
        "hashes": {"sha256": content.sha256},
        "size": content.size,
        "upload_time": iso_time(now),
        "_log": log,
    }
    link.update(extra)
    return link


def file_entry(project: str, version: str, content: PreparedFile, now: float) -> dict[str, Any]:
    return {
        "hash_spec": f"sha256={content.sha256}",
        "hashes": {"sha256": content.sha256},
        "size": content.size,
        "last_modified": http_date(now),
        "project": project,
        "version": version,
    }


async def replace_link(
    tx: ITransaction,
    record: dict[str, Any],
    basename_or_rel: tuple[str, str],
    new_relpath: str,
    volatile: bool,
    sha256: str,
) -> tuple[bool, list[dict[str, Any]]]:
    """
    Remove an existing link with the same basename (files) or the same rel
    (doczip) according to spec 4.3.  Returns C{(identical, overwrite_log)}.
    """
    kind, value = basename_or_rel
    for link in list(record["+elinks"]):
        same = (
            link["rel"] == value
            if kind == "rel"
            else (link["rel"] == "releasefile" and link["entrypath"].rsplit("/", 1)[1] == value)
        )
        if not same:
            continue
        basename = link["entrypath"].rsplit("/", 1)[1]
        if link["hashes"].get("sha256") == sha256 and not volatile:
            return True, []
        if not volatile:
            raise Conflict(f"{basename} already exists in non-volatile index")
        count = 1 + sum(1 for e in link.get("_log", []) if e.get("what") == "overwrite")
        record["+elinks"].remove(link)
        for other in list(record["+elinks"]):
            if other.get("for_entrypath") == link["entrypath"]:
                record["+elinks"].remove(other)
                await keys.remove_entry(tx, other["entrypath"])
        if link["entrypath"] != new_relpath:
            await keys.remove_entry(tx, link["entrypath"])
        return False, [{"what": "overwrite", "who": None, "count": count}]
    return False, []


def _refuse_large_metadata(upload: Upload) -> None:
    """
    A wheel whose metadata was not taken when its form was read is looked at
    again, reading at most L{devpi_tx.store.files.METADATA_LIMIT} bytes: one whose
    C{METADATA} is larger (a zip bomb, or a mistake) is refused, as its PEP
    658 metadata could not be served.  Unreadable wheels are stored as any
    other archive is.

    @raise DomainError: 400 for metadata over the limit.
    """
    try:
        read_wheel_metadata(upload.content.temp_path)
    except MetadataTooLarge as e:
        raise Invalid(f"{upload.filename}: its .dist-info/METADATA is larger than {e.limit} bytes") from None
    except OSError:
        pass


async def store_release(
    tx: ITransaction,
    stage: str,
    metadata: dict[str, Any],
    upload: Upload,
    identity: Identity,
    policy: Policy,
    now: float | None = None,
) -> StoreResult:
    """C{:action=file_upload} (spec 4.1 step 7, 4.2, 4.3)."""
    now = time.time() if now is None else now
    config = await _require_stage(tx, stage)
    _check_upload(identity, policy, config)
    check_metadata(metadata)
    name, version = metadata["name"], metadata["version"]
    check_filename(upload.filename, name, version)
    if upload.core_metadata_sha256 is None and upload.filename.lower().endswith(".whl"):
        _refuse_large_metadata(upload)
    project = await ensure_project(tx, stage, name)
    vkey, record = await version_record(tx, stage, project, version, metadata)
    relpath = f"{stage}/+f/{hashdir(upload.content.sha256)}/{upload.filename}"
    identical, log = await replace_link(
        tx,
        record,
        ("basename", upload.filename),
        relpath,
        config.get("volatile", True),
        upload.content.sha256,
    )
    if identical:
        return StoreResult(relpath, identical=True, unused=[upload.content])
    log.append({"what": "upload", "who": identity.user, "when": when(now), "dst": stage})
    extra: dict[str, Any] = {}
    entry = file_entry(project, record["version"], upload.content, now)
    if upload.core_metadata_sha256 is not None:
        extra["core_metadata"] = {"sha256": upload.core_metadata_sha256}
        entry["core_metadata"] = extra["core_metadata"]
    record["+elinks"].append(new_link(relpath, "releasefile", upload.content, log, now, **extra))
    tx.set(vkey, record)
    tx.set(keys.file(relpath), entry)
    tx.place_file(upload.content.temp_path, relpath)
    return StoreResult(relpath)


async def latest_version(tx: ITransaction, stage: str, project: str) -> str | None:
    versions = [k.rsplit("/", 1)[1] for k, _ in await tx.items(keys.version_prefix(stage, project))]
    return max(versions, key=version_key) if versions else None


async def store_doczip(
    tx: ITransaction,
    stage: str,
    name: str,
    version: str | None,
    metadata: dict[str, Any],
    content: PreparedFile,
    identity: Identity,
    policy: Policy,
    now: float | None = None,
) -> StoreResult:
    """C{:action=doc_upload} (spec 4.1 step 8)."""
    now = time.time() if now is None else now
    config = await _require_stage(tx, stage)
    _check_upload(identity, policy, config)
    if not name:
        raise Invalid("invalid metadata: Missing required field 'name'")
    project = normalize_name(name)
    if not version:
        version = await latest_version(tx, stage, project)
        if version is None:
            raise Invalid(f"doczip has no version and {project!r} has no releases to derive one from")
        metadata = {}
    else:
        metadata = dict(metadata, name=name, version=version)
        check_metadata(metadata)
    check_version(version)
    await ensure_project(tx, stage, name)
    vkey, record = await version_record(tx, stage, project, version, metadata)
    if not record.get("name"):
        record.update(name=name, version=version)
    relpath = f"{stage}/+f/{hashdir(content.sha256)}/{project}-{version}.doc.zip"
    identical, log = await replace_link(
        tx, record, ("rel", "doczip"), relpath, config.get("volatile", True), content.sha256
    )
    if identical:
        return StoreResult(relpath, identical=True, unused=[content])
    log.append({"what": "upload", "who": identity.user, "when": when(now), "dst": stage})
    record["+elinks"].append(new_link(relpath, "doczip", content, log, now))
    tx.set(vkey, record)
    tx.set(keys.file(relpath), file_entry(project, version, content, now))
    tx.place_file(content.temp_path, relpath)
    return StoreResult(relpath)


async def _find_link(tx: ITransaction, relpath: str) -> tuple[str, dict[str, Any], dict[str, Any]]:
    entry = await tx.get(keys.file(relpath))
    if entry is None:
        raise NotFound(f"no release file found at {relpath}")
    stage = "/".join(relpath.split("/", 2)[:2])
    vkey = keys.version(stage, entry["project"], entry["version"])
    record = await tx.get(vkey)
    if record is None:
        raise NotFound(f"no release file found at {relpath}")
    for link in record["+elinks"]:
        if link["entrypath"] == relpath:
            return vkey, record, link
    raise NotFound(f"no release file found at {relpath}")


async def store_toxresult(
    tx: ITransaction,
    relpath: str,
    content: PreparedFile,
    identity: Identity,
    policy: Policy,
    now: float | None = None,
) -> str:
    """Attach a tox result to a release file (spec 4.5); returns its relpath."""
    now = time.time() if now is None else now
    stage = "/".join(relpath.split("/", 2)[:2])
    config = await get_ixconfig(tx, stage)
    if not policy.may_upload_toxresult(identity, config):
        raise Forbidden(
            "No permission to upload tox results. You can use the devpi test --no-upload option to skip the upload."
        )
    vkey, record, link = await _find_link(tx, relpath)
    if link["rel"] != "releasefile":
        raise NotFound(f"no release file found at {relpath}")
    count = sum(1 for e in record["+elinks"] if e.get("for_entrypath") == relpath)
    stamp = time.strftime("%Y%m%d%H%M%S", time.gmtime(now))
    toxpath = f"{relpath}.toxresult-{stamp}-{count}"
    log = [{"what": "upload", "who": identity.user, "when": when(now), "dst": stage}]
    record["+elinks"].append(new_link(toxpath, "toxresult", content, log, now, for_entrypath=relpath))
    entry = await tx.get(keys.file(relpath))
    tx.set(vkey, record)
    tx.set(keys.file(toxpath), file_entry(entry["project"], entry["version"], content, now))
    tx.place_file(content.temp_path, toxpath)
    return f"{toxpath}#sha256={content.sha256}"


async def _check_delete(
    tx: ITransaction, stage: str, force: bool, identity: Identity, policy: Policy, what: str
) -> dict[str, Any]:
    config = await get_ixconfig(tx, stage)
    if not policy.may_delete_entry(identity, stage.split("/", 1)[0], config):
        raise Forbidden(f"no permission to delete {what} on {stage}")
    if not config.get("volatile", True) and not force:
        raise Forbidden(f"cannot delete {what} on non-volatile index {stage}")
    return config


async def _drop_version_if_empty(tx: ITransaction, stage: str, project: str, vkey: str, record: dict[str, Any]) -> None:
    if record["+elinks"]:
        tx.set(vkey, record)
        return
    tx.delete(vkey)
    if not await tx.items(keys.version_prefix(stage, project)):
        tx.delete(keys.project(stage, project))


async def delete_file(tx: ITransaction, relpath: str, force: bool, identity: Identity, policy: Policy) -> None:
    stage = "/".join(relpath.split("/", 2)[:2])
    await _check_delete(tx, stage, force, identity, policy, "version")
    try:
        vkey, record, link = await _find_link(tx, relpath)
    except DomainError:
        raise NotFound(f"package {relpath!r} doesn't exist") from None
    for other in list(record["+elinks"]):
        if other is link or other.get("for_entrypath") == relpath:
            record["+elinks"].remove(other)
            await keys.remove_entry(tx, other["entrypath"])
    project = vkey.split("/")[3]
    await _drop_version_if_empty(tx, stage, project, vkey, record)


async def delete_version(
    tx: ITransaction,
    stage: str,
    project: str,
    version: str,
    force: bool,
    identity: Identity,
    policy: Policy,
) -> None:
    await _check_delete(tx, stage, force, identity, policy, "version")
    vkey = keys.version(stage, project, version)
    record = await tx.get(vkey)
    if record is None:
        raise NotFound(f"version {version!r} of project {project!r} not found on {stage}")
    for link in record["+elinks"]:
        await keys.remove_entry(tx, link["entrypath"])
    record["+elinks"] = []
    await _drop_version_if_empty(tx, stage, project, vkey, record)


async def delete_project(
    tx: ITransaction, stage: str, project: str, force: bool, identity: Identity, policy: Policy
) -> None:
    config = await _check_delete(tx, stage, force, identity, policy, "project")
    if config.get("type") == "mirror":
        await _delete_mirror_project(tx, stage, project)
        return
    if await tx.get(keys.project(stage, project)) is None:
        raise NotFound(f"project {project!r} not found on {stage}")
    for vkey, record in await tx.items(keys.version_prefix(stage, project)):
        for link in record["+elinks"]:
            await keys.remove_entry(tx, link["entrypath"])
        tx.delete(vkey)
    tx.delete(keys.project(stage, project))


async def _delete_mirror_project(tx: ITransaction, stage: str, project: str) -> None:
    """Forget a mirrored project: its cached page and downloaded files (spec 5.6)."""
    record = await tx.get(keys.mirror(stage, project))
    if not record:
        raise NotFound(f"project {project!r} not found on {stage}")
    for link in record.get("links", []):
        if await tx.get(keys.file(link["relpath"])) is not None:
            await keys.remove_entry(tx, link["relpath"])
    tx.delete(keys.mirror(stage, project))


async def set_yanked(
    tx: ITransaction,
    stage: str,
    project: str,
    version: str,
    yanked: bool | str,
    identity: Identity,
    policy: Policy,
) -> dict[str, Any]:
    """PEP 592: yank (C{True} or a reason) or unyank (C{False}) a version."""
    config = await get_ixconfig(tx, stage)
    if not policy.may_delete_entry(identity, stage.split("/", 1)[0], config):
        raise Forbidden(f"no permission to yank on {stage}")
    vkey = keys.version(stage, project, version)
    record = await tx.get(vkey)
    if record is None:
        raise NotFound(f"The version {version} of project {project} does not exist.")
    if yanked is False:
        record.pop("yanked", None)
    else:
        record["yanked"] = yanked
    tx.set(vkey, record)
    return dict(record)
