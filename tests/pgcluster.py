"""
A throwaway PostgreSQL 15 cluster for the tests: made with Debian's
C{initdb} in a temporary directory, started with C{postgres} on a unix
socket in that directory (no TCP port), run as the C{postgres} user when
the tests run as root, and stopped and removed at the end.  When
C{DEVPI_TX_TEST_POSTGRES_DSN} is set, that database is used instead.
"""

from __future__ import annotations

import os
import pwd
import shutil
import signal
import tempfile

from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.protocol import ProcessProtocol
from twisted.python.failure import Failure

from tests.processes import eventually, run

BINDIR = "/usr/lib/postgresql/15/bin"
DSN_VARIABLE = "DEVPI_TX_TEST_POSTGRES_DSN"


def _as_postgres(argv: list[str]) -> list[str]:
    """C{argv} run as the C{postgres} user when we are root (PostgreSQL refuses to run as root)."""
    if os.geteuid() != 0:
        return argv
    # setpriv execs the program itself: signals reach postgres, not a wrapper
    return ["/usr/bin/setpriv", "--reuid=postgres", "--regid=postgres", "--init-groups", *argv]


class _Postgres(ProcessProtocol):
    def __init__(self) -> None:
        self.output = b""
        self.ended: Deferred[None] = Deferred()

    def outReceived(self, data: bytes) -> None:
        self.output += data

    errReceived = outReceived

    def processEnded(self, reason: Failure) -> None:
        self.ended.callback(None)


class Cluster:
    """One cluster; C{dsn} is its libpq connection string once L{start} returned."""

    def __init__(self) -> None:
        self.dsn = os.environ.get(DSN_VARIABLE, "")
        self._dir = ""
        self._process: _Postgres | None = None
        self._transport: object = None

    async def start(self) -> Cluster:
        if self.dsn:
            return self
        if not os.path.exists(os.path.join(BINDIR, "postgres")):
            raise AssertionError(
                f"PostgreSQL 15 is needed for these tests: apt-get install -y postgresql-15 (or set {DSN_VARIABLE})"
            )
        self._dir = tempfile.mkdtemp(prefix="devpi-tx-pg-")
        if os.geteuid() == 0:
            postgres = pwd.getpwnam("postgres")
            os.chown(self._dir, postgres.pw_uid, postgres.pw_gid)
        data = os.path.join(self._dir, "data")
        created = await run(
            _as_postgres([os.path.join(BINDIR, "initdb"), "-D", data, "-U", "postgres", "-A", "trust", "--no-sync"]),
            cwd=self._dir,
            checkout=False,
        )
        if not created.ok:
            raise AssertionError(f"initdb failed:\n{created}")
        argv = _as_postgres(
            [
                os.path.join(BINDIR, "postgres"),
                "-D",
                data,
                "-k",
                self._dir,
                "-c",
                "listen_addresses=",
                "-c",
                "fsync=off",
            ]
        )
        self._process = _Postgres()
        self._transport = reactor.spawnProcess(
            self._process, argv[0], argv, env={"PATH": "/usr/bin:/bin"}, path=self._dir
        )
        socket = os.path.join(self._dir, ".s.PGSQL.5432")
        if not await eventually(lambda: os.path.exists(socket), timeout=30):
            raise AssertionError(f"PostgreSQL did not start:\n{self._process.output.decode(errors='replace')}")
        self.dsn = f"host={self._dir} port=5432 user=postgres dbname=postgres"
        return self

    async def stop(self) -> None:
        if self._process is not None and not self._process.ended.called:
            # fast shutdown
            os.kill(self._transport.pid, signal.SIGINT)  # type: ignore[attr-defined]
            await self._process.ended
        if self._dir:
            shutil.rmtree(self._dir, ignore_errors=True)
