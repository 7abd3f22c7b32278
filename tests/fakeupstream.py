"""
A fake upstream simple index for tests: PEP 503/691 pages and generated
wheels, with knobs to be slow, fail, hang, drop connections mid-body, lie
about hashes, and count requests.
"""

from __future__ import annotations

import hashlib
import io
import json
import zipfile
from collections import Counter
from dataclasses import dataclass
from typing import Any

from twisted.web import server
from twisted.web.resource import Resource

from devpi_tx.model.names import normalize_name
from tests.helpers import make_sdist, make_wheel


@dataclass
class FakeFile:
    filename: str
    data: bytes
    version: str
    requires_python: str | None = None
    yanked: bool | str = False
    metadata: bytes | None = None


class FakeUpstream(Resource):
    isLeaf = True

    def __init__(self, reactor: Any) -> None:
        super().__init__()
        self.reactor = reactor
        self.projects: dict[str, list[FakeFile]] = {}
        self.extra_names: list[str] = []
        self.requests: Counter[str] = Counter()
        self.status: dict[str, int] = {}  # path -> status to answer
        self.body_override: dict[str, bytes] = {}  # path -> raw body (garbage)
        self.hang: set[str] = set()  # paths never answered
        self.delay: dict[str, float] = {}  # path -> seconds before answering
        self.drop_after: dict[str, int] = {}  # path -> bytes sent before the connection drops
        self.lie: set[str] = set()  # filenames announced with a wrong sha256
        self.trickle: dict[str, tuple[int, float]] = {}  # path -> (chunk size, seconds between chunks)
        self.first_bytes: dict[str, Any] = {}  # path -> Deferred fired when a body started
        self.serial = 100
        self.json = True
        self.provide_metadata = True
        self.pending: list[Any] = []

    def add(
        self,
        name: str,
        version: str,
        kind: str = "wheel",
        requires_python: str | None = None,
        yanked: bool | str = False,
        size: int = 0,
        requires: tuple[str, ...] = (),
    ) -> FakeFile:
        extra = "x" * size
        if kind == "wheel":
            filename, data = make_wheel(name, version, requires_python, extra=extra, requires=requires)
        else:
            filename, data = make_sdist(name, version, extra=extra)
        metadata = None
        if kind == "wheel":
            with zipfile.ZipFile(io.BytesIO(data)) as zf:
                metadata = zf.read(next(n for n in zf.namelist() if n.endswith(".dist-info/METADATA")))
        fake = FakeFile(filename, data, version, requires_python, yanked, metadata)
        self.projects.setdefault(normalize_name(name), []).append(fake)
        self.serial += 1
        return fake

    def find(self, filename: str) -> FakeFile | None:
        for files in self.projects.values():
            for fake in files:
                if fake.filename == filename:
                    return fake
        return None

    # -- serving -----------------------------------------------------------

    def render(self, request: Any) -> Any:
        path = request.path.decode()
        self.requests[path] = self.requests[path] + 1
        if path in self.hang:
            self.pending.append(request)
            return server.NOT_DONE_YET
        if path in self.delay:
            self.reactor.callLater(self.delay[path], self._answer, request, path)
            return server.NOT_DONE_YET
        return self._body(request, path)

    def _answer(self, request: Any, path: str) -> None:
        body = self._body(request, path)
        if body is not server.NOT_DONE_YET:
            request.write(body)
            request.finish()

    def _body(self, request: Any, path: str) -> Any:
        if path in self.status:
            request.setResponseCode(self.status[path])
            return b"error"
        if path in self.body_override:
            request.setHeader(b"Content-Type", b"text/html")
            return self.body_override[path]
        wants_json = self.json and b"vnd.pypi.simple.v1+json" in (request.getHeader(b"Accept") or b"")
        request.setHeader(b"X-PYPI-LAST-SERIAL", str(self.serial).encode())
        if path == "/simple/":
            return self._root(request, wants_json)
        if path.startswith("/simple/"):
            return self._project(request, path.split("/")[2], wants_json)
        if path.startswith("/files/"):
            return self._file(request, path, path[len("/files/") :])
        request.setResponseCode(404)
        return b"not found"

    def _etag(self, request: Any, tag: str) -> bool:
        request.setHeader(b"ETag", f'"{tag}"'.encode())
        if request.getHeader(b"If-None-Match") == f'"{tag}"'.encode():
            request.setResponseCode(304)
            return True
        return False

    def _root(self, request: Any, wants_json: bool) -> bytes:
        names = list(self.projects) + self.extra_names
        if self._etag(request, f"root-{self.serial}-{len(names)}"):
            return b""
        if wants_json:
            request.setHeader(b"Content-Type", b"application/vnd.pypi.simple.v1+json")
            return json.dumps({"meta": {"api-version": "1.1"}, "projects": [{"name": n} for n in names]}).encode()
        request.setHeader(b"Content-Type", b"text/html")
        return (
            "<html><body>" + "".join(f'<a href="/simple/{n}/">{n}</a>\n' for n in names) + "</body></html>"
        ).encode()

    def _sha(self, fake: FakeFile) -> str:
        if fake.filename in self.lie:
            return hashlib.sha256(b"lie" + fake.data).hexdigest()
        return hashlib.sha256(fake.data).hexdigest()

    def _project(self, request: Any, name: str, wants_json: bool) -> bytes:
        files = self.projects.get(name)
        if files is None:
            request.setResponseCode(404)
            return b"no such project"
        if self._etag(request, f"{name}-{self.serial}"):
            return b""
        if wants_json:
            request.setHeader(b"Content-Type", b"application/vnd.pypi.simple.v1+json")
            entries = []
            for fake in files:
                entry: dict[str, Any] = {
                    "filename": fake.filename,
                    "url": f"../../files/{fake.filename}",
                    "hashes": {"sha256": self._sha(fake)},
                    "size": len(fake.data),
                    "upload-time": "2026-01-02T03:04:05.000000Z",
                }
                if fake.requires_python:
                    entry["requires-python"] = fake.requires_python
                if fake.yanked:
                    entry["yanked"] = fake.yanked
                if fake.metadata and self.provide_metadata:
                    entry["core-metadata"] = {"sha256": hashlib.sha256(fake.metadata).hexdigest()}
                entries.append(entry)
            versions = sorted({f.version for f in files})
            body = {"meta": {"api-version": "1.1"}, "name": name, "versions": versions, "files": entries}
            return json.dumps(body).encode()
        request.setHeader(b"Content-Type", b"text/html")
        anchors = []
        for fake in files:
            attrs = ""
            if fake.requires_python:
                attrs += f' data-requires-python="{fake.requires_python.replace(">", "&gt;")}"'
            if fake.yanked:
                attrs += f' data-yanked="{fake.yanked if isinstance(fake.yanked, str) else ""}"'
            anchors.append(f'<a href="../../files/{fake.filename}#sha256={self._sha(fake)}"{attrs}>{fake.filename}</a>')
        return ("<html><body>" + "\n".join(anchors) + "</body></html>").encode()

    def _file(self, request: Any, path: str, filename: str) -> Any:
        if filename.endswith(".metadata"):
            fake = self.find(filename[: -len(".metadata")])
            if fake is None or fake.metadata is None or not self.provide_metadata:
                request.setResponseCode(404)
                return b"no metadata"
            return fake.metadata
        fake = self.find(filename)
        if fake is None:
            request.setResponseCode(404)
            return b"no such file"
        request.setHeader(b"Content-Type", b"application/octet-stream")
        request.setHeader(b"Content-Length", str(len(fake.data)).encode())
        if path in self.drop_after:
            request.write(fake.data[: self.drop_after[path]])
            request.channel.transport.abortConnection()
            return server.NOT_DONE_YET
        if path in self.trickle:
            size, interval = self.trickle[path]
            self._trickle(request, path, fake.data, 0, size, interval)
            return server.NOT_DONE_YET
        return fake.data

    def _trickle(self, request: Any, path: str, data: bytes, offset: int, size: int, interval: float) -> None:
        if request.finished or request._disconnected:
            return
        request.write(data[offset : offset + size])
        waiter = self.first_bytes.pop(path, None)
        if waiter is not None:
            waiter.callback(None)
        if offset + size >= len(data):
            request.finish()
            return
        self.reactor.callLater(interval, self._trickle, request, path, data, offset + size, size, interval)
