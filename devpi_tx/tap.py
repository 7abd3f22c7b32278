# -*- test-case-name: tests.e2e.test_e2e_faults,tests.service.test_options -*-
"""
C{twistd devpi}: the plugin's entry point.  Runs the one-shot actions
(--init, --export, --import, --fsck, --gen-config) or builds the service
tree of a serving process (L{devpi_tx.service.server}), importing the web stack only
then.
"""

from __future__ import annotations

import json
import logging.config
import socket
import sys
from typing import Any

from twisted.application.service import IService
from twisted.logger import STDLibLogObserver, globalLogPublisher
from twisted.python import usage

from devpi_tx.domain.auth import load_secret
from devpi_tx.service.options import Options
from devpi_tx.service.serverdir import ServerDir
from devpi_tx.service.supervisor import die_with_parent
from devpi_tx.store.interfaces import StorageError

__all__ = ["Options", "makeService"]


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


def _one_shot(options: Options, serverdir: ServerDir) -> int | None:
    """Run a one-shot action; its exit status, or C{None} to serve."""
    from devpi_tx.admin import cli

    if options["import"]:
        return cli.run_import(
            serverdir.path,
            options["import"],
            options["hard-links"],
            options["skip-import-type"],
            not options["no-root-pypi"],
            options["root-passwd"] or None,
            options["root-passwd-hash"],
        )
    if not serverdir.is_initialised() and (options["export"] or options["fsck"]):
        _fail(f"{serverdir.path} is not an initialised server directory")
    if options["export"]:
        return cli.run_export(
            serverdir.path, options["export"], options["hard-links"], options["include-mirrored-files"]
        )
    if options["fsck"]:
        return cli.run_fsck(serverdir.path, not options["no-checksum"], options["fsck-refetch-mirror"])
    if options["gen-config"]:
        from devpi_tx.admin.genconfig import gen_config

        written = gen_config(
            getattr(options, "raw_args", []),
            serverdir=serverdir.path,
            host=options["listen-addresses"][0][0],
            port=options["listen-addresses"][0][1],
            mirror_cache_expiry=options["mirror-cache-expiry"],
            user=options["gen-config-user"],
            outside_url=options["outside-url"],
            max_request_body_size=options["max-request-body-size"],
        )
        for path in written:
            print(f"wrote {path}")
        if not options["configfile"]:
            print("hint: keep the options in a --configfile, so every tool can share them")
        return 0
    return None


def check_addresses(addresses: list[tuple[str, int]]) -> None:
    """
    Exit with one line when an address cannot be bound (in use, not an
    address of this host, a privileged port).  Binding without
    C{SO_REUSEPORT} also notices a running devpi_tx tree with workers.
    """
    for host, port in addresses:
        if port == 0:
            continue
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        try:
            with socket.socket(family, socket.SOCK_STREAM) as sock:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                sock.bind((host, port))
        except OSError as e:
            _fail(f"cannot listen on {host}:{port}: {e.strerror or e}")


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
        serving = not any(options[a] for a in ("init", "import", "export", "fsck", "gen-config"))
        if serving and not worker:
            # before anything is written: a server that cannot listen leaves no new server dir
            check_addresses(options["listen-addresses"])
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
                options["initialised-now"] = (
                    "empty" if not (options["root-passwd"] or options["root-passwd-hash"]) else "set"
                )
            elif options["init"]:
                _fail(f"{serverdir.path} is already initialised")
        status = _one_shot(options, serverdir)
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
    from devpi_tx.service.server import serve  # the web stack only when serving

    # a serving process: uploads hash, write and commit in threads; while the
    # reactor thread is busy with reads they wait for the GIL at every
    # switch: keep that short (a setting of the process, made once here)
    sys.setswitchinterval(0.0005)
    return serve(options, reactor, serverdir, secret, worker)
