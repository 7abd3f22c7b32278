"""
Shared test helpers: package archives made in memory, multipart bodies, and
an in-memory devpi_tx API driven through treq's StubTreq.
"""

from __future__ import annotations

import base64
import io
import json
import os
import tarfile
import uuid
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol, cast

from treq.testing import StubTreq
from twisted.internet.defer import Deferred
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase
from twisted.web.iweb import IResponse
from twisted.web.resource import IResource

from devpi_tx.domain.auth import TokenSigner
from devpi_tx.mirror.download import MirrorFiles
from devpi_tx.mirror.pages import MirrorService
from devpi_tx.mirror.upstream import Upstream
from devpi_tx.model.ixconfig import root_pypi_config
from devpi_tx.model.policy import Policy
from devpi_tx.service.server import SERIAL_BEACON
from devpi_tx.service.serverdir import ServerDir
from devpi_tx.store.beacon import SerialBeacon
from devpi_tx.store.sqlite import SQLiteStore, inline_runner
from devpi_tx.web.api import IndexAPI, WebConfig
from devpi_tx.web.pagecache import page_groups
from devpi_tx.web.site import DevpiResource

UPSTREAM_URL = "http://upstream.test/simple/"


class StubClient(Protocol):
    """
    What these tests call of treq's C{StubTreq}: it sets C{HTTPClient}'s
    methods and treq's C{content} functions on itself at run time, where
    mypy does not see them.
    """

    def request(
        self,
        method: str,
        url: str,
        *,
        headers: Mapping[str, str | list[str]] | None = None,
        data: bytes | None = None,
        allow_redirects: bool = True,
    ) -> Deferred[IResponse]: ...

    def get(self, url: str, *, headers: Mapping[str, str | list[str]] | None = None) -> Deferred[IResponse]: ...

    def content(self, response: IResponse) -> Deferred[bytes]: ...

    def json_content(self, response: IResponse) -> Deferred[Any]: ...

    def flush(self) -> None: ...


def stub_treq(resource: IResource) -> StubClient:
    """treq's C{StubTreq} serving C{resource}, typed as L{StubClient}."""
    return cast(StubClient, StubTreq(resource))


def files_below(path: str) -> dict[str, bytes]:
    """Every file below C{path}, by path relative to it."""
    found = {}
    for dirpath, _, filenames in os.walk(path):
        for filename in filenames:
            full = os.path.join(dirpath, filename)
            with open(full, "rb") as f:
                found[os.path.relpath(full, path)] = f.read()
    return found


def make_wheel(
    name: str, version: str, requires_python: str | None = None, extra: str = "", requires: tuple[str, ...] = ()
) -> tuple[str, bytes]:
    """A small valid wheel: C{(filename, bytes)}."""
    dist = name.replace("-", "_")
    info = f"{dist}-{version}.dist-info"
    metadata = f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\nSummary: test\n"
    if requires_python:
        metadata += f"Requires-Python: {requires_python}\n"
    metadata += "".join(f"Requires-Dist: {r}\n" for r in requires)
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr(f"{dist}/__init__.py", f"VERSION = {version!r}\n# {extra}\n")
        zf.writestr(f"{info}/METADATA", metadata)
        zf.writestr(f"{info}/WHEEL", "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n")
        zf.writestr(f"{info}/RECORD", "")
    return f"{dist}-{version}-py3-none-any.whl", buf.getvalue()


def make_sdist(name: str, version: str, extra: str = "") -> tuple[str, bytes]:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tf:
        data = f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n# {extra}\n".encode()
        member = tarfile.TarInfo(f"{name}-{version}/PKG-INFO")
        member.size = len(data)
        tf.addfile(member, io.BytesIO(data))
    return f"{name}-{version}.tar.gz", buf.getvalue()


