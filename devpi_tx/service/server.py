# -*- test-case-name: tests.e2e.test_e2e_server,tests.store.test_tempfiles -*-
"""
The service tree of a serving process: thread pools, the store, the mirror,
the web site, the event hooks and, in the main instance, the supervised
workers.
"""

from __future__ import annotations

import os
from typing import Any

from treq.client import HTTPClient
from twisted.application.service import IService, MultiService, Service
from twisted.internet.defer import Deferred, maybeDeferred
from twisted.internet.task import LoopingCall
from twisted.internet.threads import deferToThreadPool
from twisted.logger import Logger
from twisted.python.threadpool import ThreadPool
from twisted.web.client import Agent

from devpi_tx import __version__
from devpi_tx.domain.auth import TokenSigner
from devpi_tx.events.hooks import DescriptionHook, DocsHook, SearchHook
from devpi_tx.events.processor import EventProcessor, Hook
from devpi_tx.mirror.download import MirrorFiles
from devpi_tx.mirror.pages import MirrorService
from devpi_tx.mirror.upstream import QuietPool, Upstream
from devpi_tx.model.policy import Policy, parse_restrict_modify
from devpi_tx.service.options import Options, worker_options
from devpi_tx.service.serverdir import ServerDir
from devpi_tx.service.supervisor import Listeners, SharedListeners, WorkerSupervisor, worker_argv
from devpi_tx.store.beacon import SerialBeacon
from devpi_tx.store.factory import open_search_index, open_store
from devpi_tx.store.files import STALE_TEMP_AGE, remove_stale_temp_files
from devpi_tx.store.interfaces import IFileStore, ISearchIndex, IStore
from devpi_tx.web.api import IndexAPI, WebConfig
from devpi_tx.web.metrics import Metrics
from devpi_tx.web.pagecache import page_groups
from devpi_tx.web.site import DevpiResource, DevpiSite

SERIAL_BEACON = ".serial"
SWEEP_INTERVAL = 600.0


class Foundation(MultiService):
    """
    The top of a process's service tree: its thread pools start before the
    services (its children) and stop only after every one of them has
    stopped, and then the store closes.  A service that waits at stop for
    work in a pool (the event processor's serial in flight) would otherwise
    wait forever: a stopped pool drops the work it had queued.
    """

    def __init__(self, pools: list[ThreadPool]) -> None:
        super().__init__()
        self.pools = pools
        self.store: IStore | None = None

    def startService(self) -> None:
        for pool in self.pools:
            pool.start()
        super().startService()

    def stopService(self) -> Deferred[None]:
        stopped: Deferred[Any] = maybeDeferred(super().stopService)

        def release(result: object) -> object:
            if self.store is not None:
                self.store.close()
            for pool in self.pools:
                pool.stop()
            return result

        return stopped.addBoth(release)


def serve(options: Options, reactor: Any, serverdir: ServerDir, secret: bytes, worker: bool) -> IService:
    read_pool = ThreadPool(minthreads=1, maxthreads=4, name="devpi-read")
    write_pool = ThreadPool(minthreads=1, maxthreads=1, name="devpi-write")
    work_pool = ThreadPool(minthreads=1, maxthreads=4, name="devpi-work")
    top = Foundation([read_pool, write_pool, work_pool])

    def runner(pool: ThreadPool) -> Any:
        return lambda fn: deferToThreadPool(reactor, pool, fn)

    def run_in_thread(fn: Any, *args: Any) -> Any:
        return deferToThreadPool(reactor, work_pool, fn, *args)

    beacon = SerialBeacon(os.path.join(serverdir.path, SERIAL_BEACON))
    engine = options["storage"].split(":", 1)[0]
    store = open_store(
        engine,
        serverdir.database,
        serverdir.files,
        runner(read_pool),
        runner(write_pool),
        beacon,
        groups_of=page_groups,
    )
    top.store = store
    node_uuid = serverdir.nodeinfo()["uuid"]
    host, port = options["listen-addresses"][0]
    config = WebConfig(
        serverdir=serverdir.path,
        uuid=node_uuid,
        policy=Policy(parse_restrict_modify(options["restrict-modify"])),
        signer=TokenSigner(secret),
        outside_url=options["outside-url"],
        host=host,
        port=port,
    )
    http_pool = QuietPool(reactor, persistent=True)
    http_pool.maxPersistentPerHost = 16
    client = HTTPClient(Agent(reactor, connectTimeout=options["request-timeout"], pool=http_pool))
    upstream = Upstream(client, reactor, timeout=options["request-timeout"])
    mirror = MirrorService(
        store,
        upstream,
        reactor,
        offline=bool(options["offline-mode"]),
        default_expiry=options["mirror-cache-expiry"],
        run_in_thread=run_in_thread,
    )
    mirror_files = MirrorFiles(store, upstream, serverdir.files, reactor, run_in_thread=run_in_thread)
    events = None
    if not worker and not options["requests-only"]:
        events = EventProcessor(
            store,
            serverdir.path,
            make_hooks(serverdir, store.files, open_search_index(engine, serverdir.path)),
            reactor,
            run_in_thread,
        )
        events.setServiceParent(top)
    metrics = Metrics()
    api = IndexAPI(
        config,
        store,
        run_in_thread,
        mirror,
        mirror_files,
        clock=reactor.seconds,
        events=events,
        metrics=metrics,
        search=open_search_index(engine, serverdir.path),
    )
    site = DevpiSite(
        DevpiResource(api, store, node_uuid),
        max_body=options["max-request-body-size"],
        log_requests=not options["no-request-log"],
        metrics=metrics,
    )
    if worker:
        SharedListeners(reactor, options["worker-listen"], site).setServiceParent(top)
    elif options["workers"]:
        shared = SharedListeners(reactor, options["listen-addresses"], site)
        shared.setServiceParent(top)
        argv = worker_argv(worker_options(options))
        WorkerSupervisor(reactor, shared, options["workers"], argv).setServiceParent(top)
        listeners: Listeners = shared
    else:
        listeners = Listeners(reactor, options["listen-addresses"], site)
        listeners.setServiceParent(top)
    if not worker:
        TempSweep(serverdir.files, run_in_thread, reactor).setServiceParent(top)
        Announce(listeners, serverdir, store, options.get("initialised-now")).setServiceParent(top)
    return top


