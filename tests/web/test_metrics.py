"""
/+metrics: label values from fixed sets whatever clients send, valid text
format (checked with prometheus_client's parser), a bounded number of series.
"""

from __future__ import annotations

from prometheus_client.parser import text_string_to_metric_families
from twisted.internet.address import IPv4Address
from twisted.internet.error import ConnectionDone
from twisted.internet.testing import StringTransport
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase

from devpi_tx.web.metrics import METHODS, Metrics, escape_label, method_of, route_of
from devpi_tx.web.paths import ROUTES
from devpi_tx.web.site import DevpiResource, DevpiSite
from tests.helpers import APIHarness

HOSTILE_PATHS = [
    b'/+a"b\\c',
    b"/+a%22b%5Cc",
    b"/+\xff\xfe",
    b"/alice/dev/+junk",
    b"/alice/dev/pkg/1.0/+junk/x",
    b"/a/b/c/d/e/f/g",
    b"/alice/+api/",
    b"//+api",
]


def _samples(text: str) -> list[tuple[str, dict[str, str], float]]:
    """Every sample of the text format; raises if it does not parse."""
    return [(s.name, s.labels, s.value) for family in text_string_to_metric_families(text) for s in family.samples]


def _dechunk(data: bytes) -> bytes:
    out = b""
    while True:
        size_line, _, data = data.partition(b"\r\n")
        size = int(size_line.split(b";")[0], 16)
        if size == 0:
            return out
        out += data[:size]
        data = data[size + 2 :]


class LabelTests(SynchronousTestCase):
    def test_routes_and_methods_bounded(self) -> None:
        """Unknown C{+} routes and methods are C{other}; known ones keep their names."""
        self.assertEqual(route_of(b"GET", b'/+a"b\\c'), "other")
        self.assertEqual(route_of(b"GET", b"/+junk1"), "other")
        self.assertEqual(route_of(b"GET", b"/+status"), "+status")
        self.assertEqual(route_of(b"GET", b"/+metrics"), "+metrics")
        self.assertEqual(route_of(b"GET", b"/alice/+api"), "+api")
        self.assertEqual(route_of(b"GET", b"/alice/dev/+api"), "+api")
        self.assertEqual(route_of(b"GET", b"/alice/dev/+junk"), "other")
        self.assertEqual(route_of(b"GET", b"/alice/dev/pkg/1.0/+doc/index.html"), "doc")
        self.assertEqual(route_of(b"GET", b"/alice/dev/pkg/1.0"), "version")
        self.assertEqual(route_of(b"GET", b"/a/b/c/d/e/f"), "other")
        self.assertEqual(method_of(b"GET"), "GET")
        self.assertEqual(method_of(b"PUSH"), "PUSH")
        self.assertEqual(method_of(b'G"E\\T'), "other")
        self.assertEqual(method_of(b"\xff"), "other")
        for path in HOSTILE_PATHS:
            self.assertIn(route_of(b"GET", path), ROUTES)

    def test_label_values_escaped(self) -> None:
        """Backslash, double quote and newline in a label value are escaped and parse back unchanged."""
        self.assertEqual(escape_label('a"b\\c\nd'), 'a\\"b\\\\c\\nd')
        metrics = Metrics()
        metrics.requests[("GET", 'x"y\\z\nw', 200)] = 3
        text = metrics.render([("devpi_tx_serial", "gauge", "Help with \\ and\nnewline.", 1)]).decode()
        requests = [(labels, value) for name, labels, value in _samples(text) if name == "devpi_tx_requests_total"]
        self.assertEqual(requests, [({"method": "GET", "route": 'x"y\\z\nw', "status": "200"}, 3.0)])


class HostileRequestTests(SynchronousTestCase):
    """Raw requests through L{DevpiSite} (which counts them) to the in-memory API."""

    def setUp(self) -> None:
        self.h = APIHarness(self)
        resource = DevpiResource(self.h.api, self.h.store, "0" * 32)
        self.site = DevpiSite(resource, max_body=1 << 20, log_requests=False, metrics=self.h.api.metrics)
        self.site.timeOut = None  # no idle timer on the global reactor

    def send(self, method: bytes, path: bytes) -> bytes:
        """One request on a new connection; the raw response."""
        transport = StringTransport()
        channel = self.site.buildProtocol(IPv4Address("TCP", "127.0.0.1", 1))
        channel.makeConnection(transport)
        channel.dataReceived(method + b" " + path + b" HTTP/1.1\r\nHost: 127.0.0.1\r\nAccept: application/json\r\n\r\n")
        channel.connectionLost(Failure(ConnectionDone()))
        response: bytes = transport.value()
        return response

    def scrape(self) -> list[tuple[str, dict[str, str], float]]:
        response = self.send(b"GET", b"/+metrics")
        head, _, body = response.partition(b"\r\n\r\n")
        self.assertTrue(head.startswith(b"HTTP/1.1 200"), head)
        if b"transfer-encoding: chunked" in head.lower():
            body = _dechunk(body)
        return _samples(body.decode("utf-8"))

    def test_hostile_requests_keep_the_text_format_valid(self) -> None:
        """
        After requests with quotes, backslashes, bytes outside ASCII and
        odd methods, /+metrics still parses and every label value is from
        the fixed sets.
        """
        for path in HOSTILE_PATHS:
            self.assertTrue(self.send(b"GET", path).startswith(b"HTTP/1.1 "), path)
        for method in (b'G"E\\T', b"FOO", b"\xffX"):
            self.send(method, b"/+api")
        samples = self.scrape()
        requests = [labels for name, labels, _ in samples if name == "devpi_tx_requests_total"]
        self.assertIn({"method": "GET", "route": "other", "status": "404"}, requests)
        self.assertEqual({labels["route"] for labels in requests} - ROUTES, set())
        self.assertEqual({labels["method"] for labels in requests} - METHODS - {"other"}, set())

    def test_series_bounded(self) -> None:
        """A thousand distinct junk paths and methods add no series once each kind was seen."""
        for n in range(3):
            self.send(b"GET", b"/+junk%d" % n)
            self.send(b"X%d" % n, b"/+api")
        self.scrape()  # the scrape's own series
        before = len(self.scrape())
        for n in range(3, 1003):
            self.send(b"GET", b"/+junk%d" % n)
            self.send(b"X%d" % n, b"/+api")
        after = self.scrape()
        self.assertEqual(len(after), before)
        requests = [(labels, v) for name, labels, v in after if name == "devpi_tx_requests_total"]
        self.assertEqual(sum(v for labels, v in requests if labels["route"] == "other"), 1003)
        self.assertEqual(sum(v for labels, v in requests if labels["method"] == "other"), 1003)
