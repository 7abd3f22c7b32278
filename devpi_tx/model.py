"""
Values and pure rules of devpi: names, index configuration, permissions,
inheritance order and the mirror whitelist.  Nothing here does I/O.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from packaging.version import InvalidVersion, Version


class APIError(Exception):
    """
    A request cannot be served; C{status} and C{message} go to the client.
    """

    def __init__(self, status: int, message: str) -> None:
        super().__init__(status, message)
        self.status = status
        self.message = message


def bad_request(message: str) -> APIError:
    return APIError(400, message)


def not_found(message: str) -> APIError:
    return APIError(404, message)


def forbidden(message: str) -> APIError:
    return APIError(403, message)


MAX_DOCUMENT = 64 * 1024
"""The largest user record or index configuration, as JSON (every C{GET /} carries them all)."""


def check_document_size(kind: str, document: Mapping[str, Any]) -> None:
    """
    @raise APIError: 400 when C{document} is larger than L{MAX_DOCUMENT} as JSON.
    """
    size = len(json.dumps(document, separators=(",", ":")))
    if size > MAX_DOCUMENT:
        raise bad_request(f"{kind} too large: {size} bytes as JSON, at most {MAX_DOCUMENT}")


# -- names ------------------------------------------------------------------

_FORBIDDEN_NAME_CHARS = set("!\"#$%&'()*+,/:;<=>?[\\]^`{|}~ ")
MAX_NAME_LENGTH = 200
_PROJECT_RE = re.compile(r"^[a-z0-9]([a-z0-9._-]*[a-z0-9])?$", re.IGNORECASE)
_NORMALIZE_RE = re.compile(r"[^A-Za-z0-9]+")


def check_name(kind: str, name: str) -> None:
    """
    Validate a user or index name as devpi does (spec 0.8).

    @raise APIError: 400 naming what is wrong.
    """
    if not name:
        raise bad_request(f"{kind} name must not be empty")
    if len(name) > MAX_NAME_LENGTH:
        raise bad_request(f"{kind} name is longer than {MAX_NAME_LENGTH} characters")
    if name in (".", "..") or any(
        c in _FORBIDDEN_NAME_CHARS or ord(c) < 32 or ord(c) == 127 for c in name
    ):
        raise bad_request(
            f"{kind} {name!r} contains characters that aren't allowed. "
            "Any ascii symbol besides -.@_ is blocked."
        )


def normalize_name(name: str) -> str:
    """
    PEP 503 normalisation: runs of characters outside C{[A-Za-z0-9]} become
    one C{-}, then lower case.
    """
    return _NORMALIZE_RE.sub("-", name).lower()


def check_project_name(name: str) -> None:
    if len(name) > MAX_NAME_LENGTH:
        raise bad_request(f"project name is longer than {MAX_NAME_LENGTH} characters")
    if not _PROJECT_RE.match(name):
        raise bad_request(f"invalid project name {name!r}")


def check_version(version: str) -> None:
    if not version:
        raise bad_request("invalid metadata: Missing required field 'version'")
    if len(version) > MAX_NAME_LENGTH:
        raise bad_request(f"version is longer than {MAX_NAME_LENGTH} characters")
    if any(c in '<>%#"/\\' or ord(c) < 32 or c.isspace() for c in version) or version in (
        ".",
        "..",
    ):
        raise bad_request(f"invalid version {version!r}")


def version_key(version: str) -> tuple[int, Any, str]:
    """
    Sort key for versions: parseable versions by PEP 440, others after.
    """
    try:
        return (1, Version(version), version)
    except InvalidVersion:
        return (0, version, version)


def split_stage(spec: str) -> tuple[str, str]:
    """
    C{(user, index)} of an index spec; as devpi, a leading or trailing
    C{/} is allowed (C{/root/pypi}).
    """
    parts = spec.strip("/").split("/")
    if len(parts) != 2 or not all(parts):
        raise bad_request(f"invalid base index spec: {spec!r}")
    return parts[0], parts[1]


# -- archives -----------------------------------------------------------------

ARCHIVE_SUFFIXES = (
    ".exe",
    ".tar.gz",
    ".bz2",
    ".rpm",
    ".deb",
    ".zip",
    ".tgz",
    ".egg",
    ".dmg",
    ".msi",
    ".whl",
)


def check_filename(filename: str, name: str, version: str) -> None:
    """
    The checks of spec 4.1 on an uploaded file's name, plus path safety.
    """
    if (
        not filename
        or "/" in filename
        or "\\" in filename
        or any(ord(c) < 32 or ord(c) == 127 for c in filename)
        or filename.startswith(".")
        or len(filename) > 255
    ):
        raise bad_request(f"invalid filename {filename!r}")
    if not filename.lower().endswith(ARCHIVE_SUFFIXES):
        raise bad_request(f"{filename!r} is not a valid archive name")
    escaped = re.sub(r"[^\w\d.]+", "_", version)
    if version not in filename and escaped not in filename:
        raise bad_request(f"filename {filename!r} does not contain version {version!r}")
    if not normalize_name(filename).startswith(normalize_name(name)):
        raise bad_request(f"filename {filename!r} does not match project name {name!r}")


# -- metadata ---------------------------------------------------------------

METADATA_LIST_KEYS = frozenset(
    [
        "platform",
        "classifiers",
        "supported_platform",
        "provides",
        "requires",
        "obsoletes",
        "project_urls",
        "provides_dist",
        "obsoletes_dist",
        "requires_dist",
        "requires_external",
        "provides_extras",
        "dynamic",
        "license_file",
    ]
)
METADATA_KEYS = (
    "name",
    "version",
    "metadata_version",
    "summary",
    "home_page",
    "author",
    "author_email",
    "maintainer",
    "maintainer_email",
    "license",
    "description",
    "keywords",
    "platform",
    "classifiers",
    "download_url",
    "supported_platform",
    "comment",
    "provides",
    "requires",
    "obsoletes",
    "project_urls",
    "provides_dist",
    "obsoletes_dist",
    "requires_dist",
    "requires_external",
    "requires_python",
    "description_content_type",
    "provides_extras",
    "dynamic",
    "license_expression",
    "license_file",
)


def metadata_from_form(form: Mapping[str, list[str]]) -> dict[str, Any]:
    """
    The stored metadata keys present in an upload form (spec 4.2).
    """
    result: dict[str, Any] = {}
    for key in METADATA_KEYS:
        if key not in form:
            continue
        values = form[key]
        if key in METADATA_LIST_KEYS:
            result[key] = [v for v in values if v]
        else:
            value = values[0] if values else ""
            result[key] = "" if value == "UNKNOWN" else value
    return result


def empty_metadata() -> dict[str, Any]:
    return {k: [] if k in METADATA_LIST_KEYS else "" for k in METADATA_KEYS}


def check_metadata(metadata: Mapping[str, Any]) -> None:
    name = metadata.get("name") or ""
    version = metadata.get("version") or ""
    if not name:
        raise bad_request("invalid metadata: Missing required field 'name'")
    if not version:
        raise bad_request("invalid metadata: Missing required field 'version'")
    check_project_name(name)
    check_version(version)


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
    return url if match is None else f"{match.group(1)}:****@{url[match.end():]}"


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
    raise bad_request(f"Unknown boolean value {value!r}.")


def parse_list(value: object) -> list[str]:
    if isinstance(value, (list, tuple)):
        items = [str(v).strip() if isinstance(v, str) else v for v in value]
        if not all(isinstance(v, str) for v in items):
            raise bad_request(f"invalid list value {value!r}")
        return [v for v in items if v]
    if isinstance(value, str):
        return [v.strip() for v in value.split(",") if v.strip()]
    raise bad_request(f"invalid list value {value!r}")


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
    @raise APIError: 400 with all problems joined by C{", "}.
    """
    cfg = dict(config)
    cfg.pop("projects", None)
    ixtype = cfg.get("type", "stage")
    if ixtype not in INDEX_TYPES:
        raise bad_request(f"unknown index type {ixtype!r}")
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
        raise bad_request(
            "indexconfig got unexpected keyword arguments: "
            + ", ".join(f"{k}={cfg[k]}" for k in unknown)
        )
    try:
        result["volatile"] = parse_bool(cfg.get("volatile", True))
    except APIError as e:
        errors.append(e.message)
    for key in COMMON_KEYS:
        if key in cfg:
            result[key] = cfg[key]
    if ixtype == "stage":
        _validate_stage_keys(cfg, stage, index_exists, result, errors, creating=creating)
    else:
        _validate_mirror_keys(cfg, result, errors, creating=creating)
    if errors:
        raise bad_request(", ".join(errors))
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
    except APIError as e:
        errors.append(e.message)
    owner = stage.split("/", 1)[0]
    for key, default in (
        ("acl_upload", [owner]),
        ("acl_toxresult_upload", [":ANONYMOUS:"]),
    ):
        try:
            result[key] = _normalize_acl(parse_list(cfg.get(key, default)))
        except APIError as e:
            errors.append(e.message)
    try:
        whitelist = parse_list(cfg.get("mirror_whitelist", []))
        result["mirror_whitelist"] = _dedup(w if w == "*" else normalize_name(w) for w in whitelist)
    except APIError as e:
        errors.append(e.message)
    # an index made before the key existed behaves as "union" until set
    if "mirror_whitelist_inheritance" not in cfg and not creating:
        return
    inheritance = cfg.get("mirror_whitelist_inheritance", "intersection")
    if not isinstance(inheritance, str) or inheritance.lower() not in ("intersection", "union"):
        errors.append(
            "'mirror_whitelist_inheritance' must be 'intersection' or 'union', "
            f"not {inheritance!r}"
        )
    else:
        result["mirror_whitelist_inheritance"] = inheritance.lower()


