"""
Export and import (spec section 8): devpi_tx -> dump -> devpi_tx, devpi's
own dumps into devpi_tx and ours into devpi-server 6.20.3, and damaged dumps.
"""

from __future__ import annotations

import glob
import hashlib
import io
import json
import os
import sqlite3
import zipfile
from collections.abc import Callable
from typing import Any, cast

from twisted.internet.defer import Deferred
from twisted.trial.unittest import SynchronousTestCase, TestCase

from devpi_tx.admin.dumpformat import (
    DumpError,
    Progress,
    hard_link,
    order_indexes,
    progress_printer,
    version_of,
)
from devpi_tx.admin.export import export_dump
from devpi_tx.admin.fsck import fsck
from devpi_tx.admin.importer import import_dump
from devpi_tx.domain import keys
from devpi_tx.store.interfaces import ITransaction
from tests.devpi_server import DevpiServer, devpi_venv
from tests.helpers import APIHarness, files_below, make_sdist, make_wheel, multipart, upload_fields

BASE = "http://127.0.0.1:3141"
SIMPLE_JSON = "application/vnd.pypi.simple.v1+json"


class _AtPath:
    """A stand-in test case whose C{mktemp()} names an existing server directory."""

    def __init__(self, case: SynchronousTestCase, path: str) -> None:
        self._case = case
        self._path = path

    def mktemp(self) -> str:
        return self._path

    def __getattr__(self, name: str) -> Any:
        return getattr(self._case, name)


def harness_at(case: SynchronousTestCase, path: str) -> APIHarness:
    """Our in-memory API over the server directory at C{path}."""
    return APIHarness(cast(SynchronousTestCase, _AtPath(case, path)))


class HarnessClient:
    """The calls of L{tests.devpi_server.DevpiServer}, answered by our in-memory API."""

    url = BASE

    def __init__(self, harness: APIHarness) -> None:
        self.h = harness

    async def call(
        self,
        method: str,
        path: str,
        body: Any = None,
        user: str | None = None,
        raw: bytes | None = None,
        content_type: str = "application/json",
        accept: str = "application/json",
    ) -> tuple[int, bytes]:
        headers = {"Accept": accept}
        if raw is not None or body is not None:
            headers["Content-Type"] = content_type
        reply = self.h.request(method, path, body, headers=headers, user=user, raw=raw)
        return reply.code, reply.body

    async def login(self, user: str, password: str) -> None:
        self.h.login(user, password)


Client = HarnessClient | DevpiServer


async def call_ok(client: Client, method: str, path: str, body: Any = None, **kw: Any) -> Any:
    """A request that must succeed; its JSON C{result} (or C{None})."""
    code, content = await client.call(method, path, body, **kw)
    assert code in (200, 201), f"{method} {path}: {code} {content[:500]!r}"
    if kw.get("accept", "application/json") != "application/json" or not content.strip().startswith(b"{"):
        return None
    return json.loads(content).get("result")


def doc_zip(text: str) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("index.html", f"<html><body>{text}</body></html>")
    return buf.getvalue()


async def upload(
    client: Client,
    stage: str,
    user: str,
    name: str,
    version: str,
    archive: tuple[str, bytes],
    action: str = "file_upload",
) -> None:
    body, ctype = multipart(upload_fields(name, version, action, summary=f"{name} summary"), [("content", *archive)])
    await call_ok(client, "POST", f"/{stage}/", user=user, raw=body, content_type=ctype, accept="*/*")


async def populate(client: Client, ours: bool, cycle: bool = True) -> None:
    """
    Users, indexes (a deleted base, a bases cycle unless not C{cycle}),
    uploads, a volatile overwrite, docs, a tox result, a push and a
    registered-only version; with C{ours} also a yanked version
    (devpi-server 6.20.3 cannot yank).
    """
    await client.login("root", "")
    await call_ok(
        client,
        "PUT",
        "/alice",
        {"password": "alicepw", "email": "alice@example.org", "title": "Alice", "custom_data": {"k": [1, 2]}},
    )
    await call_ok(client, "PUT", "/bob", {"password": "bobpw", "description": "Bob's"})
    await client.login("alice", "alicepw")
    await client.login("bob", "bobpw")
    await call_ok(client, "PATCH", "/alice", {"email": "alice@example.net"}, user="alice")
    dev = {"bases": ["root/pypi"], "volatile": True, "title": "Development", "mirror_whitelist": ["hello-pkg"]}
    await call_ok(client, "PUT", "/alice/dev", dev, user="alice")
    await call_ok(client, "PUT", "/alice/prod", {"bases": ["alice/dev"], "volatile": False}, user="alice")
    await call_ok(client, "PUT", "/bob/a", {"bases": []}, user="bob")
    await call_ok(client, "PUT", "/bob/b", {"bases": ["bob/a"]}, user="bob")
    if cycle:
        await call_ok(client, "PATCH", "/bob/a", ["bases=bob/b"], user="bob")
    await call_ok(client, "PUT", "/bob/base", {}, user="bob")
    await call_ok(client, "PUT", "/bob/child", {"bases": ["bob/base"]}, user="bob")
    await call_ok(client, "DELETE", "/bob/base", user="bob")
    await upload(client, "alice/dev", "alice", "hello-pkg", "1.0", make_wheel("hello-pkg", "1.0"))
    await upload(client, "alice/dev", "alice", "hello-pkg", "1.0", make_sdist("hello-pkg", "1.0"))
    await upload(client, "alice/dev", "alice", "hello.pkg", "2.0", make_sdist("hello.pkg", "2.0"))
    await upload(client, "alice/dev", "alice", "hello-pkg", "1.1", make_sdist("hello-pkg", "1.1"))
    await upload(client, "alice/dev", "alice", "hello-pkg", "1.1", make_sdist("hello-pkg", "1.1", extra="again"))
    await upload(
        client, "alice/dev", "alice", "hello-pkg", "1.0", ("hello-pkg-1.0.doc.zip", doc_zip("docs")), "doc_upload"
    )
    await upload(client, "alice/dev", "alice", "hello-pkg", "3.0", ("x", b""), "submit")
    await upload(client, "bob/a", "bob", "other", "0.1", make_wheel("other", "0.1"))
    version = await call_ok(client, "GET", "/alice/dev/hello-pkg/1.0")
    (sdist,) = [link["href"] for link in version["+links"] if link["href"].endswith(".tar.gz")]
    await call_ok(
        client, "POST", sdist[len(client.url) :], {"testenvs": {"py": {"test": [{"retcode": 0}]}}}, accept="*/*"
    )
    push = {"name": "hello-pkg", "version": "1.0", "targetindex": "alice/prod"}
    await call_ok(client, "POST", "/alice/dev", push, user="alice")
    if ours:
        await call_ok(client, "PATCH", "/alice/dev/hello-pkg/1.1", {"yanked": "broken"}, user="alice")


