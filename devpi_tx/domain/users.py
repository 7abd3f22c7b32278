# -*- test-case-name: tests.web.test_api,tests.web.test_api_indexes -*-
"""
Users and indexes: the transactional rules of spec sections 1.7, 1.8 and 3.
Every function here runs inside one L{ITransaction}.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from typing import Any

from devpi_tx.domain import keys
from devpi_tx.model.errors import Conflict, DomainError, Forbidden, Invalid, NotFound
from devpi_tx.model.ixconfig import apply_patch, mask_url, parse_list, public_config, validate_ixconfig
from devpi_tx.model.names import check_document_size, check_name
from devpi_tx.model.policy import Identity, Policy
from devpi_tx.store.interfaces import ITransaction

USER_KEYS = ("password", "pwhash", "email", "title", "description", "custom_data")
_IGNORED_USER_KEYS = ("indexes", "username", "created", "modified")


def now_iso(now: float | None = None) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() if now is None else now))


async def get_user(tx: ITransaction, name: str) -> dict[str, Any]:
    record = await tx.get(keys.user(name))
    if record is None:
        raise NotFound(f"no user {name!r}")
    return dict(record)


async def get_ixconfig(tx: ITransaction, stage: str) -> dict[str, Any]:
    config = await tx.get(keys.index(stage))
    if config is None:
        raise NotFound(f"The stage {stage} could not be found.")
    return dict(config)


async def user_view(tx: ITransaction, name: str) -> dict[str, Any]:
    record = await get_user(tx, name)
    view: dict[str, Any] = {"username": name}
    for key in ("email", "title", "description", "custom_data", "created", "modified"):
        if record.get(key) not in (None, ""):
            view[key] = record[key]
    view["indexes"] = {
        k.rsplit("/", 1)[1]: public_config(config) for k, config in await tx.items(keys.index_prefix(name))
    }
    return view


async def list_users(tx: ITransaction) -> dict[str, Any]:
    names = [keys.name_in(k, keys.USERS) for k, _ in await tx.items(keys.USERS)]
    return {name: await user_view(tx, name) for name in names}


def _refuse_unknown_user_keys(body: dict[str, Any]) -> None:
    unknown = sorted(k for k in body if k not in USER_KEYS and k not in _IGNORED_USER_KEYS)
    if unknown:
        raise Invalid("Unknown keys in user config: " + ", ".join(unknown))


async def create_user(
    tx: ITransaction,
    name: str,
    body: dict[str, Any],
    pwhash: str | None,
    identity: Identity,
    policy: Policy,
    now: float | None = None,
) -> dict[str, Any]:
    """
    Create user C{name}; C{pwhash} is the hash of C{body["password"]},
    computed outside the transaction.
    """
    check_name("username", name)
    if not policy.may_create_user(identity):
        raise Forbidden(f"no permission to create user {name}")
    _refuse_unknown_user_keys(body)
    if "password" not in body:
        raise Invalid("password needs to be set")
    if await tx.get(keys.user(name)) is not None:
        raise Conflict("user already exists")
    stamp = now_iso(now)
    record: dict[str, Any] = {"created": stamp, "modified": stamp}
    if pwhash is not None:
        record["pwhash"] = pwhash
    elif isinstance(body.get("pwhash"), str) and body["pwhash"]:
        record["pwhash"] = body["pwhash"]
    for key in ("email", "title", "description", "custom_data"):
        if body.get(key):
            record[key] = body[key]
    check_document_size("user config", record)
    tx.set(keys.user(name), record)
    return await user_view(tx, name)


async def modify_user(
    tx: ITransaction,
    name: str,
    body: dict[str, Any],
    pwhash: str | None,
    identity: Identity,
    policy: Policy,
    now: float | None = None,
) -> bool:
    """
    Apply a PATCH to a user; falsy values remove a key.  Unknown keys are
    refused as a PUT refuses them (devpi ignores them on PATCH, so a typo
    went unnoticed).  Returns whether the password changed.
    """
    record = await get_user(tx, name)
    _refuse_unknown_user_keys(body)
    given = {k: v for k, v in body.items() if k in USER_KEYS}
    password_only = set(given) == {"password"}
    if not policy.may_modify_user(identity, name, password_only):
        raise Forbidden(f"no permission to modify user {name}")
    changed = False
    if pwhash is not None:
        record["pwhash"] = pwhash
        record.pop("pwsalt", None)
        changed = True
    elif given.get("pwhash"):
        record["pwhash"] = given["pwhash"]
        record.pop("pwsalt", None)
    for key in ("email", "title", "description", "custom_data"):
        if key in given:
            if given[key]:
                record[key] = given[key]
            else:
                record.pop(key, None)
    record["modified"] = now_iso(now)
    check_document_size("user config", record)
    tx.set(keys.user(name), record)
    return changed


async def delete_user(tx: ITransaction, name: str, identity: Identity, policy: Policy) -> None:
    await get_user(tx, name)
    if name == "root":
        raise Forbidden("root user cannot be deleted")
    if not policy.may_delete_user(identity, name):
        raise Forbidden(f"no permission to delete user {name}")
    indexes = await tx.items(keys.index_prefix(name))
    for key, config in indexes:
        if not config.get("volatile", True):
            raise Forbidden(f"user {name!r} has non-volatile index: {key.rsplit('/', 1)[1]}")
    for key, _ in indexes:
        await _drop_index_content(tx, key[len("i/") :])
        tx.delete(key)
    tx.delete(keys.user(name))


async def _index_exists(tx: ITransaction, config: Mapping[str, Any]) -> Callable[[str, str], bool]:
    """
    Which of the indexes C{config} names as bases exist, read first:
    validation is a pure rule that asks this.
    """
    try:
        named = parse_list(config.get("bases", []))
    except DomainError:
        named = []  # validation says what is wrong with them
    existing = {name.strip("/") for name in named if await tx.get(keys.index(name.strip("/"))) is not None}
    return lambda user, index: f"{user}/{index}" in existing


async def create_index(
    tx: ITransaction, stage: str, body: dict[str, Any], identity: Identity, policy: Policy
) -> dict[str, Any]:
    user, index = stage.split("/", 1)
    check_name("index", index)
    await get_user(tx, user)
    if not policy.may_manage_index(identity, user):
        raise Forbidden(f"no permission to create index {stage}")
    if await tx.get(keys.index(stage)) is not None:
        raise Conflict(f"index {stage!r} exists")
    config = validate_ixconfig(body, stage, await _index_exists(tx, body), creating=True)
    check_document_size("index config", config)
    tx.set(keys.index(stage), config)
    return public_config(config)


async def patch_index(
    tx: ITransaction,
    stage: str,
    body: object,
    identity: Identity,
    policy: Policy,
    error_on_noop: bool = False,
) -> dict[str, Any]:
    current = await get_ixconfig(tx, stage)
    user = stage.split("/", 1)[0]
    if not policy.may_manage_index(identity, user):
        raise Forbidden(f"no permission to modify index {stage}")
    patched = apply_patch(current, body)
    stored_url = current.get("mirror_url")
    if isinstance(stored_url, str) and patched.get("mirror_url") == mask_url(stored_url):
        patched["mirror_url"] = stored_url  # a config sent back as shown keeps its password
    if patched.get("type") != current.get("type"):
        raise Invalid("the 'type' of an index can't be changed")
    config = validate_ixconfig(patched, stage, await _index_exists(tx, patched), creating=False)
    if error_on_noop and config == current:
        raise Invalid("The requested modifications resulted in no changes")
    check_document_size("index config", config)
    tx.set(keys.index(stage), config)
    return public_config(config)


async def delete_index(tx: ITransaction, stage: str, identity: Identity, policy: Policy) -> None:
    config = await get_ixconfig(tx, stage)
    if not policy.may_manage_index(identity, stage.split("/", 1)[0]):
        raise Forbidden(f"no permission to delete index {stage}")
    if not config.get("volatile", True):
        raise Forbidden(f"index {stage} non-volatile, cannot delete")
    await _drop_index_content(tx, stage)
    tx.delete(keys.index(stage))


async def _drop_index_content(tx: ITransaction, stage: str) -> None:
    for prefix in (keys.project_prefix(stage), keys.version_prefix(stage)):
        for key, _ in await tx.items(prefix):
            tx.delete(key)
    for key, _ in await tx.items(keys.file_prefix(stage)):
        await keys.remove_entry(tx, key[len("f/") :])
