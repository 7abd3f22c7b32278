# -*- test-case-name: tests.model.test_model,tests.web.test_hardening -*-
"""
Names of users, indexes, projects, versions and release files, and release metadata (spec 0.8, 4.1).
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any

from packaging.utils import InvalidWheelFilename, parse_wheel_filename
from packaging.version import InvalidVersion, Version

from devpi_tx.model.errors import Invalid

MAX_DOCUMENT = 64 * 1024
"""The largest user record or index configuration, as JSON (every C{GET /} carries them all)."""


def check_document_size(kind: str, document: Mapping[str, Any]) -> None:
    """
    @raise Invalid: when C{document} is larger than L{MAX_DOCUMENT} as JSON.
    """
    size = len(json.dumps(document, separators=(",", ":")))
    if size > MAX_DOCUMENT:
        raise Invalid(f"{kind} too large: {size} bytes as JSON, at most {MAX_DOCUMENT}")


# -- names ------------------------------------------------------------------

_FORBIDDEN_NAME_CHARS = set("!\"#$%&'()*+,/:;<=>?[\\]^`{|}~ ")
MAX_NAME_LENGTH = 200
_PROJECT_RE = re.compile(r"^[a-z0-9]([a-z0-9._-]*[a-z0-9])?$", re.IGNORECASE)
_NORMALIZE_RE = re.compile(r"[^A-Za-z0-9]+")


def check_name(kind: str, name: str) -> None:
    """
    Validate a user or index name as devpi does (spec 0.8).

    @raise Invalid: naming what is wrong.
    """
    if not name:
        raise Invalid(f"{kind} name must not be empty")
    if len(name) > MAX_NAME_LENGTH:
        raise Invalid(f"{kind} name is longer than {MAX_NAME_LENGTH} characters")
    if name in (".", "..") or any(c in _FORBIDDEN_NAME_CHARS or ord(c) < 32 or ord(c) == 127 for c in name):
        raise Invalid(
            f"{kind} {name!r} contains characters that aren't allowed. Any ascii symbol besides -.@_ is blocked."
        )


def normalize_name(name: str) -> str:
    """
    PEP 503 normalisation: runs of characters outside C{[A-Za-z0-9]} become
    one C{-}, then lower case.
    """
    return _NORMALIZE_RE.sub("-", name).lower()


def check_project_name(name: str) -> None:
    if len(name) > MAX_NAME_LENGTH:
        raise Invalid(f"project name is longer than {MAX_NAME_LENGTH} characters")
    if not _PROJECT_RE.match(name):
        raise Invalid(f"invalid project name {name!r}")


def check_version(version: str) -> None:
    if not version:
        raise Invalid("invalid metadata: Missing required field 'version'")
    if len(version) > MAX_NAME_LENGTH:
        raise Invalid(f"version is longer than {MAX_NAME_LENGTH} characters")
    if any(c in '<>%#"/\\' or ord(c) < 32 or c.isspace() for c in version) or version in (
        ".",
        "..",
    ):
        raise Invalid(f"invalid version {version!r}")


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
        raise Invalid(f"invalid base index spec: {spec!r}")
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
        raise Invalid(f"invalid filename {filename!r}")
    if not filename.lower().endswith(ARCHIVE_SUFFIXES):
        raise Invalid(f"{filename!r} is not a valid archive name")
    escaped = re.sub(r"[^\w\d.]+", "_", version)
    if version not in filename and escaped not in filename:
        raise Invalid(f"filename {filename!r} does not contain version {version!r}")
    if not normalize_name(filename).startswith(normalize_name(name)):
        raise Invalid(f"filename {filename!r} does not match project name {name!r}")


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
        raise Invalid("invalid metadata: Missing required field 'name'")
    if not version:
        raise Invalid("invalid metadata: Missing required field 'version'")
    check_project_name(name)
    check_version(version)


# -- file names -> (project, version) ------------------------------------------

# archive kinds devpi lists, longest first so ".tar.gz" wins over ".gz"
_SDIST_SUFFIXES = (".tar.gz", ".tar.bz2", ".tar.xz", ".tar.zst", ".tbz2", ".tgz", ".tbz", ".txz", ".tar", ".zip")
_BINARY_SUFFIXES = (".exe", ".msi", ".rpm", ".deb", ".dmg")
# bdist_dumb / bdist_wininst platform tags and python tags after the version
_PLATFORM_RE = re.compile(
    r"(?:\.(?:linux|macosx|win|cygwin|darwin|freebsd|openbsd|netbsd|solaris|sunos|aix)|-macosx|-py\d)[-\w.]*$",
    re.IGNORECASE,
)
_RPM_ARCH_RE = re.compile(r"\.(?:src|noarch|x86_64|i[3-6]86|aarch64|armv7hl|ppc64le|s390x)$")


def _is_version(text: str) -> bool:
    try:
        Version(text)
    except InvalidVersion:
        return False
    return True


def _split_name_version(stem: str) -> tuple[str, str] | None:
    """
    C{name-version} split at the first dash after which a version follows
    (devpi's rule: C{foo-2.0-1} is C{foo} C{2.0-1}, C{py-3to2-1.0} is
    C{py-3to2} C{1.0}); C{None} when no split gives a version.
    """
    parts = stem.split("-")
    for i in range(1, len(parts)):
        name, version = "-".join(parts[:i]), "-".join(parts[i:])
        if name and _is_version(version):
            return name, version
    return None


def _candidates(stem: str, suffix: str) -> list[str]:
    """The stem, and the stem without the tags some kinds put after the version."""
    if suffix == ".rpm":
        # name-version-release.arch.rpm: the release is not part of the version
        bare = _RPM_ARCH_RE.sub("", stem)
        return [bare.rpartition("-")[0], bare, stem]
    return [stem, _PLATFORM_RE.sub("", stem)]


def split_filename(filename: str) -> tuple[str, str] | None:
    """C{(name, version)} of an archive name of any kind devpi lists, both as written; C{None} if it is none."""
    lowered = filename.lower()
    if lowered.endswith((".whl", ".egg")):
        try:
            if lowered.endswith(".whl"):
                wheel_name, wheel_version, _, _ = parse_wheel_filename(filename)
                return str(wheel_name), str(wheel_version)
        except InvalidWheelFilename:
            pass
        # name-version[-pyX.Y[-platform]].egg, and wheels packaging refuses:
        # name and version have no dashes
        parts = filename[:-4].split("-")
        return (parts[0], parts[1]) if len(parts) >= 2 and parts[0] and parts[1] else None
    suffix = next((s for s in _SDIST_SUFFIXES + _BINARY_SUFFIXES if lowered.endswith(s)), None)
    if suffix is None:
        return None
    stem = filename[: -len(suffix)]
    if suffix == ".deb" and "_" in stem:
        # Debian's name_version-revision_arch.deb
        name, _, rest = stem.partition("_")
        version = rest.split("_", 1)[0].rsplit("-", 1)[0]
        return (name, version) if name and version else None
    for candidate in _candidates(stem, suffix):
        found = _split_name_version(candidate)
        if found is not None:
            return found
    # not a version packaging knows: the part from the first digit on, as devpi does
    parts = stem.split("-")
    for i in range(1, len(parts)):
        if parts[i][:1].isdigit() and parts[0]:
            return "-".join(parts[:i]), "-".join(parts[i:])
    name, _, version = stem.rpartition("-")
    return (name, version) if name and version else None


def project_of(filename: str) -> tuple[str, str] | None:
    """
    C{(normalised project, version)} of an archive name of any kind devpi
    lists (sdists, wheels, eggs, installers, rpm/deb/dmg), if it is one;
    the version normalised when it is a PEP 440 one.
    """
    found = split_filename(filename)
    if found is None:
        return None
    name, version = found
    # normalised as packaging does for wheels, so an sdist and a wheel of one release agree
    return normalize_name(name), str(Version(version)) if _is_version(version) else version
