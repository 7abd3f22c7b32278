"""
A devpi_tx server process: first start, restart, request body limit.
"""

from __future__ import annotations

import hashlib
import http.client
import json
import os
import sqlite3

from tests.e2e.test_e2e_clients import _ServerCase, get_json, get_json_post, put_json
from tests.helpers import basic, make_wheel, multipart, upload_fields
from tests.processes import ServerProcess, bin_path, eventually, run


def _serial(serverdir: str) -> int:
    conn = sqlite3.connect(os.path.join(serverdir, "devpi_tx.sqlite"))
    try:
        return int(conn.execute("SELECT max(serial) FROM changelog").fetchone()[0])
    finally:
        conn.close()


def _files(serverdir: str) -> list[str]:
    found = []
    for dirpath, _, filenames in os.walk(os.path.join(serverdir, "+files")):
        found += [os.path.join(dirpath, f) for f in filenames]
    return sorted(found)


def upload(port: int, token: str, name: str, version: str, data: bytes | None = None, **fields: str) -> int:
    """POST one wheel to root/dev of the server on C{port} as root; the status."""
    filename, wheel = make_wheel(name, version)
    body, ctype = multipart(
        upload_fields(name, version, **fields), [("content", filename, wheel if data is None else data)]
    )
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        conn.request(
            "POST", "/root/dev/", body=body, headers={"Content-Type": ctype, "X-Devpi-Auth": basic("root", token)}
        )
        return conn.getresponse().status
    finally:
        conn.close()


class ServerProcessTests(_ServerCase):
    async def test_first_start_and_restart(self) -> None:
        """The first start initialises the dir; a restart keeps users and login tokens."""
        server = await self.start_server("--root-passwd", "rootpw")
        for name in (".nodeinfo", ".secret", "devpi_tx.sqlite"):
            self.assertTrue(os.path.exists(os.path.join(server.serverdir, name)), name)
        self.assertEqual(oct(os.stat(os.path.join(server.serverdir, ".secret")).st_mode & 0o777), "0o600")
        token = get_json_post(f"{server.url}/+login", {"user": "root", "password": "rootpw"})["result"]["password"]
        put_json(f"{server.url}/carol", {"password": "pw"}, ("root", token))
        await server.stop()
        self.assertIn("Main loop terminated.", server.output)
        restarted = ServerProcess(server.serverdir)
        await restarted.start()
        self.addCleanup(restarted.stop)
        self.assertIn("carol", get_json(f"{restarted.url}/")["result"])
        conn = http.client.HTTPConnection("127.0.0.1", restarted.port, timeout=30)
        conn.request("GET", "/+api", headers={"Accept": "application/json", "X-Devpi-Auth": basic("root", token)})
        self.assertEqual(json.loads(conn.getresponse().read())["result"]["authstatus"], ["ok", "root", []])
        conn.close()
        self.assertEqual(get_json(f"{restarted.url}/root/pypi?no_projects")["result"]["title"], "PyPI")

    async def test_body_limit(self) -> None:
        """A body over --max-request-body-size gets 413 and leaves no trace."""
        server = await self.start_server("--max-request-body-size", "4000")
        token = get_json_post(f"{server.url}/+login", {"user": "root", "password": ""})["result"]["password"]
        put_json(f"{server.url}/root/dev", {}, ("root", token))
        serial, files = _serial(server.serverdir), _files(server.serverdir)
        name, data = make_wheel("big", "1.0", extra="x" * 20000)
        body, ctype = multipart(upload_fields("big", "1.0"), [("content", name, data + os.urandom(8000))])
        conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
        conn.request(
            "POST", "/root/dev/", body=body, headers={"Content-Type": ctype, "X-Devpi-Auth": basic("root", token)}
        )
        response = conn.getresponse()
        self.assertEqual(response.status, 413)
        self.assertEqual(json.loads(response.read())["message"], "request body too large")
        conn.close()
        self.assertEqual((_serial(server.serverdir), _files(server.serverdir)), (serial, files))
        self.assertEqual(upload(server.port, token, "small", "1.0"), 200)

    async def test_byte_ranges_over_http(self) -> None:
        """
        Ranges of a small and of a large stored file (the latter through the
        producer) keep the connection's framing: exact lengths, and the next
        request on the same connection is answered normally.
        """
        server = await self.start_server()
        token = get_json_post(f"{server.url}/+login", {"user": "root", "password": ""})["result"]["password"]
        put_json(f"{server.url}/root/dev", {}, ("root", token))
        wheels = {"small": make_wheel("small", "1.0"), "large": make_wheel("large", "1.0", extra="x" * (3 << 20))}
        for name, (_, data) in wheels.items():
            self.assertEqual(upload(server.port, token, name, "1.0", data), 200)
        conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
        self.addCleanup(conn.close)
        for name, (filename, data) in wheels.items():
            sha = hashlib.sha256(data).hexdigest()
            path = f"/root/dev/+f/{sha[:3]}/{sha[3:16]}/{filename}"
            size = len(data)
            for asked, first, last in [("bytes=0-99", 0, 99), ("bytes=-22", size - 22, size - 1),
                                       (f"bytes=17-{size - 5}", 17, size - 5)]:  # fmt: skip
                conn.request("GET", path, headers={"Range": asked})
                response = conn.getresponse()
                body = response.read()
                self.assertEqual(response.status, 206, (name, asked))
                self.assertEqual(response.getheader("Content-Length"), str(last - first + 1), (name, asked))
                self.assertEqual(response.getheader("Content-Range"), f"bytes {first}-{last}/{size}", (name, asked))
                self.assertEqual(body, data[first : last + 1], (name, asked))
            conn.request("GET", path)
            response = conn.getresponse()
            self.assertEqual((response.status, response.getheader("Accept-Ranges")), (200, "bytes"))
            self.assertEqual(response.read(), data)
            for extra, status, length in [({}, 200, size), ({"Range": "bytes=-10"}, 206, 10)]:
                conn.request("HEAD", path, headers=extra)
                response = conn.getresponse()
                self.assertEqual((response.status, response.getheader("Content-Length")), (status, str(length)), extra)
                self.assertEqual(response.read(), b"")

    async def test_plugin_listed_and_bad_option(self) -> None:
        """C{twistd --help} lists devpi; a bad option value is refused before anything starts."""
        listed = await run([bin_path("twistd"), "--help"])
        self.assertIn("devpi", listed.output)
        serverdir = os.path.abspath(self.mktemp())
        bad = await run([bin_path("twistd"), "-n", "devpi", "--serverdir", serverdir, "--port", "notaport"])
        self.assertGreater(bad.code, 0, str(bad))
        self.assertIn("--port must be an integer", bad.output)
        self.assertFalse(os.path.exists(serverdir))


