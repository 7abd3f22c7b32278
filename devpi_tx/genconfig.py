"""
C{twistd devpi --gen-config}: example deployment files (systemd, nginx,
supervisor, cron) for the server as it was started, like
C{devpi-gen-config}.

The templates are C{string.Template}s in C{etc/}; C{$name} is a value filled
in here, and C{$$} stands for the C{$} of nginx variables.  Every value is
quoted for the file it goes into.
"""

from __future__ import annotations

import os
import pwd
import re
import shlex
import sysconfig
from pathlib import Path
from string import Template

# options whose value is a path: made absolute, since a service does not
# start in the directory the configs were generated in
PATH_OPTIONS = ("serverdir", "configfile", "secretfile", "logger-cfg")

# where nginx keeps cached simple pages, relative to the server directory
NGINX_CACHE = "+nginx-cache"

_HERE = Path(__file__).resolve().parent


def template_dir() -> Path:
    """
    The directory with the templates: C{devpi_tx/etc}, a link to the
    top-level C{etc/} in a checkout and a copy in an installed package.
    """
    return _HERE / "etc"


def server_args(argv: list[str], serverdir: str) -> list[str]:
    """
    The options for C{twistd devpi} in a service: C{argv} without
    C{--gen-config}, with absolute paths for L{PATH_OPTIONS}, and with
    C{--serverdir} added when it was not given (it may have come from the
    environment, which a service does not share).

    @raise ValueError: a path option is the last argument, without a value.
    """
    result = []
    has_serverdir = False
    args = iter(argv)
    for arg in args:
        if arg == "--gen-config":
            continue
        name, sep, value = arg.partition("=")
        if not name.startswith("--") or name[2:] not in PATH_OPTIONS:
            result.append(arg)
            continue
        has_serverdir = has_serverdir or name == "--serverdir"
        if sep:
            result.append(f"{name}={_absolute(value)}")
            continue
        following = next(args, None)
        if following is None:
            raise ValueError(f"{name} needs a value")
        result += [name, _absolute(following)]
    if not has_serverdir:
        result = ["--serverdir", _absolute(serverdir), *result]
    return result


def proxy_address(host: str, port: int) -> str:
    """
    The address nginx reaches the server at: loopback when the server
    listens on every interface or on C{localhost}, else its address.
    """
    if host in ("", "*", "0.0.0.0", "localhost", "127.0.0.1"):
        return f"127.0.0.1:{port}"
    if host.strip("[]") in ("::", "::1"):
        return f"[::1]:{port}"
    if ":" in host:
        return f"[{host.strip('[]')}]:{port}"
    return f"{host}:{port}"


def gen_config(
    argv: list[str],
    serverdir: str,
    host: str,
    port: int,
    mirror_cache_expiry: int,
    outdir: str = "gen-config",
    twistd: str | None = None,
    user: str | None = None,
) -> list[str]:
    """
    Write C{devpi.service}, C{nginx-devpi.conf}, C{nginx-devpi-caching.conf},
    C{supervisor-devpi.conf}, C{supervisord.conf} and C{crontab} into
    C{outdir} (created if missing; files there are replaced).

    @param argv: the options C{twistd devpi} was given.
    @param serverdir: the server directory in effect.
    @param host: the address the server listens on.
    @param port: the port the server listens on.
    @param mirror_cache_expiry: seconds nginx keeps simple pages (caching
        variant).
    @param twistd: the C{twistd} to run; by default the one beside this
        Python.
    @param user: the user to run the server as; by default the current one.
    @return: the absolute paths of the files written.
    """
    outdir = _absolute(outdir)
    if twistd is None:
        twistd = os.path.join(sysconfig.get_path("scripts"), "twistd")
    twistd = _absolute(twistd)
    if user is None:
        user = pwd.getpwuid(os.geteuid()).pw_name
    command = [twistd, "-n", "--pidfile=", "devpi", *server_args(argv, serverdir)]
    proxy = proxy_address(host, port)
    root = _absolute(serverdir)
    expiry = str(mirror_cache_expiry)
    site = {"proxy_addr": proxy, "root": _nginx_path(root), "expiry": expiry}
    plain = _render("nginx-devpi.conf", server=_render("nginx-server.conf", simple_location="", **site), **site)
    caching = _render(
        "nginx-devpi-caching.conf",
        cache_dir=_nginx_path(os.path.join(root, NGINX_CACHE)),
        server=_render("nginx-server.conf", simple_location=_render("nginx-simple-cache.location", **site), **site),
        **site,
    )
    supervisord = os.path.join(os.path.dirname(twistd), "supervisord")
    conf = os.path.join(outdir, "supervisord.conf")
    files = {
        "devpi.service": _render("devpi.service", user=user, command=" ".join(_systemd_quote(a) for a in command)),
        "nginx-devpi.conf": plain,
        "nginx-devpi-caching.conf": caching,
        "supervisor-devpi.conf": _render(
            "supervisor-devpi.conf", user=user, command=" ".join(_supervisor_quote(a) for a in command)
        ),
        "supervisord.conf": _render("supervisord.conf", conf=shlex.quote(conf)),
        "crontab": _render(
            "crontab",
            user=user,
            command=" ".join(shlex.quote(a).replace("%", "\\%") for a in (supervisord, "-c", conf)),
        ),
    }
    os.makedirs(outdir, exist_ok=True)
    written = []
    for name, text in files.items():
        path = os.path.join(outdir, name)
        with open(path, "w") as f:
            f.write(text)
        written.append(path)
    return written


def _absolute(path: str) -> str:
    return os.path.abspath(os.path.expanduser(path))


def _render(name: str, **values: str) -> str:
    text = (template_dir() / f"{name}.in").read_text()
    return Template(text).substitute(values)


def _systemd_quote(arg: str) -> str:
    # systemd expands % specifiers and $ variables in ExecStart, and splits
    # words on whitespace unless they are quoted
    escaped = arg.replace("%", "%%").replace("$", "$$")
    if escaped and not re.search(r"[\s\"'\\;]", escaped):
        return escaped
    return '"' + escaped.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _supervisor_quote(arg: str) -> str:
    # supervisor splits the command with shlex after %(name)s expansion
    return shlex.quote(arg).replace("%", "%%")


def _nginx_path(path: str) -> str:
    # nginx would read a $ as the start of a variable, with no way to escape it
    if "$" in path:
        raise ValueError(f"nginx cannot use a path with '$' in it: {path}")
    return '"' + path.replace("\\", "\\\\").replace('"', '\\"') + '"'
