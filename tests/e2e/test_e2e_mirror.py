"""
End to end through the mirror: a server process pointed at the fake
upstream served by this test process on 127.0.0.1; real pip and uv.
"""

from __future__ import annotations

import hashlib
import os
import sys
from typing import TYPE_CHECKING

from treq.client import HTTPClient
from twisted.internet import reactor
from twisted.internet.address import IPv4Address
from twisted.internet.defer import Deferred, gatherResults
from twisted.internet.protocol import Protocol
from twisted.web.client import Agent, HTTPConnectionPool
from twisted.web.server import Site

from tests.e2e.test_e2e_clients import _send, _ServerCase, get_json_post
from tests.fakeupstream import FakeUpstream
from tests.processes import ServerProcess, eventually, run, uv_install


class _HangUp(Protocol):
    """Reads the first bytes of a body, then drops the connection."""

    def __init__(self) -> None:
        self.gone: Deferred[None] = Deferred()

    def dataReceived(self, data: bytes) -> None:
        self.transport.stopProducing()  # type: ignore[union-attr]

    def connectionLost(self, reason: object = None) -> None:
        if not self.gone.called:
            self.gone.callback(None)


if TYPE_CHECKING:
    _ServerCaseMixin = _ServerCase
else:
    _ServerCaseMixin = object


class MirrorServerMixin(_ServerCaseMixin):
    """
    For a L{_ServerCase}: a server process pointed at a fake upstream served
    on 127.0.0.1.  Not a test case itself, so trial does not collect it
    where it is imported.
    """

    client: HTTPClient
    up: FakeUpstream
    upstream_url: str

    async def start(self, *args: str) -> tuple[ServerProcess, FakeUpstream]:
        pool = HTTPConnectionPool(reactor, persistent=False)
        self.client = HTTPClient(Agent(reactor, pool=pool))
        self.addCleanup(pool.closeCachedConnections)
        self.up = FakeUpstream(reactor)
        # Twisted declares listenTCP to take a ServerFactory of its default protocol type only;
        # a Site is a ServerFactory of HTTP channels
        port = reactor.listenTCP(0, Site(self.up), interface="127.0.0.1")  # type: ignore[arg-type]
        self.addCleanup(port.stopListening)
        address = port.getHost()
        assert isinstance(address, IPv4Address)
        self.upstream_url = f"http://127.0.0.1:{address.port}/simple/"
        server = await self.start_server(*args)
        self.point(server)
        return server, self.up

    def point(self, server: ServerProcess, *extra: str) -> None:
        token = get_json_post(f"{server.url}/+login", {"user": "root", "password": ""})["result"]["password"]
        _send("PATCH", f"{server.url}/root/pypi", [f"mirror_url={self.upstream_url}", *extra], ("root", token))


