# -*- test-case-name: tests.events.test_hooks -*-
"""
Event hooks that do what devpi-web does with devpi-server's events (spec
10.2): unpack documentation zips, render long descriptions, and keep a
full-text search index of private projects.

Each hook sees one serial's changes (see L{devpi_tx.events.processor.Hook}) and only
writes below the server dir; running a serial again leaves the same state.
"""

from __future__ import annotations

import os
import shutil
import stat
import tempfile
import uuid
import zipfile
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from html import escape
from typing import Any, BinaryIO

from twisted.logger import Logger

from devpi_tx.domain import keys
from devpi_tx.store.interfaces import IFileStore, ISearchIndex, SearchEntry

DOCS = "+docs"
# unpacking happens here, beside DOCS on the same file system, so that a
# finished tree can be renamed into place; no user name can collide with it
DOCS_TEMP = "+docs.tmp"
# records which doczip a version's tree came from; never served
DOCS_MARKER = ".devpi-doczip"
RENDERED = "+rendered"
MAX_UNPACKED = 1 << 31


# -- keys -------------------------------------------------------------------


def safe_segment(segment: str) -> bool:
    return segment not in ("", ".", "..") and "\x00" not in segment and "\\" not in segment


@dataclass(frozen=True)
class VersionChange:
    user: str
    index: str
    project: str
    version: str
    record: Mapping[str, Any] | None

    @property
    def stage(self) -> str:
        return f"{self.user}/{self.index}"

    @property
    def segments(self) -> tuple[str, str, str, str]:
        return (self.user, self.index, self.project, self.version)

    @property
    def fields(self) -> dict[str, str]:
        """Log fields naming the version."""
        return {"stage": self.stage, "project": self.project, "version": self.version}


def version_changes(changes: Mapping[str, Any]) -> Iterator[VersionChange]:
    """The version records among C{changes}; keys unsafe as paths are skipped."""
    for key, value in changes.items():
        parsed = keys.parse(key)
        if parsed is None or parsed.kind != "version":
            continue
        parts = (parsed.user, parsed.index, parsed.project, parsed.version)
        if not all(map(safe_segment, parts)):
            continue
        if value is not None and not isinstance(value, Mapping):
            continue
        yield VersionChange(*parts, value)


def deleted_stages(changes: Mapping[str, Any]) -> list[tuple[str, str]]:
    """C{(user, index)} of every index whose configuration was deleted."""
    deleted = [keys.parse(key) for key, value in changes.items() if value is None]
    return [
        (k.user, k.index)
        for k in deleted
        if k is not None and k.kind == "index" and safe_segment(k.user) and safe_segment(k.index)
    ]


def _remove_tree(path: str) -> None:
    """Remove a directory tree; a symlink in its place is unlinked, not followed."""
    if os.path.isdir(path) and not os.path.islink(path):
        shutil.rmtree(path)
    elif os.path.lexists(path):
        os.unlink(path)


def text(value: Any) -> str:
    """A metadata value as text that encodes to UTF-8 (JSON may carry lone surrogates)."""
    if isinstance(value, list | tuple):
        value = " ".join(str(v) for v in value)
    return str(value or "").encode("utf-8", "replace").decode("utf-8")


def _prune_empty(path: str, stop: str) -> None:
    """Remove empty directories from C{path} up to, not including, C{stop}."""
    while path != stop and path.startswith(stop + os.sep):
        try:
            os.rmdir(path)
        except OSError:
            return
        path = os.path.dirname(path)


def _remove_below(root: str, *segments: str) -> None:
    """Remove C{root/segments...} and the directories it leaves empty."""
    path = os.path.join(root, *segments)
    _remove_tree(path)
    _prune_empty(os.path.dirname(path), root)


# -- documentation ----------------------------------------------------------


def _member_parts(name: str) -> list[str] | None:
    """The path segments of a zip member, or C{None} when it could escape."""
    name = name.replace("\\", "/")
    if name.startswith("/") or "\x00" in name:
        return None
    parts = [part for part in name.split("/") if part not in ("", ".")]
    if not parts or ".." in parts or ":" in parts[0]:
        return None
    return parts


class UnpackError(Exception):
    """A documentation zip that cannot be unpacked."""


