"""
Real processes for end-to-end tests: a devpi_tx server on 127.0.0.1 with a
random port, and client commands, all driven by the reactor (no sleeps).
"""

from __future__ import annotations

import os
import re
import signal
import sys
from dataclasses import dataclass
from typing import Any

from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.error import ProcessDone, ProcessTerminated
from twisted.internet.protocol import ProcessProtocol
from twisted.python.failure import Failure

_STARTED = re.compile(rb"DevpiSite starting on (\d+)")


class _ServerProtocol(ProcessProtocol):
    def __init__(self) -> None:
        self.output = b""
        self.started: Deferred[int] = Deferred()
        self.ended: Deferred[int | None] = Deferred()
        self.waiting: list[tuple[re.Pattern[bytes], int, Deferred[re.Match[bytes]]]] = []

    def outReceived(self, data: bytes) -> None:
        self.output += data
        match = _STARTED.search(self.output)
        if match and not self.started.called:
            self.started.callback(int(match.group(1)))
        for item in list(self.waiting):
            pattern, start, waiter = item
            found = pattern.search(self.output, start)
            if found:
                self.waiting.remove(item)
                waiter.callback(found)

    errReceived = outReceived

    def processEnded(self, reason: Failure) -> None:
        code = reason.value.exitCode if isinstance(reason.value, (ProcessDone, ProcessTerminated)) else None
        if not self.started.called:
            self.started.errback(RuntimeError(f"server exited ({code}):\n{self.output.decode(errors='replace')}"))
        self.ended.callback(code)


class ServerProcess:
    """C{twistd -n devpi} in a child process."""

    def __init__(self, serverdir: str, *args: str) -> None:
        self.serverdir = serverdir
        self.args = args
        self.port = 0
        self._protocol = _ServerProtocol()
        self._transport: Any = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def output(self) -> str:
        return self._protocol.output.decode("utf-8", "replace")

    async def start(self) -> ServerProcess:
        argv = [
            bin_path("twistd"), "-n", "--pidfile=", "devpi",
            "--serverdir", self.serverdir, "--host", "127.0.0.1", "--port", "0", *self.args,
        ]
        self._transport = reactor.spawnProcess(self._protocol, argv[0], argv, env=dict(os.environ))
        self.port = await self._protocol.started
        return self

    async def stop(self) -> int | None:
        if not self._protocol.ended.called:
            self._transport.signalProcess("TERM")
        return await self._protocol.ended

    def wait_for(self, pattern: bytes) -> Deferred[re.Match[bytes]]:
        """Fires when output from now on matches C{pattern}."""
        waiter: Deferred[re.Match[bytes]] = Deferred()
        self._protocol.waiting.append((re.compile(pattern), len(self._protocol.output), waiter))
        return waiter

    def kill(self) -> None:
        if not self._protocol.ended.called:
            os.kill(self._transport.pid, signal.SIGKILL)


class _CommandProtocol(ProcessProtocol):
    def __init__(self, stdin: bytes | None) -> None:
        self.out = b""
        self.stdin = stdin
        self.done: Deferred[int] = Deferred()

    def connectionMade(self) -> None:
        if self.stdin is not None:
            self.transport.write(self.stdin)  # type: ignore[union-attr]
        self.transport.closeStdin()  # type: ignore[union-attr]

    def outReceived(self, data: bytes) -> None:
        self.out += data

    errReceived = outReceived

    def processEnded(self, reason: Failure) -> None:
        self.done.callback(getattr(reason.value, "exitCode", -1) or 0)


@dataclass
class Result:
    argv: list[str]
    code: int
    output: str

    def __str__(self) -> str:
        return f"$ {' '.join(self.argv)}\n(exit {self.code})\n{self.output}"


async def run(argv: list[str], cwd: str | None = None, env: dict[str, str] | None = None, stdin: bytes | None = None) -> Result:
    """Run a command to completion without blocking the reactor."""
    protocol = _CommandProtocol(stdin)
    full_env = dict(os.environ)
    # console scripts of this environment (sphinx-build, tox) come first
    full_env["PATH"] = os.path.dirname(sys.executable) + os.pathsep + full_env.get("PATH", "")
    full_env.update(env or {})
    reactor.spawnProcess(protocol, argv[0], argv, env=full_env, path=cwd)
    code = await protocol.done
    return Result(argv, code, protocol.out.decode("utf-8", "replace"))


def bin_path(name: str) -> str:
    """A console script installed beside the running interpreter."""
    return os.path.join(os.path.dirname(sys.executable), name)


async def eventually(check: Any, timeout: float = 10.0, interval: float = 0.05) -> Any:
    """
    Readiness wait for real processes: C{check()} until it returns a true
    value, at most C{timeout} seconds; the last value otherwise.
    """
    from twisted.internet.task import deferLater

    waited = 0.0
    while True:
        value = check()
        if value or waited >= timeout:
            return value
        await deferLater(reactor, interval, lambda: None)
        waited += interval
