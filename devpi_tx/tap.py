"""
C{twistd devpi}: options and the service tree of one server process.
"""

from __future__ import annotations

import os
import sys
from typing import Any

from treq.client import HTTPClient
from twisted.application.internet import StreamServerEndpointService
from twisted.application.service import IService, MultiService, Service
from twisted.internet.endpoints import serverFromString
from twisted.internet.threads import deferToThreadPool
from twisted.python import usage
from twisted.python.threadpool import ThreadPool
from twisted.web.client import Agent

from devpi_tx import __version__
from devpi_tx.auth import TokenSigner, load_secret
from devpi_tx.download import MirrorFiles
from devpi_tx.mirror import MirrorService
from devpi_tx.model import Policy, parse_restrict_modify
from devpi_tx.serverdir import ServerDir
from devpi_tx.store.sqlite import SQLiteStore, StorageError
from devpi_tx.upstream import QuietPool, Upstream
from devpi_tx.web.api import IndexAPI, WebConfig
from devpi_tx.web.site import DevpiResource, DevpiSite

DEFAULT_SERVERDIR = os.path.expanduser("~/.devpi/server")


def _env(name: str, default: str | None) -> str | None:
    for var in (f"DEVPISERVER_{name.upper().replace('-', '_')}",):
        if os.environ.get(var):
            return os.environ[var]
    if name == "serverdir" and os.environ.get("DEVPI_SERVERDIR"):
        return os.environ["DEVPI_SERVERDIR"]
    return default


class Options(usage.Options):
    synopsis = "[options]"
    longdesc = "A private Python package index and PyPI caching server (devpi work-alike)."
    optParameters = [
        ["serverdir", None, None, "server directory [~/.devpi/server]"],
        ["host", None, None, "bind address [localhost]"],
        ["port", None, None, "port [3141]"],
        ["secretfile", None, None, "file with the token signing secret"],
        ["restrict-modify", None, None, "users and :groups that may create and modify users and indexes"],
        ["root-passwd", None, "", "root password when initialising"],
        ["root-passwd-hash", None, None, "root password hash when initialising"],
        ["max-request-body-size", None, None, "largest request body in bytes [1073741824]"],
        ["outside-url", None, None, "external base URL"],
        ["mirror-cache-expiry", None, None, "seconds mirror data stays fresh [1800]"],
        ["request-timeout", None, None, "seconds for upstream requests [5]"],
    ]
    optFlags = [
        ["offline-mode", None, "never contact upstream; serve cached data"],
        ["no-root-pypi", None, "do not create root/pypi when initialising"],
        ["init", None, "initialise the server directory and exit"],
        ["no-request-log", None, "do not log one line per request"],
    ]

    def __init__(self) -> None:
        super().__init__()
        self["listen"] = []

    def opt_listen(self, value: str) -> None:
        """HOST:PORT to listen on (repeatable)"""
        self["listen"].append(value)

    def opt_version(self) -> None:
        print(f"devpi_tx {__version__}")
        sys.exit(0)

    def postOptions(self) -> None:
        for name, default in (
            ("serverdir", DEFAULT_SERVERDIR),
            ("host", "localhost"),
            ("port", "3141"),
            ("max-request-body-size", str(1 << 30)),
            ("outside-url", None),
            ("secretfile", None),
            ("restrict-modify", None),
            ("mirror-cache-expiry", "1800"),
            ("request-timeout", "5"),
        ):
            if self[name] is None:
                self[name] = _env(name, default)
        for name in ("port", "max-request-body-size", "mirror-cache-expiry", "request-timeout"):
            if self[name] is None:
                continue
            try:
                self[name] = int(self[name])
            except (TypeError, ValueError):
                raise usage.UsageError(f"--{name} must be an integer, not {self[name]!r}") from None
        if self["listen"] and (self["host"] != "localhost" or self["port"] != 3141):
            raise usage.UsageError("--listen cannot be combined with --host or --port")
        self["serverdir"] = os.path.abspath(os.path.expanduser(self["serverdir"]))