async def snapshot(client: Client, simple: bool = False) -> dict[str, Any]:
    """
    What the API shows: users with their indexes, index views, per project
    every version with its links (hrefs made relative), each linked file's
    sha256 and file metadata; with C{simple} also the PEP 691 pages.
    """
    views: dict[str, Any] = {"users": await call_ok(client, "GET", "/")}
    for user in sorted(views["users"]):
        for index, config in sorted(views["users"][user].get("indexes", {}).items()):
            stage = f"{user}/{index}"
            if config.get("type") == "mirror":
                continue
            views[stage] = await call_ok(client, "GET", f"/{stage}")
            for project in views[stage].get("projects", []):
                pview = await call_ok(client, "GET", f"/{stage}/{project}?ignore_bases")
                for vdata in pview.values():
                    for link in vdata.get("+links", []):
                        for key in ("href", "for_href"):
                            if key in link:
                                link[key] = link[key][len(client.url) :]
                        code, content = await client.call("GET", link["href"], accept="*/*")
                        assert code == 200, (link["href"], code)
                        link["content_sha256"] = hashlib.sha256(content).hexdigest()
                        link["meta"] = await call_ok(client, "GET", link["href"])
                views[f"{stage}/{project}"] = pview
                if simple:
                    code, page = await client.call("GET", f"/{stage}/+simple/{project}/", accept=SIMPLE_JSON)
                    views[f"{stage}/+simple/{project}"] = json.loads(page)
    return views


def run_sync(case: SynchronousTestCase, coroutine: Any) -> Any:
    """Run a coroutine that never waits (our in-memory API) to its end."""
    return case.successResultOf(Deferred.fromCoroutine(coroutine))


def populated(case: SynchronousTestCase) -> APIHarness:
    harness = APIHarness(case)
    run_sync(case, populate(HarnessClient(harness), ours=True))
    return harness


def stored_file(harness: APIHarness, stage: str, basename: str) -> str:
    """The path of a stored release file."""
    (path,) = glob.glob(os.path.join(harness.serverdir.files, stage, "+f", "*", "*", basename))
    return path


def read_json(path: str) -> Any:
    with open(path) as f:
        return json.load(f)


def read_bytes(path: str) -> bytes:
    with open(path, "rb") as f:
        return f.read()