def _validate_mirror_keys(
    cfg: Mapping[str, Any], result: dict[str, Any], errors: list[str], *, creating: bool
) -> None:
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
            except APIError as e:
                errors.append(e.message)
        elif creating:
            result[key] = False
    if "mirror_web_url_fmt" in cfg:
        result["mirror_web_url_fmt"] = cfg["mirror_web_url_fmt"]
    if "acl_toxresult_upload" in cfg:
        try:
            result["acl_toxresult_upload"] = _normalize_acl(parse_list(cfg["acl_toxresult_upload"]))
        except APIError as e:
            errors.append(e.message)


# keys that exist with a default and cannot be removed with "key-="
_UNREMOVABLE = frozenset(
    ["type", "volatile", "bases", "acl_upload", "acl_toxresult_upload", "mirror_whitelist"]
)


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
            raise bad_request("the 'type' of an index can't be changed")
        new.update(body)
        return new
    if not isinstance(body, list) or not all(isinstance(op, str) for op in body):
        raise bad_request("PATCH body must be a JSON object or a list of 'key=value' strings")
    for op in body:
        if "=" not in op:
            raise bad_request(f"invalid modification {op!r}, expected 'key=value'")
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
                    raise bad_request("Default values can't be removed.")
                new.pop(key, None)
                continue
            items = _list_of(new, key)
            for v in parse_list(value) if key in LIST_KEYS else [value]:
                if key in ACL_KEYS:
                    v = _normalize_acl([v])[0]
                if v not in items:
                    raise bad_request(f"The {key!r} setting doesn't have value {v!r}")
                items.remove(v)
            new[key] = items
        else:
            if key == "type" and value != current.get("type"):
                raise bad_request("the 'type' of an index can't be changed")
            new[key] = value
    return new


