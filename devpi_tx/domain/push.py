# -*- test-case-name: tests.web.test_api_packages -*-
"""
Push (spec 4.6): releases of one index copied to another, or to an external
index, in one transaction.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

from devpi_tx.domain import keys
from devpi_tx.domain.releases import ensure_project, file_entry, new_link, replace_link, version_record, when
from devpi_tx.domain.users import get_ixconfig
from devpi_tx.model.errors import DomainError, Invalid, NotAuthenticated, NotFound
from devpi_tx.model.names import (
    normalize_name,
    split_stage,
)
from devpi_tx.model.policy import Identity, Policy
from devpi_tx.store.files import hashdir
from devpi_tx.store.interfaces import IFileStore, ITransaction


async def push(
    tx: ITransaction,
    stage: str,
    body: Mapping[str, Any],
    identity: Identity,
    policy: Policy,
    file_store: IFileStore,
    now: float | None = None,
) -> list[list[Any]]:
    """
    Internal push of one version to C{targetindex} (spec 4.6), in one
    transaction: a conflict leaves the target unchanged.
    """
    now = time.time() if now is None else now
    name, version = body.get("name"), body.get("version")
    if not isinstance(name, str) or not isinstance(version, str) or not name or not version:
        raise Invalid("push needs 'name' and 'version'")
    if body.get("no_docs") and body.get("only_docs"):
        raise Invalid("can't use 'no_docs' and 'only_docs' together")
    target = body.get("targetindex")
    if not isinstance(target, str):
        raise Invalid("external push is not supported, give 'targetindex'")
    unknown = sorted(set(body) - {"name", "version", "targetindex", "no_docs", "only_docs", "register_project"})
    if unknown:
        raise Invalid(f"unknown additional options: {', '.join(unknown)}")
    try:
        split_stage(target)
    except DomainError:
        raise Invalid("targetindex not in format user/index") from None
    await get_ixconfig(tx, stage)
    project = normalize_name(name)
    record = await tx.get(keys.version(stage, project, version))
    if record is None:
        raise Invalid(f"there are no files for {name} {version} on stage {stage}")
    target_config = await get_ixconfig(tx, target)
    if not policy.may_upload(identity, target_config):
        raise NotAuthenticated(f"user {identity.user!r} cannot upload to {target!r}")
    links = record["+elinks"]
    files = sorted(
        (link for link in links if link["rel"] == "releasefile"),
        key=lambda link: link["entrypath"].rsplit("/", 1)[1],
    )
    docs = [link for link in links if link["rel"] == "doczip"]
    if body.get("only_docs"):
        files = []
    if body.get("no_docs"):
        docs = []
    if not files and not docs:
        raise NotFound(f"no release/files found for {name} {version}")
    metadata = {k: v for k, v in record.items() if not k.startswith("+") and k != "yanked"}
    target_project = await ensure_project(tx, target, metadata.get("name") or name)
    tvkey, trecord = await version_record(tx, target, target_project, version, metadata)
    volatile = target_config.get("volatile", True)
    log: list[list[Any]] = [[200, "register", project, version, "->", target]]
    push_entry = {
        "what": "push",
        "who": identity.user,
        "when": when(now),
        "src": stage,
        "dst": target,
    }
    for link in files + docs:
        basename = link["entrypath"].rsplit("/", 1)[1]
        sha = link["hashes"]["sha256"]
        relpath = f"{target}/+f/{hashdir(sha)}/{basename}"
        match = ("rel", "doczip") if link["rel"] == "doczip" else ("basename", basename)
        identical, overwrite = await replace_link(tx, trecord, match, relpath, volatile, sha)
        if identical:
            continue
        copied = file_store.prepare_copy(link["entrypath"])
        oldlog = [e for e in link.get("_log", []) if e.get("what") != "overwrite"]
        extra = {"core_metadata": link["core_metadata"]} if link.get("core_metadata") else {}
        new = new_link(relpath, link["rel"], copied, overwrite + oldlog + [push_entry], now, **extra)
        new["upload_time"] = link.get("upload_time", new["upload_time"])
        trecord["+elinks"].append(new)
        entry = file_entry(target_project, version, copied, now)
        if extra:
            entry.update(extra)
            source_meta = keys.metadata_relpath(link["entrypath"])
            if file_store.exists(source_meta):  # else it is extracted from the wheel on request
                meta = file_store.prepare_copy(source_meta)
                tx.place_file(meta.temp_path, keys.metadata_relpath(relpath))
        tx.set(keys.file(relpath), entry)
        tx.place_file(copied.temp_path, relpath)
        if link["rel"] == "doczip":
            log.append([200, "store_doczip", project, version, "->", target])
            continue
        log.append([200, "store_releasefile", relpath])
        for tox in links:
            if tox.get("for_entrypath") != link["entrypath"]:
                continue
            toxpath = relpath + tox["entrypath"][len(link["entrypath"]) :]
            tcopy = file_store.prepare_copy(tox["entrypath"])
            trecord["+elinks"].append(
                new_link(toxpath, "toxresult", tcopy, [*tox.get("_log", []), push_entry], now, for_entrypath=relpath)
            )
            tx.set(keys.file(toxpath), file_entry(target_project, version, tcopy, now))
            tx.place_file(tcopy.temp_path, toxpath)
            log.append([200, "store_toxresult", toxpath])
    tx.set(tvkey, trecord)
    return log
