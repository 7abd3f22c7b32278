"""
Real processes for end-to-end tests: a devpi_tx server on 127.0.0.1 with a
random port, and client commands, all driven by the reactor (no sleeps).

Every child runs with this interpreter and with the checkout the tests come
from first on C{PYTHONPATH} (see L{checkout_env}), so it imports the code
under test even where the virtualenv's editable install points elsewhere.
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

import tests

_STARTED = re.compile(rb"DevpiSite starting on (\d+)")
# the checkout whose tests are running: its devpi_tx is the code under test
REPO = os.path.dirname(os.path.dirname(os.path.abspath(tests.__file__)))
# twistd on this interpreter (the supervisor starts its workers the same way)
TWISTD = [sys.executable, "-c", "from twisted.scripts.twistd import run; run()"]


def checkout_env(extra: dict[str, str] | None = None, checkout: bool = True) -> dict[str, str]:
    """
    The environment of a child process: ours plus C{extra}, with this
    interpreter's scripts first on C{PATH} and, for C{checkout}, L{REPO}
    first on C{PYTHONPATH}.
    """
    env = dict(os.environ)
    env.update(extra or {})
    if checkout:
        env["PYTHONPATH"] = os.pathsep.join([REPO, *filter(None, env.get("PYTHONPATH", "").split(os.pathsep))])
    # console scripts of this environment (sphinx-build, tox) come first
    env["PATH"] = os.path.dirname(sys.executable) + os.pathsep + env.get("PATH", "")
    return env


def ended(reason: Failure) -> tuple[int, int | None]:
    """
    How a child ended: C{(status, None)} when it exited, C{(-N, N)} when
    signal C{N} killed it, C{(-1, None)} when Twisted cannot tell.
    """
    value = reason.value
    if isinstance(value, (ProcessDone, ProcessTerminated)):
        if value.signal is not None:
            return -int(value.signal), int(value.signal)
        if value.exitCode is not None:
            return int(value.exitCode), None
    return -1, None


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
        code, _ = ended(reason)
        if not self.started.called:
            self.started.errback(RuntimeError(f"server exited ({code}):\n{self.output.decode(errors='replace')}"))
        self.ended.callback(code)


class ServerProcess:
    """C{twistd -n devpi} in a child process, on this checkout's code."""

    def __init__(self, serverdir: str, *args: str, env: dict[str, str] | None = None) -> None:
        self.serverdir = serverdir
        self.args = args
        self.env = env
        self.port = 0
        self._protocol = _ServerProtocol()
        self._transport: Any = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def output(self) -> str:
        return self._protocol.output.decode("utf-8", "replace")

    def prefix(self) -> list[str]:
        """A command the server runs under (empty: none); the last word of it runs C{twistd}."""
        return []

    async def start(self) -> ServerProcess:
        argv = [
            *self.prefix(),
            *TWISTD,
            "-n",
            "--pidfile=",
            "devpi",
            "--serverdir",
            self.serverdir,
            "--host",
            "127.0.0.1",
            "--port",
            "0",
            *self.args,
        ]
        self._transport = reactor.spawnProcess(self._protocol, argv[0], argv, env=checkout_env(self.env))
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
        self.done: Deferred[tuple[int, int | None]] = Deferred()

    def connectionMade(self) -> None:
        if self.stdin is not None:
            self.transport.write(self.stdin)  # type: ignore[union-attr]
        self.transport.closeStdin()  # type: ignore[union-attr]

    def outReceived(self, data: bytes) -> None:
        self.out += data

    errReceived = outReceived

    def processEnded(self, reason: Failure) -> None:
        self.done.callback(ended(reason))


@dataclass
class Result:
    """
    How a command ended: C{code} is its exit status, or C{-N} when signal
    C{N} killed it (then C{signal} is C{N}); only C{code} 0 without a
    signal is success.
    """

    argv: list[str]
    code: int
    output: str
    signal: int | None = None

    @property
    def ok(self) -> bool:
        return self.code == 0 and self.signal is None

    def __str__(self) -> str:
        how = f"killed by signal {self.signal}" if self.signal is not None else f"exit {self.code}"
        return f"$ {' '.join(self.argv)}\n({how})\n{self.output}"


def assert_ok(result: Result, *expected: str) -> None:
    """Fails unless the command exited 0 and printed each of C{expected}."""
    if not result.ok:
        raise AssertionError(f"command failed:\n{result}")
    for text in expected:
        if text not in result.output:
            raise AssertionError(f"{text!r} not in the output of:\n{result}")


async def run(
    argv: list[str],
    cwd: str | None = None,
    env: dict[str, str] | None = None,
    stdin: bytes | None = None,
    checkout: bool = True,
) -> Result:
    """
    Run a command to completion without blocking the reactor, in
    L{checkout_env}C{(env, checkout)}: pass C{checkout=False} for a program
    that must not see this checkout (devpi-server's own virtualenv).
    """
    protocol = _CommandProtocol(stdin)
    reactor.spawnProcess(protocol, argv[0], argv, env=checkout_env(env, checkout), path=cwd)
    code, signum = await protocol.done
    return Result(argv, code, protocol.out.decode("utf-8", "replace"), signum)


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


async def uv_install(work: str, index: str, requirement: str) -> Result:
    """C{uv pip install} of C{requirement} from C{index} into a new venv below C{work}, without a cache."""
    venv = os.path.join(work, "uvvenv")
    made = await run([bin_path("uv"), "venv", "-q", venv])
    assert_ok(made)
    python = os.path.join(venv, "bin", "python")
    return await run(
        [bin_path("uv"), "pip", "install", "--no-cache", "--python", python, "--index-url", index, requirement]
    )