class TempSweep(Service):
    """
    Every L{SWEEP_INTERVAL} seconds the main instance removes the temporary
    files no live write owns (of any process of the tree), in a thread; the
    first sweep comes one interval after the start-up cleanup.
    """

    _log = Logger()

    def __init__(self, files_dir: str, run_in_thread: Any, clock: Any) -> None:
        self._files_dir = files_dir
        self._run = run_in_thread
        self._loop = LoopingCall(self._sweep)
        self._loop.clock = clock

    def startService(self) -> None:
        super().startService()
        self._loop.start(SWEEP_INTERVAL, now=False)

    def stopService(self) -> None:
        super().stopService()
        if self._loop.running:
            self._loop.stop()

    async def _run_sweep(self) -> None:
        removed = await self._run(remove_stale_temp_files, self._files_dir, None, STALE_TEMP_AGE)
        if removed:
            self._log.info("removed {count} abandoned temporary files", count=len(removed))

    def _sweep(self) -> Deferred[None]:
        d = Deferred.fromCoroutine(self._run_sweep())
        d.addErrback(lambda f: self._log.failure("sweeping temporary files failed", f))
        return d


class Announce(Service):
    """Says at start where the server listens, where its data is, and what is new."""

    _log = Logger()

    def __init__(self, listeners: Any, serverdir: ServerDir, store: IStore, initialised: str | None) -> None:
        """@param initialised: C{"empty"} or C{"set"} (root's password) when the server dir was just made."""
        self._listeners = listeners
        self._serverdir = serverdir
        self._store = store
        self._initialised = initialised

    def startService(self) -> None:
        super().startService()
        urls = ", ".join(url_of(host, port) for host, port in self._listeners.addresses())
        self._log.info(
            "devpi_tx {version} serving {urls} from {serverdir} (serial {serial})",
            version=__version__,
            urls=urls,
            serverdir=self._serverdir.path,
            serial=self._store.current_serial(),
        )
        if self._initialised:
            password = (
                "whose password is EMPTY: set one now (devpi user -m root password=...)"
                if self._initialised == "empty"
                else "with the password given"
            )
            self._log.warn(
                "{serverdir} was not a server directory: initialised a new one with user root, {password}. "
                "If you meant an existing server, check --serverdir.",
                serverdir=self._serverdir.path,
                password=password,
            )


def url_of(host: str, port: int) -> str:
    shown = "localhost" if host in ("", "0.0.0.0", "::") else host
    return f"http://[{shown}]:{port}/" if ":" in shown else f"http://{shown}:{port}/"


def make_hooks(serverdir: ServerDir, files: IFileStore, search_index: ISearchIndex) -> list[Hook]:
    """The event hooks of the main instance: docs, rendered descriptions, search."""
    return [DocsHook(serverdir.path, files), DescriptionHook(serverdir.path), SearchHook(search_index)]