def _list_of(config: Mapping[str, Any], key: str) -> list[str]:
    if key not in config:
        raise bad_request(f"The {key!r} setting is not a list setting of this index")
    value = config[key]
    if not isinstance(value, list):
        raise bad_request(f"The {key!r} setting is not a list")
    return list(value)


# -- permissions ------------------------------------------------------------


@dataclass(frozen=True)
class Identity:
    """Who a request speaks for; C{user is None} for anonymous requests."""

    user: str | None
    groups: tuple[str, ...] = ()

    def principals(self) -> set[str]:
        result = {":ANONYMOUS:"}
        if self.user is not None:
            result |= {":AUTHENTICATED:", self.user}
            result |= {f":{g}" for g in self.groups}
        return result


ANONYMOUS = Identity(None)


def acl_allows(acl: Iterable[str], identity: Identity) -> bool:
    return bool(identity.principals() & set(acl))


@dataclass(frozen=True)
class Policy:
    """
    Global permissions; C{restrict_modify} is the C{--restrict-modify} set
    of principals or C{None}.
    """

    restrict_modify: frozenset[str] | None = None

    def _admin(self, identity: Identity) -> bool:
        if self.restrict_modify is None:
            return identity.user == "root"
        return bool(identity.principals() & self.restrict_modify)

    def may_create_user(self, identity: Identity) -> bool:
        return self.restrict_modify is None or self._admin(identity)

    def may_modify_user(self, identity: Identity, user: str, password_only: bool) -> bool:
        if self.restrict_modify is None:
            return identity.user in ("root", user)
        return self._admin(identity) or (password_only and identity.user == user)

    def may_delete_user(self, identity: Identity, user: str) -> bool:
        if user == "root":
            return False
        if self.restrict_modify is None:
            return identity.user in ("root", user)
        return self._admin(identity) and identity.user != user

    def may_manage_index(self, identity: Identity, owner: str) -> bool:
        if self.restrict_modify is None:
            return identity.user in ("root", owner)
        return self._admin(identity)

    def may_upload(self, identity: Identity, ixconfig: Mapping[str, Any]) -> bool:
        if ixconfig.get("type") != "stage":
            return False
        return acl_allows(ixconfig.get("acl_upload", []), identity)

    def may_delete_entry(self, identity: Identity, owner: str, ixconfig: Mapping[str, Any]) -> bool:
        return self.may_upload(identity, ixconfig) or self.may_manage_index(identity, owner)

    def may_upload_toxresult(self, identity: Identity, ixconfig: Mapping[str, Any]) -> bool:
        return acl_allows(ixconfig.get("acl_toxresult_upload", [":ANONYMOUS:"]), identity)


