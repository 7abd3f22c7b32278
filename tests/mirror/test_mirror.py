"""
Mirror indexes in memory: the API over a real server dir, the fake upstream
reached through StubTreq, time on a Clock.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from typing import Any, cast
from urllib.parse import unquote, urljoin, urlsplit

from twisted.internet.defer import Deferred
from twisted.logger import ILogObserver, globalLogPublisher
from twisted.trial.unittest import SynchronousTestCase

from devpi_tx.admin.fsck import fsck
from devpi_tx.domain import keys
from devpi_tx.web.pagecache import PageCache
from tests.fakeupstream import FakeUpstream
from tests.helpers import APIHarness, make_wheel

SIMPLE_JSON = "application/vnd.pypi.simple.v1+json"
HTML = {"Accept": "text/html"}
JSON = {"Accept": SIMPLE_JSON}


class _PagesUpstream(FakeUpstream):
    """The fake upstream, plus pages and files given verbatim."""

    def __init__(self, reactor: Any) -> None:
        super().__init__(reactor)
        self.pages: dict[str, tuple[str, bytes]] = {}  # path -> (content type, body)
        self.blobs: dict[str, bytes] = {}  # unquoted path -> file

    def _body(self, request: Any, path: str) -> Any:
        if path in self.pages:
            content_type, body = self.pages[path]
            request.setHeader(b"Content-Type", content_type.encode())
            return body
        if unquote(path) in self.blobs:
            return self.blobs[unquote(path)]
        return super()._body(request, path)


class _MirrorBase(SynchronousTestCase):
    offline = False

    def setUp(self) -> None:
        self.up = _PagesUpstream(reactor=None)
        self.wheel = self.up.add("requests", "2.0", requires_python=">=3.8")
        self.sdist = self.up.add("requests", "2.0", kind="sdist")
        self.old = self.up.add("requests", "1.0", yanked="broken")
        self.h = APIHarness(self, upstream=self.up, offline=self.offline)
        self.up.reactor = self.h.clock
        self.h.login("root", "")

    def page(self, path: str = "/root/pypi/+simple/requests/", headers: dict[str, str] = JSON):  # type: ignore[no-untyped-def]
        return self.h.request("GET", path, headers=headers)

    def file_path(self, fake) -> str:  # type: ignore[no-untyped-def]
        sha = hashlib.sha256(fake.data).hexdigest()
        return f"/root/pypi/+f/{sha[:3]}/{sha[3:16]}/{fake.filename}"


class MirrorPageTests(_MirrorBase):
    def test_fetched_page_is_cached_at_once(self) -> None:
        """The page built while fetching from upstream is kept: the next request is a page-cache hit."""
        first = self.page()
        hits = self.h.api.pages.hits
        second = self.page()
        self.assertEqual(self.h.api.pages.hits, hits + 1)
        self.assertEqual(second.body, first.body)
        self.assertEqual(self.up.requests["/simple/requests/"], 1)

    def test_own_write_does_not_make_a_page_stale(self) -> None:
        """
        A page computed at serial S and showing its own commit W is kept;
        if another commit touched the project between S and W it is not.
        """
        cache = PageCache(self.h.store)
        page = (b"text/html", b"page", (), None)

        def write(key: str, value: Any) -> int:
            return int(self.successResultOf(self.h.store.write(lambda tx: tx.set(key, value)))[1])

        start = self.h.store.current_serial()
        own = write("m/root/pypi/alpha", {"links": [1]})
        self.assertTrue(cache.put("alpha", ("k",), start, page, own_write=own))
        self.assertEqual(cache.get("alpha", ("k",)), page)
        start = self.h.store.current_serial()
        write("m/root/pypi/beta", {"links": [1]})  # someone else's change to beta
        own = write("m/root/pypi/beta", {"links": [2]})
        self.assertFalse(cache.put("beta", ("k",), start, page, own_write=own))
        self.assertFalse(cache.put("beta", ("k",), start, page))
        self.assertIsNone(cache.get("beta", ("k",)))

    def test_links_rewritten(self) -> None:
        """Upstream links become our +f URLs with hashes, yanked, requires-python, size, metadata."""
        reply = self.page()
        self.assertEqual(reply.code, 200, reply.body)
        body = reply.json()
        self.assertEqual(body["versions"], ["1.0", "2.0"])
        files = {f["filename"]: f for f in body["files"]}
        wheel = files[self.wheel.filename]
        sha = hashlib.sha256(self.wheel.data).hexdigest()
        self.assertEqual(wheel["url"], f"../../+f/{sha[:3]}/{sha[3:16]}/{self.wheel.filename}")
        self.assertEqual(wheel["hashes"], {"sha256": sha})
        self.assertEqual(wheel["requires-python"], ">=3.8")
        self.assertEqual(wheel["size"], len(self.wheel.data))
        self.assertEqual(wheel["upload-time"], "2026-01-02T03:04:05.000000Z")
        self.assertIn("core-metadata", wheel)
        self.assertEqual(files[self.old.filename]["yanked"], "broken")
        self.assertEqual(reply.header("X-PYPI-LAST-SERIAL"), str(self.up.serial))
        html = self.page(headers=HTML)
        self.assertIn(f"#sha256={sha}".encode(), html.body)
        self.assertIn(b'data-yanked="broken"', html.body)
        self.assertNotIn(b"upstream.test", html.body)

    def test_html_upstream(self) -> None:
        """A PEP 503 HTML upstream is understood as well."""
        self.up.json = False
        body = self.page().json()
        self.assertEqual(len(body["files"]), 3)
        self.assertEqual(body["versions"], ["1.0", "2.0"])

    def test_cached_until_expiry_then_revalidated(self) -> None:
        """A page is fetched once; after the expiry it is revalidated with its ETag (304)."""
        self.page()
        self.page()
        self.page(headers=HTML)
        self.assertEqual(self.up.requests["/simple/requests/"], 1)
        self.h.clock.advance(1801)
        self.assertEqual(self.page().code, 200)
        self.assertEqual(self.up.requests["/simple/requests/"], 2)
        serial = self.h.store.current_serial()
        self.h.clock.advance(1801)
        self.page()
        self.assertEqual(self.h.store.current_serial(), serial, "a 304 writes nothing")

    def test_new_upstream_release_after_expiry(self) -> None:
        """A release added upstream shows once the cached page expired."""
        self.page()
        self.up.add("requests", "3.0")
        self.assertEqual(self.page().json()["versions"], ["1.0", "2.0"])
        self.h.clock.advance(1801)
        self.assertEqual(self.page().json()["versions"], ["1.0", "2.0", "3.0"])

    def test_stale_when_upstream_fails(self) -> None:
        """Upstream errors, garbage and timeouts serve the cached page marked stale."""
        self.page()
        for knob in ("status", "garbage", "hang"):
            self.h.clock.advance(1801)
            if knob == "status":
                self.up.status["/simple/requests/"] = 500
            elif knob == "garbage":
                del self.up.status["/simple/requests/"]
                self.up.body_override["/simple/requests/"] = b"\x00garbage{"
            else:
                del self.up.body_override["/simple/requests/"]
                self.up.hang.add("/simple/requests/")
            pending = self.h.treq.request("GET", "http://127.0.0.1:3141/root/pypi/+simple/requests/", headers=JSON)
            self.h.flush()
            self.h.clock.advance(6)
            self.h.flush(pending)
            response = self.successResultOf(pending)
            self.assertEqual(response.code, 200, knob)
            self.assertIn(b"no-cache", response.headers.getRawHeaders(b"Cache-Control")[0], knob)

    def test_errors_without_cache(self) -> None:
        """Without a cached page upstream failures are 502 with a message; unknown projects 404."""
        self.up.status["/simple/requests/"] = 503
        reply = self.page("/root/pypi/+simple/requests/", headers={"Accept": "application/json"})
        self.assertEqual(reply.code, 502)
        self.assertIn("503", reply.json()["message"])
        self.assertEqual(self.page("/root/pypi/+simple/nothing/").code, 404)
        asked = sum(self.up.requests.values())
        self.assertEqual(self.page("/root/pypi/+simple/nothing/").code, 404)
        self.assertEqual(sum(self.up.requests.values()), asked, "not-found answers are cached")
        self.up.extra_names.append("slow")
        self.page("/root/pypi/+simple/")  # a loaded list that names it: upstream is asked for the page
        self.page("/root/pypi/+simple/other/")
        self.up.hang.add("/simple/slow/")
        pending = self.h.treq.request("GET", "http://127.0.0.1:3141/root/pypi/+simple/slow/", headers=JSON)
        self.h.flush()
        self.h.clock.advance(6)
        self.h.flush(pending)
        self.assertEqual(self.successResultOf(pending).code, 502)

    def test_older_serial_is_an_error(self) -> None:
        """An upstream answer with an older X-PYPI-LAST-SERIAL is not stored."""
        self.page()
        self.up.add("requests", "3.0")
        self.up.serial = 5
        self.h.clock.advance(1801)
        reply = self.page()
        self.assertEqual(reply.json()["versions"], ["1.0", "2.0"])
        self.assertIn("no-cache", reply.header("Cache-Control"))
        self.h.request("PATCH", "/root/pypi", ["mirror_ignore_serial_header=True"], user="root")
        self.h.clock.advance(1801)
        self.assertEqual(self.page().json()["versions"], ["1.0", "2.0", "3.0"])

    def test_refresh(self) -> None:
        """+simple/P/refresh fetches again at once and redirects."""
        self.page()
        self.up.add("requests", "3.0")
        reply = self.h.request("POST", "/root/pypi/+simple/requests/refresh")
        self.assertEqual(reply.code, 302)
        self.assertEqual(self.up.requests["/simple/requests/"], 2)
        self.assertEqual(self.page().json()["versions"], ["1.0", "2.0", "3.0"])

    def test_project_page_does_not_load_the_list(self) -> None:
        """
        A project page asks upstream for that page only; once +simple/ has
        loaded the list, names it lacks are answered without asking upstream.
        """
        self.page()
        self.assertEqual(self.page("/root/pypi/+simple/nothing/").code, 404)
        self.assertEqual(self.up.requests["/simple/"], 0)
        self.assertEqual(self.up.requests["/simple/nothing/"], 1)
        self.page("/root/pypi/+simple/")
        self.assertEqual(self.up.requests["/simple/"], 1)
        self.assertEqual(self.page("/root/pypi/+simple/absent/").code, 404)
        self.assertEqual(self.up.requests["/simple/absent/"], 0)

    def test_project_lists(self) -> None:
        """The mirror's +simple/ lists upstream names; a stage adds its own first."""
        self.up.extra_names = ["zope-x", "Other_Name"]
        names = [p["name"] for p in self.page("/root/pypi/+simple/").json()["projects"]]
        self.assertEqual(sorted(names), ["other-name", "requests", "zope-x"])
        self.h.create_user("alice")
        self.h.request("PUT", "/alice/dev", {"bases": "root/pypi"}, user="alice")
        self.h.upload("alice/dev", "alice", "mine", "1.0", make_wheel("mine", "1.0"))
        html = self.page("/alice/dev/+simple/", headers=HTML).body
        self.assertLess(html.index(b"mine/"), html.index(b"requests/"))

    def test_project_and_version_json(self) -> None:
        """Mirror project and version JSON are synthesised from the page (spec 5.5)."""
        project = self.h.request("GET", "/root/pypi/requests").json()["result"]
        self.assertEqual(sorted(project), ["1.0", "2.0"])
        self.assertEqual(len(project["2.0"]["+links"]), 2)
        version = self.h.request("GET", "/root/pypi/requests/1.0").json()["result"]
        self.assertEqual(version["yanked"], "broken")
        self.assertEqual(self.h.request("GET", "/root/pypi/requests/9.9").code, 404)

    def test_credentials_hidden(self) -> None:
        """Credentials in mirror_url go out as Basic auth and are never shown back."""
        url = "http://user:s3cret@upstream.test/simple/"
        self.h.request("PATCH", "/root/pypi", [f"mirror_url={url}"], user="root")
        shown = self.h.request("GET", "/root/pypi").json()["result"]["mirror_url"]
        self.assertEqual(shown, "http://user:****@upstream.test/simple/")
        reply = self.page()
        self.assertNotIn(b"s3cret", reply.body)
        self.h.request("PATCH", "/root/pypi", ["title=x"], user="root")
        stored = self.successResultOf(self.h.store.read(lambda tx: tx.get(keys.index("root/pypi"))))
        self.assertEqual(stored["mirror_url"], url)