class MirrorEndToEndTests(MirrorServerMixin, _ServerCase):
    @staticmethod
    async def client_content(response):  # type: ignore[no-untyped-def]
        return await response.content()

    async def test_pip_and_uv(self) -> None:
        """pip and uv install through root/pypi; each file is downloaded from upstream once."""
        server, up = await self.start()
        up.add("alpha", "1.0")
        up.add("alpha", "0.5", kind="sdist")
        up.add("beta", "1.5", requires=("alpha>=1.0",))
        index = f"{server.url}/root/pypi/+simple/"
        work = os.path.abspath(self.mktemp())
        venv = os.path.join(work, "pipvenv")
        self.assert_ok(await run([sys.executable, "-m", "venv", venv]))
        pip = await run(
            [os.path.join(venv, "bin", "pip"), "install", "--no-cache-dir", "--index-url", index, "beta"],
            env={"PIP_CONFIG_FILE": os.devnull},
        )
        self.assert_ok(pip, "Successfully installed alpha-1.0 beta-1.5")
        uv = await uv_install(work, index, "beta")
        self.assert_ok(uv, "beta==1.5")
        downloads = {
            path: n for path, n in up.requests.items() if path.startswith("/files/") and not path.endswith(".metadata")
        }
        self.assertEqual(downloads, {"/files/alpha-1.0-py3-none-any.whl": 1, "/files/beta-1.5-py3-none-any.whl": 1})

    async def test_concurrent_downloads_and_kill(self) -> None:
        """Concurrent requests share one download; a server killed mid-download restarts clean."""
        server, up = await self.start()
        big = up.add("big", "1.0", size=3_000_000)
        other = up.add("other", "1.0", size=3_000_000)
        sha = hashlib.sha256(big.data).hexdigest()
        url = f"{server.url}/root/pypi/+f/{sha[:3]}/{sha[3:16]}/{big.filename}"
        await self.client.get(f"{server.url}/root/pypi/+simple/big/")
        path = f"/files/{big.filename}"
        up.trickle[path] = (256 * 1024, 0.02)
        responses = await gatherResults([self.client.get(url) for _ in range(5)])
        bodies = await gatherResults([r.content() for r in responses])
        self.assertEqual([hashlib.sha256(b).hexdigest() for b in bodies], [sha] * 5)
        self.assertEqual(up.requests[path], 1)

        osha = hashlib.sha256(other.data).hexdigest()
        ourl = f"{server.url}/root/pypi/+f/{osha[:3]}/{osha[3:16]}/{other.filename}"
        await self.client.get(f"{server.url}/root/pypi/+simple/other/")
        opath = f"/files/{other.filename}"
        up.trickle[opath] = (64 * 1024, 0.05)
        started: Deferred[None] = Deferred()
        up.first_bytes[opath] = started
        pending = self.client.get(ourl)
        pending.addErrback(lambda _: None)
        await started
        server.kill()
        await server.stop()
        target = os.path.join(server.serverdir, "+files", "root", "pypi", "+f", osha[:3], osha[3:16], other.filename)
        self.assertFalse(os.path.exists(target))
        del up.trickle[opath]
        restarted = ServerProcess(server.serverdir)
        await restarted.start()
        self.addCleanup(restarted.stop)
        self.assertEqual(os.listdir(os.path.join(server.serverdir, "+files", ".tmp")), [])
        body = await self.client_content(await self.client.get(ourl.replace(server.url, restarted.url)))
        self.assertEqual(hashlib.sha256(body).hexdigest(), osha)
        # the client is answered before the file is kept: it lands right after
        self.assertTrue(await eventually(lambda: os.path.exists(target)))

    async def test_upstream_down_serves_stale(self) -> None:
        """When upstream is gone the cached page is served, marked stale."""
        server, up = await self.start()
        up.add("gamma", "1.0")
        first = await self.client.get(f"{server.url}/root/pypi/+simple/gamma/")
        self.assertEqual(first.code, 200)
        await self.client_content(first)
        token = get_json_post(f"{server.url}/+login", {"user": "root", "password": ""})["result"]["password"]
        _send("PATCH", f"{server.url}/root/pypi", ["mirror_cache_expiry=0"], ("root", token))
        up.status["/simple/gamma/"] = 503
        stale = await self.client.get(f"{server.url}/root/pypi/+simple/gamma/")
        self.assertEqual(stale.code, 200)
        self.assertIn(b"gamma-1.0-py3-none-any.whl", await self.client_content(stale))
        self.assertIn(b"no-cache", stale.headers.getRawHeaders(b"Cache-Control")[0])

    async def test_client_disconnect_keeps_download(self) -> None:
        """A client that goes away mid-download does not stop the file from being cached."""
        server, up = await self.start()
        slow = up.add("slow", "1.0", size=2_000_000)
        sha = hashlib.sha256(slow.data).hexdigest()
        await (await self.client.get(f"{server.url}/root/pypi/+simple/slow/")).content()
        path = f"/files/{slow.filename}"
        up.trickle[path] = (64 * 1024, 0.02)
        started: Deferred[None] = Deferred()
        up.first_bytes[path] = started
        response = await self.client.get(
            f"{server.url}/root/pypi/+f/{sha[:3]}/{sha[3:16]}/{slow.filename}", unbuffered=True
        )
        await started
        hangup = _HangUp()
        response.deliverBody(hangup)
        await hangup.gone
        target = os.path.join(server.serverdir, "+files", "root", "pypi", "+f", sha[:3], sha[3:16], slow.filename)
        self.assertTrue(await eventually(lambda: os.path.exists(target), timeout=20))
        with open(target, "rb") as f:
            self.assertEqual(hashlib.sha256(f.read()).hexdigest(), sha)
        self.assertEqual(up.requests[path], 1)

    async def test_one_download_across_workers(self) -> None:
        """Concurrent requests spread over worker processes still cause one upstream download."""
        server, up = await self.start("--workers", "2")
        while server.output.count(f"starting on {server.port}") < 3:
            await server.wait_for(rb"starting on %d" % server.port)
        wide = up.add("wide", "1.0", size=2_000_000)
        sha = hashlib.sha256(wide.data).hexdigest()
        await (await self.client.get(f"{server.url}/root/pypi/+simple/wide/")).content()
        path = f"/files/{wide.filename}"
        up.trickle[path] = (128 * 1024, 0.03)
        url = f"{server.url}/root/pypi/+f/{sha[:3]}/{sha[3:16]}/{wide.filename}"
        responses = await gatherResults([self.client.get(url) for _ in range(12)])
        bodies = await gatherResults([r.content() for r in responses])
        self.assertEqual({hashlib.sha256(b).hexdigest() for b in bodies}, {sha})
        self.assertEqual(up.requests[path], 1)