def parse_restrict_modify(spec: str | None) -> frozenset[str] | None:
    if not spec:
        return None
    return frozenset(p.strip() for p in spec.split(",") if p.strip())


# -- inheritance ------------------------------------------------------------


def stage_resolution_order(
    start: str, get_config: Callable[[str], Mapping[str, Any] | None]
) -> list[str]:
    """
    The stage resolution order of spec 3.5: private stages breadth first,
    then every mirror once; cycles and missing bases are skipped.
    """
    queue = [start]
    seen = {start}
    order: list[str] = []
    mirrors: list[str] = []
    while queue:
        name = queue.pop(0)
        config = get_config(name)
        if config is None:
            continue
        order.append(name)
        for base in config.get("bases", []):
            if base in seen:
                continue
            base_config = get_config(base)
            if base_config is None:
                continue
            seen.add(base)
            if base_config.get("type") == "mirror":
                mirrors.append(base)
            else:
                queue.append(base)
    return order + mirrors


def mirrors_allowed(
    project: str,
    sro: list[tuple[str, Mapping[str, Any]]],
    has_project: Callable[[str], bool],
) -> set[str]:
    """
    Which mirrors in C{sro} may be consulted for C{project} (spec 3.6): a
    private hit blocks every later mirror unless the project is whitelisted.

    @param sro: C{(stage, config)} pairs in resolution order.
    @param has_project: tells whether a private stage has C{project}.
    """
    if not sro:
        return set()
    inheritance = sro[0][1].get("mirror_whitelist_inheritance", "union")
    whitelist: set[str] | None = None
    whitelisted = False
    private_hit = False
    allowed: set[str] = set()
    for stage, config in sro:
        if config.get("type") == "mirror":
            if whitelisted or not private_hit:
                allowed.add(stage)
            continue
        own = set(config.get("mirror_whitelist", []))
        if whitelist is None:
            whitelist = own
        elif inheritance == "intersection":
            whitelist &= own
        else:
            whitelist |= own
        if "*" in whitelist or project in whitelist:
            whitelisted = True
        elif has_project(stage):
            private_hit = True
    return allowed