def extract_zip(zip_path: str | BinaryIO, dest: str, max_size: int = MAX_UNPACKED) -> list[str]:
    """
    Unpack C{zip_path} below C{dest}, which must exist; returns the names of
    the members left out: absolute paths, paths with C{..}, symlinks, and
    members that clash with an earlier one.

    @raise UnpackError: not a zip, or more than C{max_size} bytes unpacked.
    """
    skipped = []
    try:
        with zipfile.ZipFile(zip_path) as archive:
            members = archive.infolist()
            if sum(info.file_size for info in members) > max_size:
                raise UnpackError(f"more than {max_size} bytes unpacked")
            for info in members:
                parts = _member_parts(info.filename)
                if parts is None or stat.S_ISLNK(info.external_attr >> 16):
                    skipped.append(info.filename)
                    continue
                target = os.path.join(dest, *parts)
                try:
                    if info.is_dir():
                        os.makedirs(target, exist_ok=True)
                        continue
                    os.makedirs(os.path.dirname(target), exist_ok=True)
                    # sizes are checked against the header while reading
                    with archive.open(info) as source, open(target, "wb") as sink:
                        shutil.copyfileobj(source, sink)
                except (IsADirectoryError, NotADirectoryError, FileExistsError):
                    skipped.append(info.filename)
    except (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError, NotImplementedError, RuntimeError) as e:
        raise UnpackError(str(e) or type(e).__name__) from None
    return skipped


def _doczip_link(record: Mapping[str, Any] | None) -> Mapping[str, Any] | None:
    if record is None:
        return None
    links = [
        link
        for link in record.get("+elinks") or []
        if isinstance(link, Mapping) and link.get("rel") == "doczip" and isinstance(link.get("entrypath"), str)
    ]
    return links[-1] if links else None


def _read_marker(tree: str) -> str | None:
    try:
        with open(os.path.join(tree, DOCS_MARKER)) as f:
            return f.read()
    except OSError:
        return None


class DocsHook:
    """
    Unpacks each version's newest documentation zip into
    C{<serverdir>/+docs/<user>/<index>/<project>/<version>/}, and removes
    that tree when the version, its doczip or the index goes away.
    """

    name = "docs"
    _log = Logger()

    def __init__(self, serverdir: str, files: IFileStore, max_unpacked: int = MAX_UNPACKED) -> None:
        """C{files}: the file store the doc zips are in."""
        self._serverdir = serverdir
        self._root = os.path.join(serverdir, DOCS)
        self._temp = os.path.join(serverdir, DOCS_TEMP)
        self._files = files
        self._max = max_unpacked
        self._swept = False

    def __call__(self, serial: int, changes: dict[str, Any]) -> None:
        if not self._swept:
            # only the event processor calls hooks: what is here was left by a crash
            shutil.rmtree(self._temp, ignore_errors=True)
            self._swept = True
        for change in version_changes(changes):
            tree = os.path.join(self._root, *change.segments)
            link = _doczip_link(change.record)
            if link is None:
                _remove_below(self._root, *change.segments)
            else:
                self._unpack(serial, change, link, tree)
        for user, index in deleted_stages(changes):
            _remove_below(self._root, user, index)

    def _unpack(self, serial: int, change: VersionChange, link: Mapping[str, Any], tree: str) -> None:
        entrypath = link["entrypath"]
        if not all(map(safe_segment, entrypath.split("/"))):
            self._log.warn("Unsafe doczip path {entrypath} at serial {serial}", entrypath=entrypath, serial=serial)
            return
        if not self._files.exists(entrypath):
            # removed by a later serial, or not yet replicated: a later serial decides
            return
        hashes = link.get("hashes")
        stamp = str(hashes.get("sha256") if isinstance(hashes, Mapping) and hashes.get("sha256") else entrypath)
        if os.path.isdir(tree) and _read_marker(tree) == stamp:
            return
        os.makedirs(self._temp, exist_ok=True)
        fresh = tempfile.mkdtemp(dir=self._temp)
        try:
            with self._files.open(entrypath) as source:
                skipped = extract_zip(source, fresh, self._max)
        except UnpackError as e:
            shutil.rmtree(fresh)
            self._log.warn("Docs of {stage} {project} {version} not unpacked: {reason}", reason=str(e), **change.fields)
            _remove_below(self._root, *change.segments)
            return
        if skipped:
            self._log.warn(
                "Left out of the docs of {stage} {project} {version}: {names}", names=skipped, **change.fields
            )
        with open(os.path.join(fresh, DOCS_MARKER), "w") as f:
            f.write(stamp)
        self._swap(fresh, tree)

    def _swap(self, fresh: str, tree: str) -> None:
        """
        Put C{fresh} in C{tree}'s place.  A directory cannot be renamed over
        a non-empty one: the old tree is renamed aside first, so readers see
        either tree, or for an instant none.
        """
        os.makedirs(os.path.dirname(tree), exist_ok=True)
        old = None
        if os.path.lexists(tree):
            old = os.path.join(self._temp, uuid.uuid4().hex)
            os.rename(tree, old)
        os.rename(fresh, tree)
        if old is not None:
            _remove_tree(old)


