# -*- test-case-name: tests.admin.test_genconfig,tests.service.test_options -*-
"""
The command line of C{twistd devpi}, with devpi-server's option names.
Precedence: command line, then C{DEVPISERVER_*} environment variables, then
the YAML config file (C{devpi-server:} mapping), then defaults.  A bad
option or value is one line on stderr and exit status 2.
"""

from __future__ import annotations

import os
import sys
from typing import Any

from twisted.python import usage

from devpi_tx import __version__

DEFAULT_SERVERDIR = "~/.devpi/server"

# name: (default, kind, help); kind is "str", "int", "flag" or "list"
OPTIONS: dict[str, tuple[Any, str, str]] = {
    "serverdir": (DEFAULT_SERVERDIR, "str", "server directory"),
    "configfile": (None, "str", "YAML config file (mapping 'devpi-server:')"),
    "host": ("localhost", "str", "bind address"),
    "port": ("3141", "int", "port"),
    "listen": (None, "list", "HOST:PORT to listen on, repeatable (instead of --host/--port)"),
    "secretfile": (None, "str", "file with the token signing secret [<serverdir>/.secret]"),
    "restrict-modify": (None, "str", "comma list of users and :groups that alone manage users and indexes"),
    "root-passwd": ("", "str", "root password when initialising"),
    "root-passwd-hash": (None, "str", "root password hash when initialising"),
    "max-request-body-size": (str(1 << 30), "int", "largest request body in bytes"),
    "outside-url": (None, "str", "external base URL"),
    "mirror-cache-expiry": ("1800", "int", "seconds mirror data stays fresh"),
    "request-timeout": ("5", "int", "seconds for upstream requests"),
    "storage": ("sqlite", "str", "storage backend"),
    "workers": ("0", "int", "request-only worker processes started beside the main instance"),
    "logger-cfg": (None, "str", "logging configuration file (.json or .yaml, logging.config.dictConfig)"),
    "export": (None, "str", "export the server state into DIR and exit"),
    "import": (None, "str", "import the dump in DIR into a new server dir and exit"),
    "skip-import-type": (None, "list", "index type to leave out of an import, repeatable"),
    "offline-mode": (False, "flag", "never contact upstream; serve cached data"),
    "no-root-pypi": (False, "flag", "do not create root/pypi when initialising or importing"),
    "init": (False, "flag", "initialise the server directory and exit"),
    "requests-only": (False, "flag", "serve requests only: no event hooks"),
    "no-request-log": (False, "flag", "do not log one line per request"),
    "debug": (False, "flag", "log debug events"),
    "hard-links": (False, "flag", "link files instead of copying them on export and import"),
    "include-mirrored-files": (False, "flag", "export the cached files of mirror indexes too"),
    "fsck": (False, "flag", "check every stored file against its hash and size, and exit"),
    "no-checksum": (False, "flag", "with --fsck: check existence and size only"),
    "fsck-refetch-mirror": (
        False,
        "flag",
        "with --fsck: forget missing or damaged mirror files so they are fetched again",
    ),
    "gen-config": (False, "flag", "write example deployment configs into ./gen-config and exit"),
    "gen-config-user": ("devpi", "str", "with --gen-config: the user the generated services run as"),
}
_TRUE = {"y", "yes", "t", "true", "on", "1"}
_FALSE = {"n", "no", "f", "false", "off", "0"}


def _env_name(name: str) -> str:
    return "DEVPISERVER_" + name.upper().replace("-", "_")


def load_config_file(path: str) -> dict[str, Any]:
    import yaml  # only with a config file: it costs a megabyte of memory

    try:
        with open(path) as f:
            data = yaml.safe_load(f)
    except OSError as e:
        raise usage.UsageError(f"cannot read config file {path}: {e.strerror}") from None
    except yaml.YAMLError as e:
        raise usage.UsageError(f"config file {path} is not valid YAML: {' '.join(str(e).split())}") from None
    section = (data or {}).get("devpi-server", {}) if isinstance(data, dict) else None
    if not isinstance(section, dict):
        raise usage.UsageError(f"config file {path} needs a 'devpi-server:' mapping")
    unknown = sorted(k for k in section if k not in OPTIONS)
    if unknown:
        raise usage.UsageError(f"unknown option {unknown[0]!r} in config file {path}")
    return section