class RoundTripTests(SynchronousTestCase):
    def test_round_trip(self) -> None:
        """Export and import keep users, passwords, indexes, versions, links, logs, files and times."""
        source = populated(self)
        dump = self.mktemp()
        exported = export_dump(source.serverdir.path, dump)
        target = self.mktemp()
        imported = import_dump(target, dump)
        copy = harness_at(self, target)
        before = run_sync(self, snapshot(HarnessClient(source), simple=True))
        after = run_sync(self, snapshot(HarnessClient(copy), simple=True))
        self.assertEqual(after, before)
        self.assertEqual(sorted(before["users"]), ["alice", "bob", "root"])
        version = before["alice/dev/hello-pkg"]["1.0"]
        self.assertEqual(
            [link["rel"] for link in version["+links"]], ["releasefile", "releasefile", "doczip", "toxresult"]
        )
        self.assertEqual(before["alice/dev/hello-pkg"]["1.1"]["yanked"], "broken")
        self.assertEqual(before["alice/dev/hello-pkg"]["1.1"]["+links"][0]["log"][0]["what"], "overwrite")
        self.assertEqual(before["alice/dev/hello-pkg"]["2.0"]["name"], "hello.pkg")
        pushed = before["alice/prod/hello-pkg"]["1.0"]["+links"][0]["log"]
        self.assertEqual([e["what"] for e in pushed], ["upload", "push"])
        self.assertEqual(before["bob/a"]["bases"], ["bob/b"])
        self.assertEqual(before["bob/child"]["bases"], ["bob/base"])
        # the files byte for byte; the PEP 658 metadata, derived from the wheels, as served
        files = files_below(source.serverdir.files)
        self.assertEqual(files, files_below(copy.serverdir.files))
        wheels = [path for path in files if path.endswith(".whl")]
        self.assertTrue(wheels)
        for path in wheels:
            before = source.request("GET", f"/{path}.metadata", headers={"Accept": "*/*"})
            after = copy.request("GET", f"/{path}.metadata", headers={"Accept": "*/*"})
            self.assertEqual((before.code, after.code), (200, 200), path)
            self.assertIn(b"Metadata-Version: ", before.body)
            self.assertEqual(after.body, before.body, path)
        copy.login("alice", "alicepw")
        self.assertEqual((exported.users, exported.indexes, exported.files), (3, 6, 11))
        self.assertEqual((imported.users, imported.indexes, imported.files), (3, 6, 11))
        self.assertEqual(imported.bytes, exported.bytes)
        self.assertEqual(exported.warnings, ["bases cycle bob/a -> bob/b -> bob/a: devpi-server cannot import it"])
        self.assertTrue(any("bases cycle" in w for w in imported.warnings), imported.warnings)
        self.assertTrue(any("bob/base" in w for w in imported.warnings), imported.warnings)
        self.assertEqual(fsck(target).errors, [])

    def test_dump_layout(self) -> None:
        """The dump uses devpi's paths and keys (spec 8.2, 8.3)."""
        source = populated(self)
        dump = self.mktemp()
        export_dump(source.serverdir.path, dump)
        with open(os.path.join(dump, "dataindex.json")) as f:
            data = json.load(f)
        self.assertEqual(data["dumpversion"], "2")
        self.assertNotIn("indexes", data["users"]["alice"])
        self.assertTrue(data["users"]["alice"]["pwhash"].startswith("$argon2"))
        self.assertEqual(data["indexes"]["root/pypi"], {"indexconfig": data["indexes"]["root/pypi"]["indexconfig"]})
        dev = data["indexes"]["alice/dev"]
        self.assertEqual(sorted(dev["projects"]), ["hello-pkg"])
        self.assertNotIn("+elinks", dev["projects"]["hello-pkg"]["1.0"])
        by_type = {d["type"]: d for d in dev["files"] if d["version"] == "1.0"}
        self.assertEqual(by_type["doczip"]["relpath"], "alice/dev/hello-pkg-1.0.doc.zip")
        sdist = next(d for d in dev["files"] if d["relpath"].endswith("hello-pkg-1.0.tar.gz"))
        sdist_sha = sdist["entrymapping"]["hashes"]["sha256"]
        tox = by_type["toxresult"]
        self.assertTrue(
            tox["relpath"].startswith(f"alice/dev/hello-pkg/sha256={sdist_sha}/hello-pkg-1.0.tar.gz.toxresult-")
        )
        self.assertEqual(tox["for_entrypath"], f"alice/dev/+f/{sdist_sha[:3]}/{sdist_sha[3:16]}/hello-pkg-1.0.tar.gz")
        releases = sorted(d["relpath"] for d in dev["files"] if d["type"] == "releasefile" and d["version"] == "1.0")
        self.assertEqual(
            releases,
            ["alice/dev/hello-pkg/1.0/hello-pkg-1.0.tar.gz", "alice/dev/hello-pkg/1.0/hello_pkg-1.0-py3-none-any.whl"],
        )
        mapping = by_type["doczip"]["entrymapping"]
        self.assertEqual(sorted(mapping), ["hash_spec", "hashes", "last_modified", "project", "version"])
        for desc in dev["files"]:
            with open(os.path.join(dump, desc["relpath"]), "rb") as f:
                self.assertEqual(hashlib.sha256(f.read()).hexdigest(), desc["entrymapping"]["hashes"]["sha256"])
        self.assertFalse(os.path.exists(os.path.join(dump, "dataindex.json.partial")))

    def test_hard_links(self) -> None:
        """With hard links, the dump's files and the imported ones share the stored inodes."""
        source = populated(self)
        dump = self.mktemp()
        export_dump(source.serverdir.path, dump, hard_links=True)
        target = self.mktemp()
        import_dump(target, dump, hard_links=True)
        with open(os.path.join(dump, "dataindex.json")) as f:
            files = json.load(f)["indexes"]["alice/dev"]["files"]
        wheel = next(d for d in files if d["relpath"].endswith(".whl"))
        sha = wheel["entrymapping"]["hashes"]["sha256"]
        stored = f"alice/dev/+f/{sha[:3]}/{sha[3:16]}/hello_pkg-1.0-py3-none-any.whl"
        inodes = {
            os.stat(os.path.join(source.serverdir.files, stored)).st_ino,
            os.stat(os.path.join(dump, wheel["relpath"])).st_ino,
            os.stat(os.path.join(target, "+files", stored)).st_ino,
        }
        self.assertEqual(len(inodes), 1)
        # the PEP 658 file is not written at import; it is extracted from the wheel on request
        self.assertFalse(os.path.exists(os.path.join(target, "+files", stored + ".metadata")))
        h = harness_at(self, target)
        page = h.request("GET", "/alice/dev/+simple/hello-pkg/", headers={"Accept": SIMPLE_JSON}).json()
        link = next(f for f in page["files"] if f["filename"].endswith(".whl"))
        metadata = h.request("GET", "/" + stored + ".metadata", headers={"Accept": "*/*"})
        self.assertEqual(metadata.code, 200)
        self.assertIn(b"Name: hello", metadata.body)
        self.assertEqual(link["core-metadata"], {"sha256": hashlib.sha256(metadata.body).hexdigest()})

    def test_mirrored_files(self) -> None:
        """Cached mirror files are exported only on request, and come back with their URL."""
        source = APIHarness(self)
        data = make_sdist("cached", "1.0")[1]
        sha = hashlib.sha256(data).hexdigest()
        relpath = f"root/pypi/+f/{sha[:3]}/{sha[3:16]}/cached-1.0.tar.gz"
        url = "https://files.example/cached-1.0.tar.gz"
        os.makedirs(os.path.dirname(os.path.join(source.serverdir.files, relpath)))
        with open(os.path.join(source.serverdir.files, relpath), "wb") as f:
            f.write(data)
        entry = {
            "url": url,
            "hashes": {"sha256": sha},
            "hash_spec": f"sha256={sha}",
            "project": "cached",
            "version": "1.0",
            "size": len(data),
            "last_modified": "Sun, 22 Nov 2026 00:00:00 GMT",
        }
        uncached = dict(entry, url=url + "2")
        del uncached["last_modified"]

        def setup(tx: Any) -> None:
            tx.set(keys.file(relpath), entry)
            tx.set(keys.file("root/pypi/+f/000/0000000000000/cached-2.0.tar.gz"), uncached)
            tx.set(keys.mirror("root/pypi", "cached"), {"project": "cached", "links": []})

        self.successResultOf(source.store.write(setup))
        plain = self.mktemp()
        export_dump(source.serverdir.path, plain)
        self.assertNotIn("projects", read_json(os.path.join(plain, "dataindex.json"))["indexes"]["root/pypi"])
        dump = self.mktemp()
        stats = export_dump(source.serverdir.path, dump, include_mirrored_files=True)
        self.assertEqual(stats.files, 1)
        pypi = read_json(os.path.join(dump, "dataindex.json"))["indexes"]["root/pypi"]
        self.assertEqual(pypi["projects"], {"cached": {"1.0": {"name": "cached", "version": "1.0"}}})
        (desc,) = pypi["files"]
        self.assertEqual(
            (desc["relpath"], desc["entrymapping"]["url"]), ("root/pypi/cached/1.0/cached-1.0.tar.gz", url)
        )
        target = self.mktemp()
        import_dump(target, dump)
        copy = harness_at(self, target)

        async def entry_and_mirror_pages(tx: ITransaction) -> tuple[Any, Any]:
            return await tx.get(keys.file(relpath)), await tx.items("m/")

        got = self.successResultOf(copy.store.read(entry_and_mirror_pages))
        self.assertEqual(got, (entry, []))
        self.assertEqual(read_bytes(os.path.join(target, "+files", relpath)), data)

    def test_progress(self) -> None:
        """Progress reports counts and bytes per phase; the printer draws a bar or plain lines."""
        source = populated(self)
        seen: list[Progress] = []
        dump = self.mktemp()
        stats = export_dump(source.serverdir.path, dump, progress=seen.append)
        import_dump(self.mktemp(), dump, progress=seen.append)
        finals = {p.phase: p for p in seen if p.done}
        self.assertEqual(sorted(finals), ["export", "import", "verify"])
        for final in finals.values():
            self.assertEqual((final.files, final.bytes), (stats.files, stats.bytes))
            self.assertEqual((final.total_files, final.total_bytes), (stats.files, stats.bytes))
        plain = io.StringIO()
        show = progress_printer(plain, every=2)
        for p in seen:
            show(p)
        lines = plain.getvalue().splitlines()
        self.assertIn(
            f"import: {stats.files}/{stats.files} files, {stats.bytes / 1e6:.1f}/{stats.bytes / 1e6:.1f} MB", lines
        )
        self.assertTrue(all("\r" not in line for line in lines))

        class Terminal(io.StringIO):
            def isatty(self) -> bool:
                return True

        term = Terminal()
        show = progress_printer(term)
        for p in seen:
            show(p)
        self.assertIn("\r[" + "#" * 30 + "] import:", term.getvalue())
        self.assertEqual(term.getvalue().count("\n"), 3)

    def test_export_refuses(self) -> None:
        """Export needs a server and an empty target; a missing stored file stops it before dataindex.json."""
        source = populated(self)
        with self.assertRaises(DumpError) as e:
            export_dump(self.mktemp(), self.mktemp())
        self.assertIn("contains no server data", str(e.exception))
        full = self.mktemp()
        os.makedirs(full)
        open(os.path.join(full, "x"), "w").close()
        with self.assertRaises(DumpError) as e:
            export_dump(source.serverdir.path, full)
        self.assertIn("must not exist or be empty", str(e.exception))
        os.unlink(stored_file(source, "alice/dev", "hello-pkg-1.0.tar.gz"))
        dump = self.mktemp()
        with self.assertRaises(DumpError) as e:
            export_dump(source.serverdir.path, dump)
        self.assertIn("hello-pkg-1.0.tar.gz is missing", str(e.exception))
        self.assertFalse(os.path.exists(os.path.join(dump, "dataindex.json")))

    def test_export_checks_content(self) -> None:
        """A stored file that no longer matches its hash stops the export."""
        source = populated(self)
        with open(stored_file(source, "alice/dev", "hello-pkg-1.0.tar.gz"), "ab") as f:
            f.write(b"!")
        with self.assertRaises(DumpError) as e:
            export_dump(source.serverdir.path, self.mktemp())
        self.assertIn("does not match its sha256", str(e.exception))

    def test_order_indexes(self) -> None:
        """Bases come first; cycles are broken and reported; unknown bases and self references are ignored."""
        order, cycles = order_indexes({"u/c": ["u/b", "x/y"], "u/b": ["u/a"], "u/a": ["u/a"]})
        self.assertEqual((order, cycles), (["u/a", "u/b", "u/c"], []))
        order, cycles = order_indexes({"u/a": ["u/b"], "u/b": ["u/c"], "u/c": ["u/a"], "u/d": ["u/c"]})
        self.assertEqual(sorted(order), ["u/a", "u/b", "u/c", "u/d"])
        self.assertEqual(cycles, [["u/a", "u/b", "u/c", "u/a"]])
        self.assertLess(order.index("u/c"), order.index("u/d"))

    def test_version_of(self) -> None:
        """Dump version 1 files get their version from the file name."""
        self.assertEqual(version_of("a/b/hello_pkg-1.0-py3-none-any.whl"), "1.0")
        self.assertEqual(version_of("hello-pkg-1.0.tar.gz"), "1.0")
        self.assertEqual(version_of("hello-pkg-1.0.doc.zip"), "1.0")
        self.assertEqual(version_of("hello-pkg-2.0b1.zip.toxresult-20260101000000-0"), "2.0b1")
        self.assertEqual(version_of("README"), "")