class OperatorTests(_ServerCase):
    async def test_metrics(self) -> None:
        """/+metrics counts requests by route and status and reports the serial."""
        server = await self.start_server()
        get_json(f"{server.url}/+api")
        get_json(f"{server.url}/root/pypi?no_projects")
        conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
        conn.request("GET", "/+metrics")
        response = conn.getresponse()
        text = response.read().decode()
        conn.close()
        self.assertTrue(response.getheader("Content-Type", "").startswith("text/plain; version=0.0.4"))
        self.assertIn('devpi_tx_requests_total{method="GET",route="+api",status="200"} 1', text)
        self.assertIn('devpi_tx_requests_total{method="GET",route="index",status="200"} 1', text)
        self.assertIn("devpi_tx_serial 0", text)
        self.assertIn("devpi_tx_request_seconds_count 2", text)

    async def test_init_export_import_cli(self) -> None:
        """--init, --export and --import run and exit; the imported dir serves the same data."""
        twistd = bin_path("twistd")
        source = os.path.abspath(self.mktemp())
        init = await run([twistd, "-n", "--pidfile=", "devpi", "--serverdir", source, "--init", "--root-passwd", "pw"])
        self.assertEqual(init.code, 0, str(init))
        self.assertTrue(os.path.exists(os.path.join(source, ".nodeinfo")))
        again = await run([twistd, "-n", "--pidfile=", "devpi", "--serverdir", source, "--init"])
        self.assertEqual(again.code, 2)
        self.assertIn("already initialised", again.output)
        server = ServerProcess(source)
        await server.start()
        token = get_json_post(f"{server.url}/+login", {"user": "root", "password": "pw"})["result"]["password"]
        put_json(f"{server.url}/root/dev", {}, ("root", token))
        name = make_wheel("exported", "1.0")[0]
        self.assertEqual(upload(server.port, token, "exported", "1.0"), 200)
        await server.stop()
        dump = os.path.abspath(self.mktemp())
        exported = await run([twistd, "-n", "--pidfile=", "devpi", "--serverdir", source, "--export", dump])
        self.assertEqual(exported.code, 0, str(exported))
        self.assertTrue(os.path.exists(os.path.join(dump, "dataindex.json")))
        target = os.path.abspath(self.mktemp())
        imported = await run([twistd, "-n", "--pidfile=", "devpi", "--serverdir", target, "--import", dump])
        self.assertEqual(imported.code, 0, str(imported))
        refused = await run([twistd, "-n", "--pidfile=", "devpi", "--serverdir", target, "--import", dump])
        self.assertEqual(refused.code, 1, str(refused))
        self.assertIn("fatal: ", refused.output)
        copy = ServerProcess(target)
        await copy.start()
        self.addCleanup(copy.stop)
        page = get_json(f"{copy.url}/root/dev/+simple/exported/", "application/vnd.pypi.simple.v1+json")
        self.assertEqual([f["filename"] for f in page["files"]], [name])
        self.assertEqual(get_json_post(f"{copy.url}/+login", {"user": "root", "password": "pw"})["type"], "proxyauth")

    async def test_requests_only_alone(self) -> None:
        """--requests-only serves a server dir but runs no event hooks."""
        primary = await self.start_server()
        synced = await eventually(lambda: get_json(f"{primary.url}/+status")["result"]["event-serial"] == 0)
        self.assertTrue(synced)
        await primary.stop()
        worker = ServerProcess(primary.serverdir, "--requests-only")
        await worker.start()
        self.addCleanup(worker.stop)
        status = get_json(f"{worker.url}/+status")["result"]
        self.assertEqual(status["event-serial"], 0)
        self.assertIsNone(status["event-serial-in-sync-at"])


