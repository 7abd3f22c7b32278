"""
Deployment files written by L{devpi_tx.admin.genconfig}: paths and arguments, and
each file checked by the tool that reads it (nginx, systemd-analyze) or
parsed the way its reader parses it (supervisor, cron).
"""

from __future__ import annotations

import configparser
import io
import os
import re
import shlex
import shutil
import subprocess
import sys
import sysconfig
from typing import TypedDict

from twisted.trial.unittest import SynchronousTestCase

from devpi_tx import tap
from devpi_tx.admin.genconfig import NGINX_CACHE, gen_config, nginx_size, outside_site, proxy_address, server_args
from devpi_tx.service.options import Options
from devpi_tx.service.serverdir import ServerDir

FILES = [
    "devpi.service",
    "nginx-devpi.conf",
    "nginx-devpi-caching.conf",
    "supervisor-devpi.conf",
    "supervisord.conf",
    "crontab",
]

# Debian keeps nginx in /usr/sbin, which is not on every user's PATH
_SEARCH_PATH = os.pathsep.join([os.environ.get("PATH", ""), "/usr/sbin", "/sbin", "/usr/bin"])


def _tool(name: str, package: str) -> str:
    path = shutil.which(name, path=_SEARCH_PATH)
    if path is None:
        raise AssertionError(f"{name} is needed to check the generated files: apt-get install -y {package}")
    return path


def _read(path: str) -> str:
    with open(path) as f:
        return f.read()


def _unit(path: str) -> configparser.RawConfigParser:
    parser = configparser.RawConfigParser(strict=True)
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    parser.read(path)
    return parser


def _systemd_paths(line: str) -> list[str]:
    # a path list setting (ReadWritePaths=): quoted like ExecStart, with %%
    # for % but no $ variables
    return [w.replace("%%", "%") for w in shlex.split(line)]


def _nginx_regex(pattern: str) -> re.Pattern[str]:
    # nginx's PCRE spelling of a named group, in Python's
    return re.compile(pattern.replace("(?<", "(?P<"))


def _systemd_words(line: str) -> list[str]:
    # systemd's quoting as used by the generator: POSIX-like double quotes
    # with backslash escapes, and %% / $$ for literal % and $
    return [w.replace("%%", "%").replace("$$", "$") for w in shlex.split(line)]


def _supervisor(path: str) -> configparser.ConfigParser:
    # supervisor expands %(here)s, the directory of the file, and %% to %
    parser = configparser.ConfigParser(defaults={"here": os.path.dirname(path)})
    parser.read(path)
    return parser


class _UserArgument(TypedDict, total=False):
    """The C{user} argument of C{gen_config}, when given."""

    user: str


class GeneratedFilesTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.base = os.path.abspath(self.mktemp())
        os.makedirs(self.base)
        self.cwd = os.getcwd()
        os.chdir(self.base)
        self.addCleanup(os.chdir, self.cwd)
        self.twistd = os.path.join(sysconfig.get_path("scripts"), "twistd")

    def generate(
        self,
        argv: list[str],
        serverdir: str = "server",
        expiry: int = 1800,
        host: str = "localhost",
        port: int = 4040,
        **kwargs: object,
    ) -> list[str]:
        os.makedirs(serverdir, exist_ok=True)
        return gen_config(argv, serverdir, host, port, expiry, outdir="out/gen-config", **kwargs)  # type: ignore[arg-type]

    def test_files_and_paths(self) -> None:
        """
        The six files are written into the output directory, which is created,
        and their absolute paths come back in a fixed order.
        """
        paths = self.generate(["--serverdir", "server"])
        outdir = os.path.join(self.base, "out", "gen-config")
        self.assertEqual(paths, [os.path.join(outdir, name) for name in FILES])
        self.assertEqual(sorted(os.listdir(outdir)), sorted(FILES))

    def test_overwrites(self) -> None:
        """Files already in the output directory are replaced."""
        outdir = os.path.join(self.base, "out", "gen-config")
        os.makedirs(outdir)
        with open(os.path.join(outdir, "devpi.service"), "w") as f:
            f.write("old contents, much longer than anything the generator writes\n" * 100)
        self.generate(["--serverdir", "server", "--port", "5050"])
        text = _read(os.path.join(outdir, "devpi.service"))
        self.assertNotIn("old contents", text)
        self.assertIn("--port 5050", text)

    def test_service_command(self) -> None:
        """
        The systemd unit runs this environment's twistd with the given
        options, path options made absolute and C{--gen-config} dropped, as
        the user C{devpi}, restarting on failure and stopped with SIGTERM.
        """
        paths = self.generate(
            ["--serverdir", "server", "--port", "4040", "--gen-config", "--configfile=conf/devpi.yml", "--workers", "2"]
        )
        unit = _unit(paths[0])
        self.assertEqual(unit.sections(), ["Unit", "Service", "Install"])
        service = unit["Service"]
        self.assertEqual(
            _systemd_words(service["ExecStart"]),
            [
                self.twistd,
                "-n",
                "--pidfile=",
                "devpi",
                "--serverdir",
                os.path.join(self.base, "server"),
                "--port",
                "4040",
                f"--configfile={os.path.join(self.base, 'conf', 'devpi.yml')}",
                "--workers",
                "2",
            ],
        )
        self.assertTrue(os.path.isabs(self.twistd))
        self.assertEqual(service["User"], "devpi")
        self.assertNotIn("Group", service)
        self.assertEqual(service["Restart"], "on-failure")
        self.assertEqual(service["KillSignal"], "SIGTERM")
        self.assertEqual(unit["Install"]["WantedBy"], "multi-user.target")

    def test_service_verifies(self) -> None:
        """
        C{systemd-analyze verify} accepts the unit without a remark, also
        when paths hold spaces, quotes, C{%} and C{$}.
        """
        serverdir = "server dir %i \"q\" 'a'"
        secretfile = "a;b $HOME\\n"
        paths = self.generate(["--serverdir", serverdir, "--secretfile", secretfile], serverdir=serverdir)
        service = _unit(paths[0])["Service"]
        self.assertEqual(
            _systemd_words(service["ExecStart"])[4:],
            ["--serverdir", os.path.join(self.base, serverdir), "--secretfile", os.path.join(self.base, secretfile)],
        )
        self.assertEqual(_systemd_paths(service["ReadWritePaths"]), [os.path.join(self.base, serverdir)])
        self.systemd_verify(paths[0])

    def systemd_verify(self, path: str) -> None:
        """C{systemd-analyze verify} accepts the unit at C{path} without a remark."""
        analyze = _tool("systemd-analyze", "systemd")
        result = subprocess.run([analyze, "verify", path], capture_output=True, text=True)
        output = result.stdout + result.stderr
        self.assertEqual(result.returncode, 0, output)
        self.assertNotIn("devpi.service", output)

    def test_service_user(self) -> None:
        """
        The unit runs as a dedicated user, C{devpi} unless another is given,
        and says how to create it with the server directory as its home;
        supervisor and cron use the same user.
        """
        cases: list[tuple[_UserArgument, str]] = [({}, "devpi"), ({"user": "pypi-mirror"}, "pypi-mirror")]
        for kwargs, user in cases:
            paths = self.generate(["--serverdir", "srv"], serverdir="srv", **kwargs)
            self.assertEqual(_unit(paths[0])["Service"]["User"], user)
            text = _read(paths[0])
            home = os.path.join(self.base, "srv")
            self.assertIn(
                f"#   useradd --system --user-group --home-dir {home} --shell /usr/sbin/nologin {user}\n", text
            )
            self.assertIn(f"#   mkdir -p {home} && chown -R {user}: {home}\n", text)
            self.assertIn(f"#   usermod -aG {user} www-data", text)
            self.assertEqual(_supervisor(paths[3])["program:devpi"]["user"], user)
            self.assertIn(f"with `crontab -u {user} -e` (as root).", _read(paths[5]))
            self.systemd_verify(paths[0])

    def test_service_user_name(self) -> None:
        """A user name the files could not hold as it is is refused before anything is written."""
        for user in ["", "a b", "x;y", "-rf", "\u00e9"]:
            error = self.assertRaises(ValueError, self.generate, [], user=user)
            self.assertIn("--gen-config-user", str(error))
        self.assertFalse(os.path.exists(os.path.join(self.base, "out")))

    def test_service_hardening(self) -> None:
        """
        The unit may write to the server directory only, gets no new
        privileges and no capabilities, and C{systemd-analyze verify}
        accepts it.
        """
        paths = self.generate(["--serverdir", "srv"], serverdir="srv")
        service = _unit(paths[0])["Service"]
        self.assertEqual(_systemd_paths(service["ReadWritePaths"]), [os.path.join(self.base, "srv")])
        for key, value in [
            ("ProtectSystem", "strict"),
            ("ProtectHome", "read-only"),
            ("NoNewPrivileges", "yes"),
            ("PrivateTmp", "yes"),
            ("PrivateDevices", "yes"),
            ("CapabilityBoundingSet", ""),
            ("AmbientCapabilities", ""),
            ("UMask", "0027"),
            ("SystemCallFilter", "@system-service"),
        ]:
            self.assertEqual(service[key], value, key)
        self.systemd_verify(paths[0])

    def test_service_low_port(self) -> None:
        """A server on a port below 1024 keeps the one capability that binds it."""
        paths = self.generate(["--port", "80"], port=80)
        service = _unit(paths[0])["Service"]
        self.assertEqual(service["CapabilityBoundingSet"], "CAP_NET_BIND_SERVICE")
        self.assertEqual(service["AmbientCapabilities"], "CAP_NET_BIND_SERVICE")
        self.systemd_verify(paths[0])

    def nginx_test(self, path: str) -> None:
        """
        Run C{nginx -t} on the generated file included in a minimal
        configuration whose logs, pid and temporary files stay in a temp dir.
        """
        nginx = _tool("nginx", "nginx")
        text = _read(path)
        prefix = os.path.abspath(self.mktemp())
        os.makedirs(prefix)
        # nginx -t binds the listen addresses, which needs root for ports
        # 80 and 443; the copy under test listens on unprivileged ports
        listens = iter(range(8041, 8100))
        text, count = re.subn(
            r"\n    listen \d+( ssl)?;\n",
            lambda m: f"\n    listen 127.0.0.1:{next(listens)}{m.group(1) or ''};\n",
            text,
        )
        self.assertEqual(count, len(re.findall(r"\blisten\b", text)))
        if "ssl_certificate" in text:
            # the certificate paths are placeholders: a throwaway pair stands in
            cert, key = os.path.join(prefix, "cert.pem"), os.path.join(prefix, "key.pem")
            subprocess.run(
                [
                    _tool("openssl", "openssl"),
                    "req",
                    "-x509",
                    "-newkey",
                    "ec",
                    "-pkeyopt",
                    "ec_paramgen_curve:P-256",
                    "-nodes",
                    "-days",
                    "1",
                    "-subj",
                    "/CN=test",
                    "-keyout",
                    key,
                    "-out",
                    cert,
                ],
                check=True,
                capture_output=True,
            )
            text, count = re.subn(r'ssl_certificate "[^"]*";', f'ssl_certificate "{cert}";', text)
            self.assertEqual(count, 1)
            text, count = re.subn(r'ssl_certificate_key "[^"]*";', f'ssl_certificate_key "{key}";', text)
            self.assertEqual(count, 1)
        site = os.path.join(prefix, "site.conf")
        with open(site, "w") as f:
            f.write(text)
        temp = "\n".join(
            f"    {kind}_temp_path {os.path.join(prefix, kind)};"
            for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
        )
        wrapper = os.path.join(prefix, "nginx.conf")
        with open(wrapper, "w") as f:
            f.write(
                f"pid {prefix}/nginx.pid;\n"
                f"error_log {prefix}/error.log;\n"
                "events {}\n"
                "http {\n"
                f"    access_log {prefix}/access.log;\n"
                f"{temp}\n"
                f"    include {site};\n"
                "}\n"
            )
        result = subprocess.run(
            [nginx, "-t", "-p", prefix, "-c", wrapper],
            capture_output=True,
            text=True,
        )
        output = result.stdout + result.stderr
        self.assertEqual(result.returncode, 0, output)
        self.assertIn("test is successful", output)

    def test_nginx_site(self) -> None:
        """
        The plain site passes C{nginx -t}; it serves stored files from the
        server directory's C{+files} for GET and HEAD and falls back to the
        server, and proxies everything else with the outside URL.
        """
        serverdir = "server dir"
        paths = self.generate(["--serverdir", serverdir], serverdir=serverdir)
        self.nginx_test(paths[1])
        text = _read(paths[1])
        self.assertIn(f'root "{os.path.join(self.base, serverdir)}";', text)
        self.assertIn("location ~ ^(?<devpi_tx_file>/[^/]+/[^/]+/\\+[ef]/.*)$ {", text)
        self.assertIn("try_files /+files$devpi_tx_file @proxy_to_app;", text)
        self.assertIn("    listen 80;\n", text)
        self.assertIn('server_name $hostname "";', text)
        self.assertNotIn("rewrite", text)
        self.assertNotIn("ssl", text)
        self.assertIn("expires max;", text)
        self.assertIn('if ($request_method !~ "^(GET|HEAD)$") {', text)
        self.assertIn("proxy_set_header X-Outside-URL $scheme://$http_host;", text)
        self.assertIn("proxy_set_header X-Real-IP $remote_addr;", text)
        self.assertIn("proxy_set_header X-Forwarded-Proto $scheme;", text)
        self.assertIn("application/vnd.pypi.simple.v1+json", text)
        self.assertIn("client_max_body_size 1g;", text)
        self.assertRegex(
            text, r"location @proxy_to_app \{\n\s+proxy_pass http://127\.0\.0\.1:4040;\n.*\n\s+proxy_buffering off;"
        )
        self.assertRegex(text, r"location / \{\n\s+proxy_pass http://127\.0\.0\.1:4040;\n\s+\}")
        self.assertNotIn("proxy_cache", text)

    def test_nginx_caching_site(self) -> None:
        """
        The caching site passes C{nginx -t}; its cache lives in the server
        directory and keeps simple pages for the mirror cache expiry.
        """
        paths = self.generate(["--serverdir", "server"], expiry=600)
        self.nginx_test(paths[2])
        text = _read(paths[2])
        cache = os.path.join(self.base, "server", NGINX_CACHE)
        self.assertTrue(os.path.isdir(cache))
        self.assertLess(text.index(f'proxy_cache_path "{cache}" '), text.index("server {"))
        self.assertIn("inactive=600s", text)
        self.assertIn("proxy_cache_valid 200 600s;", text)
        self.assertIn("location ~ ^/[^/]+/[^/]+/\\+simple/ {", text)
        self.assertIn('proxy_cache_key "$scheme://$http_host$request_uri|$http_accept|$devpi_tx_installer";', text)
        self.assertIn("proxy_no_cache $devpi_tx_no_cache $http_authorization $http_x_devpi_auth;", text)
        # apart from the simple page location, the server block is the plain site's
        plain = _read(paths[1])
        server = re.sub(r"\n    # simple pages .*?\n    }\n", "", text[text.index("server {") :], flags=re.DOTALL)
        self.assertEqual(server, plain[plain.index("server {") :])

    def test_nginx_cache_selection(self) -> None:
        """
        The caching site's maps pick installers by devpi's User-Agent regex
        and PEP 691 clients by Accept; anything else bypasses the cache.
        """
        text = _read(self.generate([])[2])
        agent = re.search(r'map \$http_user_agent \$devpi_tx_installer \{\n\s+default 0;\n\s+"~(.*)" 1;', text)
        accept = re.search(r'map \$http_accept \$devpi_tx_json \{\n\s+default 0;\n\s+"~\*(.*)" 1;', text)
        assert agent is not None and accept is not None
        for ua, installer in [
            ('pip/24.0 {"ci":null}', True),
            ("uv/0.4.18", True),
            ("Python-urllib/3.11 setuptools/68.0", True),
            ("pex/2.1", True),
            ("Mozilla/5.0 (X11; Linux x86_64)", False),
            ("devpi-client/7.3.0", False),
            ("curl/8.0", False),
        ]:
            self.assertEqual(bool(re.match(agent.group(1), ua)), installer, ua)
        for header, json_api in [
            (
                "application/vnd.pypi.simple.v1+json, application/vnd.pypi.simple.v1+html; q=0.1, text/html; q=0.01",
                True,
            ),
            ("Application/VND.PyPI.Simple.v1+JSON", True),
            ("text/html", False),
            ("application/json", False),
        ]:
            self.assertEqual(bool(re.search(accept.group(1), header, re.IGNORECASE)), json_api, header)
        self.assertIn(
            'map "$devpi_tx_installer$devpi_tx_json" $devpi_tx_no_cache {\n    default 0;\n    "00" 1;\n}', text
        )

    def test_supervisor(self) -> None:
        """
        The supervisor program runs the same command as the systemd unit,
        also with C{%} in a path, and supervisord.conf includes it.
        """
        serverdir = "server 100%"
        paths = self.generate(["--serverdir", serverdir, "--port", "4040"], serverdir=serverdir)
        program = _supervisor(paths[3])["program:devpi"]
        expected = _systemd_words(_unit(paths[0])["Service"]["ExecStart"])
        self.assertEqual(shlex.split(program["command"]), expected)
        self.assertEqual(expected[4:6], ["--serverdir", os.path.join(self.base, serverdir)])
        self.assertEqual(program["user"], "devpi")
        self.assertEqual(program["stopsignal"], "TERM")
        self.assertEqual(program["stdout_logfile"], os.path.join(os.path.dirname(paths[3]), "devpi.log"))
        main = _supervisor(paths[4])
        self.assertEqual(main["include"]["files"], "supervisor-devpi.conf")
        self.assertEqual(main["supervisorctl"]["serverurl"], f"unix://{os.path.dirname(paths[4])}/supervisor.sock")
        self.assertEqual(
            main["rpcinterface:supervisor"]["supervisor.rpcinterface_factory"],
            "supervisor.rpcinterface:make_main_rpcinterface",
        )
        for section in ("unix_http_server", "supervisord"):
            self.assertIn(section, main)

    def test_crontab(self) -> None:
        """The crontab holds a commented C{@reboot} line starting supervisord with the generated config."""
        paths = self.generate([])
        lines = _read(paths[5]).splitlines()
        self.assertTrue(all(line.startswith("#") for line in lines))
        reboot = [line for line in lines if line.startswith("# @reboot ")]
        self.assertEqual(len(reboot), 1)
        self.assertEqual(
            shlex.split(reboot[0][len("# @reboot ") :]),
            [os.path.join(os.path.dirname(self.twistd), "supervisord"), "-c", paths[4]],
        )

    def test_crontab_percent(self) -> None:
        """cron reads C{%} as a line break, so a C{%} in a path is escaped."""
        paths = gen_config([], "server", "localhost", 4040, 1800, outdir="100%")
        self.assertIn(f"-c {os.path.join(self.base, '100')}\\%/supervisord.conf\n", _read(paths[5]))

    def test_explicit_twistd_and_user(self) -> None:
        """A given twistd (made absolute) and user are used instead of the defaults."""
        paths = gen_config([], "server", "localhost", 4040, 1800, outdir="out", twistd="bin/twistd", user="devpi")
        service = _unit(paths[0])["Service"]
        self.assertEqual(_systemd_words(service["ExecStart"])[0], os.path.join(self.base, "bin", "twistd"))
        self.assertEqual(service["User"], "devpi")
        self.assertIn("with `crontab -u devpi -e` (as root).", _read(paths[5]))
        self.assertIn(f"@reboot {os.path.join(self.base, 'bin', 'supervisord')} -c", _read(paths[5]))

    def test_outside_url_host(self) -> None:
        """
        With an http outside URL the site answers for its host only, on its
        port, and tells the server that URL and scheme; C{nginx -t} passes.
        """
        for url, listen, outside in [
            ("http://PyPI.Example.org/", 80, "http://pypi.example.org"),
            ("http://pypi.example.org:8080", 8080, "http://pypi.example.org:8080"),
            ("http://[fd00::7]:3141/", 3141, "http://[fd00::7]:3141"),
        ]:
            paths = self.generate([], outside_url=url)
            for path in paths[1:3]:
                text = _read(path)
                self.assertIn(f"    listen {listen};\n", text)
                self.assertEqual(text.count("listen"), 1)
                self.assertIn(f"    server_name {outside_site(url).host};\n", text)
                self.assertIn(f'proxy_set_header X-Outside-URL "{outside}";', text)
                self.assertIn("proxy_set_header X-Forwarded-Proto http;", text)
                self.assertNotIn("$hostname", text)
                self.assertNotIn("ssl", text)
                self.nginx_test(path)

    def test_outside_url_https(self) -> None:
        """
        With an https outside URL nginx terminates TLS with the host's
        certificate (certbot's paths, to fill in), redirects plain HTTP to
        the outside URL, and tells the server the https URL; C{nginx -t}
        passes once the certificate exists.
        """
        paths = self.generate([], outside_url="https://pypi.example.org")
        for path in paths[1:3]:
            text = _read(path)
            redirect, main = text.split("\nserver {\n", 2)[1:]
            self.assertEqual(
                redirect,
                "    listen 80;\n"
                "    server_name pypi.example.org;\n"
                "    return 301 https://pypi.example.org$request_uri;\n"
                "}\n",
            )
            self.assertTrue(main.startswith("    listen 443 ssl;\n    server_name pypi.example.org;\n"), main)
            self.assertIn('    ssl_certificate "/etc/letsencrypt/live/pypi.example.org/fullchain.pem";\n', main)
            self.assertIn('    ssl_certificate_key "/etc/letsencrypt/live/pypi.example.org/privkey.pem";\n', main)
            self.assertIn("# TLS certificate and key", main)
            self.assertIn('proxy_set_header X-Outside-URL "https://pypi.example.org";', main)
            self.assertIn("proxy_set_header X-Forwarded-Proto https;", main)
            self.nginx_test(path)
        # on another port, plain HTTP is still redirected there
        text = _read(self.generate([], outside_url="https://pypi.example.org:8443/")[1])
        self.assertIn("    listen 8443 ssl;\n", text)
        self.assertIn("return 301 https://pypi.example.org:8443$request_uri;", text)

    def test_outside_url_prefix(self) -> None:
        """
        With a path in the outside URL every location lives under it: nginx
        strips it before proxying, serves stored files from the path after
        it, answers 404 outside it, and the server learns it from
        X-Outside-URL; C{nginx -t} passes.
        """
        paths = self.generate(["--serverdir", "server"], outside_url="https://pypi.example.org/devpi/")
        files = os.path.join(self.base, "server", "+files")
        for path in paths[1:3]:
            text = _read(path)
            self.nginx_test(path)
            self.assertIn('proxy_set_header X-Outside-URL "https://pypi.example.org/devpi";', text)
            self.assertIn("    location /devpi/ {\n        rewrite ^/devpi(/.*)$ $1 break;\n        proxy_pass", text)
            self.assertIn("    location @proxy_to_app {\n        rewrite ^/devpi(/.*)$ $1 break;\n", text)
            self.assertIn("    location / {\n        return 404;\n    }\n", text)
            self.assertEqual(text.count("rewrite ^/devpi(/.*)$ $1 break;"), 3 if "proxy_cache_path" in text else 2)
            # what nginx does with a stored file's URI, and with an API URI
            file_location = re.search(r"location ~ (\S+) \{\n\s+# the server directory", text)
            rewrite = re.search(r"rewrite (\S+) \$1 break;", text)
            assert file_location is not None and rewrite is not None
            uri = "/devpi/alice/dev/+f/a3b/0123456789abcdef/pkg-1.0.tar.gz"
            found = _nginx_regex(file_location.group(1)).match(uri)
            assert found is not None
            self.assertIn("root " + f'"{os.path.dirname(files)}";', text)
            self.assertIn("try_files /+files$devpi_tx_file @proxy_to_app;", text)
            self.assertEqual(
                os.path.dirname(files) + "/+files" + found.group("devpi_tx_file"),
                os.path.join(files, "alice", "dev", "+f", "a3b", "0123456789abcdef", "pkg-1.0.tar.gz"),
            )
            self.assertIsNone(_nginx_regex(file_location.group(1)).match(uri[len("/devpi") :]))
            self.assertEqual(re.sub(rewrite.group(1), r"\1", "/devpi/+api"), "/+api")
            self.assertEqual(
                re.sub(rewrite.group(1), r"\1", "/devpi/alice/dev/+simple/pkg/"), "/alice/dev/+simple/pkg/"
            )
        simple = re.search(r"location ~ (\S+) \{\n\s+rewrite", _read(paths[2]))
        assert simple is not None
        self.assertTrue(_nginx_regex(simple.group(1)).match("/devpi/root/pypi/+simple/requests/"))
        self.assertFalse(_nginx_regex(simple.group(1)).match("/root/pypi/+simple/requests/"))

    def test_outside_url_prefix_spelling(self) -> None:
        """
        The prefix is the URL's decoded path without empty segments; regex
        characters in it are escaped for nginx's regex locations.
        """
        site = outside_site("http://h.example//a.b/%7Ec++//")
        self.assertEqual(
            (site.origin, site.prefix, site.url), ("http://h.example", "/a.b/~c++", "http://h.example/a.b/~c++")
        )
        self.assertIsNone(outside_site(None).url)
        text = _read(self.generate([], outside_url="http://h.example/a.b/~c++/")[2])
        self.assertIn("rewrite ^/a\\.b/\\~c\\+\\+(/.*)$ $1 break;", text)
        self.assertIn("location /a.b/~c++/ {", text)
        self.nginx_test(os.path.join(self.base, "out", "gen-config", "nginx-devpi-caching.conf"))

    def test_outside_url_refused(self) -> None:
        """An outside URL the site cannot follow is an error, and nothing is written."""
        for url in [
            "pypi.example.org",
            "ftp://pypi.example.org/",
            "https:///devpi",
            "https://pypi.example.org/?x=1",
            "https://pypi.example.org/#top",
            "https://user:pw@pypi.example.org/",
            "https://pypi.example.org:99999/",
            "https://pypi_example.org/",
            "https://pypi.example.org/a b/",
            "https://pypi.example.org/a%24b/",
            "https://pypi.example.org/a/../b/",
            'https://pypi.example.org/a"b/',
        ]:
            error = self.assertRaises(ValueError, self.generate, [], outside_url=url)
            self.assertIn("--outside-url", str(error))
        self.assertFalse(os.path.exists(os.path.join(self.base, "out")))

    def test_body_size(self) -> None:
        """
        nginx lets uploads through up to C{--max-request-body-size}, written
        in the largest unit that holds it whole; C{nginx -t} passes.
        """
        for size, written in [(1 << 30, "1g"), (64 << 20, "64m"), (1536 << 10, "1536k"), (1000, "1000")]:
            paths = self.generate([], max_request_body_size=size)
            for path in paths[1:3]:
                text = _read(path)
                self.assertIn(f"    client_max_body_size {written};\n", text)
                self.assertIn(f"--max-request-body-size ({size} bytes)", text)
            self.nginx_test(paths[2])

    def test_nginx_size(self) -> None:
        """Sizes in nginx's spelling; 0 (nginx: no limit) becomes one byte, as the server allows none."""
        self.assertEqual([nginx_size(n) for n in (3 << 30, 5 << 20, 1024, 1025, 0)], ["3g", "5m", "1k", "1025", "1"])
        self.assertRaises(ValueError, nginx_size, -1)

    def test_options(self) -> None:
        """
        C{twistd devpi --gen-config} passes the outside URL, the body size
        and C{--gen-config-user} on; the last stays out of the service's
        command line.
        """
        options = Options()
        options.parseOptions(
            [
                "--serverdir",
                "srv",
                "--gen-config",
                "--gen-config-user",
                "pypi",
                "--max-request-body-size",
                "2048",
                "--outside-url",
                "https://pypi.example.org/devpi/",
            ]
        )
        self.patch(sys, "stdout", io.StringIO())
        self.assertEqual(tap._one_shot(options, ServerDir(options["serverdir"])), 0)
        outdir = os.path.join(self.base, "gen-config")
        unit = _unit(os.path.join(outdir, "devpi.service"))["Service"]
        self.assertEqual(unit["User"], "pypi")
        self.assertNotIn("gen-config", unit["ExecStart"])
        self.assertIn("--outside-url https://pypi.example.org/devpi/", unit["ExecStart"])
        site = _read(os.path.join(outdir, "nginx-devpi.conf"))
        self.assertIn("client_max_body_size 2k;", site)
        self.assertIn('X-Outside-URL "https://pypi.example.org/devpi";', site)
        defaults = Options()
        defaults.parseOptions([])
        self.assertEqual(defaults["gen-config-user"], "devpi")

    def test_listen_address(self) -> None:
        """nginx proxies to the address the server listens on."""
        paths = self.generate([], host="10.0.0.7")
        self.assertIn("proxy_pass http://10.0.0.7:4040;", _read(paths[1]))

    def test_dollar_in_serverdir(self) -> None:
        """nginx cannot take a path with C{$}: that is an error, not a broken config."""
        error = self.assertRaises(ValueError, self.generate, [], serverdir="a$b")
        self.assertIn("a$b", str(error))
        self.assertFalse(os.path.exists(os.path.join(self.base, "out")))


class ServerArgsTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.cwd = os.getcwd()

    def test_absolute_paths(self) -> None:
        """Path options become absolute in both spellings; other arguments stay as they are."""
        home = os.path.expanduser("~")
        self.assertEqual(
            server_args(
                [
                    "--serverdir=srv",
                    "--configfile",
                    "~/devpi.yml",
                    "--secretfile",
                    "/etc/secret",
                    "--logger-cfg=log.json",
                    "--host",
                    "0.0.0.0",
                    "--outside-url=https://pypi.example/x",
                    "--offline-mode",
                ],
                "ignored",
            ),
            [
                f"--serverdir={os.path.join(self.cwd, 'srv')}",
                "--configfile",
                os.path.join(home, "devpi.yml"),
                "--secretfile",
                "/etc/secret",
                f"--logger-cfg={os.path.join(self.cwd, 'log.json')}",
                "--host",
                "0.0.0.0",
                "--outside-url=https://pypi.example/x",
                "--offline-mode",
            ],
        )

    def test_serverdir_added(self) -> None:
        """
        Without C{--serverdir} in the arguments (it came from the
        environment or a config file) the one in effect is added.
        """
        self.assertEqual(
            server_args(["--gen-config", "--port", "4040"], "data/srv"),
            ["--serverdir", os.path.join(self.cwd, "data", "srv"), "--port", "4040"],
        )

    def test_gen_config_options_dropped(self) -> None:
        """The options of gen-config itself stay out of the service's command line, in both spellings."""
        self.assertEqual(
            server_args(["--gen-config-user", "pypi", "--port", "1", "--gen-config-user=x", "--gen-config"], "srv"),
            ["--serverdir", os.path.join(self.cwd, "srv"), "--port", "1"],
        )

    def test_missing_value(self) -> None:
        """A path option without its value is an error."""
        error = self.assertRaises(ValueError, server_args, ["--port", "1", "--configfile"], "srv")
        self.assertEqual(str(error), "--configfile needs a value")

    def test_proxy_address(self) -> None:
        """Wildcard and local addresses are reached over loopback; others as they are."""
        for host, expected in [
            ("localhost", "127.0.0.1:3141"),
            ("0.0.0.0", "127.0.0.1:3141"),
            ("*", "127.0.0.1:3141"),
            ("127.0.0.1", "127.0.0.1:3141"),
            ("::", "[::1]:3141"),
            ("[::1]", "[::1]:3141"),
            ("fd00::7", "[fd00::7]:3141"),
            ("[fd00::7]", "[fd00::7]:3141"),
            ("devpi.internal", "devpi.internal:3141"),
        ]:
            self.assertEqual(proxy_address(host, 3141), expected, host)