def write_dump(path: str, data: dict[str, Any], files: dict[str, bytes]) -> None:
    os.makedirs(path, exist_ok=True)
    for relpath, content in files.items():
        os.makedirs(os.path.dirname(os.path.join(path, relpath)), exist_ok=True)
        with open(os.path.join(path, relpath), "wb") as f:
            f.write(content)
    with open(os.path.join(path, "dataindex.json"), "w") as f:
        json.dump(data, f)


class CorruptDumpTests(SynchronousTestCase):
    """A damaged dump is refused before anything is written, naming what is wrong."""

    def setUp(self) -> None:
        self.source = populated(self)
        self.dump = self.mktemp()
        export_dump(self.source.serverdir.path, self.dump)
        with open(os.path.join(self.dump, "dataindex.json")) as f:
            self.data = json.load(f)

    def save(self) -> None:
        with open(os.path.join(self.dump, "dataindex.json"), "w") as f:
            json.dump(self.data, f)

    def assert_refused(self, *fragments: str, **kw: Any) -> str:
        """The import fails with all C{fragments} in its message; the target does not exist afterwards."""
        target = self.mktemp()
        with self.assertRaises(DumpError) as e:
            import_dump(target, self.dump, **kw)
        for fragment in fragments:
            self.assertIn(fragment, str(e.exception))
        self.assertFalse(os.path.exists(target))
        return str(e.exception)

    def dev_file(self, suffix: str) -> dict[str, Any]:
        return next(d for d in self.data["indexes"]["alice/dev"]["files"] if d["relpath"].endswith(suffix))

    def test_missing_file(self) -> None:
        """A file the dump lists but lacks is named."""
        os.unlink(os.path.join(self.dump, self.dev_file(".whl")["relpath"]))
        self.assert_refused("index 'alice/dev': file alice/dev/hello-pkg/1.0/hello_pkg-1.0-py3-none-any.whl is missing")

    def test_wrong_hash(self) -> None:
        """A file whose content does not match its hash is named, with both hashes."""
        desc = self.dev_file("hello-pkg-1.1.tar.gz")
        with open(os.path.join(self.dump, desc["relpath"]), "ab") as f:
            f.write(b"tampered")
        self.assert_refused(desc["relpath"], "sha256 mismatch", desc["entrymapping"]["hashes"]["sha256"])
        self.assert_refused(desc["relpath"], "sha256 mismatch", hard_links=True)

    def test_bad_json(self) -> None:
        """A dataindex.json that is not JSON is refused; so is a directory without one."""
        with open(os.path.join(self.dump, "dataindex.json"), "a") as f:
            f.write("}")
        self.assert_refused("dataindex.json is not valid JSON")
        os.unlink(os.path.join(self.dump, "dataindex.json"))
        self.assert_refused("not a dump directory")

    def test_unknown_user_keys(self) -> None:
        """A user record with keys devpi does not know is refused."""
        self.data["users"]["alice"]["shoe_size"] = 42
        self.save()
        self.assert_refused("user 'alice' has unknown keys: shoe_size")

    def test_bad_names(self) -> None:
        """User and index names are checked like on creation."""
        self.data["users"]["al ice"] = self.data["users"].pop("alice")
        self.save()
        self.assert_refused("user 'al ice'", "aren't allowed")
        self.data["users"]["alice"] = self.data["users"].pop("al ice")
        self.data["indexes"]["alice/de:v"] = self.data["indexes"].pop("alice/dev")
        self.save()
        self.assert_refused("index 'alice/de:v'", "aren't allowed")

    def test_index_of_unknown_user(self) -> None:
        """An index whose user is not in the dump is refused."""
        self.data["indexes"]["zed/dev"] = {"indexconfig": {"type": "stage"}}
        self.save()
        self.assert_refused("index 'zed/dev' belongs to user 'zed'")

    def test_unknown_index_type(self) -> None:
        """An unknown index type is refused unless it is skipped."""
        self.data["indexes"]["alice/plugin"] = {"indexconfig": {"type": "weird"}, "projects": {}, "files": []}
        self.save()
        self.assert_refused("index 'alice/plugin' has unknown type 'weird'", "--skip-import-type weird")
        target = self.mktemp()
        stats = import_dump(target, self.dump, skip_import_types=["weird"])
        self.assertEqual(stats.skipped, ["alice/plugin"])
        copy = harness_at(self, target)
        self.assertEqual(copy.request("GET", "/alice/plugin").code, 404)
        self.assertEqual(copy.request("GET", "/alice/dev").code, 200)

    def test_skipped_index_is_not_checked(self) -> None:
        """
        An index of a skipped type is left out before its name is checked:
        a plugin's index whose name this server would refuse still imports.
        """
        self.data["indexes"]["alice/plug:in"] = {"indexconfig": {"type": "weird"}, "projects": {}, "files": []}
        self.save()
        self.assert_refused("index 'alice/plug:in'", "aren't allowed")
        stats = import_dump(self.mktemp(), self.dump, skip_import_types=["weird"])
        self.assertEqual(stats.skipped, ["alice/plug:in"])

    def test_self_base_left_out(self) -> None:
        """An index that names itself as a base imports without it, with a warning."""
        self.data["indexes"]["alice/prod"]["indexconfig"]["bases"] = ["/alice/prod", "root/pypi"]
        self.save()
        target = self.mktemp()
        stats = import_dump(target, self.dump)
        self.assertIn("index alice/prod: left out itself as its own base", stats.warnings)
        copy = harness_at(self, target)
        self.assertEqual(copy.request("GET", "/alice/prod").json()["result"]["bases"], ["root/pypi"])

    def test_bad_index_config(self) -> None:
        """An index configuration that does not validate is named."""
        self.data["indexes"]["alice/prod"]["indexconfig"]["volatile"] = "perhaps"
        self.save()
        self.assert_refused("index 'alice/prod'", "perhaps")

    def test_dumpversion(self) -> None:
        """Only dump versions 1 and 2 are read."""
        self.data["dumpversion"] = "9"
        self.save()
        self.assert_refused("incompatible dumpversion: '9'")
        del self.data["dumpversion"]
        self.save()
        self.assert_refused("incompatible dumpversion: None")

    def test_files_of_unlisted_project(self) -> None:
        """Every file description must be consumed: files of an unlisted project are refused."""
        del self.data["indexes"]["bob/a"]["projects"]["other"]
        self.save()
        self.assert_refused("some files weren't imported", "bob/a/other/0.1/other-0.1-py3-none-any.whl")

    def test_file_of_unlisted_version(self) -> None:
        """A file of a version the projects do not list is refused."""
        del self.data["indexes"]["alice/dev"]["projects"]["hello-pkg"]["1.1"]
        self.save()
        self.assert_refused("alice/dev/hello-pkg/1.1/hello-pkg-1.1.tar.gz", "version '1.1'")

    def test_tox_result_without_release(self) -> None:
        """A tox result whose release file is not in the dump is refused."""
        files = self.data["indexes"]["alice/dev"]["files"]
        files.remove(self.dev_file("hello-pkg-1.0.tar.gz"))
        self.save()
        self.assert_refused("toxresult-", "its release file hello-pkg-1.0.tar.gz is not in the dump")

    def test_path_outside_dump(self) -> None:
        """File paths must stay inside the dump."""
        self.dev_file(".whl")["relpath"] = "../../etc/passwd"
        self.save()
        self.assert_refused("file ../../etc/passwd is not a path inside the dump")

    def test_bases_cycle(self) -> None:
        """Indexes that are each other's bases are imported as they are, with a warning, and the import ends."""
        for name, base in (("x", "z"), ("y", "x"), ("z", "y")):
            self.data["indexes"][f"bob/{name}"] = {
                "indexconfig": {"type": "stage", "bases": [f"bob/{base}"]},
                "projects": [],
            }
        self.save()
        target = self.mktemp()
        stats = import_dump(target, self.dump)
        self.assertIn("bases cycle bob/x -> bob/z -> bob/y -> bob/x: imported as it is", stats.warnings)
        copy = harness_at(self, target)
        self.assertEqual(copy.request("GET", "/bob/y").json()["result"]["bases"], ["bob/x"])
        self.assertEqual(copy.request("GET", "/bob/x/+simple/", headers={"Accept": SIMPLE_JSON}).code, 200)

    def test_target_not_new(self) -> None:
        """A server directory with data is refused and left alone."""
        before = files_below(self.source.serverdir.path)
        with self.assertRaises(DumpError) as e:
            import_dump(self.source.serverdir.path, self.dump)
        self.assertIn("already contains server data", str(e.exception))
        self.assertEqual(files_below(self.source.serverdir.path), before)

    def test_failure_while_writing(self) -> None:
        """A failure after the checks leaves the target as it was, and says so."""
        victim = os.path.join(self.dump, self.dev_file("hello-pkg-1.1.tar.gz")["relpath"])

        def spoil(progress: Progress) -> None:
            if progress.phase == "import" and progress.files == 0:
                with open(victim, "ab") as f:
                    f.write(b"changed")

        target = self.mktemp()
        os.makedirs(target)
        with self.assertRaises(DumpError) as e:
            import_dump(target, self.dump, progress=spoil)
        self.assertIn("hello-pkg-1.1.tar.gz changed while it was imported", str(e.exception))
        self.assertIn(f"nothing was imported into {target}", str(e.exception))
        self.assertEqual(os.listdir(target), [])

    def test_root_options(self) -> None:
        """A root password given to the import wins over the dump's; without root/pypi its bases warn."""
        target = self.mktemp()
        stats = import_dump(target, self.dump, root_passwd="newroot", root_pypi=False)
        copy = harness_at(self, target)
        copy.login("root", "newroot")
        self.assertEqual(copy.request("GET", "/root/pypi").code, 404)
        self.assertEqual(stats.skipped, ["root/pypi"])
        self.assertIn("index alice/dev: bases not in the dump: root/pypi", stats.warnings)