def listen_endpoints(options: Options) -> list[str]:
    specs = options["listen"] or [f"{options['host']}:{options['port']}"]
    result = []
    for spec in specs:
        host, sep, port = spec.rpartition(":")
        if not sep or not port.isdigit():
            raise usage.UsageError(f"--listen expects HOST:PORT, not {spec!r}")
        host = host.strip("[]")
        if host == "*":
            host = "0.0.0.0"
        kind = "tcp6" if ":" in host else "tcp"
        escaped = host.replace(":", "\\:")
        result.append(f"{kind}:port={port}:interface={escaped}")
    return result


class ThreadPoolService(Service):
    """Starts and stops a thread pool with the service tree."""

    def __init__(self, pool: ThreadPool) -> None:
        self.pool = pool

    def startService(self) -> None:
        super().startService()
        self.pool.start()

    def stopService(self) -> None:
        super().stopService()
        self.pool.stop()


class StoreService(Service):
    def __init__(self, store: SQLiteStore) -> None:
        self.store = store

    def stopService(self) -> None:
        super().stopService()
        self.store.close()


def makeService(options: Options, reactor: Any = None) -> IService:
    if reactor is None:
        from twisted.internet import reactor as default_reactor

        reactor = default_reactor
    serverdir = ServerDir(options["serverdir"])
    try:
        if not serverdir.is_initialised():
            serverdir.initialise(
                root_password=options["root-passwd"] or "",
                root_pwhash=options["root-passwd-hash"],
                root_pypi=not options["no-root-pypi"],
            )
        serverdir.open()
        secret = load_secret(options["secretfile"], serverdir.path)
    except (StorageError, ValueError, OSError) as e:
        raise usage.UsageError(str(e)) from None
    if options["init"]:
        print(f"initialised {serverdir.path}")
        sys.exit(0)

    top = MultiService()
    read_pool = ThreadPool(minthreads=1, maxthreads=4, name="devpi-read")
    write_pool = ThreadPool(minthreads=1, maxthreads=1, name="devpi-write")
    work_pool = ThreadPool(minthreads=1, maxthreads=4, name="devpi-work")
    for pool in (read_pool, write_pool, work_pool):
        ThreadPoolService(pool).setServiceParent(top)

    def runner(pool: ThreadPool) -> Any:
        return lambda fn: deferToThreadPool(reactor, pool, fn)

    store = SQLiteStore(
        serverdir.database, serverdir.files, runner(read_pool), runner(write_pool)
    )
    StoreService(store).setServiceParent(top)
    node_uuid = serverdir.nodeinfo()["uuid"]
    config = WebConfig(
        serverdir=serverdir.path,
        files_dir=serverdir.files,
        uuid=node_uuid,
        policy=Policy(parse_restrict_modify(options["restrict-modify"])),
        signer=TokenSigner(secret),
        outside_url=options["outside-url"],
        host=options["host"],
        port=options["port"],
    )

    def run_in_thread(fn: Any, *args: Any) -> Any:
        return deferToThreadPool(reactor, work_pool, fn, *args)

    pool = QuietPool(reactor, persistent=True)
    pool.maxPersistentPerHost = 16
    client = HTTPClient(Agent(reactor, connectTimeout=options["request-timeout"], pool=pool))
    upstream = Upstream(client, reactor, timeout=options["request-timeout"])
    mirror = MirrorService(
        store,
        upstream,
        reactor,
        offline=bool(options["offline-mode"]),
        default_expiry=options["mirror-cache-expiry"],
        run_in_thread=run_in_thread,
    )
    mirror_files = MirrorFiles(store, upstream, serverdir.files, reactor)
    api = IndexAPI(config, store, run_in_thread, mirror, mirror_files, clock=reactor.seconds)
    site = DevpiSite(
        DevpiResource(api, store, node_uuid),
        max_body=options["max-request-body-size"],
        log_requests=not options["no-request-log"],
    )
    for spec in listen_endpoints(options):
        StreamServerEndpointService(serverFromString(reactor, spec), site).setServiceParent(top)
    return top
