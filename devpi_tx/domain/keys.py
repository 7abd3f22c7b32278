# -*- test-case-name: tests.web.test_api -*-
"""
The document keys of the store.  C{stage} is C{"user/index"}; C{project}
is always normalised; C{relpath} is a file's path below the file store, as
in devpi's C{+f} URLs.
"""

from __future__ import annotations

from dataclasses import dataclass

from devpi_tx.store.interfaces import ITransaction

_KINDS = {"u": "user", "i": "index", "p": "project", "v": "version", "f": "file", "m": "mirror"}
# segments after the kind letter: user 1, index 2 (user, index), project 3, version 4, mirror 3; file any
_SEGMENTS = {"user": 1, "index": 2, "project": 3, "version": 4, "mirror": 3}


@dataclass(frozen=True)
class Key:
    """A parsed document key; fields that the kind has not are C{""}."""

    kind: str
    user: str = ""
    index: str = ""
    project: str = ""
    version: str = ""
    relpath: str = ""

    @property
    def stage(self) -> str:
        return f"{self.user}/{self.index}" if self.index else ""


def parse(key: str) -> Key | None:
    """
    What C{key} names: L{Key} with its kind (C{user}, C{index}, C{project},
    C{version}, C{file}, C{mirror}) and parts; C{None} for a key of no
    known form.
    """
    letter, sep, rest = key.partition("/")
    kind = _KINDS.get(letter)
    if kind is None or not sep or not rest:
        return None
    if kind == "file":
        user, _, after = rest.partition("/")
        index = after.partition("/")[0]
        return Key(kind, user, index, relpath=rest)
    parts = rest.split("/")
    if len(parts) != _SEGMENTS[kind] or not all(parts):
        return None
    return Key(kind, *parts)


def name_in(key: str, prefix: str) -> str:
    """The part of C{key} after C{prefix} (a key built by a C{*_prefix} function)."""
    return key[len(prefix) :]


def user(name: str) -> str:
    return f"u/{name}"


USERS = "u/"
"""The prefix of every user record."""

INDEXES = "i/"
"""The prefix of every index configuration."""

FILES = "f/"
"""The prefix of every file entry."""


def index(stage: str) -> str:
    return f"i/{stage}"


def index_prefix(user: str) -> str:
    return f"i/{user}/"


def project(stage: str, project: str) -> str:
    return f"p/{stage}/{project}"


def project_prefix(stage: str) -> str:
    return f"p/{stage}/"


def version(stage: str, project: str, version: str) -> str:
    return f"v/{stage}/{project}/{version}"


def version_prefix(stage: str, project: str | None = None) -> str:
    return f"v/{stage}/" if project is None else f"v/{stage}/{project}/"


def file(relpath: str) -> str:
    return f"f/{relpath}"


def file_prefix(stage: str) -> str:
    return f"f/{stage}/"


def metadata_relpath(relpath: str) -> str:
    """Where the PEP 658 metadata of a wheel is kept."""
    return relpath + ".metadata"


async def remove_entry(tx: ITransaction, relpath: str) -> None:
    """Delete a file entry and, after commit, its file and metadata file."""
    entry = await tx.get(file(relpath))
    tx.delete(file(relpath))
    tx.remove_file(relpath)
    if entry and entry.get("core_metadata"):
        tx.remove_file(metadata_relpath(relpath))


def mirror(stage: str, project: str) -> str:
    """The cached upstream page of C{project} on mirror C{stage}."""
    return f"m/{stage}/{project}"


def mirror_prefix(stage: str) -> str:
    return f"m/{stage}/"