class OldDumpTests(SynchronousTestCase):
    def test_old_formats(self) -> None:
        """
        Variants of old exporters are read: dump version 1 (no file
        versions), md5 and hash_spec instead of hashes, no log, no
        entrymapping, pypi_whitelist, plugin keys, users without times and
        with salted hashes, C{"projects": []}, names that normalise alike,
        and tox results carrying their release's hash.
        """
        wheel_name, wheel = make_wheel("hello-pkg", "1.0")
        sdist_name, sdist = make_sdist("Hello.Pkg", "0.9")
        sdist_sha = hashlib.sha256(sdist).hexdigest()
        docs = doc_zip("old docs")
        tox = b'{"testenvs": {}}'
        stamp = "Wed, 01 Jan 2020 10:00:00 GMT"
        log = [{"what": "upload", "who": "carol", "when": [2020, 1, 1, 10, 0, 0], "dst": "carol/old"}]
        tox_path = f"carol/old/Hello.Pkg/sha256={sdist_sha}/{sdist_name}.toxresult-20200101100001-0"
        data = {
            "dumpversion": 1,
            "uuid": "f" * 32,
            "secret": "c2VjcmV0",
            "users": {
                "root": {"username": "root", "pwhash": hashlib.sha256(b"saltrootpw").hexdigest(), "pwsalt": "salt"},
                "carol": {
                    "username": "carol",
                    "pwsalt": "pepper",
                    "pwhash": hashlib.sha256(b"pepperpw").hexdigest(),
                    "email": "c@example.org",
                },
            },
            "indexes": {
                "carol/old": {
                    "indexconfig": {
                        "type": "stage",
                        "bases": ["root/pypi"],
                        "volatile": True,
                        "acl_upload": ["carol"],
                        "pypi_whitelist": ["hello-pkg"],
                        "uploadtrigger_jenkins": None,
                        "plugin_key": "x",
                    },
                    "projects": {
                        "hello-pkg": {"1.0": {"name": "hello-pkg", "version": "1.0", "summary": "s", "+doczip": "x"}},
                        "Hello.Pkg": {"0.9": {"name": "Hello.Pkg", "summary": "old"}},
                    },
                    "files": [
                        {
                            "type": "releasefile",
                            "projectname": "hello-pkg",
                            "relpath": f"carol/old/hello-pkg/1.0/{wheel_name}",
                            "entrymapping": {"md5": hashlib.md5(wheel).hexdigest(), "last_modified": stamp},
                        },
                        {
                            "type": "releasefile",
                            "projectname": "Hello.Pkg",
                            "relpath": f"carol/old/Hello.Pkg/0.9/{sdist_name}",
                            "entrymapping": {"hash_spec": f"sha256={sdist_sha}", "last_modified": stamp},
                            "log": log,
                        },
                        {
                            "type": "toxresult",
                            "projectname": "Hello.Pkg",
                            "relpath": tox_path,
                            "for_entrypath": f"carol/old/+f/{sdist_sha[:3]}/{sdist_sha[3:16]}/{sdist_name}",
                            "entrymapping": {"hashes": {"sha256": sdist_sha}, "last_modified": stamp},
                        },
                        {"type": "doczip", "projectname": "hello-pkg", "relpath": "carol/old/hello-pkg-1.0.doc.zip"},
                    ],
                },
                "carol/empty": {"indexconfig": {"type": "stage", "bases": [], "volatile": False}, "projects": []},
            },
        }
        dump = self.mktemp()
        write_dump(
            dump,
            data,
            {
                f"carol/old/hello-pkg/1.0/{wheel_name}": wheel,
                f"carol/old/Hello.Pkg/0.9/{sdist_name}": sdist,
                tox_path: tox,
                "carol/old/hello-pkg-1.0.doc.zip": docs,
            },
        )
        target = self.mktemp()
        stats = import_dump(target, dump)
        self.assertEqual((stats.users, stats.indexes, stats.projects, stats.versions, stats.files), (2, 2, 1, 2, 4))
        self.assertTrue(any("plugin_key" in w for w in stats.warnings), stats.warnings)
        h = harness_at(self, target)
        h.login("carol", "pw")
        h.login("root", "rootpw")
        carol = h.request("GET", "/carol").json()["result"]
        self.assertEqual(carol["created"], "1970-01-01T00:00:00Z")
        config = carol["indexes"]["old"]
        self.assertEqual(config["mirror_whitelist"], ["hello-pkg"])
        self.assertNotIn("plugin_key", config)
        self.assertNotIn("uploadtrigger_jenkins", config)
        self.assertEqual(h.request("GET", "/carol/empty").json()["result"]["projects"], [])
        project = h.request("GET", "/carol/old/hello-pkg").json()["result"]
        self.assertEqual(sorted(project), ["0.9", "1.0"])
        self.assertEqual(project["0.9"]["name"], "Hello.Pkg")
        self.assertNotIn("+doczip", project["1.0"])
        new = project["1.0"]["+links"]
        self.assertEqual([link["rel"] for link in new], ["releasefile", "doczip"])
        self.assertEqual(new[0]["log"][0]["who"], "<import>")
        old = project["0.9"]["+links"]
        self.assertEqual([link["rel"] for link in old], ["releasefile", "toxresult"])
        self.assertEqual(old[0]["log"], log)
        self.assertEqual(old[1]["for_href"], old[0]["href"])
        self.assertTrue(old[1]["href"].endswith(f"{sdist_name}.toxresult-20200101100001-0"))
        self.assertEqual(old[1]["hashes"], {"sha256": hashlib.sha256(tox).hexdigest()})
        meta = h.request("GET", old[0]["href"][len(BASE) :]).json()["result"]
        self.assertEqual(meta["last_modified"], stamp)
        page = h.request("GET", "/carol/old/+simple/hello-pkg/", headers={"Accept": SIMPLE_JSON}).json()
        times = {f["filename"]: f.get("upload-time") for f in page["files"]}
        self.assertEqual(times[sdist_name], "2020-01-01T10:00:00.000000Z")
        self.assertIn("core-metadata", next(f for f in page["files"] if f["filename"] == wheel_name))
        download = h.request("GET", new[1]["href"][len(BASE) :], headers={"Accept": "*/*"})
        self.assertEqual(download.body, docs)

    def test_wrong_md5(self) -> None:
        """An md5 from an old dump is checked too."""
        name, data = make_sdist("pkg", "1.0")
        dump = self.mktemp()
        index = {
            "indexconfig": {"type": "stage"},
            "projects": {"pkg": {"1.0": {"name": "pkg", "version": "1.0"}}},
            "files": [
                {
                    "type": "releasefile",
                    "projectname": "pkg",
                    "version": "1.0",
                    "relpath": f"u/i/pkg/1.0/{name}",
                    "entrymapping": {"md5": "0" * 32},
                }
            ],
        }
        write_dump(
            dump,
            {"dumpversion": "2", "users": {"u": {"pwhash": "x"}}, "indexes": {"u/i": index}},
            {f"u/i/pkg/1.0/{name}": data},
        )
        with self.assertRaises(DumpError) as e:
            import_dump(self.mktemp(), dump)
        self.assertIn(
            f"index 'u/i': file u/i/pkg/1.0/{name}: md5 mismatch, the dump lists {'0' * 32}", str(e.exception)
        )