# -- descriptions -----------------------------------------------------------


def _parse_content_type(value: str) -> tuple[str, dict[str, str]]:
    main, *params = value.split(";")
    found = {}
    for param in params:
        key, _, val = param.partition("=")
        found[key.strip().lower()] = val.strip().strip('"')
    return main.strip().lower(), found


def _plain(description: str) -> str:
    from readme_renderer import txt

    return txt.render(description) or escape(description)


def render_description(description: str, content_type: str = "") -> tuple[str, bool]:
    """
    HTML for a long description, rendered as PyPI does: C{(html, ok)} where
    C{ok} is false when its markup failed and escaped plain text was used.
    """
    if not description.strip():
        return "", True
    main, params = _parse_content_type(content_type)
    rendered: str | None
    try:
        if main in ("", "text/x-rst"):
            from readme_renderer import rst

            rendered = rst.render(description)
        elif main == "text/markdown":
            from readme_renderer import markdown

            variant = params.get("variant", "GFM")
            rendered = markdown.render(description, variant=variant if variant in ("GFM", "CommonMark") else "GFM")
        else:
            return _plain(description), main == "text/plain"
    except Exception:
        rendered = None
    if rendered is None:
        return _plain(description), False
    return rendered, True


def _write_atomically(path: str, data: bytes) -> None:
    directory = os.path.dirname(path)
    os.makedirs(directory, exist_ok=True)
    fd, temp = tempfile.mkstemp(dir=directory, prefix=".", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(temp, path)
    except BaseException:
        os.unlink(temp)
        raise


class DescriptionHook:
    """
    Renders each version's C{description} to
    C{<serverdir>/+rendered/<user>/<index>/<project>/<version>.html}.
    """

    name = "description"
    _log = Logger()

    def __init__(self, serverdir: str) -> None:
        self._serverdir = serverdir
        self._root = os.path.join(serverdir, RENDERED)

    def __call__(self, serial: int, changes: dict[str, Any]) -> None:
        for change in version_changes(changes):
            *parents, version = change.segments
            if change.record is None:
                _remove_below(self._root, *parents, version + ".html")
                continue
            content_type = text(change.record.get("description_content_type"))
            html, ok = render_description(text(change.record.get("description")), content_type)
            if not ok and content_type != "text/plain":
                self._log.info("Description of {stage} {project} {version} shown as plain text", **change.fields)
            _write_atomically(os.path.join(self._root, *parents, version + ".html"), html.encode("utf-8"))
        for user, index in deleted_stages(changes):
            _remove_below(self._root, user, index)


# -- search -----------------------------------------------------------------


class SearchHook:
    """
    Keeps the search index (L{ISearchIndex}, the storage engine's): one
    entry per private version with its name, summary, description and
    keywords.
    """

    name = "search"

    def __init__(self, index: ISearchIndex) -> None:
        self._index = index

    def close(self) -> None:
        self._index.close()

    def __call__(self, serial: int, changes: dict[str, Any]) -> None:
        versions = list(version_changes(changes))
        stages = deleted_stages(changes)
        if not versions and not stages:
            return
        entries: list[SearchEntry] = []
        removed: list[tuple[str, str, str]] = []
        for change in versions:
            record = change.record
            if record is None:
                removed.append((change.stage, change.project, change.version))
                continue
            name = text(record.get("name")) or change.project
            entries.append(
                SearchEntry(
                    stage=change.stage,
                    project=change.project,
                    version=change.version,
                    name=name if name == change.project else f"{name} {change.project}",
                    summary=text(record.get("summary")),
                    description=text(record.get("description")),
                    keywords=text(record.get("keywords")),
                )
            )
        self._index.apply(entries, removed, [f"{user}/{index}" for user, index in stages])
