# -*- test-case-name: tests.admin.test_genconfig -*-
"""
C{twistd devpi --gen-config}: example deployment files (systemd, nginx,
supervisor, cron) for the server as it was started, like
C{devpi-gen-config}.

The nginx site follows C{--outside-url}: its host is the server name, an
https URL makes nginx terminate TLS (certificate paths to fill in) and
redirect plain HTTP, and a path makes the site live under that prefix, which
nginx strips before a request reaches the server.  The services run as a
dedicated user (C{--gen-config-user}, C{devpi} by default) with systemd's
sandboxing.

The templates are C{string.Template}s in C{etc/} (and, for the nginx blocks
only some sites have, below); C{$name} is a value filled in here, and C{$$}
stands for the C{$} of nginx variables.  Every value is quoted for the file
it goes into.
"""

from __future__ import annotations

import os
import re
import shlex
import sysconfig
from dataclasses import dataclass
from pathlib import Path
from string import Template
from urllib.parse import unquote, urlsplit

# options whose value is a path: made absolute, since a service does not
# start in the directory the configs were generated in
PATH_OPTIONS = ("serverdir", "configfile", "secretfile", "logger-cfg")

# options of gen-config itself, left out of the service's command line
GEN_CONFIG_OPTIONS = ("gen-config-user",)

# where nginx keeps cached simple pages, relative to the server directory
NGINX_CACHE = "+nginx-cache"

# the user the services run as unless --gen-config-user names another
DEFAULT_USER = "devpi"

# a user name every file format here takes as it is
_USER = re.compile(r"[A-Za-z_][A-Za-z0-9_.-]*")
# a host name or an IPv4 address (lower case)
_HOST = re.compile(r"[a-z0-9]([a-z0-9-]*[a-z0-9])?(\.[a-z0-9]([a-z0-9-]*[a-z0-9])?)*")
# one segment of the outside URL's path: characters nginx takes unquoted
_SEGMENT = re.compile(r"[A-Za-z0-9._~+@-]+")

_HERE = Path(__file__).resolve().parent.parent  # devpi_tx/

# nginx blocks of an https site
_TLS = Template("""
    # TLS certificate and key of $host, at the paths certbot (Let's
    # Encrypt) keeps them; point these at your own files otherwise.  nginx
    # does not start until both exist.
    ssl_certificate $certificate;
    ssl_certificate_key $certificate_key;
""")
_HTTPS_REDIRECT = Template("""\
# plain HTTP requests are redirected to the https outside URL
server {
    listen 80;
    server_name $host;
    return 301 $origin$$request_uri;
}

""")
# the end of a site under a path prefix
_PREFIX_ONLY = Template("""
    # this site serves devpi_tx under $prefix/ only; to share the host with
    # other sites, move the locations above into the server {} that serves
    # $host (and its TLS settings) instead of including this file
    location / {
        return 404;
    }
""")


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
        if name.startswith("--") and name[2:] in GEN_CONFIG_OPTIONS:
            if not sep:
                next(args, None)
            continue
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


@dataclass(frozen=True)
class Site:
    """
    Where clients reach the index, from C{--outside-url}.

    @ivar origin: C{scheme://host[:port]} of the outside URL, or C{None}
        when nginx passes on the scheme and host of each request.
    @ivar scheme: C{http} or C{https}.
    @ivar host: the host name (an IPv6 address in brackets).
    @ivar port: the port nginx listens on.
    @ivar prefix: the path the index lives under (C{/devpi}), or C{""}.
    """

    origin: str | None = None
    scheme: str = "http"
    host: str = ""
    port: int = 80
    prefix: str = ""

    @property
    def url(self) -> str | None:
        """The outside URL without a trailing slash."""
        return None if self.origin is None else self.origin + self.prefix


def outside_site(outside_url: str | None) -> Site:
    """
    The site for C{outside_url}: its host, scheme, port and path prefix
    (percent escapes decoded, empty segments dropped).

    @raise ValueError: not an http or https URL with a host; or a query,
        fragment, credentials, or characters nginx could not take unquoted
        in its path.
    """
    if not outside_url:
        return Site()
    problem = f"--outside-url must be an http or https URL with a host and an optional path, not {outside_url!r}"
    parts = urlsplit(outside_url)
    scheme = parts.scheme.lower()
    try:
        port = parts.port
    except ValueError:
        raise ValueError(problem) from None
    host = parts.hostname or ""
    if scheme not in ("http", "https") or parts.query or parts.fragment or parts.username or parts.password:
        raise ValueError(problem)
    if ":" in host and re.fullmatch(r"[0-9a-f:.]+", host):
        host = f"[{host}]"
    elif not _HOST.fullmatch(host):
        raise ValueError(problem)
    segments = [s for s in unquote(parts.path).split("/") if s]
    if any(s in (".", "..") or not _SEGMENT.fullmatch(s) for s in segments):
        raise ValueError(f"--outside-url path may hold letters, digits and '._~+@-' only: {outside_url!r}")
    default = 443 if scheme == "https" else 80
    if port is None:
        port = default
    prefix = "".join(f"/{s}" for s in segments)
    netloc = host if port == default else f"{host}:{port}"
    return Site(f"{scheme}://{netloc}", scheme, host, port, prefix)