def minimal_dump() -> tuple[dict[str, Any], dict[str, bytes]]:
    """A small valid dump: a stage with a release, its tox result and docs, and a mirror with a cached file."""
    sdist = make_sdist("pkg", "1.0")[1]
    sha = hashlib.sha256(sdist).hexdigest()
    tox_path = f"u/i/pkg/sha256={sha}/pkg-1.0.tar.gz.toxresult-20200101000000-0"
    files = {
        "u/i/pkg/1.0/pkg-1.0.tar.gz": sdist,
        tox_path: b"{}",
        "u/i/pkg-1.0.doc.zip": doc_zip("d"),
        "u/m/m/1.0/m-1.0.tar.gz": b"m",
    }
    stage = {
        "indexconfig": {"type": "stage"},
        "projects": {"pkg": {"1.0": {"name": "pkg", "version": "1.0"}}},
        "files": [
            {
                "type": "releasefile",
                "projectname": "pkg",
                "version": "1.0",
                "relpath": "u/i/pkg/1.0/pkg-1.0.tar.gz",
                "entrymapping": {"hashes": {"sha256": sha}},
            },
            {
                "type": "toxresult",
                "projectname": "pkg",
                "version": "1.0",
                "relpath": tox_path,
                "for_entrypath": f"u/i/+f/{sha[:3]}/{sha[3:16]}/pkg-1.0.tar.gz",
            },
            {"type": "doczip", "projectname": "pkg", "version": "1.0", "relpath": "u/i/pkg-1.0.doc.zip"},
        ],
    }
    mirror = {
        "indexconfig": {
            "type": "mirror",
            "mirror_url": "https://mirror.example/simple/",
            "mirror_whitelist_inheritance": "union",
        },
        "projects": {"m": {"1.0": {"name": "m", "version": "1.0"}}},
        "files": [
            {
                "type": "releasefile",
                "projectname": "m",
                "version": "1.0",
                "relpath": "u/m/m/1.0/m-1.0.tar.gz",
                "entrymapping": {"url": "https://files.example/m-1.0.tar.gz"},
            }
        ],
    }
    return {"dumpversion": "2", "users": {"u": {"pwhash": "x"}}, "indexes": {"u/i": stage, "u/m": mirror}}, files


def _set(path: str, value: Any) -> Callable[[dict[str, Any], dict[str, bytes]], None]:
    """A change to a minimal dump: the item at C{path} (keys joined by C{|}, list positions as numbers) becomes C{value}."""

    def change(data: dict[str, Any], files: dict[str, bytes]) -> None:
        *parents, last = [int(p) if p.isdigit() else p for p in path.split("|")]
        target: Any = data
        for key in parents:
            target = target[key]
        if value is _DELETE:
            del target[last]
        else:
            target[last] = value

    return change


_DELETE = object()
_I = "indexes|u/i"
_M = "indexes|u/m"


def _unversioned(data: dict[str, Any], files: dict[str, bytes]) -> None:
    files["u/i/pkg/1.0/pkg.tar.gz"] = b"x"
    data["indexes"]["u/i"]["files"][0].update(relpath="u/i/pkg/1.0/pkg.tar.gz", version="")


def _same_file_twice(data: dict[str, Any], files: dict[str, bytes]) -> None:
    data["indexes"]["u/i"]["projects"]["pkg"]["1.1"] = {"name": "pkg", "version": "1.1"}
    data["indexes"]["u/i"]["files"].append(dict(data["indexes"]["u/i"]["files"][0], version="1.1"))


