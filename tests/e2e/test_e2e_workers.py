"""
The process tree: main instance plus request-only workers on one port.
"""

from __future__ import annotations

import os
import re
import signal

from treq.client import HTTPClient
from twisted.internet import reactor
from twisted.internet.defer import Deferred, gatherResults
from twisted.web.client import Agent, HTTPConnectionPool

from tests.e2e.test_e2e_clients import _ServerCase, get_json_post, put_json
from tests.helpers import basic, make_wheel, multipart, upload_fields
from tests.processes import ServerProcess

# the type treq declares for a dict of headers
_Headers = dict[bytes | str, list[bytes | str]]
ACCEPT_JSON: _Headers = {"Accept": ["application/json"]}
SIMPLE_JSON: _Headers = {"Accept": ["application/vnd.pypi.simple.v1+json"]}


class WorkerTests(_ServerCase):
    async def start_tree(self, workers: int = 2) -> ServerProcess:
        server = await self.start_server("--workers", str(workers))
        started = await server.wait_for(rb"Started worker %d \(pid (\d+)\)" % (workers - 1))
        self.assertTrue(started)
        # each worker logs its own "starting on" line once it listens
        while server.output.count(f"starting on {server.port}") < workers + 1:
            await server.wait_for(rb"starting on %d" % server.port)
        pool = HTTPConnectionPool(reactor, persistent=False)
        self.client = HTTPClient(Agent(reactor, pool=pool))
        self.addCleanup(pool.closeCachedConnections)
        return server

    def child_pids(self, server: ServerProcess) -> list[int]:
        return [int(pid) for pid in re.findall(r"Started worker \d+ \(pid (\d+)\)", server.output)]

    async def pid_of_new_connection(self, server: ServerProcess) -> int:
        response = await self.client.get(f"{server.url}/+status", headers=ACCEPT_JSON)
        return int((await response.json())["result"]["pid"])

    async def test_spread_restart_and_stop(self) -> None:
        """Connections reach several processes; a killed worker is replaced; TERM stops the tree."""
        server = await self.start_tree(2)
        pids = set(await gatherResults([Deferred.fromCoroutine(self.pid_of_new_connection(server)) for _ in range(40)]))
        self.assertGreaterEqual(len(pids), 2)
        victim = self.child_pids(server)[0]
        replaced = server.wait_for(rb"Started worker 0 \(pid (\d+)\)")
        os.kill(victim, signal.SIGKILL)
        new_pid = int((await replaced).group(1))
        self.assertNotEqual(new_pid, victim)
        await server.stop()
        for pid in self.child_pids(server):
            with self.assertRaises(ProcessLookupError):
                os.kill(pid, 0)

    async def test_write_on_one_read_on_another(self) -> None:
        """Every upload is visible at once to a request on any other process."""
        server = await self.start_tree(2)
        token = get_json_post(f"{server.url}/+login", {"user": "root", "password": ""})["result"]["password"]
        put_json(f"{server.url}/root/dev", {}, ("root", token))
        auth: _Headers = {"X-Devpi-Auth": [basic("root", token)]}
        serials = []
        for i in range(12):
            name, data = make_wheel("spread", f"1.{i}")
            body, ctype = multipart(upload_fields("spread", f"1.{i}"), [("content", name, data)])
            headers: _Headers = {"Content-Type": [ctype], **auth}
            response = await self.client.post(f"{server.url}/root/dev/", data=body, headers=headers)
            self.assertEqual(response.code, 200)
            await response.content()
            serials.append(int(response.headers.getRawHeaders("X-Devpi-Serial")[0]))
            # new connections land on any of the three processes (see test_spread_restart_and_stop)
            for _ in range(3):
                page = await self.client.get(
                    f"{server.url}/root/dev/+simple/spread/",
                    headers=SIMPLE_JSON,
                )
                files = [f["filename"] for f in (await page.json())["files"]]
                self.assertIn(name, files)
        self.assertEqual(serials, list(range(serials[0], serials[0] + 12)), "serials are gapless and ordered")

    async def test_kill_worker_under_load(self) -> None:
        """
        Killing a worker under load fails at most the requests in flight on
        it (one per client); the supervisor starts a new worker that serves.
        """
        server = await self.start_tree(2)
        victim = self.child_pids(server)[1]  # worker 1
        concurrency, per_client = 6, 40
        total = concurrency * per_client
        answered: list[int] = []  # the pid behind each response
        codes: list[int] = []
        failures: list[tuple[bool, Exception]] = []  # (after the kill?, error)
        killed: list[int] = []  # len(answered) at the kill
        gone = server.wait_for(rb"Worker 1 ended")
        replaced = server.wait_for(rb"Started worker 1 \(pid (\d+)\)")

        async def client() -> None:
            for _ in range(per_client):
                try:
                    response = await self.client.get(f"{server.url}/+status", headers=ACCEPT_JSON)
                    codes.append(response.code)
                    answered.append(int((await response.json())["result"]["pid"]))
                except Exception as e:
                    failures.append((bool(killed), e))
                # a third of the load is done and the victim has been serving it
                if not killed and len(answered) + len(failures) >= total // 3 and victim in answered:
                    os.kill(victim, signal.SIGKILL)
                    killed.append(len(answered))

        await gatherResults([Deferred.fromCoroutine(client()) for _ in range(concurrency)])
        self.assertEqual(len(killed), 1, "the victim was killed while the load ran")
        self.assertGreater(len(answered) - killed[0], concurrency, "the load went on after the kill")
        self.assertEqual([e for after, e in failures if not after], [], "no failure before the kill")
        self.assertLessEqual(len(failures), concurrency, failures)
        self.assertEqual(len(answered) + len(failures), total)
        self.assertEqual(set(codes), {200})
        await gone
        with self.assertRaises(ProcessLookupError):
            os.kill(victim, 0)
        self.assertNotIn(victim, answered[killed[0] + concurrency :], "nothing answered from the killed worker")
        new_pid = int((await replaced).group(1))
        self.assertNotEqual(new_pid, victim)
        pids: set[int] = set()
        for _ in range(300):
            pids.add(await self.pid_of_new_connection(server))
            if new_pid in pids:
                break
        self.assertIn(new_pid, pids, "the new worker answered")
        self.assertNotIn(victim, pids)
