"""
devpi-server 6.20.3 itself, for the export/import interoperability tests:
a side virtualenv (made on first use in the user's cache directory, outside
the work tree, or the one named by C{DEVPI_SERVER_VENV}), its commands run
as child processes, and a server on 127.0.0.1 that never contacts an
upstream (C{--offline-mode}).
"""

from __future__ import annotations

import glob
import json
import os
import shutil
import signal
import socket
import sys
import tempfile
from typing import Any

from treq.client import HTTPClient
from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.error import ProcessDone, ProcessTerminated
from twisted.internet.protocol import ProcessProtocol
from twisted.internet.task import deferLater
from twisted.python.failure import Failure
from twisted.web.client import Agent, HTTPConnectionPool

from tests.helpers import basic
from tests.processes import Result, assert_ok, checkout_env, run

VERSION = "6.20.3"
# cheap key derivation: devpi-server 6.20.3 spends seconds on it at every start
FAST_ARGON2 = ["--argon2-memory-cost", "8", "--argon2-time-cost", "1", "--argon2-parallelism", "1"]


def default_venv() -> str:
    """C{${XDG_CACHE_HOME:-~/.cache}/devpi_tx-tests/devpi-server-6.20.3}."""
    cache = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(cache, "devpi_tx-tests", f"devpi-server-{VERSION}")


def _installed(venv: str) -> bool:
    pattern = os.path.join(venv, "lib", "python*", "site-packages", f"devpi_server-{VERSION}.dist-info")
    return bool(glob.glob(pattern)) and os.path.exists(os.path.join(venv, "bin", "devpi-server"))


async def devpi_venv() -> str:
    """
    The virtualenv with devpi-server 6.20.3 (C{DEVPI_SERVER_VENV}, or
    L{default_venv}), created with pip from the package index if it is
    missing (the first run takes a minute).  It is built in a temporary
    directory beside it and renamed into place when complete, so an
    interrupted run leaves no half virtualenv that looks installed, and
    concurrent runs keep the first one.
    """
    given = os.environ.get("DEVPI_SERVER_VENV")
    venv = given or default_venv()
    if _installed(venv):
        return venv
    if given:
        raise RuntimeError(f"DEVPI_SERVER_VENV={given} has no devpi-server {VERSION}")
    if os.path.exists(venv):
        raise RuntimeError(f"{venv} exists without devpi-server {VERSION}: remove it")
    parent = os.path.dirname(venv)
    os.makedirs(parent, exist_ok=True)
    building = tempfile.mkdtemp(prefix=f".{os.path.basename(venv)}-", suffix=".tmp", dir=parent)
    try:
        for argv in (
            [sys.executable, "-m", "venv", building],
            [os.path.join(building, "bin", "python"), "-m", "pip", "install", "-q", "--disable-pip-version-check",
             f"devpi-server=={VERSION}"],
        ):  # fmt: skip
            result = await run(argv, checkout=False)
            if not result.ok:
                raise RuntimeError(f"cannot set up {venv}:\n{result}")
        try:
            os.rename(building, venv)
        except OSError:
            if not _installed(venv):  # another run won the race with a complete one
                raise
    finally:
        shutil.rmtree(building, ignore_errors=True)
    return venv


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class _Protocol(ProcessProtocol):
    def __init__(self) -> None:
        self.output = b""
        self.ended: Deferred[int | None] = Deferred()

    def outReceived(self, data: bytes) -> None:
        self.output += data

    errReceived = outReceived

    def processEnded(self, reason: Failure) -> None:
        value = reason.value
        self.ended.callback(value.exitCode if isinstance(value, (ProcessDone, ProcessTerminated)) else None)


class DevpiServer:
    """
    One devpi-server 6.20.3 server directory: its commands, and the server
    on it as a child process with a JSON client.
    """

    def __init__(self, venv: str, serverdir: str) -> None:
        self.venv = venv
        self.serverdir = serverdir
        self.port = 0
        self._protocol: _Protocol | None = None
        self._transport: Any = None
        self._http = HTTPClient(Agent(reactor, pool=HTTPConnectionPool(reactor, persistent=False)))
        self.tokens: dict[str, str] = {}

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def output(self) -> str:
        return self._protocol.output.decode("utf-8", "replace") if self._protocol else ""

    def bin(self, name: str) -> list[str]:
        """
        The command line of a console script of the virtualenv, run by its
        interpreter (the shebang lines name the directory it was built in).
        """
        return [os.path.join(self.venv, "bin", "python"), os.path.join(self.venv, "bin", name)]

    async def command(self, name: str, *args: str) -> Result:
        """Run C{devpi-init}, C{devpi-export}... on this server directory; fails unless it exits 0."""
        result = await run([*self.bin(name), "--serverdir", self.serverdir, *args], checkout=False)
        assert_ok(result)
        return result

    async def start(self, timeout: float = 60.0) -> None:
        """Start the server and wait until C{/+api} answers."""
        self.port = free_port()
        self._protocol = _Protocol()
        argv = [
            *self.bin("devpi-server"),
            "--serverdir",
            self.serverdir,
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--offline-mode",
            *FAST_ARGON2,
        ]
        self._transport = reactor.spawnProcess(self._protocol, argv[0], argv, env=checkout_env(checkout=False))
        for _ in range(int(timeout / 0.1)):
            if self._protocol.ended.called:
                break
            try:
                code, _ = await self.call("GET", "/+api")
                if code == 200:
                    return
            except Exception:
                pass
            await deferLater(reactor, 0.1, lambda: None)
        await self.stop()
        raise AssertionError(f"devpi-server did not come up:\n{self.output}")

    async def stop(self) -> int | None:
        if self._protocol is None:
            return None
        if not self._protocol.ended.called:
            self._transport.signalProcess(signal.SIGTERM)
        return await self._protocol.ended

    async def call(
        self,
        method: str,
        path: str,
        body: Any = None,
        user: str | None = None,
        raw: bytes | None = None,
        content_type: str = "application/json",
        accept: str = "application/json",
    ) -> tuple[int, bytes]:
        """One request; C{(status, body)}.  C{user} must have logged in with L{login}."""
        headers: dict[bytes | str, list[bytes | str]] = {"Accept": [accept]}
        if user is not None:
            headers["X-Devpi-Auth"] = [basic(user, self.tokens[user])]
        data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
        if data is not None:
            headers["Content-Type"] = [content_type]
        response = await self._http.request(method, self.url + path, headers=headers, data=data)
        content = await response.content()
        return response.code, content

    async def login(self, user: str, password: str) -> None:
        code, body = await self.call("POST", "/+login", {"user": user, "password": password})
        if code != 200:
            raise AssertionError(f"login of {user} failed: {code} {body!r}")
        self.tokens[user] = json.loads(body)["result"]["password"]
