# -*- test-case-name: tests.test_api -*-
"""
The document keys of the store.  C{stage} is C{"user/index"}; C{project}
is always normalised; C{relpath} is a file's path below the file store, as
in devpi's C{+f} URLs.
"""

from __future__ import annotations

from devpi_tx.store.interfaces import ITransaction


def user(name: str) -> str:
    return f"u/{name}"


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