class EmptyProjectTests(_MirrorBase):
    def test_project_without_files(self) -> None:
        """
        A project upstream lists, whose page has no release files, exists:
        its project JSON is an empty projectconfig (C{devpi list} prints
        nothing); a project upstream lacks is still 404.
        """
        self.up.projects["empty"] = []
        self.assertEqual(self.h.request("GET", "/root/pypi/empty").json(), {"type": "projectconfig", "result": {}})
        self.page("/root/pypi/+simple/")  # the list is loaded and names it
        self.h.clock.advance(1801)
        reply = self.h.request("GET", "/root/pypi/empty")
        self.assertEqual((reply.code, reply.json()), (200, {"type": "projectconfig", "result": {}}))
        self.assertEqual(self.page("/root/pypi/+simple/empty/").json()["files"], [])
        self.assertEqual(self.h.request("GET", "/root/pypi/empty/1.0").code, 404)
        self.assertEqual(self.h.request("GET", "/root/pypi/absent").code, 404)


class LinkLayoutTests(_MirrorBase):
    """
    Where mirror links are served and stored (spec 1.13): the simple page's
    href, the stored path and the download agree.
    """

    def served(self, project: str = "pkg") -> dict[str, str]:
        """Filename -> relpath of the links on our JSON and HTML pages (which must agree)."""
        base = f"http://127.0.0.1:3141/root/pypi/+simple/{project}/"
        found = {}
        for item in self.page(f"/root/pypi/+simple/{project}/").json()["files"]:
            found[item["filename"]] = unquote(urlsplit(urljoin(base, item["url"])).path)[1:]
        html = self.page(f"/root/pypi/+simple/{project}/", headers=HTML).body.decode()
        hrefs = re.findall(r'<a href="([^"#]*)[^"]*">([^<]*)</a>', html)
        self.assertEqual({name: unquote(urlsplit(urljoin(base, href)).path)[1:] for href, name in hrefs}, found)
        return found

    def fetch(self, relpath: str) -> Any:
        quoted = "/" + relpath.replace("!", "%21")  # as a client might quote it
        return self.h.request("GET", quoted, headers={"Accept": "*/*"})

    def assert_kept(self, relpath: str, data: bytes) -> None:
        reply = self.fetch(relpath)
        self.assertEqual((reply.code, reply.body), (200, data), relpath)
        with open(os.path.join(self.h.serverdir.files, relpath), "rb") as f:
            self.assertEqual(f.read(), data)
        entry = self.successResultOf(self.h.store.read(lambda tx: tx.get(keys.file(relpath))))
        self.assertIn("last_modified", entry)
        again = self.fetch(relpath)
        self.assertEqual((again.code, again.body), (200, data))

    def test_html_links_without_hash_and_quoted_names(self) -> None:
        """
        Links without a hash live under C{+e/} named by scheme, host, port
        and directories (empty segments kept, unsafe characters C{_}); a
        percent-quoted file name is listed, stored and served unquoted,
        with or without a hash.
        """
        hashed = b"hashed zip"
        sha = hashlib.sha256(hashed).hexdigest()
        self.up.pages["/simple/pkg/"] = (
            "text/html",
            b'<a href="../../files/pkg-1%212017.4%2Bdevpi.zip">a</a>\n'
            b'<a href="http://mirror.test:8080/dl//a%20b/pkg-2.0.tar.bz2">b</a>\n'
            b'<a href="../../files/pkg-1%212018.1%2Bdevpi.zip#sha256=' + sha.encode() + b'">c</a>\n'
            b'<a href="../../files/pkg-3.0-py2.7.egg">d</a>\n',
        )
        self.up.blobs = {
            "/files/pkg-1!2017.4+devpi.zip": b"plain zip",
            "/dl//a b/pkg-2.0.tar.bz2": b"bz2 data",
            "/files/pkg-1!2018.1+devpi.zip": hashed,
            "/files/pkg-3.0-py2.7.egg": b"egg data",
        }
        expected = {
            "pkg-1!2017.4+devpi.zip": "root/pypi/+e/http_upstream.test_files/pkg-1!2017.4+devpi.zip",
            "pkg-2.0.tar.bz2": "root/pypi/+e/http_mirror.test_8080_dl__a_20b/pkg-2.0.tar.bz2",
            "pkg-1!2018.1+devpi.zip": f"root/pypi/+f/{sha[:3]}/{sha[3:16]}/pkg-1!2018.1+devpi.zip",
            "pkg-3.0-py2.7.egg": "root/pypi/+e/http_upstream.test_files/pkg-3.0-py2.7.egg",
        }
        self.assertEqual(self.served(), expected)
        project = self.h.request("GET", "/root/pypi/pkg").json()["result"]
        self.assertEqual(sorted(project), ["1!2017.4+devpi", "1!2018.1+devpi", "2.0", "3.0"])
        for filename, relpath in expected.items():
            upstream_path = next(p for p in self.up.blobs if p.endswith("/" + filename))
            self.assert_kept(relpath, self.up.blobs[upstream_path])
        self.assertEqual(sorted(f for f in self.h.stored_files() if not f.startswith(".")), sorted(expected.values()))

    def test_json_links_quoted_names(self) -> None:
        """A PEP 691 page with percent-quoted URLs (and names) gives the same layout as HTML."""
        hashed = b"hashed zip"
        sha = hashlib.sha256(hashed).hexdigest()
        files = [
            {"filename": "pkg-1!2017.4+devpi.zip", "url": "../../files/pkg-1%212017.4%2Bdevpi.zip", "hashes": {}},
            {
                "filename": "pkg-1%212018.1%2Bdevpi.zip",
                "url": "../../files/pkg-1%212018.1%2Bdevpi.zip",
                "hashes": {"sha256": sha},
            },
        ]
        body = {"meta": {"api-version": "1.1"}, "name": "pkg", "files": files}
        self.up.pages["/simple/pkg/"] = (SIMPLE_JSON, json.dumps(body).encode())
        self.up.blobs = {"/files/pkg-1!2017.4+devpi.zip": b"plain zip", "/files/pkg-1!2018.1+devpi.zip": hashed}
        expected = {
            "pkg-1!2017.4+devpi.zip": "root/pypi/+e/http_upstream.test_files/pkg-1!2017.4+devpi.zip",
            "pkg-1!2018.1+devpi.zip": f"root/pypi/+f/{sha[:3]}/{sha[3:16]}/pkg-1!2018.1+devpi.zip",
        }
        self.assertEqual(self.served(), expected)
        self.assert_kept(expected["pkg-1!2017.4+devpi.zip"], b"plain zip")
        self.assert_kept(expected["pkg-1!2018.1+devpi.zip"], hashed)

    def test_short_hash_keeps_f_layout_and_fails_cleanly(self) -> None:
        """
        A hash of unusual length still files the link under C{+f/h[0:3]/h[3:16]/};
        fetching it is a 502 JSON error and nothing is kept (file, temp file
        or downloaded state).  Under four hex characters there is no second
        directory: C{+e/}.
        """
        self.up.pages["/simple/pkg/"] = (
            "text/html",
            b'<a href="../../files/pkg-2.0.tar.gz#sha256=1234">a</a>'
            b'<a href="../../files/pkg-3.0.tar.gz#md5=0123456789abcdef0123456789abcdef">b</a>'
            b'<a href="../../files/pkg-4.0.tar.gz#sha256=abc">c</a>',
        )
        self.up.blobs = {"/files/pkg-2.0.tar.gz": b"tgz data"}
        served = self.served()
        self.assertEqual(
            served,
            {
                "pkg-2.0.tar.gz": "root/pypi/+f/123/4/pkg-2.0.tar.gz",
                "pkg-3.0.tar.gz": "root/pypi/+f/012/3456789abcdef/pkg-3.0.tar.gz",
                "pkg-4.0.tar.gz": "root/pypi/+e/http_upstream.test_files/pkg-4.0.tar.gz",
            },
        )
        relpath = served["pkg-2.0.tar.gz"]
        meta = self.h.request("GET", "/" + relpath).json()["result"]
        self.assertEqual(meta["hash_spec"], "sha256=1234")
        reply = self.fetch(relpath)
        self.assertEqual(reply.code, 502)
        self.assertTrue(reply.header("Content-Type").startswith("application/json"))
        self.assertIn("sha256 mismatch", reply.json()["message"])
        self.assertEqual([f for f in self.h.stored_files() if not f.startswith(".")], [])
        tmp = os.path.join(self.h.serverdir.files, ".tmp")
        self.assertEqual(os.listdir(tmp) if os.path.isdir(tmp) else [], [])
        entry = self.successResultOf(self.h.store.read(lambda tx: tx.get(keys.file(relpath))))
        self.assertNotIn("last_modified", entry)
        self.assertEqual(self.fetch(relpath).code, 502, "tried again, failing again")
        self.assertEqual(self.up.requests["/files/pkg-2.0.tar.gz"], 2)