def nginx_size(size: int) -> str:
    """
    C{size} bytes as nginx writes a size: in the largest unit that holds it
    whole (C{1g}, C{64m}, C{512k}, or bytes).
    """
    if size < 0:
        raise ValueError(f"--max-request-body-size must not be negative, not {size}")
    # nginx reads 0 as "no limit"; the server then refuses every body itself
    size = max(size, 1)
    for unit, factor in (("g", 1 << 30), ("m", 1 << 20), ("k", 1 << 10)):
        if size % factor == 0:
            return f"{size // factor}{unit}"
    return str(size)


def gen_config(
    argv: list[str],
    serverdir: str,
    host: str,
    port: int,
    mirror_cache_expiry: int,
    outdir: str = "gen-config",
    twistd: str | None = None,
    user: str = DEFAULT_USER,
    outside_url: str | None = None,
    max_request_body_size: int = 1 << 30,
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
    @param user: the user to run the server as.
    @param outside_url: the URL clients reach the index at (C{--outside-url}).
    @param max_request_body_size: the largest upload nginx lets through.
    @return: the absolute paths of the files written.
    @raise ValueError: a value the files cannot hold; nothing is written.
    """
    outdir = _absolute(outdir)
    if twistd is None:
        twistd = os.path.join(sysconfig.get_path("scripts"), "twistd")
    twistd = _absolute(twistd)
    if not _USER.fullmatch(user):
        raise ValueError(f"--gen-config-user must be a user name, not {user!r}")
    command = [twistd, "-n", "--pidfile=", "devpi", *server_args(argv, serverdir)]
    root = _absolute(serverdir)
    site = _nginx_values(outside_site(outside_url), root, proxy_address(host, port), mirror_cache_expiry)
    site["body_size"] = nginx_size(max_request_body_size)
    site["body_bytes"] = str(max_request_body_size)
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
        "devpi.service": _render(
            "devpi.service",
            user=user,
            command=" ".join(_systemd_quote(a) for a in command),
            serverdir_shell=shlex.quote(root),
            serverdir_unit=_systemd_quote(root, variables=False),
            # a port below 1024 needs the one capability; else none at all
            capabilities="CAP_NET_BIND_SERVICE" if port < 1024 else "",
        ),
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


def _nginx_values(site: Site, root: str, proxy: str, expiry: int) -> dict[str, str]:
    """The values of the nginx templates for C{site}."""
    values = {
        "proxy_addr": proxy,
        "root": _nginx_path(root),
        "expiry": str(expiry),
        "prefix": site.prefix,
        "prefix_regex": re.escape(site.prefix),
        # the prefix is the server's mount point: stripped from the path here,
        # and known to the server from X-Outside-URL
        "strip": f"        rewrite ^{re.escape(site.prefix)}(/.*)$ $1 break;\n" if site.prefix else "",
        "redirect": "",
        "tls": "",
        "outside_prefix": "",
    }
    if site.origin is None:
        return {
            **values,
            "listen": "    listen 80;\n    # add the host name clients use to reach the index\n",
            "server_name": '$hostname ""',
            "outside_url": "$scheme://$http_host",
            "proto": "$scheme",
        }
    values.update(
        server_name=site.host,
        outside_url=_nginx_path(site.origin + site.prefix),
        proto=site.scheme,
        listen=f"    listen {site.port}{' ssl' if site.scheme == 'https' else ''};\n",
    )
    if site.scheme == "https":
        live = f"/etc/letsencrypt/live/{site.host.strip('[]')}"
        values["tls"] = _TLS.substitute(
            host=site.host,
            certificate=_nginx_path(f"{live}/fullchain.pem"),
            certificate_key=_nginx_path(f"{live}/privkey.pem"),
        )
        if site.port != 80:
            values["redirect"] = _HTTPS_REDIRECT.substitute(host=site.host, origin=site.origin)
    if site.prefix:
        values["outside_prefix"] = _PREFIX_ONLY.substitute(prefix=site.prefix, host=site.host)
    return values


def _absolute(path: str) -> str:
    return os.path.abspath(os.path.expanduser(path))


def _render(name: str, **values: str) -> str:
    text = (template_dir() / f"{name}.in").read_text()
    return Template(text).substitute(values)


def _systemd_quote(arg: str, variables: bool = True) -> str:
    # systemd expands % specifiers (and in ExecStart $ variables), splits
    # words on whitespace unless they are quoted, and takes the character
    # after a backslash as it is
    escaped = arg.replace("%", "%%")
    if variables:
        escaped = escaped.replace("$", "$$")
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
