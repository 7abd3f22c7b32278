"""
C{twistd devpi}: the service tree of the main instance (requests, event
hooks, supervised request-only workers), of a worker, and the one-shot
actions (--init, --export, --import, --fsck, --gen-config).
"""

from __future__ import annotations

import json
import logging.config
import os
import sys
from typing import Any

from treq.client import HTTPClient
from twisted.application.internet import StreamServerEndpointService
from twisted.application.service import IService, MultiService, Service
from twisted.internet.endpoints import TCP4ServerEndpoint, TCP6ServerEndpoint
from twisted.internet.threads import deferToThreadPool
from twisted.logger import STDLibLogObserver, globalLogPublisher
from twisted.python import usage
from twisted.python.threadpool import ThreadPool
from twisted.web.client import Agent

from devpi_tx.auth import TokenSigner, load_secret
from devpi_tx.beacon import SerialBeacon
from devpi_tx.download import MirrorFiles
from devpi_tx.dump import DumpError
from devpi_tx.events import EventProcessor, Hook
from devpi_tx.hooks import DescriptionHook, DocsHook, SearchHook
from devpi_tx.metrics import Metrics
from devpi_tx.mirror import MirrorService
from devpi_tx.model import Policy, parse_restrict_modify
from devpi_tx.options import Options, worker_options
from devpi_tx.serverdir import ServerDir
from devpi_tx.store.sqlite import SQLiteStore, StorageError
from devpi_tx.supervisor import (
    SharedListeners,
    WorkerSupervisor,
    die_with_parent,
    worker_argv,
)
from devpi_tx.upstream import QuietPool, Upstream
from devpi_tx.web.api import IndexAPI, WebConfig
from devpi_tx.web.site import DevpiResource, DevpiSite

__all__ = ["Options", "makeService"]

SERIAL_BEACON = ".serial"


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


def _fail(message: str) -> None:
    sys.stderr.write(f"twistd devpi: error: {message}\n")
    sys.exit(2)


def _configure_logging(options: Options) -> None:
    path = options["logger-cfg"]
    if not path:
        return
    import yaml

    try:
        with open(path) as f:
            config = json.load(f) if path.endswith(".json") else yaml.safe_load(f)
        logging.config.dictConfig(config)
    except (OSError, ValueError, TypeError, yaml.YAMLError) as e:
        _fail(f"bad --logger-cfg {path}: {e}")
    globalLogPublisher.addObserver(STDLibLogObserver(name="devpi_tx"))


def _report(stats: Any) -> None:
    for warning in getattr(stats, "warnings", []):
        print(f"warning: {warning}")
    for skipped in getattr(stats, "skipped", []):
        print(f"skipped: {skipped}")


def _one_shot(options: Options, serverdir: ServerDir) -> int | None:
    """Run a one-shot action; its exit status, or C{None} to serve."""
    from devpi_tx import dump, dumpimport, fsck

    if options["import"]:
        stats = dumpimport.import_dump(
            serverdir.path,
            options["import"],
            hard_links=options["hard-links"],
            skip_import_types=options["skip-import-type"],
            root_pypi=not options["no-root-pypi"],
            root_passwd=options["root-passwd"] or None,
            root_passwd_hash=options["root-passwd-hash"],
            progress=dump.progress_printer(),
        )
        _report(stats)
        print(f"imported {options['import']} into {serverdir.path}")
        return 0
    if not serverdir.is_initialised() and (options["export"] or options["fsck"]):
        _fail(f"{serverdir.path} is not an initialised server directory")
    if options["export"]:
        stats = dump.export_dump(
            serverdir.path,
            options["export"],
            hard_links=options["hard-links"],
            include_mirrored_files=options["include-mirrored-files"],
            progress=dump.progress_printer(),
        )
        _report(stats)
        print(f"exported {serverdir.path} to {options['export']}")
        return 0
    if options["fsck"]:
        report = fsck.fsck(
            serverdir.path, checksum=not options["no-checksum"], refetch_mirror=options["fsck-refetch-mirror"]
        )
        print(report.text())
        return int(report.status)
    if options["gen-config"]:
        from devpi_tx.genconfig import gen_config

        written = gen_config(
            getattr(options, "raw_args", []),
            serverdir=serverdir.path,
            host=options["listen-addresses"][0][0],
            port=options["listen-addresses"][0][1],
            mirror_cache_expiry=options["mirror-cache-expiry"],
        )
        for path in written:
            print(f"wrote {path}")
        if not options["configfile"]:
            print("hint: keep the options in a --configfile, so every tool can share them")
        return 0
    return None