class WhitelistTests(_MirrorBase):
    def setUp(self) -> None:
        super().setUp()
        self.h.create_user("alice")
        self.h.request("PUT", "/alice/dev", {"bases": "root/pypi"}, user="alice")

    def test_private_name_blocks_mirror(self) -> None:
        """A private project hides the mirror's releases and upstream is not asked (spec 3.6)."""
        self.h.upload("alice/dev", "alice", "requests", "0.1", make_wheel("requests", "0.1"))
        files = self.page("/alice/dev/+simple/requests/").json()["files"]
        self.assertEqual([f["filename"] for f in files], ["requests-0.1-py3-none-any.whl"])
        self.assertEqual(self.up.requests["/simple/requests/"], 0)
        self.h.request("PATCH", "/alice/dev", ["mirror_whitelist=requests"], user="alice")
        files = self.page("/alice/dev/+simple/requests/").json()["files"]
        self.assertEqual(len(files), 4)
        self.assertTrue(files[0]["url"].startswith("../../+f/"))
        self.assertTrue(files[1]["url"].startswith("../../../../root/pypi/+f/"))

    def test_mirror_releases_inherited(self) -> None:
        """Without a private release the stage shows the mirror's files."""
        body = self.page("/alice/dev/+simple/requests/").json()
        self.assertEqual(body["versions"], ["1.0", "2.0"])


