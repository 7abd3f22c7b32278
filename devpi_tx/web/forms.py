# -*- test-case-name: tests.web.test_api_packages -*-
"""
Streaming parse of C{multipart/form-data} upload bodies: text fields into
memory (bounded), the C{content} file straight into a hashed temp file.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import BinaryIO

import multipart

from devpi_tx.model.errors import Invalid
from devpi_tx.store.files import PreparedFile, wheel_metadata
from devpi_tx.store.interfaces import IFileStore


@dataclass
class Form:
    fields: dict[str, list[str]] = field(default_factory=dict)
    filename: str | None = None
    content: PreparedFile | None = None
    core_metadata_sha256: str | None = None
    """Of a wheel's C{METADATA} (PEP 658); the file itself is extracted on request."""

    def first(self, name: str) -> str:
        values = self.fields.get(name)
        return values[0] if values else ""

    def discard(self) -> None:
        if self.content is not None:
            self.content.discard()


def boundary_of(content_type: str) -> str:
    media, _, params = content_type.partition(";")
    if media.strip().lower() != "multipart/form-data":
        raise Invalid("expected a multipart/form-data body")
    for param in params.split(";"):
        name, _, value = param.strip().partition("=")
        if name.lower() == "boundary" and value:
            return value.strip('"')
    raise Invalid("multipart body without boundary")


def parse_form(body: BinaryIO, content_type: str, length: int, files: IFileStore, want_metadata: bool = True) -> Form:
    """
    Parse an upload form; the C{content} part becomes a L{PreparedFile} and,
    for wheels, the sha256 of their C{METADATA} is taken.

    @raise Invalid: for a malformed body.
    """
    form = Form()
    parser = multipart.MultipartParser(
        body,
        boundary_of(content_type),
        content_length=length,
        part_limit=1000,
        memory_limit=16 * 1024 * 1024,
        spool_limit=1024 * 1024,
    )
    try:
        for part in parser:
            if part.filename is not None and part.name == "content":
                if form.content is not None:
                    raise Invalid("more than one content file field")
                assert part.file is not None
                part.file.seek(0)
                form.filename = part.filename
                form.content = files.prepare_stream(part.file)
                part.close()
            else:
                try:
                    value = part.value
                except UnicodeDecodeError:
                    raise Invalid(f"field {part.name!r} is not UTF-8 text") from None
                form.fields.setdefault(part.name, []).append(value)
    except multipart.MultipartError as e:
        form.discard()
        raise Invalid(f"malformed multipart body: {e}") from None
    except BaseException:
        form.discard()
        raise
    if want_metadata and form.content is not None and (form.filename or "").endswith(".whl"):
        data = wheel_metadata(form.content.temp_path)
        if data is not None:
            form.core_metadata_sha256 = hashlib.sha256(data).hexdigest()
    return form