class Options(usage.Options):
    synopsis = "[options]"
    longdesc = (
        "A private Python package index and PyPI caching server, a work-alike of "
        "devpi-server.  Options can also be set as DEVPISERVER_<NAME> environment "
        "variables or in the YAML file given by --configfile."
    )
    optFlags = [[name, None, info] for name, (_, kind, info) in OPTIONS.items() if kind == "flag"]
    optParameters = [
        [name, None, None, f"{info} [{default}]" if default not in (None, "") else info]
        for name, (default, kind, info) in OPTIONS.items()
        if kind in ("str", "int")
    ]

    def __init__(self) -> None:
        super().__init__()
        self["listen"] = []
        self["skip-import-type"] = []
        self["worker-listen"] = []
        self._given: set[str] = set()

    def opt_listen(self, value: str) -> None:
        """HOST:PORT to listen on, repeatable (instead of --host/--port)"""
        self["listen"].append(value)

    def opt_skip_import_type(self, value: str) -> None:
        """index type to leave out of an import, repeatable"""
        self["skip-import-type"].append(value)

    def opt_worker_listen(self, value: str) -> None:
        """(internal) HOST:PORT of the process tree a worker serves on"""
        host, sep, port = value.rpartition(":")
        if not sep or not port.isdigit():
            raise usage.UsageError(f"--worker-listen expects HOST:PORT, not {value!r}")
        self["worker-listen"].append((host.strip("[]"), int(port)))

    def opt_version(self) -> None:
        print(f"devpi_tx {__version__}")
        sys.exit(0)

    def parseOptions(self, options: Any = None) -> None:
        self.raw_args = list(options if options is not None else sys.argv[1:])
        try:
            super().parseOptions(options)
        except usage.UsageError as e:
            sys.stderr.write(f"twistd devpi: error: {e}\n")
            sys.exit(2)

    def postOptions(self) -> None:
        config: dict[str, Any] = {}
        given = self["configfile"] or os.environ.get(_env_name("configfile"))
        if given:
            config = load_config_file(given)
        for name, (default, kind, _) in OPTIONS.items():
            self._resolve(name, default, kind, config)
        if self["listen"] and (self["host"] != "localhost" or self["port"] != 3141):
            raise usage.UsageError("--listen cannot be combined with --host or --port")
        if self["storage"].split(":", 1)[0] != "sqlite":
            raise usage.UsageError(f"unknown storage backend {self['storage']!r} (available: sqlite)")
        if self["workers"] < 0:
            raise usage.UsageError("--workers must not be negative")
        if self["requests-only"] and self["workers"]:
            raise usage.UsageError("--requests-only cannot start workers")
        actions = [a for a in ("init", "export", "import", "fsck", "gen-config") if self[a]]
        if len(actions) > 1:
            raise usage.UsageError(f"--{actions[0]} and --{actions[1]} cannot be combined")
        if (
            not os.environ.get(_env_name("serverdir"))
            and os.environ.get("DEVPI_SERVERDIR")
            and self["serverdir"] == os.path.expanduser(DEFAULT_SERVERDIR)
        ):
            self["serverdir"] = os.environ["DEVPI_SERVERDIR"]
        self["serverdir"] = os.path.abspath(os.path.expanduser(self["serverdir"]))
        self["listen-addresses"] = listen_addresses(self)

    def _resolve(self, name: str, default: Any, kind: str, config: dict[str, Any]) -> None:
        env = os.environ.get(_env_name(name)) or None
        source = f"--{name}"
        if kind == "flag":
            if self[name]:
                return
            raw = env if env is not None else config.get(name)
            if raw is None:
                self[name] = False
                return
            text = str(raw).lower()
            if text not in _TRUE | _FALSE:
                raise usage.UsageError(f"{source} expects yes or no, not {raw!r}")
            self[name] = text in _TRUE
            return
        if kind == "list":
            if not self[name]:
                raw = env.split(",") if env else config.get(name) or []
                self[name] = [str(v) for v in (raw if isinstance(raw, list) else [raw])]
            return
        value = self[name]
        if value is None:
            value = env if env is not None else config.get(name)
        if value is None:
            value = default
        if kind == "int" and value is not None:
            try:
                value = int(value)
            except (TypeError, ValueError):
                raise usage.UsageError(f"{source} must be an integer, not {value!r}") from None
        elif value is not None:
            value = str(value)
        self[name] = value


def listen_addresses(options: Options) -> list[tuple[str, int]]:
    specs = options["listen"] or [f"{options['host']}:{options['port']}"]
    result = []
    for spec in specs:
        host, sep, port = spec.rpartition(":")
        if not sep or not port.isdigit():
            raise usage.UsageError(f"--listen expects HOST:PORT, not {spec!r}")
        host = host.strip("[]")
        result.append(("0.0.0.0" if host == "*" else host, int(port)))
    return result


def worker_options(options: Options) -> list[str]:
    """The options a worker needs to serve like the main instance."""
    args = ["--serverdir", options["serverdir"]]
    for name in (
        "secretfile",
        "restrict-modify",
        "max-request-body-size",
        "outside-url",
        "mirror-cache-expiry",
        "request-timeout",
        "storage",
        "logger-cfg",
    ):
        if options[name] is not None:
            args += [f"--{name}", str(options[name])]
    for name in ("offline-mode", "no-request-log", "debug"):
        if options[name]:
            args.append(f"--{name}")
    return args