class MirrorFileTests(_MirrorBase):
    def test_download_once_then_from_disk(self) -> None:
        """A file is fetched on first request, verified, kept, then served from disk."""
        self.page()
        path = self.file_path(self.wheel)
        reply = self.h.request("GET", path, headers={"Accept": "*/*"})
        self.assertEqual(reply.code, 200)
        self.assertEqual(reply.body, self.wheel.data)
        again = self.h.request("GET", path, headers={"Accept": "*/*"})
        self.assertEqual(again.body, self.wheel.data)
        self.assertEqual(again.header("Cache-Control"), "max-age=365000000, immutable, public")
        self.assertEqual(self.up.requests[f"/files/{self.wheel.filename}"], 1)
        entry = self.h.request("GET", path).json()["result"]
        self.assertIn("last_modified", entry)

    def test_client_answered_before_file_is_kept(self) -> None:
        """
        The verified body reaches the client without waiting for the file's
        fsync and commit; a request meanwhile waits for the kept file.
        """
        held: list[tuple[Deferred[Any], Any, tuple[Any, ...]]] = []

        def later(fn: Any, *args: Any) -> Deferred[Any]:
            d: Deferred[Any] = Deferred()
            held.append((d, fn, args))
            return d

        assert self.h.mirror_files is not None
        self.h.mirror_files._run = later
        self.page()
        path = self.file_path(self.wheel)
        relpath = path[1:]

        def entry() -> Any:
            return self.successResultOf(self.h.store.read(lambda tx: tx.get(keys.file(relpath))))

        reply = self.h.request("GET", path, headers={"Accept": "*/*"})
        self.assertEqual((reply.code, reply.body), (200, self.wheel.data))
        self.assertEqual(len(held), 1)
        self.assertNotIn("last_modified", entry())
        self.assertFalse(os.path.exists(os.path.join(self.h.serverdir.files, relpath)))

        second = self.h.treq.request("GET", "http://127.0.0.1:3141" + path)
        self.h.flush(second)
        self.assertNoResult(second)
        d, fn, args = held.pop()
        d.callback(fn(*args))
        self.h.flush(second)
        content = self.h.treq.content(self.successResultOf(second))
        self.h.flush(content)
        self.assertEqual(self.successResultOf(content), self.wheel.data)
        self.assertIn("last_modified", entry())
        self.assertTrue(os.path.exists(os.path.join(self.h.serverdir.files, relpath)))
        self.assertEqual(self.up.requests[f"/files/{self.wheel.filename}"], 1)

    def test_failed_keep_leaves_nothing(self) -> None:
        """
        When syncing the verified file fails after the client was answered,
        no file, temp file or cached entry is left; the next request
        downloads it again.
        """
        held: list[Deferred[Any]] = []

        def later(fn: Any, *args: Any) -> Deferred[Any]:
            d: Deferred[Any] = Deferred()
            held.append(d)
            return d

        assert self.h.mirror_files is not None
        run = self.h.mirror_files._run
        self.h.mirror_files._run = later
        self.page()
        path = self.file_path(self.wheel)
        reply = self.h.request("GET", path, headers={"Accept": "*/*"})
        self.assertEqual((reply.code, reply.body), (200, self.wheel.data))
        held.pop().errback(OSError(5, "Input/output error"))
        self.assertEqual(len(self.flushLoggedErrors(OSError)), 1)
        entry = self.successResultOf(self.h.store.read(lambda tx: tx.get(keys.file(path[1:]))))
        self.assertNotIn("last_modified", entry)
        self.assertFalse(os.path.exists(os.path.join(self.h.serverdir.files, path[1:])))
        self.assertEqual(os.listdir(os.path.join(self.h.serverdir.files, ".tmp")), [])
        self.h.mirror_files._run = run
        again = self.h.request("GET", path, headers={"Accept": "*/*"})
        self.assertEqual((again.code, again.body), (200, self.wheel.data))
        self.assertEqual(self.up.requests[f"/files/{self.wheel.filename}"], 2)
        self.assertTrue(os.path.exists(os.path.join(self.h.serverdir.files, path[1:])))

    def test_concurrent_requests_one_download(self) -> None:
        """Concurrent requests for an uncached file cause one upstream download."""
        self.page()
        url = "http://127.0.0.1:3141" + self.file_path(self.sdist)
        pending = [self.h.treq.request("GET", url) for _ in range(4)]
        for d in pending:
            self.h.flush(d)
        bodies = []
        for d in pending:
            response = self.successResultOf(d)
            content = self.h.treq.content(response)
            self.h.flush(content)
            bodies.append(self.successResultOf(content))
        self.assertEqual(bodies, [self.sdist.data] * 4)
        self.assertEqual(self.up.requests[f"/files/{self.sdist.filename}"], 1)

    def test_wrong_hash_not_served_nor_kept(self) -> None:
        """A file whose hash does not match its link is an error and is not cached."""
        self.up.lie.add(self.wheel.filename)
        self.page()
        lied = hashlib.sha256(b"lie" + self.wheel.data).hexdigest()
        path = f"/root/pypi/+f/{lied[:3]}/{lied[3:16]}/{self.wheel.filename}"
        reply = self.h.request("GET", path, headers={"Accept": "*/*"})
        self.assertEqual(reply.code, 502)
        self.assertNotEqual(reply.body, self.wheel.data)
        self.assertIn(b"mismatch", reply.body)
        self.assertEqual([f for f in self.h.stored_files() if f.endswith(".whl")], [])
        self.assertEqual(os.listdir(os.path.join(self.h.serverdir.files, ".tmp")), [])

    def test_interrupted_download_leaves_nothing(self) -> None:
        """A body cut short upstream is an error; the next request downloads it fine."""
        self.page()
        path = self.file_path(self.sdist)
        self.up.drop_after[f"/files/{self.sdist.filename}"] = 10
        reply = self.h.request("GET", path, headers={"Accept": "*/*"})
        self.assertEqual(reply.code, 502)
        self.assertEqual([f for f in self.h.stored_files() if f.endswith(".tar.gz")], [])
        del self.up.drop_after[f"/files/{self.sdist.filename}"]
        self.assertEqual(self.h.request("GET", path, headers={"Accept": "*/*"}).body, self.sdist.data)

    def test_upstream_404(self) -> None:
        """A file gone upstream is a 404 naming the URL."""
        self.page()
        self.up.status[f"/files/{self.wheel.filename}"] = 404
        reply = self.h.request("GET", self.file_path(self.wheel), headers={"Accept": "*/*"})
        self.assertEqual(reply.code, 404)
        self.assertIn(b"error 404 getting", reply.body)

    def test_unknown_path_loads_page(self) -> None:
        """A file URL asked before its page (a lock file) loads the page first."""
        reply = self.h.request("GET", self.file_path(self.wheel), headers={"Accept": "*/*"})
        self.assertEqual(reply.body, self.wheel.data)

    def test_head_does_not_download(self) -> None:
        """HEAD on an uncached file answers from metadata without a download (spec 12)."""
        self.page()
        reply = self.h.request("HEAD", self.file_path(self.wheel), headers={"Accept": "*/*"})
        self.assertEqual(reply.code, 200)
        self.assertEqual(reply.header("Content-Length"), str(len(self.wheel.data)))
        self.assertEqual(self.up.requests[f"/files/{self.wheel.filename}"], 0)
        self.h.request("GET", self.file_path(self.wheel), headers={"Accept": "*/*"})
        cached = self.h.request("HEAD", self.file_path(self.wheel), headers={"Accept": "*/*"})
        self.assertEqual((cached.code, cached.body), (200, b""))
        self.assertEqual(cached.header("Content-Length"), str(len(self.wheel.data)))

    def test_core_metadata(self) -> None:
        """PEP 658 metadata is passed through from upstream, else taken from the cached wheel."""
        self.page()
        path = self.file_path(self.wheel) + ".metadata"
        reply = self.h.request("GET", path, headers={"Accept": "*/*"})
        self.assertEqual(reply.body, self.wheel.metadata)
        self.up.provide_metadata = False
        self.h.request("GET", self.file_path(self.wheel), headers={"Accept": "*/*"})
        reply = self.h.request("GET", path, headers={"Accept": "*/*"})
        self.assertIn(b"Name: requests", reply.body)

    def test_core_metadata_kept(self) -> None:
        """
        Upstream metadata that matches its sha256 is kept: asked again, and
        with upstream no longer providing it, it comes from the server dir.
        Metadata that does not match is a 502 and is not kept.  Deleting the
        project removes the kept file.
        """
        self.page()
        path = self.file_path(self.wheel) + ".metadata"
        upstream_path = f"/files/{self.wheel.filename}.metadata"
        kept = os.path.join(self.h.serverdir.files, path.lstrip("/"))
        first = self.h.request("GET", path, headers={"Accept": "*/*"})
        self.assertEqual((first.code, first.body), (200, self.wheel.metadata))
        with open(kept, "rb") as f:
            self.assertEqual(f.read(), self.wheel.metadata)
        self.up.provide_metadata = False
        again = self.h.request("GET", path, headers={"Accept": "*/*"})
        self.assertEqual((again.code, again.body), (200, self.wheel.metadata))
        self.assertEqual(self.up.requests[upstream_path], 1)
        self.assertEqual(self.h.request("DELETE", "/root/pypi/requests?force", user="root").code, 200)
        self.assertFalse(os.path.exists(kept))

        self.up.provide_metadata = True
        self.page()
        self.wheel.metadata = b"Metadata-Version: 2.1\nName: tampered\n"
        bad = self.h.request("GET", path, headers={"Accept": "*/*"})
        self.assertEqual(bad.code, 502)
        self.assertFalse(os.path.exists(kept))

    def test_core_metadata_not_kept_still_served(self) -> None:
        """
        When the metadata cannot be kept (here a file is where its directory
        goes), the client still gets it, a warning is logged and no temp file
        stays.
        """
        self.page()
        path = self.file_path(self.wheel) + ".metadata"
        directory = os.path.dirname(os.path.join(self.h.serverdir.files, path.lstrip("/")))
        os.makedirs(os.path.dirname(directory))
        with open(directory, "wb"):
            pass
        logged: list[dict[str, Any]] = []
        observer = cast(ILogObserver, logged.append)
        globalLogPublisher.addObserver(observer)
        self.addCleanup(globalLogPublisher.removeObserver, observer)
        reply = self.h.request("GET", path, headers={"Accept": "*/*"})
        self.assertEqual((reply.code, reply.body), (200, self.wheel.metadata))
        self.assertTrue(any(e.get("log_format", "").startswith("could not keep") for e in logged))
        tmp = os.path.join(self.h.serverdir.files, ".tmp")
        self.assertEqual(os.listdir(tmp) if os.path.isdir(tmp) else [], [])

    def test_delete_mirror_project(self) -> None:
        """Deleting a mirrored project drops its page and downloaded files."""
        self.page()
        self.h.request("GET", self.file_path(self.wheel), headers={"Accept": "*/*"})
        reply = self.h.request("DELETE", "/root/pypi/requests?force", user="root")
        self.assertEqual(reply.code, 200, reply.body)
        self.assertEqual([f for f in self.h.stored_files() if f.endswith(".whl")], [])


