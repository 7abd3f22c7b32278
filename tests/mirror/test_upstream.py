# -*- test-case-name: tests.mirror.test_upstream -*-
"""
The upstream client's failures in words for a user, and our own bugs kept
apart from upstream outages.
"""

from __future__ import annotations

import socket

from treq.client import HTTPClient
from treq.testing import StubTreq
from twisted.internet import reactor
from twisted.internet.defer import CancelledError, Deferred
from twisted.internet.error import ConnectionRefusedError
from twisted.internet.task import Clock
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase, TestCase
from twisted.web._newclient import ResponseNeverReceived
from twisted.web.client import Agent
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET

from devpi_tx.mirror.upstream import Upstream, UpstreamError, describe_failure


class _Silent(Resource):
    isLeaf = True

    def render_GET(self, request: object) -> object:
        return NOT_DONE_YET


class DescribeTests(SynchronousTestCase):
    def test_wrapped_timeout(self) -> None:
        """A cancelled request wrapped by Twisted's client is a timeout in words."""
        wrapped = ResponseNeverReceived([Failure(CancelledError())])
        self.assertEqual(describe_failure(wrapped, 5), "upstream timed out after 5 s")

    def test_wrapped_refusal(self) -> None:
        """A refused connection says so, without a Python repr."""
        wrapped = ResponseNeverReceived([Failure(ConnectionRefusedError())])
        text = describe_failure(wrapped, 5)
        self.assertEqual(text, "upstream failed: connection refused")
        self.assertNotIn("<", text)

    def test_bug_is_not_an_outage(self) -> None:
        """An error of our own code is raised as it is, not taken for an upstream failure."""
        self.assertRaises(ZeroDivisionError, describe_failure, ZeroDivisionError("bug"), 5)

    def test_timeout_of_fetch(self) -> None:
        """A page that does not come within the timeout is an L{UpstreamError} saying so."""
        clock = Clock()
        client = StubTreq(_Silent())
        upstream = Upstream(client, clock, timeout=5)
        d = Deferred.fromCoroutine(upstream.fetch("http://upstream.test/simple/x/"))
        client.flush()
        clock.advance(5)
        client.flush()
        error = self.failureResultOf(d, UpstreamError).value
        self.assertEqual(error.message, "http://upstream.test/simple/x/: upstream timed out after 5 s")


class RealConnectionTests(TestCase):
    async def test_refused(self) -> None:
        """A real refused connection on 127.0.0.1 is described in words."""
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        upstream = Upstream(HTTPClient(Agent(reactor)), reactor, timeout=5)
        with self.assertRaises(UpstreamError) as caught:
            await upstream.fetch(f"http://127.0.0.1:{port}/simple/")
        self.assertEqual(
            caught.exception.message, f"http://127.0.0.1:{port}/simple/: upstream failed: connection refused"
        )