def multipart(fields: list[tuple[str, str]], files: list[tuple[str, str, bytes]] = ()) -> tuple[bytes, str]:  # type: ignore[assignment]
    """C{(body, content_type)} of a multipart/form-data form."""
    boundary = uuid.uuid4().hex
    out = io.BytesIO()
    for name, value in fields:
        out.write(f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n'.encode())
        out.write(value.encode() + b"\r\n")
    for name, filename, data in files:
        out.write(
            f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"; filename="{filename}"\r\n'
            "Content-Type: application/octet-stream\r\n\r\n".encode()
        )
        out.write(data + b"\r\n")
    out.write(f"--{boundary}--\r\n".encode())
    return out.getvalue(), f"multipart/form-data; boundary={boundary}"


def upload_fields(name: str, version: str, action: str = "file_upload", **extra: str) -> list[tuple[str, str]]:
    fields = [(":action", action), ("name", name), ("version", version), ("protocol_version", "1")]
    fields += list(extra.items())
    return fields


def basic(user: str, secret: str) -> str:
    return base64.b64encode(f"{user}:{secret}".encode()).decode()


@dataclass
class Reply:
    code: int
    headers: Any
    body: bytes
    phrase: bytes

    def json(self) -> Any:
        return json.loads(self.body)

    def header(self, name: str) -> str | None:
        values = self.headers.getRawHeaders(name)
        return values[0] if values else None


class APIHarness:
    """
    devpi_tx's API over a real SQLite file, with inline runners, reached
    through StubTreq.
    """

    def __init__(
        self,
        testcase: SynchronousTestCase,
        restrict_modify: frozenset[str] | None = None,
        upstream: Any = None,
        offline: bool = False,
        serverdir: ServerDir | None = None,
        read_runner: Any = inline_runner,
    ) -> None:
        """
        With C{serverdir}, another process's view of that server dir: both
        stores share a serial beacon, as the processes of a tree do.
        """
        self._testcase = testcase
        self.clock = Clock()
        if serverdir is None:
            serverdir = ServerDir(testcase.mktemp())
            serverdir.initialise()
        self.serverdir = serverdir
        self.beacon = SerialBeacon(os.path.join(serverdir.path, SERIAL_BEACON))
        testcase.addCleanup(self.beacon.close)
        self.store = SQLiteStore(
            serverdir.database, serverdir.files, read_runner, inline_runner, self.beacon, groups_of=page_groups
        )
        testcase.addCleanup(self.store.close)
        config = WebConfig(
            serverdir=self.serverdir.path,
            uuid="0" * 32,
            policy=Policy(restrict_modify),
            signer=TokenSigner(os.urandom(32)),
            host="127.0.0.1",
            port=3141,
        )

        def run(fn: Any, *args: Any) -> Deferred[Any]:
            return inline_runner(lambda: fn(*args))

        mirror = files = None
        self.upstream_client: StubClient | None = None
        if upstream is not None:
            self.upstream_client = stub_treq(upstream)
            client = Upstream(self.upstream_client, self.clock, timeout=5)
            mirror = MirrorService(self.store, client, self.clock, offline=offline)
            files = MirrorFiles(self.store, client, self.serverdir.files, self.clock)
            pypi = dict(root_pypi_config(), mirror_url=UPSTREAM_URL)
            testcase.successResultOf(self.store.write(lambda tx: tx.set("i/root/pypi", pypi)))
        self.mirror = mirror
        self.mirror_files = files
        self.api = IndexAPI(config, self.store, run, mirror, files, clock=self.clock.seconds)
        self.treq = stub_treq(DevpiResource(self.api, self.store, config.uuid))
        self.auth: dict[str, str] = {}

    def request(
        self,
        method: str,
        path: str,
        body: Any = None,
        headers: dict[str, str] | None = None,
        user: str | None = None,
        raw: bytes | None = None,
    ) -> Reply:
        hdrs = {"Accept": "application/json"}
        if user is not None:
            hdrs["X-Devpi-Auth"] = basic(user, self.auth[user])
        hdrs.update(headers or {})
        data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
        if data is not None and "Content-Type" not in hdrs:
            hdrs["Content-Type"] = "application/json"
        pending = self.treq.request(
            method,
            "http://127.0.0.1:3141" + path,
            headers={k: [v] for k, v in hdrs.items()},
            data=data,
            allow_redirects=False,
        )
        self.flush(pending)
        response = self._testcase.successResultOf(pending)
        reading = self.treq.content(response)
        self.flush(reading)
        content = self._testcase.successResultOf(reading)
        return Reply(response.code, response.headers, content, response.phrase)

    def flush(self, pending: Deferred[Any] | None = None) -> None:
        """Pump the in-memory connections to us and to the fake upstream."""
        for _ in range(50):
            self.treq.flush()
            if self.upstream_client is not None:
                self.upstream_client.flush()
            if pending is not None and pending.called:
                return

    def login(self, user: str, password: str) -> None:
        reply = self.request("POST", "/+login", {"user": user, "password": password})
        assert reply.code == 200, reply.body
        self.auth[user] = reply.json()["result"]["password"]

    def create_user(self, name: str, password: str = "pw") -> None:
        reply = self.request("PUT", f"/{name}", {"password": password, "email": f"{name}@example.org"})
        assert reply.code == 201, reply.body
        self.login(name, password)

    def upload(
        self,
        stage: str,
        user: str | None,
        name: str,
        version: str,
        archive: tuple[str, bytes],
        action: str = "file_upload",
        **extra: str,
    ) -> Reply:
        body, ctype = multipart(upload_fields(name, version, action, **extra), [("content", *archive)])
        return self.request("POST", f"/{stage}/", raw=body, headers={"Content-Type": ctype}, user=user)

    def stored_files(self) -> list[str]:
        found = []
        for dirpath, _dirnames, filenames in os.walk(self.serverdir.files):
            for filename in filenames:
                found.append(os.path.relpath(os.path.join(dirpath, filename), self.serverdir.files))
        return sorted(found)


def make_zipbomb_wheel(name: str, version: str, metadata_size: int, padding: int = 0) -> tuple[str, bytes]:
    """
    A wheel whose C{METADATA} is C{metadata_size} bytes of one repeated byte,
    deflated (64 MiB become about 64 KiB), written in chunks, never held
    whole; C{padding} random bytes make the wheel bigger: C{(filename, bytes)}.
    """
    dist = name.replace("-", "_")
    info = f"{dist}-{version}.dist-info"
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        zf.writestr(f"{dist}/__init__.py", "")
        if padding:
            zf.writestr(f"{dist}/padding.bin", os.urandom(padding), compress_type=zipfile.ZIP_STORED)
        with zf.open(f"{info}/METADATA", "w") as member:
            chunk = b"x" * (1024 * 1024)
            left = metadata_size
            while left > 0:
                member.write(chunk[:left])
                left -= len(chunk)
        zf.writestr(f"{info}/WHEEL", "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n")
        zf.writestr(f"{info}/RECORD", "")
    return f"{dist}-{version}-py3-none-any.whl", buf.getvalue()
