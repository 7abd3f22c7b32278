"""
Uploads, simple pages, files, docs, tox results, deletion and push through
the HTTP API in memory (spec 1.9-1.13, 4).
"""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3

from devpi_tx.web.api import PARSE_IN_WRITER
from tests.helpers import make_sdist, make_wheel, multipart, upload_fields
from tests.web.test_api import SIMPLE_JSON, _Base


class UploadTests(_Base):
    def test_upload_and_simple_pages(self) -> None:
        """An uploaded wheel shows on the HTML and PEP 691 pages with hash, metadata and size."""
        name, data = make_wheel("hello-pkg", "1.0", requires_python=">=3.8")
        reply = self.h.upload(
            "alice/dev",
            "alice",
            "hello-pkg",
            "1.0",
            (name, data),
            requires_python=">=3.8",
            description_content_type="text/markdown",
        )
        self.assertEqual(reply.code, 200, reply.phrase)
        sha = hashlib.sha256(data).hexdigest()
        html = self.h.request("GET", "/alice/dev/+simple/hello-pkg/", headers={"Accept": "text/html"})
        self.assertEqual(html.header("Content-Type"), "text/html; charset=utf-8")
        href = f"../../+f/{sha[:3]}/{sha[3:16]}/{name}#sha256={sha}"
        self.assertIn(f'href="{href}"'.encode(), html.body)
        self.assertIn(b'data-requires-python="&gt;=3.8"', html.body)
        page = self.h.request("GET", "/alice/dev/+simple/hello-pkg/", headers={"Accept": SIMPLE_JSON})
        self.assertEqual(page.header("Content-Type"), SIMPLE_JSON)
        body = page.json()
        self.assertEqual(body["meta"]["api-version"], "1.1")
        self.assertEqual(body["versions"], ["1.0"])
        (entry,) = body["files"]
        self.assertEqual(entry["hashes"], {"sha256": sha})
        self.assertEqual(entry["size"], len(data))
        self.assertTrue(entry["upload-time"].endswith("Z"))
        self.assertEqual(entry["requires-python"], ">=3.8")
        # PEP 658: not stored at upload (only its hash), extracted from the wheel when asked for
        stored = os.path.join(self.h.serverdir.files, "alice/dev/+f", sha[:3], sha[3:16], name)
        self.assertTrue(os.path.isfile(stored))
        self.assertFalse(os.path.exists(stored + ".metadata"))
        metadata = self.h.request(
            "GET", f"/alice/dev/+f/{sha[:3]}/{sha[3:16]}/{name}.metadata", headers={"Accept": "*/*"}
        )
        self.assertEqual(metadata.code, 200)
        self.assertEqual(metadata.header("Cache-Control"), "max-age=365000000, immutable, public")
        self.assertIn(b"Name: hello-pkg", metadata.body)
        self.assertEqual(entry["core-metadata"], {"sha256": hashlib.sha256(metadata.body).hexdigest()})
        self.assertIn(f'data-core-metadata="sha256={entry["core-metadata"]["sha256"]}"'.encode(), html.body)
        download = self.h.request("GET", f"/alice/dev/+f/{sha[:3]}/{sha[3:16]}/{name}", headers={"Accept": "*/*"})
        self.assertEqual(download.body, data)
        self.assertEqual(download.header("Cache-Control"), "max-age=365000000, immutable, public")
        version = self.h.request("GET", "/alice/dev/hello-pkg/1.0").json()["result"]
        self.assertEqual(version["requires_python"], ">=3.8")
        self.assertEqual(version["description_content_type"], "text/markdown")
        self.assertEqual(version["+links"][0]["log"][0]["who"], "alice")

    def test_negotiation(self) -> None:
        """pip's Accept gets JSON; an Accept matching neither gets text/html (spec 12)."""
        self.h.upload("alice/dev", "alice", "pkg", "1.0", make_wheel("pkg", "1.0"))
        pip = "application/vnd.pypi.simple.v1+json, application/vnd.pypi.simple.v1+html; q=0.1, text/html; q=0.01"
        self.assertEqual(
            self.h.request("GET", "/alice/dev/+simple/pkg/", headers={"Accept": pip}).header("Content-Type"),
            SIMPLE_JSON,
        )
        odd = self.h.request(
            "GET", "/alice/dev/+simple/pkg/", headers={"Accept": "application/vnd.pypi.simple.v1+html"}
        )
        self.assertEqual(odd.header("Content-Type"), "text/html; charset=utf-8")
        root = self.h.request("GET", "/alice/dev/+simple/", headers={"Accept": SIMPLE_JSON}).json()
        self.assertEqual(root["projects"], [{"name": "pkg"}])
        html = self.h.request("GET", "/alice/dev/+simple/", headers={"Accept": "text/html"})
        self.assertIn(b'<a href="pkg/">pkg</a>', html.body)
        installer = self.h.request("GET", "/alice/dev/pkg/", headers={"Accept": "*/*", "User-Agent": "pip/24.0 {}"})
        self.assertIn(b"pkg-1.0-py3-none-any.whl", installer.body)

    def test_redirect_to_normalized(self) -> None:
        """GETs with a non-normalised project name redirect to the normalised URL."""
        self.h.upload("alice/dev", "alice", "Hello_Pkg", "1.0", make_wheel("Hello_Pkg", "1.0"))
        reply = self.h.request("GET", "/alice/dev/+simple/Hello_Pkg/", headers={"Accept": "text/html"})
        self.assertEqual(reply.code, 302)
        self.assertEqual(reply.header("Location"), "http://127.0.0.1:3141/alice/dev/+simple/hello-pkg/")
        self.assertEqual(self.h.request("GET", "/alice/dev/+simple/hello-pkg/").code, 200)
        self.assertEqual(self.h.request("GET", "/alice/dev/+simple/nothing/").code, 404)
        self.assertEqual(self.h.request("GET", "/alice/dev/+simple/h%C3%A9/").code, 400)

    def test_page_cache_follows_commits(self) -> None:
        """A cached page changes as soon as an upload or delete commits."""
        self.h.upload("alice/dev", "alice", "pkg", "1.0", make_wheel("pkg", "1.0"))
        first = self.h.request("GET", "/alice/dev/+simple/pkg/", headers={"Accept": SIMPLE_JSON}).json()
        self.assertEqual(first["versions"], ["1.0"])
        self.h.upload("alice/dev", "alice", "pkg", "1.1", make_wheel("pkg", "1.1"))
        second = self.h.request("GET", "/alice/dev/+simple/pkg/", headers={"Accept": SIMPLE_JSON}).json()
        self.assertEqual(second["versions"], ["1.0", "1.1"])
        self.assertEqual(self.h.request("DELETE", "/alice/dev/pkg/1.0", user="alice").code, 200)
        third = self.h.request("GET", "/alice/dev/+simple/pkg/", headers={"Accept": SIMPLE_JSON}).json()
        self.assertEqual(third["versions"], ["1.1"])
        self.assertGreater(self.h.api.pages.hits + self.h.api.pages.misses, 2)

    def test_reupload_rules(self) -> None:
        """Non-volatile: identical 200, different 409; volatile: replaced with an overwrite log."""
        wheel = make_wheel("pkg", "1.0")
        self.h.upload("alice/dev", "alice", "pkg", "1.0", wheel)
        self.h.request("PATCH", "/alice/dev", ["volatile=False"], user="alice")
        same = self.assert_no_trace(self.h.upload, "alice/dev", "alice", "pkg", "1.0", wheel)
        self.assertEqual((same.code, same.phrase), (200, b"Upload of identical file to non volatile index."))
        other = self.assert_no_trace(
            self.h.upload, "alice/dev", "alice", "pkg", "1.0", make_wheel("pkg", "1.0", extra="x")
        )
        self.assertEqual(other.code, 409)
        self.assertEqual(other.phrase, b"pkg-1.0-py3-none-any.whl already exists in non-volatile index")
        self.h.request("PATCH", "/alice/dev", ["volatile=True"], user="alice")
        new = make_wheel("pkg", "1.0", extra="y")
        self.assertEqual(self.h.upload("alice/dev", "alice", "pkg", "1.0", new).code, 200)
        links = self.h.request("GET", "/alice/dev/pkg/1.0").json()["result"]["+links"]
        self.assertEqual(len(links), 1)
        self.assertEqual(links[0]["hashes"]["sha256"], hashlib.sha256(new[1]).hexdigest())
        self.assertEqual(links[0]["log"][0], {"what": "overwrite", "who": None, "count": 1})
        wheels = [f for f in self.h.stored_files() if f.endswith(".whl")]
        self.assertEqual(len(wheels), 1)

    def test_bad_uploads(self) -> None:
        """Bad upload forms get a 4xx reason and leave no file and no metadata."""
        wheel = make_wheel("pkg", "1.0")
        cases = [
            (upload_fields("pkg", "2.0"), [("content", *wheel)], 400, "does not contain version"),
            (upload_fields("other", "1.0"), [("content", *wheel)], 400, "does not match project name"),
            (upload_fields("pkg", "1.0"), [("content", "pkg-1.0.exe.txt", b"x")], 400, "not a valid archive name"),
            (upload_fields("pkg", "1.0"), [("content", "../pkg-1.0.whl", wheel[1])], 400, "invalid filename"),
            (upload_fields("pkg", "1.0"), [("content", "/abs/pkg-1.0.whl", wheel[1])], 400, "invalid filename"),
            (upload_fields("pkg", "1.0"), [("content", "pkg-1.0\x00.whl", wheel[1])], 400, "invalid filename"),
            (upload_fields("pkg", "1.0"), [], 400, "content file field not found"),
            (upload_fields("pk/g", "1.0"), [("content", *wheel)], 400, "invalid project name"),
            (upload_fields("p" * 300, "1.0"), [("content", *wheel)], 400, "longer than"),
            (upload_fields("pkg", ""), [("content", *wheel)], 400, "version"),
            ([("name", "pkg"), ("version", "1.0")], [("content", *wheel)], 400, ":action field not found"),
            (upload_fields("pkg", "1.0", action="bogus"), [("content", *wheel)], 400, "not supported"),
        ]
        for fields, files, code, reason in cases:
            body, ctype = multipart(fields, files)
            reply = self.assert_no_trace(
                self.h.request, "POST", "/alice/dev/", raw=body, headers={"Content-Type": ctype}, user="alice"
            )
            self.assertEqual(reply.code, code, (fields, reply.phrase))
            self.assertIn(reason.encode(), reply.phrase)
        self.assertEqual(self.h.request("GET", "/alice/dev").json()["result"]["projects"], [])

    def test_bad_form_before_write_lock(self) -> None:
        """
        A form without an action, or with an unknown one, is refused before
        the write transaction: with another process holding the write lock,
        the 400 still comes at once.
        """
        other = sqlite3.connect(self.h.serverdir.database, timeout=0, isolation_level=None)
        self.addCleanup(other.close)
        other.execute("BEGIN IMMEDIATE")
        self.addCleanup(other.execute, "ROLLBACK")
        wheel = make_wheel("pkg", "1.0")
        for fields, reason in (([("name", "pkg"), ("version", "1.0")], ":action field not found"),
                               (upload_fields("pkg", "1.0", action="bogus"), "not supported")):  # fmt: skip
            body, ctype = multipart(fields, [("content", *wheel)])
            reply = self.h.request("POST", "/alice/dev/", raw=body, headers={"Content-Type": ctype}, user="alice")
            self.assertEqual(reply.code, 400, reply.phrase)
            self.assertIn(reason.encode(), reply.phrase)
        self.assertEqual(self.h.stored_files(), [])

    def test_large_upload(self) -> None:
        """
        A body larger than L{PARSE_IN_WRITER} is parsed before the write
        rather than in it: stored and served the same; truncated, a 400 with
        no trace.
        """
        name, data = make_wheel("big-pkg", "1.0", extra=os.urandom(PARSE_IN_WRITER // 2 + 1000).hex())
        self.assertGreater(len(data), PARSE_IN_WRITER)
        body, ctype = multipart(upload_fields("big-pkg", "1.0"), [("content", name, data)])
        broken = self.assert_no_trace(
            self.h.request, "POST", "/alice/dev/", raw=body[:-1000], headers={"Content-Type": ctype}, user="alice"
        )
        self.assertEqual(broken.code, 400, broken.phrase)
        self.assertEqual(self.h.upload("alice/dev", "alice", "big-pkg", "1.0", (name, data)).code, 200)
        sha = hashlib.sha256(data).hexdigest()
        path = f"/alice/dev/+f/{sha[:3]}/{sha[3:16]}/{name}"
        self.assertEqual(self.h.request("GET", path, headers={"Accept": "*/*"}).body, data)
        self.assertIn(b"Name: big-pkg", self.h.request("GET", path + ".metadata", headers={"Accept": "*/*"}).body)

    def test_malformed_multipart(self) -> None:
        """A truncated or boundary-less multipart body is a 400 with no trace."""
        body, ctype = multipart(upload_fields("pkg", "1.0"), [("content", *make_wheel("pkg", "1.0"))])
        for raw, header in ((body[: len(body) // 2], ctype), (body, "multipart/form-data")):
            reply = self.assert_no_trace(
                self.h.request, "POST", "/alice/dev/", raw=raw, headers={"Content-Type": header}, user="alice"
            )
            self.assertEqual(reply.code, 400, reply.phrase)
        self.assertEqual(self.h.stored_files(), [])

    def test_upload_permissions(self) -> None:
        """Anonymous: 401 with a Basic challenge; strangers 403; acl_upload grants."""
        wheel = make_wheel("pkg", "1.0")
        anon = self.assert_no_trace(self.h.upload, "alice/dev", None, "pkg", "1.0", wheel)
        self.assertEqual(anon.code, 401)
        self.assertEqual(anon.header("WWW-Authenticate"), 'Basic realm="pypi"')
        self.h.create_user("bob")
        stranger = self.assert_no_trace(self.h.upload, "alice/dev", "bob", "pkg", "1.0", wheel)
        self.assertEqual((stranger.code, stranger.phrase), (403, b"no permission to submit"))
        self.h.request("PATCH", "/alice/dev", ["acl_upload+=bob"], user="alice")
        self.assertEqual(self.h.upload("alice/dev", "bob", "pkg", "1.0", wheel).code, 200)
        mirror = self.h.upload("root/pypi", "root", "pkg", "1.0", wheel)
        self.assertEqual((mirror.code, mirror.phrase), (404, b"cannot submit to mirror index"))

    def test_register_and_docs(self) -> None:
        """:action=submit registers metadata; doc zips upload, list and download."""
        body, ctype = multipart(upload_fields("pkg", "2.0", action="submit", summary="S"))
        self.assertEqual(
            self.h.request("POST", "/alice/dev", raw=body, headers={"Content-Type": ctype}, user="alice").code, 200
        )
        self.assertEqual(self.h.request("GET", "/alice/dev/pkg/2.0").json()["result"]["summary"], "S")
        reply = self.h.upload("alice/dev", "alice", "pkg", "2.0", ("pkg-2.0.doc.zip", b"PK-docs"), action="doc_upload")
        self.assertEqual(reply.code, 200, reply.phrase)
        links = self.h.request("GET", "/alice/dev/pkg/2.0").json()["result"]["+links"]
        self.assertEqual([link["rel"] for link in links], ["doczip"])
        self.assertTrue(links[0]["href"].endswith("/pkg-2.0.doc.zip"))
        path = links[0]["href"].split("3141", 1)[1]
        self.assertEqual(self.h.request("GET", path, headers={"Accept": "*/*"}).body, b"PK-docs")
        nover = self.h.upload("alice/dev", "alice", "none", "", ("none.zip", b"x"), action="doc_upload")
        self.assertEqual(nover.code, 400)

    def test_toxresults(self) -> None:
        """Tox results attach to release files; bad JSON and non-release targets are refused."""
        name, data = make_sdist("pkg", "1.0")
        self.h.upload("alice/dev", "alice", "pkg", "1.0", (name, data))
        sha = hashlib.sha256(data).hexdigest()
        path = f"/alice/dev/+f/{sha[:3]}/{sha[3:16]}/{name}"
        reply = self.h.request("POST", path, {"testenvs": {}})
        self.assertEqual(reply.code, 200, reply.body)
        self.assertIn(".toxresult-", reply.json()["result"])
        bad = self.assert_no_trace(self.h.request, "POST", path, raw=b"{no json")
        self.assertEqual(bad.code, 400)
        missing = self.assert_no_trace(self.h.request, "POST", path + "x", {"a": 1})
        self.assertEqual(missing.code, 404)
        links = self.h.request("GET", "/alice/dev/pkg/1.0").json()["result"]["+links"]
        tox = [link for link in links if link["rel"] == "toxresult"]
        self.assertEqual(tox[0]["for_href"], "http://127.0.0.1:3141" + path)
        self.h.request("PATCH", "/alice/dev", ["acl_toxresult_upload=alice"], user="alice")
        denied = self.assert_no_trace(self.h.request, "POST", path, {"a": 1})
        self.assertEqual(denied.code, 403)


class DeleteAndPushTests(_Base):
    def setUp(self) -> None:
        super().setUp()
        self.wheel = make_wheel("pkg", "1.0")
        self.sdist = make_sdist("pkg", "1.0")
        self.h.upload("alice/dev", "alice", "pkg", "1.0", self.wheel)
        self.h.upload("alice/dev", "alice", "pkg", "1.0", self.sdist)
        self.h.request("PUT", "/alice/prod", {"volatile": False}, user="alice")

    def _file_path(self, stage: str, archive: tuple[str, bytes]) -> str:
        sha = hashlib.sha256(archive[1]).hexdigest()
        return f"/{stage}/+f/{sha[:3]}/{sha[3:16]}/{archive[0]}"

    def test_delete_file_version_project(self) -> None:
        """Deleting files, then the last one, removes the version and project."""
        path = self._file_path("alice/dev", self.wheel)
        self.assertEqual(self.h.request("DELETE", path, user="alice").code, 200)
        self.assertEqual(self.h.request("GET", path, headers={"Accept": "*/*"}).code, 404)
        self.assertEqual(self.h.request("DELETE", self._file_path("alice/dev", self.sdist), user="alice").code, 200)
        self.assertEqual(self.h.request("GET", "/alice/dev/pkg/", headers={"Accept": "application/json"}).code, 404)
        self.assertEqual(self.h.stored_files(), [])

    def test_served_file_table_follows_commits(self) -> None:
        """
        A stored file is answered from the table of known files, with the
        same body and headers; deleting it drops it from the table.
        """
        newer = make_wheel("pkg", "1.1")
        self.h.upload("alice/dev", "alice", "pkg", "1.1", newer)
        self.assertIn(self._file_path("alice/dev", newer)[1:], self.h.api._known_files)  # from its upload's commit
        path = self._file_path("alice/dev", self.wheel)
        first = self.h.request("GET", path, headers={"Accept": "*/*"})
        self.assertIn(path[1:], self.h.api._known_files)
        second = self.h.request("GET", path, headers={"Accept": "*/*"})
        self.assertEqual((second.code, second.body), (200, self.wheel[1]))
        for name in ("Content-Type", "Cache-Control", "Last-Modified", "Content-Length", "X-Devpi-Serial"):
            self.assertEqual(second.header(name), first.header(name), name)
        meta = self.h.request("GET", path, headers={"Accept": "application/json"})
        self.assertEqual(meta.json()["result"]["hash_spec"].split("=")[0], "sha256")
        self.assertEqual(self.h.request("DELETE", path, user="alice").code, 200)
        self.assertNotIn(path[1:], self.h.api._known_files)
        self.assertEqual(self.h.request("GET", path, headers={"Accept": "*/*"}).code, 404)

    def test_byte_ranges(self) -> None:
        """
        Stored files answer a single byte range with 206 and Content-Range,
        a range past the end with 416; several ranges, other units, a
        malformed header or a stale If-Range get the whole file.
        """
        path = self._file_path("alice/dev", self.wheel)
        data = self.wheel[1]
        size = len(data)
        whole = self.h.request("GET", path, headers={"Accept": "*/*"})
        self.assertEqual(whole.header("Accept-Ranges"), "bytes")
        for asked, first, last in [("bytes=0-3", 0, 3), ("bytes=-4", size - 4, size - 1), ("bytes=10-", 10, size - 1),
                                   (f"bytes=5-{size + 100}", 5, size - 1), (f"bytes=-{size + 5}", 0, size - 1)]:  # fmt: skip
            reply = self.h.request("GET", path, headers={"Accept": "*/*", "Range": asked})
            self.assertEqual(reply.code, 206, asked)
            self.assertEqual(reply.body, data[first : last + 1], asked)
            self.assertEqual(reply.header("Content-Range"), f"bytes {first}-{last}/{size}", asked)
        head = self.h.request("HEAD", path, headers={"Accept": "*/*", "Range": "bytes=0-9"})
        self.assertEqual((head.code, head.header("Content-Range"), head.body), (206, f"bytes 0-9/{size}", b""))
        for asked in (f"bytes={size}-", "bytes=-0"):
            reply = self.h.request("GET", path, headers={"Accept": "*/*", "Range": asked})
            self.assertEqual(
                (reply.code, reply.header("Content-Range"), reply.body), (416, f"bytes */{size}", b""), asked
            )
        for asked in ("bytes=0-1,4-5", "items=0-3", "bytes=abc", "bytes=9-2", "bytes=-"):
            reply = self.h.request("GET", path, headers={"Accept": "*/*", "Range": asked})
            self.assertEqual((reply.code, reply.body), (200, data), asked)
        stamp = whole.header("Last-Modified")
        assert stamp is not None
        fresh = self.h.request("GET", path, headers={"Accept": "*/*", "Range": "bytes=0-3", "If-Range": stamp})
        self.assertEqual((fresh.code, fresh.body), (206, data[:4]))
        stale = self.h.request(
            "GET", path, headers={"Accept": "*/*", "Range": "bytes=0-3", "If-Range": "Mon, 01 Jan 2001 00:00:00 GMT"}
        )
        self.assertEqual((stale.code, stale.body), (200, data))

    def test_nonvolatile_needs_force(self) -> None:
        """On a non-volatile index deletes need C{?force}; strangers are refused."""
        self.h.request("PATCH", "/alice/dev", ["volatile=False"], user="alice")
        reply = self.assert_no_trace(self.h.request, "DELETE", "/alice/dev/pkg/1.0", user="alice")
        self.assertEqual(reply.code, 403)
        self.h.create_user("bob")
        reply = self.assert_no_trace(self.h.request, "DELETE", "/alice/dev/pkg?force", user="bob")
        self.assertEqual(reply.code, 403)
        self.assertEqual(self.h.request("DELETE", "/alice/dev/pkg?force", user="alice").code, 200)
        self.assertEqual(self.h.stored_files(), [])

    def test_push(self) -> None:
        """Push copies files with a push log entry; conflicts change nothing."""
        body = {"name": "pkg", "version": "1.0", "targetindex": "alice/prod"}
        reply = self.h.request("PUSH", "/alice/dev", body, user="alice")
        self.assertEqual(reply.code, 200, reply.body)
        log = reply.json()["result"]
        self.assertEqual(log[0], [200, "register", "pkg", "1.0", "->", "alice/prod"])
        self.assertEqual(len([e for e in log if e[1] == "store_releasefile"]), 2)
        links = self.h.request("GET", "/alice/prod/pkg/1.0").json()["result"]["+links"]
        self.assertEqual(links[0]["log"][-1]["what"], "push")
        self.assertEqual(
            self.h.request("GET", self._file_path("alice/prod", self.wheel), headers={"Accept": "*/*"}).body,
            self.wheel[1],
        )
        source_meta = self.h.request(
            "GET", self._file_path("alice/dev", self.wheel) + ".metadata", headers={"Accept": "*/*"}
        )
        pushed_meta = self.h.request(
            "GET", self._file_path("alice/prod", self.wheel) + ".metadata", headers={"Accept": "*/*"}
        )
        self.assertEqual((source_meta.code, pushed_meta.code), (200, 200))
        self.assertIn(b"Name: pkg", pushed_meta.body)
        self.assertEqual(pushed_meta.body, source_meta.body)
        # the same push again is identical: nothing changes
        again = self.assert_no_trace(self.h.request, "PUSH", "/alice/dev", body, user="alice")
        self.assertEqual(again.code, 200)
        # a different file under the same name conflicts and changes nothing
        self.h.upload("alice/dev", "alice", "pkg", "1.0", make_wheel("pkg", "1.0", extra="z"))
        conflict = self.assert_no_trace(self.h.request, "PUSH", "/alice/dev", body, user="alice")
        self.assertEqual(conflict.code, 409)

    def test_push_errors(self) -> None:
        """Push without name/version is 400 (spec 12); no permission is 401."""
        for body, code in (
            ({"targetindex": "alice/prod"}, 400),
            ({"name": "pkg", "version": "9", "targetindex": "alice/prod"}, 400),
            ({"name": "pkg", "version": "1.0", "targetindex": "nope"}, 400),
            ({"name": "pkg", "version": "1.0", "targetindex": "alice/prod", "x": 1}, 400),
            ({"name": "pkg", "version": "1.0", "targetindex": "root/pypi"}, 401),
        ):
            reply = self.assert_no_trace(self.h.request, "PUSH", "/alice/dev", body, user="alice")
            self.assertEqual(reply.code, code, (body, reply.body))

    def test_yank(self) -> None:
        """Yanking shows in both simple formats; unyanking removes it."""
        reply = self.h.request("PATCH", "/alice/dev/pkg/1.0", {"yanked": "broken"}, user="alice")
        self.assertEqual(reply.code, 200, reply.body)
        files = self.h.request("GET", "/alice/dev/+simple/pkg/", headers={"Accept": SIMPLE_JSON}).json()["files"]
        self.assertEqual({f["yanked"] for f in files}, {"broken"})
        html = self.h.request("GET", "/alice/dev/+simple/pkg/", headers={"Accept": "text/html"}).body
        self.assertEqual(html.count(b'data-yanked="broken"'), 2)
        self.h.request("PATCH", "/alice/dev/pkg/1.0", {"yanked": False}, user="alice")
        files = self.h.request("GET", "/alice/dev/+simple/pkg/", headers={"Accept": SIMPLE_JSON}).json()["files"]
        self.assertNotIn("yanked", files[0])
        self.h.create_user("bob")
        self.assertEqual(self.h.request("PATCH", "/alice/dev/pkg/1.0", {"yanked": True}, user="bob").code, 403)
        self.assertEqual(self.h.request("PATCH", "/alice/dev/pkg/1.0", {"yanked": 3}, user="alice").code, 400)

    def test_inheritance(self) -> None:
        """A derived index merges its bases; the first basename wins; shadowing is listed."""
        self.h.request("PUT", "/alice/derived", {"bases": ["alice/dev"]}, user="alice")
        self.h.upload("alice/derived", "alice", "pkg", "1.0", make_wheel("pkg", "1.0", extra="own"))
        self.h.upload("alice/derived", "alice", "pkg", "2.0", make_wheel("pkg", "2.0"))
        page = self.h.request("GET", "/alice/derived/+simple/pkg/", headers={"Accept": SIMPLE_JSON}).json()
        self.assertEqual(page["versions"], ["1.0", "2.0"])
        names = [f["filename"] for f in page["files"]]
        self.assertEqual(sorted(names), ["pkg-1.0-py3-none-any.whl", "pkg-1.0.tar.gz", "pkg-2.0-py3-none-any.whl"])
        wheel = next(f for f in page["files"] if f["filename"] == "pkg-1.0-py3-none-any.whl")
        self.assertTrue(wheel["url"].startswith("../../+f/"))
        sdist = next(f for f in page["files"] if f["filename"] == "pkg-1.0.tar.gz")
        self.assertTrue(sdist["url"].startswith("../../../dev/+f/"))
        project = self.h.request("GET", "/alice/derived/pkg/").json()["result"]
        self.assertEqual(len(project["1.0"]["+shadowing"]), 1)
        own = self.h.request("GET", "/alice/derived/pkg/?ignore_bases").json()["result"]
        self.assertNotIn("+shadowing", own["1.0"])
        listing = self.h.request("GET", "/alice/derived/+simple/", headers={"Accept": SIMPLE_JSON}).json()
        self.assertEqual(listing["projects"], [{"name": "pkg"}])
        self.assertEqual(
            json.loads(self.h.request("GET", self._file_path("alice/dev", self.wheel)).body)["type"], "releasefilemeta"
        )


class PathSafetyTests(_Base):
    def test_traversal_in_urls(self) -> None:
        """Encoded dot segments, NUL and absolute paths in URLs are refused without touching disk."""
        self.h.upload("alice/dev", "alice", "pkg", "1.0", make_wheel("pkg", "1.0"))
        for path in (
            "/alice/dev/+f/%2e%2e/%2e%2e/%2e%2e/devpi_tx.sqlite",
            "/alice/dev/+f/../../../devpi_tx.sqlite",
            "/alice/dev/+f/abc/%00/x.whl",
            "/alice/dev/+f//etc/passwd",
            "/alice/%2e%2e/+simple/pkg/",
        ):
            reply = self.h.request("GET", path, headers={"Accept": "*/*"})
            self.assertIn(reply.code, (400, 404), (path, reply.code))
            self.assertNotIn(b"SQLite", reply.body)
        reply = self.assert_no_trace(self.h.request, "PUT", "/alice/%2e%2e", {}, user="alice")
        self.assertEqual(reply.code, 400)

    def test_acl_principals(self) -> None:
        """C{:AUTHENTICATED:} in acl_upload admits any logged-in user but not anonymous ones."""
        self.h.create_user("bob")
        reply = self.h.request("PATCH", "/alice/dev", ["acl_upload=:authenticated:"], user="alice")
        self.assertEqual(reply.json()["result"]["acl_upload"], [":AUTHENTICATED:"])
        self.assertEqual(self.h.upload("alice/dev", "bob", "pkg", "1.0", make_wheel("pkg", "1.0")).code, 200)
        self.assertEqual(self.h.upload("alice/dev", None, "pkg", "1.1", make_wheel("pkg", "1.1")).code, 401)
        self.h.request("PATCH", "/alice/dev", ["acl_upload=:ANONYMOUS:"], user="alice")
        self.assertEqual(self.h.upload("alice/dev", None, "pkg", "1.1", make_wheel("pkg", "1.1")).code, 200)

    def test_refresh_redirects(self) -> None:
        """C{+simple/P/refresh} redirects to the project page (devpi answers 500 when offline)."""
        reply = self.h.request("POST", "/alice/dev/+simple/pkg/refresh")
        self.assertEqual(reply.code, 302)
        location = reply.header("Location")
        assert location is not None
        self.assertTrue(location.endswith("/alice/dev/+simple/pkg/"))

    def test_cached_page_hit(self) -> None:
        """The second request for a page is answered from the page cache."""
        self.h.upload("alice/dev", "alice", "pkg", "1.0", make_wheel("pkg", "1.0"))
        first = self.h.request("GET", "/alice/dev/+simple/pkg/", headers={"Accept": SIMPLE_JSON})
        hits = self.h.api.pages.hits
        second = self.h.request("GET", "/alice/dev/+simple/pkg/", headers={"Accept": SIMPLE_JSON})
        self.assertEqual(self.h.api.pages.hits, hits + 1)
        self.assertEqual(first.body, second.body)
        self.assertEqual(second.header("Content-Type"), SIMPLE_JSON)
        self.assertEqual(second.header("X-Devpi-Api-Version"), "2")
