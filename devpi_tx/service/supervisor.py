# -*- test-case-name: tests.e2e.test_e2e_workers -*-
"""
One process tree: the main instance opens the listening sockets, serves on
them and runs the event hooks; request-only workers adopt the same sockets.
A worker that dies is started again; stopping the main instance stops them.
"""

from __future__ import annotations

import ctypes
import os
import signal
import socket
import sys
from collections.abc import Callable
from typing import Any, NoReturn

from twisted.application.service import Service
from twisted.internet.defer import Deferred, DeferredList
from twisted.internet.error import CannotListenError, ProcessDone, ProcessTerminated
from twisted.internet.protocol import ProcessProtocol
from twisted.logger import Logger
from twisted.python.failure import Failure

PR_SET_PDEATHSIG = 1
RESTART_DELAY = 0.5
MAX_RESTART_DELAY = 30.0


def die_with_parent() -> None:
    """Linux: get SIGTERM when the main instance dies, so no worker is orphaned."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    except (OSError, AttributeError):
        pass


def cannot_listen(host: str, port: int, error: Exception) -> NoReturn:
    """One line on stderr and a non-zero exit: a server that cannot listen must not run on."""
    reason = getattr(error, "socketError", None) or error
    strerror = getattr(reason, "strerror", None) or str(reason)
    sys.stderr.write(f"twistd devpi: error: cannot listen on {host}:{port}: {strerror}\n")
    raise SystemExit(1)


def listen_shared(reactor: Any, host: str, port: int, factory: Any) -> Any:
    """
    Listen with C{SO_REUSEPORT}: every process of the tree binds its own
    socket to the same address and the kernel spreads new connections
    evenly over them.
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind((host, port))
        sock.listen(128)
        sock.setblocking(False)
        return reactor.adoptStreamPort(sock.fileno(), family, factory)
    finally:
        sock.close()


class Listeners(Service):
    """
    This process's listening ports on C{addresses}; a bind failure ends the
    process with one line (L{cannot_listen}).
    """

    def __init__(self, reactor: Any, addresses: list[tuple[str, int]], factory: Any) -> None:
        self._reactor = reactor
        self._addresses = addresses
        self._factory = factory
        self.ports: list[Any] = []

    def _listen(self, host: str, port: int) -> Any:
        return self._reactor.listenTCP(port, self._factory, interface=host)

    def startService(self) -> None:
        super().startService()
        for host, port in self._addresses:
            try:
                self.ports.append(self._listen(host, port))
            except (OSError, CannotListenError) as e:
                cannot_listen(host, port, e)

    def addresses(self) -> list[tuple[str, int]]:
        """The bound addresses (the real port where 0 was asked for)."""
        return [(port.getHost().host, port.getHost().port) for port in self.ports]

    def stopService(self) -> Deferred[Any] | None:
        super().stopService()
        return DeferredList([port.stopListening() for port in self.ports])


class SharedListeners(Listeners):
    """
    This process's C{SO_REUSEPORT} sockets on the tree's addresses: the main
    instance binds first (learning the real port when 0 was asked for), each
    worker binds the same addresses after it.
    """

    def _listen(self, host: str, port: int) -> Any:
        return listen_shared(self._reactor, host, port, self._factory)


class _Worker(ProcessProtocol):
    def __init__(self, index: int, ended: Callable[[_Worker, Failure], None]) -> None:
        self.index = index
        self._ended = ended
        self.done: Deferred[None] = Deferred()

    def processEnded(self, reason: Failure) -> None:
        self.done.callback(None)
        self._ended(self, reason)


class WorkerSupervisor(Service):
    """Starts C{count} workers after the listeners, restarts them, stops them."""

    _log = Logger()

    def __init__(
        self, reactor: Any, listeners: SharedListeners, count: int, argv: Callable[[list[tuple[str, int]]], list[str]]
    ) -> None:
        self._reactor = reactor
        self._listeners = listeners
        self._count = count
        self._argv = argv
        self._workers: dict[int, tuple[_Worker, Any]] = {}
        self._delays: dict[int, float] = {}
        self._stopping = False
        self.restarts = 0

    def startService(self) -> None:
        super().startService()
        for index in range(self._count):
            self._spawn(index)

    def _spawn(self, index: int) -> None:
        if self._stopping:
            return
        argv = self._argv(self._listeners.addresses())
        protocol = _Worker(index, self._ended)
        transport = self._reactor.spawnProcess(
            protocol, argv[0], argv, env=dict(os.environ), childFDs={0: "w", 1: 1, 2: 2}
        )
        self._workers[index] = (protocol, transport)
        self._log.info("Started worker {index} (pid {pid})", index=index, pid=transport.pid)

    def _ended(self, worker: _Worker, reason: Failure) -> None:
        if self._workers.get(worker.index, (None,))[0] is worker:
            del self._workers[worker.index]
        if self._stopping:
            return
        code = reason.value.exitCode if isinstance(reason.value, (ProcessDone, ProcessTerminated)) else None
        delay = self._delays.get(worker.index, RESTART_DELAY)
        self._delays[worker.index] = min(delay * 2, MAX_RESTART_DELAY)
        self._log.warn(
            "Worker {index} ended ({code}); starting it again in {delay}s",
            index=worker.index,
            code=code,
            delay=delay,
        )
        self.restarts += 1
        self._reactor.callLater(delay, self._spawn, worker.index)
        # a worker that stays up for a while earns a quick restart again
        self._reactor.callLater(60, self._delays.pop, worker.index, None)

    def pids(self) -> list[int]:
        return [transport.pid for _, transport in self._workers.values() if transport.pid]

    def stopService(self) -> Deferred[Any]:
        super().stopService()
        self._stopping = True
        waits = []
        for protocol, transport in list(self._workers.values()):
            try:
                transport.signalProcess("TERM")
            except Exception:  # already gone
                pass
            waits.append(protocol.done)
        return DeferredList(waits)


def worker_argv(base: list[str]) -> Callable[[list[tuple[str, int]]], list[str]]:
    """The command line of a worker: C{base} devpi options plus its addresses."""

    def argv(addresses: list[tuple[str, int]]) -> list[str]:
        result = [
            sys.executable,
            "-c",
            "from twisted.scripts.twistd import run; run()",
            "-n",
            "--pidfile=",
            "devpi",
            *base,
            "--requests-only",
        ]
        for host, port in addresses:
            result += ["--worker-listen", f"[{host}]:{port}" if ":" in host else f"{host}:{port}"]
        return result

    return argv