class HookResumeTests(_ServerCase):
    async def test_hooks_resume_after_restart(self) -> None:
        """Hooks run in the main instance in serial order and resume after a restart."""
        server = await self.start_server()
        token = get_json_post(f"{server.url}/+login", {"user": "root", "password": ""})["result"]["password"]
        put_json(f"{server.url}/root/dev", {}, ("root", token))

        def upload_to(target: ServerProcess, name: str) -> None:
            self.assertEqual(upload(target.port, token, name, "1.0", summary=f"about {name}"), 200)

        def synced(target: ServerProcess) -> bool:
            status = get_json(f"{target.url}/+status")["result"]
            return bool(status["event-serial"] == status["serial"])

        upload_to(server, "before")
        self.assertTrue(await eventually(lambda: synced(server)))
        await server.stop()
        restarted = ServerProcess(server.serverdir, "--workers", "1")
        await restarted.start()
        self.addCleanup(restarted.stop)
        upload_to(restarted, "after")
        self.assertTrue(await eventually(lambda: synced(restarted)))
        names = {r["project"] for r in get_json(f"{restarted.url}/+search?q=about")["result"]}
        self.assertEqual(names, {"before", "after"})
        rendered = os.path.join(server.serverdir, "+rendered", "root", "dev")
        self.assertEqual(sorted(os.listdir(rendered)), ["after", "before"])


class ForeignDirTests(_ServerCase):
    async def test_devpi_server_dir_refused(self) -> None:
        """A devpi-server directory is refused with the export/import path, and left untouched."""
        serverdir = os.path.abspath(self.mktemp())
        os.makedirs(serverdir)
        for name, text in ((".serverversion", "4"), (".sqlite", "")):
            with open(os.path.join(serverdir, name), "w") as f:
                f.write(text)
        result = await run([bin_path("twistd"), "-n", "--pidfile=", "devpi", "--serverdir", serverdir])
        self.assertEqual(result.code, 2)
        self.assertIn("is a devpi-server directory", result.output)
        self.assertIn("--import", result.output)
        self.assertEqual(sorted(os.listdir(serverdir)), [".serverversion", ".sqlite"])


class ConsoleScriptTests(_ServerCase):
    async def test_export_import_fsck_scripts(self) -> None:
        """devpi-tx-export, -import and -fsck do what the twistd actions do, and fail clearly."""
        source = os.path.abspath(self.mktemp())
        server = ServerProcess(source)
        await server.start()
        token = get_json_post(f"{server.url}/+login", {"user": "root", "password": ""})["result"]["password"]
        put_json(f"{server.url}/root/dev", {}, ("root", token))
        self.assertEqual(upload(server.port, token, "scripted", "1.0"), 200)
        await server.stop()
        dump = os.path.abspath(self.mktemp())
        exported = await run([bin_path("devpi-tx-export"), "--serverdir", source, dump])
        self.assertEqual(exported.code, 0, str(exported))
        target = os.path.abspath(self.mktemp())
        imported = await run([bin_path("devpi-tx-import"), "--serverdir", target, dump])
        self.assertEqual(imported.code, 0, str(imported))
        checked = await run([bin_path("devpi-tx-fsck"), "--serverdir", target])
        self.assertEqual(checked.code, 0, str(checked))
        self.assertIn("Finished with a total of 1 files.", checked.output)
        again = await run([bin_path("devpi-tx-import"), "--serverdir", target, dump])
        self.assertEqual(again.code, 1)
        self.assertIn("fatal: ", again.output)
        os.unlink(os.path.join(dump, "dataindex.json"))
        broken = await run([bin_path("devpi-tx-import"), "--serverdir", os.path.abspath(self.mktemp()), dump])
        self.assertEqual(broken.code, 1)
        self.assertIn("dataindex.json", broken.output)