MALFORMED = [
    (_set("users", []), "'users' must be an object"),
    (_set("indexes", []), "'indexes' must be an object"),
    (_set("users|u", "x"), "user 'u': the record is not an object"),
    (_set("users|u|pwhash", 5), "user 'u': its pwhash is not a string"),
    (_set(_I, {}), "index 'u/i' has no indexconfig"),
    (_set(f"{_I}|indexconfig|type", _DELETE), "index 'u/i' has no type"),
    (_set(f"{_I}|projects", "x"), "index 'u/i': its projects are not an object"),
    (_set(f"{_I}|projects|pkg", "x"), "the versions of 'pkg' are not an object"),
    (_set(f"{_I}|files", "x"), "index 'u/i': its files are not a list"),
    (_set(f"{_I}|projects|pkg|1.0", "x"), "index 'u/i': pkg 1.0: the metadata is not an object"),
    (_set(f"{_I}|projects|pkg|1.0|name", 5), "pkg 1.0: name and version must be strings"),
    (_set(f"{_I}|projects|pkg|1.0|version", "1/0"), "pkg 1.0: invalid version '1/0'"),
    (_set(f"{_I}|files|0", {"type": "releasefile"}), "index 'u/i': a file without relpath"),
    (_set(f"{_I}|files|0|type", "wheel"), "pkg-1.0.tar.gz has type 'wheel', which a stage cannot hold"),
    (_set(f"{_M}|files|0|type", "doczip"), "m-1.0.tar.gz has type 'doczip', which a mirror cannot hold"),
    (_set(f"{_I}|files|0|projectname", ""), "pkg-1.0.tar.gz has no projectname"),
    (_unversioned, "file u/i/pkg/1.0/pkg.tar.gz has no version"),
    (_set(f"{_I}|files|0|entrymapping", "x"), "pkg-1.0.tar.gz: its entrymapping is not an object"),
    (_set(f"{_I}|files|0|entrymapping|hashes", "x"), "pkg-1.0.tar.gz: its hashes are not an object"),
    (
        _set(f"{_I}|files|0|entrymapping|hash_spec", "sha256=" + "0" * 64),
        "pkg-1.0.tar.gz: its hash_spec and hashes disagree",
    ),
    (_set(f"{_I}|files|0|entrymapping|hashes", {"whirl": "00"}), "pkg-1.0.tar.gz: unknown hash type 'whirl'"),
    (_set(f"{_I}|files|1|for_entrypath", _DELETE), "toxresult-20200101000000-0 has no for_entrypath"),
    (_set(f"{_M}|files|0|entrymapping", {}), "m-1.0.tar.gz has no url in its entrymapping"),
    (_set(f"{_I}|files|0|log", "x"), "pkg-1.0.tar.gz: its log is not a list"),
    (_same_file_twice, "would both be stored at u/i/+f/"),
]


class MalformedDumpTests(SynchronousTestCase):
    def write(self, change: Callable[[dict[str, Any], dict[str, bytes]], None] | None = None) -> str:
        data, files = minimal_dump()
        if change is not None:
            change(data, files)
        path: str = self.mktemp()
        write_dump(path, data, files)
        return path

    def test_minimal(self) -> None:
        """The minimal dump imports: its mirror keeps the file with its URL, unknown mirror keys are left out."""
        target = self.mktemp()
        stats = import_dump(target, self.write())
        self.assertEqual((stats.indexes, stats.files), (2, 4))
        self.assertIn("index u/m: left out unknown keys mirror_whitelist_inheritance", stats.warnings)
        h = harness_at(self, target)
        entry = self.successResultOf(
            h.store.read(
                lambda tx: tx.get(
                    keys.file(
                        f"u/m/+f/{hashlib.sha256(b'm').hexdigest()[:3]}/"
                        f"{hashlib.sha256(b'm').hexdigest()[3:16]}/m-1.0.tar.gz"
                    )
                )
            )
        )
        self.assertEqual(entry["url"], "https://files.example/m-1.0.tar.gz")

    def test_malformed(self) -> None:
        """Each malformed part of a dump is refused with a message that names it."""
        for change, fragment in MALFORMED:
            target = self.mktemp()
            with self.assertRaises(DumpError, msg=fragment) as e:
                import_dump(target, self.write(change))
            self.assertIn(fragment, str(e.exception))
            self.assertFalse(os.path.exists(target))

    def test_not_an_object(self) -> None:
        """A dataindex.json that holds no object is refused."""
        path = self.mktemp()
        write_dump(path, [], {})  # type: ignore[arg-type]
        with self.assertRaises(DumpError) as e:
            import_dump(self.mktemp(), path)
        self.assertIn("dataindex.json does not hold a JSON object", str(e.exception))

    def test_unusual_but_valid(self) -> None:
        """Odd tox result names get a new one, an older doc zip of a version is dropped, a bad date becomes now."""

        def change(data: dict[str, Any], files: dict[str, bytes]) -> None:
            stage = data["indexes"]["u/i"]
            files["u/i/pkg/result.json"] = b"{}"
            files["u/i/older.doc.zip"] = doc_zip("older")
            stage["files"][1]["relpath"] = "u/i/pkg/result.json"
            stage["files"][0]["entrymapping"]["last_modified"] = "not a date"
            stage["files"].insert(
                2, {"type": "doczip", "projectname": "pkg", "version": "1.0", "relpath": "u/i/older.doc.zip"}
            )

        target = self.mktemp()
        stats = import_dump(target, self.write(change))
        self.assertIn("index 'u/i': file u/i/older.doc.zip: an older doc zip of the version, left out", stats.warnings)
        links = harness_at(self, target).request("GET", "/u/i/pkg/1.0").json()["result"]["+links"]
        self.assertEqual([link["rel"] for link in links], ["releasefile", "toxresult", "doczip"])
        self.assertRegex(links[1]["href"], r"pkg-1\.0\.tar\.gz\.toxresult-\d{14}-\d$")

    def test_target_checks(self) -> None:
        """The target must be a directory without server data and without stored files."""
        dump = self.write()
        plain = self.mktemp()
        open(plain, "w").close()
        with self.assertRaises(DumpError) as e:
            import_dump(plain, dump)
        self.assertIn("is not a directory", str(e.exception))
        used = self.mktemp()
        os.makedirs(os.path.join(used, "+files", "x"))
        with self.assertRaises(DumpError) as e:
            import_dump(used, dump)
        self.assertIn("+files is not empty", str(e.exception))

    def test_failure_at_the_end(self) -> None:
        """A failure after the move into place takes the moved parts out again; an interrupt is passed on."""
        dump = self.write()

        def fail(error: BaseException) -> Callable[[Progress], None]:
            def progress(p: Progress) -> None:
                if p.phase == "import" and p.done:
                    raise error

            return progress

        target = self.mktemp()
        with self.assertRaises(DumpError) as e:
            import_dump(target, dump, progress=fail(RuntimeError("disk on fire")))
        self.assertIn("RuntimeError: disk on fire; nothing was imported into", str(e.exception))
        self.assertFalse(os.path.exists(target))
        os.makedirs(target)
        with self.assertRaises(KeyboardInterrupt):
            import_dump(target, dump, progress=fail(KeyboardInterrupt()))
        self.assertEqual(os.listdir(target), [])


class ExportEdgeTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.h = APIHarness(self)
        self.h.login("root", "")
        self.h.create_user("alice", "pw")
        self.assertEqual(self.h.request("PUT", "/alice/dev", {}, user="alice").code, 200)
        self.assertEqual(self.h.upload("alice/dev", "alice", "pkg", "1.0", make_sdist("pkg", "1.0")).code, 200)
        href = self.h.request("GET", "/alice/dev/pkg/1.0").json()["result"]["+links"][0]["href"]
        self.assertEqual(self.h.request("POST", href[len(BASE) :], {"testenvs": {}}).code, 200)

    def change_version(self, change: Callable[[dict[str, Any]], None]) -> None:
        async def write(tx: Any) -> None:
            record = await tx.get(keys.version("alice/dev", "pkg", "1.0"))
            change(record)
            tx.set(keys.version("alice/dev", "pkg", "1.0"), record)

        self.successResultOf(self.h.store.write(write))

    def test_not_our_schema(self) -> None:
        """A database of another schema version is refused."""
        conn = sqlite3.connect(self.h.serverdir.database)
        conn.execute("PRAGMA user_version=99")
        conn.close()
        with self.assertRaises(DumpError) as e:
            export_dump(self.h.serverdir.path, self.mktemp())
        self.assertIn("is not a devpi_tx database", str(e.exception))

    def test_tox_result_without_release(self) -> None:
        """A tox result whose release link is gone is left out with a warning."""
        self.change_version(lambda record: record["+elinks"].pop(0))
        stats = export_dump(self.h.serverdir.path, self.mktemp())
        self.assertEqual(stats.files, 0)
        (warning,) = stats.warnings
        self.assertIn("without its release file, not exported", warning)

    def test_missing_entry(self) -> None:
        """A link without its file entry stops the export."""
        relpath = self.successResultOf(self.h.store.read(lambda tx: tx.get(keys.version("alice/dev", "pkg", "1.0"))))[
            "+elinks"
        ][0]["entrypath"]
        self.successResultOf(self.h.store.write(lambda tx: tx.delete(keys.file(relpath))))
        with self.assertRaises(DumpError) as e:
            export_dump(self.h.serverdir.path, self.mktemp())
        self.assertIn(f"alice/dev: the file entry of {relpath} is missing", str(e.exception))

    def test_without_upload_time(self) -> None:
        """Links of older records have no upload time: the import takes it from the file's date."""

        def drop(record: dict[str, Any]) -> None:
            for link in record["+elinks"]:
                del link["upload_time"]

        self.change_version(drop)
        dump = self.mktemp()
        export_dump(self.h.serverdir.path, dump)
        self.assertNotIn(
            "upload_time", read_json(os.path.join(dump, "dataindex.json"))["indexes"]["alice/dev"]["files"][0]
        )
        target = self.mktemp()
        import_dump(target, dump)
        page = (
            harness_at(self, target).request("GET", "/alice/dev/+simple/pkg/", headers={"Accept": SIMPLE_JSON}).json()
        )
        self.assertRegex(page["files"][0]["upload-time"], r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.000000Z$")

    def test_mirror_file_without_project(self) -> None:
        """A cached mirror file that names no project is left out with a warning."""
        entry = {"url": "https://files.example/x", "last_modified": "Sun, 22 Nov 2026 00:00:00 GMT"}
        self.successResultOf(self.h.store.write(lambda tx: tx.set(keys.file("root/pypi/+e/files.example/x"), entry)))
        stats = export_dump(self.h.serverdir.path, self.mktemp(), include_mirrored_files=True)
        self.assertEqual(
            stats.warnings, ["root/pypi: root/pypi/+e/files.example/x has no project or version, not exported"]
        )

    def test_dump_path_collision(self) -> None:
        """Doc zips of "a" 1-2 and "a-1" 2 share devpi's dump path; the second goes elsewhere and both come back."""
        # the zips are kept: made again later, their timestamps (2 s steps) may differ
        zips = {name: doc_zip(name) for name in ("a", "a-1")}
        for name, version in (("a", "1-2"), ("a-1", "2")):
            reply = self.h.upload("alice/dev", "alice", name, version, (f"{name}.zip", zips[name]), "doc_upload")
            self.assertEqual(reply.code, 200, reply.body)
        dump = self.mktemp()
        export_dump(self.h.serverdir.path, dump)
        paths = sorted(
            d["relpath"]
            for d in read_json(os.path.join(dump, "dataindex.json"))["indexes"]["alice/dev"]["files"]
            if d["type"] == "doczip"
        )
        self.assertEqual(paths[1], "alice/dev/a-1-2.doc.zip")
        self.assertRegex(paths[0], r"^alice/dev/\+[0-9a-f]{8}/a-1-2\.doc\.zip$")
        target = self.mktemp()
        import_dump(target, dump)
        copy = harness_at(self, target)
        for name, version in (("a", "1-2"), ("a-1", "2")):
            (link,) = copy.request("GET", f"/alice/dev/{name}/{version}").json()["result"]["+links"]
            self.assertEqual(copy.request("GET", link["href"][len(BASE) :], headers={"Accept": "*/*"}).body, zips[name])

    def test_link_fallback(self) -> None:
        """When a hard link cannot be made, the caller is told to copy, with a warning."""
        warnings: list[str] = []
        self.assertIsNone(hard_link(os.path.join(self.mktemp(), "gone"), self.mktemp(), warnings))
        (warning,) = warnings
        self.assertIn("copying files instead", warning)


def comparable(views: dict[str, Any]) -> dict[str, Any]:
    """
    What both servers must show alike: links in any order (devpi-import
    adds them by kind), no empty link list (devpi leaves it out), and
    overwrite log entries without time (ours have none, devpi-import stamps
    the time of the import on them).
    """
    result: dict[str, Any] = json.loads(json.dumps(views))
    for key, view in result.items():
        if key.count("/") != 2:
            continue
        for vdata in view.values():
            vdata["+links"] = sorted(vdata.get("+links", []), key=lambda link: link["href"])
            if not vdata["+links"]:
                del vdata["+links"]
            for link in vdata.get("+links", []):
                for entry in link["log"]:
                    if entry["what"] == "overwrite":
                        entry.pop("when", None)
    return result


class DevpiInteropTests(TestCase):
    """Dumps of devpi-server 6.20.3 import into devpi_tx, and ours into devpi-server."""

    timeout = 600

    async def devpi(self) -> DevpiServer:
        server = DevpiServer(await devpi_venv(), os.path.abspath(self.mktemp()))
        self.addCleanup(server.stop)
        return server

    async def test_devpi_dump_imports(self) -> None:
        """A devpi-export dump imports into devpi_tx and shows the same through the API."""
        server = await self.devpi()
        await server.command("devpi-init")
        await server.start()
        await populate(server, ours=False)
        before = await snapshot(server)
        await server.stop()
        dump = os.path.abspath(self.mktemp())
        await server.command("devpi-export", dump)
        target = self.mktemp()
        stats = import_dump(target, dump)
        ours = harness_at(self, target)
        after = await snapshot(HarnessClient(ours))
        self.assertEqual(comparable(after), comparable(before))
        self.assertEqual(sorted(before["users"]), ["alice", "bob", "root"])
        self.assertEqual(sorted(before["alice/dev/hello-pkg"]), ["1.0", "1.1", "2.0", "3.0"])
        self.assertEqual(before["bob/a"]["bases"], ["bob/b"])
        self.assertEqual(before["bob/child"]["bases"], ["bob/base"])
        self.assertEqual((stats.users, stats.indexes, stats.files), (3, 6, 11))
        self.assertIn("bases cycle bob/a -> bob/b -> bob/a: imported as it is", stats.warnings)
        ours.login("alice", "alicepw")
        self.assertEqual(fsck(target).status, 0)

    async def test_our_dump_imports_into_devpi(self) -> None:
        """Our dump imports with devpi-import, and devpi-server then shows what we showed."""
        source = APIHarness(self)
        await populate(HarnessClient(source), ours=True, cycle=False)
        before = await snapshot(HarnessClient(source))
        dump = os.path.abspath(self.mktemp())
        export_dump(source.serverdir.path, dump)
        server = await self.devpi()
        await server.command("devpi-import", "--no-events", dump)
        await server.start()
        after = await snapshot(server)
        await server.login("alice", "alicepw")
        await server.stop()
        self.assertEqual(comparable(after), comparable(before))
        self.assertEqual(sorted(after["users"]), ["alice", "bob", "root"])
        self.assertEqual(after["alice/dev/hello-pkg"]["1.1"]["yanked"], "broken")
        self.assertEqual(len(after["alice/prod/hello-pkg"]["1.0"]["+links"]), 4)