class OfflineTests(_MirrorBase):
    offline = True

    def test_offline_never_contacts_upstream(self) -> None:
        """In offline mode uncached projects are 404 and upstream gets no request."""
        self.assertEqual(self.page().code, 404)
        self.assertEqual(sum(self.up.requests.values()), 0)


class MirrorOptionTests(_MirrorBase):
    def test_external_urls(self) -> None:
        """mirror_use_external_urls sends clients to upstream for uncached files."""
        self.h.request("PATCH", "/root/pypi", ["mirror_use_external_urls=True"], user="root")
        self.page()
        reply = self.h.request("GET", self.file_path(self.wheel), headers={"Accept": "*/*"})
        self.assertEqual(reply.code, 302)
        self.assertEqual(reply.header("Location"), f"http://upstream.test/files/{self.wheel.filename}")
        self.assertEqual(self.up.requests[f"/files/{self.wheel.filename}"], 0)

    def test_no_project_list(self) -> None:
        """mirror_no_project_list never loads the upstream list; listings show cached projects."""
        self.h.request("PATCH", "/root/pypi", ["mirror_no_project_list=True"], user="root")
        self.up.extra_names = ["elsewhere"]
        self.assertEqual(self.page().code, 200)
        names = [p["name"] for p in self.page("/root/pypi/+simple/").json()["projects"]]
        self.assertEqual(names, ["requests"])
        self.assertEqual(self.up.requests["/simple/"], 0)

    def test_web_url_fmt_kept(self) -> None:
        """mirror_web_url_fmt is stored as given."""
        reply = self.h.request("PATCH", "/root/pypi", ["mirror_web_url_fmt=https://example.org/p/{name}/"], user="root")
        self.assertEqual(reply.json()["result"]["mirror_web_url_fmt"], "https://example.org/p/{name}/")


class FsckRefetchTests(_MirrorBase):
    def test_damaged_mirror_file_fetched_again(self) -> None:
        """fsck with refetch forgets a damaged mirror file; the next request downloads it again."""
        self.page()
        path = self.file_path(self.wheel)
        self.h.request("GET", path, headers={"Accept": "*/*"})
        ondisk = os.path.join(self.h.serverdir.files, path.lstrip("/"))
        with open(ondisk, "r+b") as f:
            f.write(b"broken")
        report = fsck(self.h.serverdir.path, refetch_mirror=True)
        self.assertTrue(report.ok, report.text())
        self.assertIn("will be fetched again", report.text())
        self.assertFalse(os.path.exists(ondisk))
        self.successResultOf(self.h.store.poll())
        reply = self.h.request("GET", path, headers={"Accept": "*/*"})
        self.assertEqual(reply.body, self.wheel.data)
        self.assertEqual(self.up.requests[f"/files/{self.wheel.filename}"], 2)
        final = fsck(self.h.serverdir.path)
        self.assertTrue(final.ok, final.text())
