# -*- test-case-name: tests.e2e.test_e2e_faults -*-
"""
A devpi_tx server process meeting faults: its port taken, its disk full;
and what it says when it starts.
"""

from __future__ import annotations

import errno
import http.client
import json
import os
import socket

from tests.e2e.test_e2e_clients import _ServerCase, get_json, get_json_post, put_json
from tests.helpers import basic, make_wheel, multipart, upload_fields
from tests.processes import TWISTD, ServerProcess, eventually, run

_MOUNT = 'mount -t tmpfs -o size=24m tmpfs "$0" && exec "$@"'


class _TmpfsServer(ServerProcess):
    """
    The server in a mount namespace of its own, its server dir on a small
    tmpfs that goes away with it; the test reaches the tmpfs through
    C{/proc/<pid>/root}.
    """

    def __init__(self, mountpoint: str) -> None:
        super().__init__(os.path.join(mountpoint, "server"))
        self.mountpoint = mountpoint

    def prefix(self) -> list[str]:
        unshare = ["/usr/bin/unshare", "--mount", "--propagation", "private"]
        if os.geteuid() != 0:
            unshare.append("--map-root-user")
        return [*unshare, "sh", "-c", _MOUNT, self.mountpoint]

    def inside(self, *parts: str) -> str:
        """A path on the server's tmpfs, as this process reaches it."""
        return os.path.join(f"/proc/{self._transport.pid}/root", self.mountpoint.lstrip("/"), *parts)


def _upload(port: int, token: str, version: str) -> tuple[int, str, dict]:  # type: ignore[type-arg]
    filename, wheel = make_wheel("hello-pkg", version, extra="x" * 2000)
    body, ctype = multipart(upload_fields("hello-pkg", version), [("content", filename, wheel)])
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        conn.request(
            "POST", "/root/dev/", body=body, headers={"Content-Type": ctype, "X-Devpi-Auth": basic("root", token)}
        )
        response = conn.getresponse()
        raw = response.read()
        return (
            response.status,
            response.getheader("Content-Type") or "",
            json.loads(raw) if raw.startswith(b"{") else {},
        )
    finally:
        conn.close()


def _put(port: int, path: str, body: object) -> tuple[int, str, dict]:  # type: ignore[type-arg]
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        conn.request(
            "PUT",
            path,
            body=json.dumps(body),
            headers={"Content-Type": "application/json", "Accept": "application/json"},
        )
        response = conn.getresponse()
        return response.status, response.getheader("Content-Type") or "", json.loads(response.read())
    finally:
        conn.close()


def _fill(path: str) -> None:
    """Write to C{path} until the file system is full."""
    with open(path, "wb", buffering=0) as f:
        for size in (1 << 20, 4096):
            try:
                while f.write(b"\0" * size):
                    pass
            except OSError as e:
                if e.errno != errno.ENOSPC:
                    raise


class DiskFullTests(_ServerCase):
    async def test_disk_full(self) -> None:
        """
        With its disk full, an upload is a 507 in JSON naming the cause,
        reads go on, nothing half-written stays, and uploads work again
        once there is space, without a restart.
        """
        mountpoint = os.path.abspath(self.mktemp())
        os.makedirs(mountpoint)
        server = _TmpfsServer(mountpoint)
        await server.start()
        self.addCleanup(server.stop)
        token = get_json_post(f"{server.url}/+login", {"user": "root", "password": ""})["result"]["password"]
        put_json(f"{server.url}/root/dev", {"bases": []}, ("root", token))
        self.assertEqual(_upload(server.port, token, "1.0")[0], 200)
        filler = server.inside("filler")
        _fill(filler)
        status, content_type, body = _upload(server.port, token, "2.0")
        self.assertEqual(status, 507, body)
        self.assertEqual(content_type, "application/json")
        self.assertIn("insufficient storage", body["message"])
        status, content_type, body = _put(server.port, "/bob", {"password": "x", "custom_data": "y" * 60000})
        self.assertEqual((status, content_type), (507, "application/json"), body)
        self.assertIn("insufficient storage: the database cannot grow", body["message"])
        self.assertEqual(list(get_json(f"{server.url}/root/dev/hello-pkg")["result"]), ["1.0"])
        self.assertNotIn("bob", get_json(f"{server.url}/")["result"])
        self.assertEqual(os.listdir(server.inside("server", "+files", ".tmp")), [])
        os.unlink(filler)
        self.assertEqual(_upload(server.port, token, "2.0")[0], 200)
        self.assertEqual(sorted(get_json(f"{server.url}/root/dev/hello-pkg")["result"]), ["1.0", "2.0"])
        self.assertEqual(_put(server.port, "/bob", {"password": "x", "custom_data": "y" * 60000})[0], 201)
        await eventually(lambda: "POST /root/dev/ 200" in server.output.split("storage is full")[-1])
        self.assertIn("write refused, storage is full", server.output)
        self.assertNotIn("cannot rollback", server.output)
        self.assertNotIn("Traceback", server.output)


class StartTests(_ServerCase):
    async def test_port_in_use(self) -> None:
        """
        With its port taken the server exits non-zero with one line, and
        leaves no server dir behind.
        """
        with socket.socket() as taken:
            taken.bind(("127.0.0.1", 0))
            taken.listen()
            port = taken.getsockname()[1]
            serverdir = os.path.abspath(self.mktemp())
            for extra in ([], ["--workers", "1"]):
                result = await run(
                    [
                        *TWISTD,
                        "-n",
                        "--pidfile=",
                        "devpi",
                        "--serverdir",
                        serverdir,
                        "--host",
                        "127.0.0.1",
                        "--port",
                        str(port),
                        *extra,
                    ]
                )
                self.assertEqual(result.code, 2, str(result))
                lines = [line for line in result.output.splitlines() if line.strip()]
                self.assertEqual(
                    lines, [f"twistd devpi: error: cannot listen on 127.0.0.1:{port}: Address already in use"]
                )
                self.assertFalse(os.path.exists(serverdir))

    async def test_says_what_it_did(self) -> None:
        """
        The first start says that it initialised a new server dir whose root
        password is empty; every start says where it serves from.
        """
        server = await self.start_server()
        await eventually(lambda: "(serial 0)" in server.output)
        self.assertIn(
            f"serving http://127.0.0.1:{server.port}/ from {os.path.abspath(server.serverdir)} (serial 0)",
            server.output,
        )
        self.assertIn(
            "was not a server directory: initialised a new one with user root, whose password is EMPTY", server.output
        )
        await server.stop()
        again = ServerProcess(server.serverdir)
        await again.start()
        self.addCleanup(again.stop)
        await eventually(lambda: "serving http" in again.output)
        self.assertIn(f"serving http://127.0.0.1:{again.port}/ from", again.output)
        self.assertNotIn("initialised a new one", again.output)
