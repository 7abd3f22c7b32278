"""
The command line: devpi's option names, environment, YAML config file,
precedence and one-line errors.
"""

from __future__ import annotations

import io
import os
import sys
import time
from typing import cast

from twisted.trial.unittest import SynchronousTestCase

from devpi_tx.service.options import Options, worker_options
from devpi_tx.web.metrics import Metrics, route_of


class OptionsTests(SynchronousTestCase):
    def setUp(self) -> None:
        saved = {k: v for k, v in os.environ.items() if k.startswith(("DEVPISERVER_", "DEVPI_SERVERDIR"))}
        for key in saved:
            del os.environ[key]

        def restore() -> None:
            for key in [k for k in os.environ if k.startswith(("DEVPISERVER_", "DEVPI_SERVERDIR"))]:
                del os.environ[key]
            os.environ.update(saved)

        self.addCleanup(restore)

    def parse(self, *argv: str) -> Options:
        options = Options()
        options.parseOptions(list(argv))
        return options

    def error(self, *argv: str) -> str:
        """Parse C{argv} expecting the one-line error and exit status 2."""
        stderr = io.StringIO()
        self.patch(sys, "stderr", stderr)
        with self.assertRaises(SystemExit) as caught:
            self.parse(*argv)
        self.assertEqual(caught.exception.code, 2)
        text = stderr.getvalue()
        self.assertEqual(text.count("\n"), 1, text)
        self.assertTrue(text.startswith("twistd devpi: error: "), text)
        return text

    def config_file(self, text: str) -> str:
        path: str = self.mktemp()
        with open(path, "w") as f:
            f.write(text)
        return path

    def test_defaults(self) -> None:
        """Defaults are devpi's: localhost:3141, 1 GiB bodies, 1800 s mirror expiry."""
        options = self.parse("--serverdir", "/srv/d")
        self.assertEqual(options["listen-addresses"], [("localhost", 3141)])
        self.assertEqual(options["max-request-body-size"], 1 << 30)
        self.assertEqual(options["mirror-cache-expiry"], 1800)
        self.assertEqual(options["workers"], 0)
        self.assertFalse(options["offline-mode"])

    def test_precedence(self) -> None:
        """Command line beats environment beats config file beats default."""
        path = self.config_file(
            "devpi-server:\n  port: 4000\n  host: 0.0.0.0\n  offline-mode: yes\n  mirror-cache-expiry: 60\n"
        )
        os.environ["DEVPISERVER_PORT"] = "5000"
        options = self.parse("--configfile", path, "--serverdir", "/x")
        self.assertEqual(options["listen-addresses"], [("0.0.0.0", 5000)])
        self.assertTrue(options["offline-mode"])
        self.assertEqual(options["mirror-cache-expiry"], 60)
        options = self.parse("--configfile", path, "--serverdir", "/x", "--port", "6000")
        self.assertEqual(options["port"], 6000)
        os.environ["DEVPISERVER_SERVERDIR"] = "/from/env"
        self.assertEqual(self.parse()["serverdir"], "/from/env")

    def test_listen(self) -> None:
        """--listen is repeatable, knows IPv6 and '*', and excludes --host/--port."""
        options = self.parse("--listen", "127.0.0.1:1", "--listen", "[::1]:2", "--listen", "*:3")
        self.assertEqual(options["listen-addresses"], [("127.0.0.1", 1), ("::1", 2), ("0.0.0.0", 3)])
        self.assertIn("--listen cannot be combined", self.error("--listen", "127.0.0.1:1", "--port", "9"))
        self.assertIn("HOST:PORT", self.error("--listen", "nowhere"))

    def test_bad_values(self) -> None:
        """Bad values are one line on stderr and exit status 2."""
        self.assertIn("--port must be an integer", self.error("--port", "x"))
        self.assertIn("unknown storage backend", self.error("--storage", "mongo"))
        self.assertIn("--workers must not be negative", self.error("--workers", "-1"))
        self.assertIn("cannot be combined", self.error("--init", "--fsck"))
        self.assertIn("--nonsense not recognized", self.error("--nonsense"))
        self.assertIn(
            "expects yes or no", self.error("--configfile", self.config_file("devpi-server:\n  offline-mode: maybe\n"))
        )
        self.assertIn(
            "unknown option 'shoe'", self.error("--configfile", self.config_file("devpi-server:\n  shoe: 1\n"))
        )
        self.assertIn("not valid YAML", self.error("--configfile", self.config_file("devpi-server: [\n")))
        self.assertIn("cannot read config file", self.error("--configfile", "/does/not/exist"))

    def test_worker_options(self) -> None:
        """Workers get the options that shape answers, not the one-shot actions."""
        options = self.parse("--serverdir", "/d", "--offline-mode", "--restrict-modify", "root", "--workers", "2")
        args = worker_options(options)
        self.assertEqual(args[:2], ["--serverdir", "/d"])
        self.assertIn("--offline-mode", args)
        self.assertIn("root", args)
        self.assertNotIn("--workers", args)