def makeService(options: Options, reactor: Any = None) -> IService:
    if reactor is None:
        from twisted.internet import reactor as default_reactor

        reactor = default_reactor
    worker = bool(options["worker-listen"])
    if worker:
        die_with_parent()
    _configure_logging(options)
    serverdir = ServerDir(options["serverdir"])
    if serverdir.foreign() and not options["import"]:
        _fail(str(serverdir.foreign()))
    try:
        if not worker and not any(options[a] for a in ("import", "export", "fsck", "gen-config")):
            if not serverdir.is_initialised():
                serverdir.initialise(
                    root_password=options["root-passwd"] or "",
                    root_pwhash=options["root-passwd-hash"],
                    root_pypi=not options["no-root-pypi"],
                )
                if options["init"]:
                    print(f"initialised {serverdir.path}")
                    sys.exit(0)
            elif options["init"]:
                _fail(f"{serverdir.path} is already initialised")
        try:
            status = _one_shot(options, serverdir)
        except (DumpError, StorageError) as e:
            sys.stderr.write(f"fatal: {e}\n")
            sys.exit(1)
        if status is not None:
            sys.exit(status)
        if not serverdir.is_initialised():
            _fail(f"{serverdir.path} is not an initialised server directory")
        if not worker:
            serverdir.open()
        secret = load_secret(options["secretfile"], serverdir.path)
    except (StorageError, ValueError, OSError) as e:
        _fail(str(e))
    except usage.UsageError as e:
        _fail(str(e))
    return _serve(options, reactor, serverdir, secret, worker)


def _serve(options: Options, reactor: Any, serverdir: ServerDir, secret: bytes, worker: bool) -> IService:
    # uploads hash, write and commit in threads; while the reactor thread is
    # busy with reads they wait for the GIL at every switch: keep that short
    sys.setswitchinterval(0.0005)
    top = MultiService()
    read_pool = ThreadPool(minthreads=1, maxthreads=4, name="devpi-read")
    write_pool = ThreadPool(minthreads=1, maxthreads=1, name="devpi-write")
    work_pool = ThreadPool(minthreads=1, maxthreads=4, name="devpi-work")
    for pool in (read_pool, write_pool, work_pool):
        ThreadPoolService(pool).setServiceParent(top)

    def runner(pool: ThreadPool) -> Any:
        return lambda fn: deferToThreadPool(reactor, pool, fn)

    def run_in_thread(fn: Any, *args: Any) -> Any:
        return deferToThreadPool(reactor, work_pool, fn, *args)

    beacon = SerialBeacon(os.path.join(serverdir.path, SERIAL_BEACON))
    store = SQLiteStore(serverdir.database, serverdir.files, runner(read_pool), runner(write_pool), beacon)
    StoreService(store).setServiceParent(top)
    node_uuid = serverdir.nodeinfo()["uuid"]
    host, port = options["listen-addresses"][0]
    config = WebConfig(
        serverdir=serverdir.path,
        files_dir=serverdir.files,
        uuid=node_uuid,
        policy=Policy(parse_restrict_modify(options["restrict-modify"])),
        signer=TokenSigner(secret),
        outside_url=options["outside-url"],
        host=host,
        port=port,
    )
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
    events = None
    if not worker and not options["requests-only"]:
        events = EventProcessor(store, serverdir.path, make_hooks(serverdir), reactor, run_in_thread)
        events.setServiceParent(top)
    metrics = Metrics()
    api = IndexAPI(
        config, store, run_in_thread, mirror, mirror_files, clock=reactor.seconds, events=events, metrics=metrics
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
        listeners = SharedListeners(reactor, options["listen-addresses"], site)
        listeners.setServiceParent(top)
        argv = worker_argv(worker_options(options))
        WorkerSupervisor(reactor, listeners, options["workers"], argv).setServiceParent(top)
    else:
        for host, port in options["listen-addresses"]:
            kind = TCP6ServerEndpoint if ":" in host else TCP4ServerEndpoint
            StreamServerEndpointService(kind(reactor, port, interface=host), site).setServiceParent(top)
    return top


def make_hooks(serverdir: ServerDir) -> list[Hook]:
    """The event hooks of the main instance: docs, rendered descriptions, search."""
    return [DocsHook(serverdir.path, serverdir.files), DescriptionHook(serverdir.path), SearchHook(serverdir.path)]
