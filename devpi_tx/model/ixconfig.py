# -*- test-case-name: tests.model.test_model -*-
"""
Index configuration: types, keys, defaults, validation and PATCH (spec 3.2, 3.3).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from devpi_tx.model.errors import DomainError, Invalid
from devpi_tx.model.names import normalize_name, split_stage

# -- index configuration ----------------------------------------------------

INDEX_TYPES = ("stage", "mirror")
STAGE_DEFAULT_KEYS = (
    "type",
    "volatile",
    "bases",
    "acl_upload",
    "acl_toxresult_upload",
    "mirror_whitelist",
    "mirror_whitelist_inheritance",
)
COMMON_KEYS = ("title", "description", "custom_data")
MIRROR_KEYS = (
    "type",
    "volatile",
    "mirror_url",
    "mirror_cache_expiry",
    "mirror_ignore_serial_header",
    "mirror_no_project_list",
    "mirror_use_external_urls",
    "mirror_provides_core_metadata",
    "mirror_web_url_fmt",
)
MIRROR_BOOL_KEYS = (
    "mirror_ignore_serial_header",
    "mirror_no_project_list",
    "mirror_use_external_urls",
    "mirror_provides_core_metadata",
)
DEFAULT_MIRROR_URL = "https://pypi.org/simple/"
DEFAULT_MIRROR_WEB_URL_FMT = "https://pypi.org/project/{name}/"
LIST_KEYS = ("bases", "acl_upload", "acl_toxresult_upload", "mirror_whitelist")
ACL_KEYS = ("acl_upload", "acl_toxresult_upload")


def mask_url(url: str) -> str:
    """C{url} with the password of C{user:password@} replaced by C{****}."""
    match = re.match(r"^([a-z]+://[^/@:]*):[^/@]*@", url)
    return url if match is None else f"{match.group(1)}:****@{url[match.end() :]}"


def public_config(config: Mapping[str, Any]) -> dict[str, Any]:
    """An index config as shown to clients: mirror credentials masked."""
    shown = dict(config)
    if isinstance(shown.get("mirror_url"), str):
        shown["mirror_url"] = mask_url(shown["mirror_url"])
    return shown


def root_pypi_config() -> dict[str, Any]:
    return {
        "type": "mirror",
        "volatile": False,
        "title": "PyPI",
        "mirror_url": DEFAULT_MIRROR_URL,
        "mirror_web_url_fmt": DEFAULT_MIRROR_WEB_URL_FMT,
    }


def parse_bool(value: object) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str):
        lowered = value.lower()
        if lowered in ("true", "yes"):
            return True
        if lowered in ("false", "no"):
            return False
    raise Invalid(f"Unknown boolean value {value!r}.")


def parse_list(value: object) -> list[str]:
    if isinstance(value, (list, tuple)):
        items = [str(v).strip() if isinstance(v, str) else v for v in value]
        if not all(isinstance(v, str) for v in items):
            raise Invalid(f"invalid list value {value!r}")
        return [v for v in items if v]
    if isinstance(value, str):
        return [v.strip() for v in value.split(",") if v.strip()]
    raise Invalid(f"invalid list value {value!r}")


def _normalize_acl(items: list[str]) -> list[str]:
    result = []
    for item in items:
        if item.upper() in (":ANONYMOUS:", ":AUTHENTICATED:"):
            item = item.upper()
        if item not in result:
            result.append(item)
    return result


def _dedup(items: Iterable[str]) -> list[str]:
    result: list[str] = []
    for item in items:
        if item not in result:
            result.append(item)
    return result


def validate_ixconfig(
    config: Mapping[str, Any],
    stage: str,
    index_exists: Callable[[str, str], bool],
    *,
    creating: bool,
) -> dict[str, Any]:
    """
    Validate and normalise an index configuration (spec 3.2); fill defaults
    when C{creating}.  Returns the full configuration to store.

    @param stage: the index's own name, C{user/index} (it may not be its own base).
    @param index_exists: tells whether C{(user, index)} names an index.
    @raise Invalid: with all problems joined by C{", "}.
    """
    cfg = dict(config)
    cfg.pop("projects", None)
    ixtype = cfg.get("type", "stage")
    if ixtype not in INDEX_TYPES:
        raise Invalid(f"unknown index type {ixtype!r}")
    errors: list[str] = []
    result: dict[str, Any] = {"type": ixtype}
    if ixtype == "mirror":
        for key in ("bases", "acl_upload", "mirror_whitelist", "pypi_whitelist"):
            cfg.pop(key, None)
        allowed = set(MIRROR_KEYS) | set(COMMON_KEYS) | {"acl_toxresult_upload"}
    else:
        cfg.pop("pypi_whitelist", None)
        allowed = set(STAGE_DEFAULT_KEYS) | set(COMMON_KEYS)
    unknown = sorted(k for k in cfg if k not in allowed)
    if unknown:
        raise Invalid("indexconfig got unexpected keyword arguments: " + ", ".join(f"{k}={cfg[k]}" for k in unknown))
    try:
        result["volatile"] = parse_bool(cfg.get("volatile", True))
    except DomainError as e:
        errors.append(e.message)
    for key in COMMON_KEYS:
        if key in cfg:
            result[key] = cfg[key]
    if ixtype == "stage":
        _validate_stage_keys(cfg, stage, index_exists, result, errors, creating=creating)
    else:
        _validate_mirror_keys(cfg, result, errors, creating=creating)
    if errors:
        raise Invalid(", ".join(errors))
    return result


def _validate_stage_keys(
    cfg: Mapping[str, Any],
    stage: str,
    index_exists: Callable[[str, str], bool],
    result: dict[str, Any],
    errors: list[str],
    *,
    creating: bool,
) -> None:
    try:
        bases = []
        for base in parse_list(cfg.get("bases", [])):
            user, index = split_stage(base)
            name = f"{user}/{index}"
            if name == stage:
                errors.append(f"index {stage!r} cannot be a base of itself")
            elif not index_exists(user, index):
                errors.append(f"base index {base!r} does not exist")
            bases.append(name)
        result["bases"] = _dedup(bases)
    except DomainError as e:
        errors.append(e.message)
    owner = stage.split("/", 1)[0]
    for key, default in (
        ("acl_upload", [owner]),
        ("acl_toxresult_upload", [":ANONYMOUS:"]),
    ):
        try:
            result[key] = _normalize_acl(parse_list(cfg.get(key, default)))
        except DomainError as e:
            errors.append(e.message)
    try:
        whitelist = parse_list(cfg.get("mirror_whitelist", []))
        result["mirror_whitelist"] = _dedup(w if w == "*" else normalize_name(w) for w in whitelist)
    except DomainError as e:
        errors.append(e.message)
    # an index made before the key existed behaves as "union" until set
    if "mirror_whitelist_inheritance" not in cfg and not creating:
        return
    inheritance = cfg.get("mirror_whitelist_inheritance", "intersection")
    if not isinstance(inheritance, str) or inheritance.lower() not in ("intersection", "union"):
        errors.append(f"'mirror_whitelist_inheritance' must be 'intersection' or 'union', not {inheritance!r}")
    else:
        result["mirror_whitelist_inheritance"] = inheritance.lower()


def _validate_mirror_keys(cfg: Mapping[str, Any], result: dict[str, Any], errors: list[str], *, creating: bool) -> None:
    url = cfg.get("mirror_url")
    if url is not None:
        if not isinstance(url, str) or not url.startswith(("http://", "https://")):
            errors.append("'mirror_url' option must be a URL.")
        else:
            result["mirror_url"] = url
    if "mirror_cache_expiry" in cfg:
        value = cfg["mirror_cache_expiry"]
        try:
            if isinstance(value, bool):
                raise ValueError(value)
            result["mirror_cache_expiry"] = int(value)
        except (TypeError, ValueError):
            errors.append("'mirror_cache_expiry' option must be an integer")
    for key in MIRROR_BOOL_KEYS:
        if key in cfg:
            try:
                result[key] = parse_bool(cfg[key])
            except DomainError as e:
                errors.append(e.message)
        elif creating:
            result[key] = False
    if "mirror_web_url_fmt" in cfg:
        result["mirror_web_url_fmt"] = cfg["mirror_web_url_fmt"]
    if "acl_toxresult_upload" in cfg:
        try:
            result["acl_toxresult_upload"] = _normalize_acl(parse_list(cfg["acl_toxresult_upload"]))
        except DomainError as e:
            errors.append(e.message)


# keys that exist with a default and cannot be removed with "key-="
_UNREMOVABLE = frozenset(["type", "volatile", "bases", "acl_upload", "acl_toxresult_upload", "mirror_whitelist"])


def apply_patch(current: Mapping[str, Any], body: object) -> dict[str, Any]:
    """
    Apply a PATCH body (spec 3.3) to a copy of C{current}; the result still
    has to go through L{validate_ixconfig}.
    """
    new = dict(current)
    if isinstance(body, dict):
        if body.get("type") == "indexconfig" and isinstance(body.get("result"), dict):
            body = body["result"]
        assert isinstance(body, dict)
        if "type" in body and body["type"] != current.get("type"):
            raise Invalid("the 'type' of an index can't be changed")
        new.update(body)
        return new
    if not isinstance(body, list) or not all(isinstance(op, str) for op in body):
        raise Invalid("PATCH body must be a JSON object or a list of 'key=value' strings")
    for op in body:
        if "=" not in op:
            raise Invalid(f"invalid modification {op!r}, expected 'key=value'")
        key, value = op.split("=", 1)
        if key.endswith("+"):
            key = key[:-1]
            items = _list_of(new, key)
            for v in parse_list(value) if key in LIST_KEYS else [value]:
                if key in ACL_KEYS:
                    v = _normalize_acl([v])[0]
                if v not in items:
                    items.append(v)
            new[key] = items
        elif key.endswith("-"):
            key = key[:-1]
            if value == "":
                if key in _UNREMOVABLE:
                    raise Invalid("Default values can't be removed.")
                new.pop(key, None)
                continue
            items = _list_of(new, key)
            for v in parse_list(value) if key in LIST_KEYS else [value]:
                if key in ACL_KEYS:
                    v = _normalize_acl([v])[0]
                if v not in items:
                    raise Invalid(f"The {key!r} setting doesn't have value {v!r}")
                items.remove(v)
            new[key] = items
        else:
            if key == "type" and value != current.get("type"):
                raise Invalid("the 'type' of an index can't be changed")
            new[key] = value
    return new


def _list_of(config: Mapping[str, Any], key: str) -> list[str]:
    if key not in config:
        raise Invalid(f"The {key!r} setting is not a list setting of this index")
    value = config[key]
    if not isinstance(value, list):
        raise Invalid(f"The {key!r} setting is not a list")
    return list(value)