class MetricsTests(SynchronousTestCase):
    def test_routes_and_text(self) -> None:
        """Requests are counted by a bounded route name; the text format has the histogram."""
        self.assertEqual(route_of(b"GET", b"/alice/dev/+simple/pkg/"), "simple_project")
        self.assertEqual(route_of(b"GET", b"/alice/dev/+simple/"), "simple_list")
        self.assertEqual(route_of(b"GET", b"/alice/dev/+f/abc/def/x.whl"), "file")
        self.assertEqual(route_of(b"GET", b"/+api"), "+api")
        self.assertEqual(route_of(b"PATCH", b"/alice/dev"), "index")
        metrics = Metrics()
        metrics.observe(b"GET", b"/alice/dev/+simple/pkg/", 200, 0.003)
        metrics.observe(b"GET", b"/alice/dev/+simple/pkg/", 200, 2.0)
        text = metrics.render([("devpi_tx_serial", "gauge", "serial", 7)]).decode()
        self.assertIn('devpi_tx_requests_total{method="GET",route="simple_project",status="200"} 2', text)
        self.assertIn('devpi_tx_request_seconds_bucket{le="0.005"} 1', text)
        self.assertIn('devpi_tx_request_seconds_bucket{le="+Inf"} 2', text)
        self.assertIn("devpi_tx_serial 7", text)


class ConnectionTests(SynchronousTestCase):
    def test_no_delay(self) -> None:
        """Server connections turn Nagle off: a response's last small write must not wait for an ACK."""
        from twisted.internet.address import IPv4Address
        from twisted.internet.testing import StringTransport
        from twisted.web.resource import Resource

        from devpi_tx.web.site import DevpiSite

        calls: list[bool] = []
        transport = StringTransport()
        transport.setTcpNoDelay = calls.append  # type: ignore[attr-defined]
        site = DevpiSite(Resource(), max_body=1)
        site.timeOut = None  # no idle timer on the global reactor from this in-memory connection
        channel = site.buildProtocol(IPv4Address("TCP", "127.0.0.1", 1))
        channel.makeConnection(transport)
        self.assertEqual(calls, [True])
        channel.dataReceived(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        self.assertTrue(transport.value().startswith(b"HTTP/1.1 404"))


class RequestLogTests(SynchronousTestCase):
    def test_one_event_per_request(self) -> None:
        """Each finished request is one log event: a text line, and its parts as fields for JSON lines."""
        from twisted.logger import capturedLogs, formatEvent
        from twisted.web.resource import Resource

        from devpi_tx.web.site import DevpiSite

        class Finished:
            method = b"GET"
            path = b"/alice/dev/+simple/pkg/"
            uri = b"/alice/dev/+simple/pkg/?x=1"
            code = 200
            sentLength = 321
            _started = time.monotonic()

        site = DevpiSite(Resource(), max_body=1)
        with capturedLogs() as events:
            site.log(Finished())
        (event,) = [e for e in events if "request_line" in e]
        self.assertRegex(formatEvent(event), r"^GET /alice/dev/\+simple/pkg/\?x=1 200 321 \d+\.\dms$")
        self.assertEqual(
            (event["method"], event["path"], event["code"], event["size"]),
            ("GET", "/alice/dev/+simple/pkg/?x=1", 200, 321),
        )
        self.assertGreaterEqual(event["ms"], 0.0)
        self.assertIn('route="simple_project",status="200"} 1', site.metrics.render([]).decode())

    def test_aborted_answer(self) -> None:
        """
        An answer cut off after its status line (a mirror download that
        failed half way) is logged and counted as aborted, not as a 200.
        """
        from twisted.internet.testing import StringTransport
        from twisted.logger import capturedLogs, formatEvent
        from twisted.web.iweb import IRequest
        from twisted.web.resource import Resource
        from twisted.web.test.requesthelper import DummyChannel, DummyRequest

        from devpi_tx.mirror.download import _abort
        from devpi_tx.web.site import DevpiSite

        class SentRequest(DummyRequest):
            # what DevpiSite.log and _abort read of a real request, which DummyRequest does not declare
            path: bytes
            sentLength: int
            channel: DummyChannel

        request = SentRequest([b"root", b"pypi", b"+f", b"abc", b"def", b"pkg-1.0.tar.gz"])
        request.path = b"/root/pypi/+f/abc/def/pkg-1.0.tar.gz"
        request.uri = request.path
        request.sentLength = 100
        request.setResponseCode(200)
        request.channel = DummyChannel()
        transport = StringTransport()
        # DummyChannel's transport is typed (by inference) as its own TCP stand-in
        request.channel.transport = transport  # type: ignore[assignment]
        # DummyRequest stands in for an IRequest without declaring it
        _abort(cast(IRequest, request))
        self.assertTrue(transport.disconnecting, "the client's connection is broken")
        site = DevpiSite(Resource(), max_body=1)
        with capturedLogs() as events:
            site.log(request)
        (event,) = [e for e in events if "request_line" in e]
        self.assertRegex(formatEvent(event), r"^GET /root/pypi/\+f/abc/def/pkg-1\.0\.tar\.gz aborted 100 ")
        metrics = site.metrics.render([]).decode()
        self.assertIn('route="file",status="aborted"} 1', metrics)
        self.assertNotIn('status="200"', metrics)
