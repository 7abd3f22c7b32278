"""
The devpi-web-like event hooks (documentation, rendered descriptions,
search) on real files and a real SQLite database, and the C{+doc} and
C{+search} routes serving what they wrote.
"""

from __future__ import annotations

import hashlib
import io
import os
import sqlite3
import stat
import zipfile
from typing import Any

from twisted.logger import capturedLogs
from twisted.trial.unittest import SynchronousTestCase

from devpi_tx.events.hooks import (
    DOCS_MARKER,
    DescriptionHook,
    DocsHook,
    SearchHook,
    extract_zip,
    render_description,
)
from devpi_tx.events.processor import Hook
from devpi_tx.model.errors import NotFound
from devpi_tx.store.files import LocalFileStore
from devpi_tx.store.search_sqlite import SEARCH_DB, SQLiteSearchIndex, match_expression, open_search, search
from devpi_tx.web.docs import DocRoutes, doc_versions, locate_doc
from tests.helpers import APIHarness, files_below, make_sdist


def make_zip(members: dict[str, str | bytes], symlinks: dict[str, str] | None = None) -> bytes:
    """A zip with C{members} (names written as given) and symlink members."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in members.items():
            zf.writestr(zipfile.ZipInfo(name), data)
        for name, target in (symlinks or {}).items():
            info = zipfile.ZipInfo(name)
            info.external_attr = (stat.S_IFLNK | 0o777) << 16
            zf.writestr(info, target)
    return buf.getvalue()


def version_record(name: str, version: str, *links: dict[str, Any], **metadata: Any) -> dict[str, Any]:
    """A version record as L{devpi_tx.domain.releases} stores it."""
    record: dict[str, Any] = {
        "name": name,
        "version": version,
        "summary": "",
        "description": "",
        "description_content_type": "",
        "keywords": "",
        "+elinks": list(links),
    }
    record.update(metadata)
    return record


class _HookCase(SynchronousTestCase):
    def setUp(self) -> None:
        self.base = os.path.abspath(self.mktemp())
        self.serverdir = os.path.join(self.base, "server")
        self.files_dir = os.path.join(self.serverdir, "+files")
        os.makedirs(self.files_dir)

    def store_zip(self, filename: str, data: bytes, stage: str = "alice/dev") -> dict[str, Any]:
        """Put C{data} in the file store as an upload would; the doczip link to it."""
        sha = hashlib.sha256(data).hexdigest()
        relpath = f"{stage}/+f/{sha[:3]}/{sha[3:16]}/{filename}"
        path = os.path.join(self.files_dir, relpath)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "wb") as f:
            f.write(data)
        return {"rel": "doczip", "entrypath": relpath, "hashes": {"sha256": sha}, "hash_spec": f"sha256={sha}"}


class DocsHookTests(_HookCase):
    def setUp(self) -> None:
        super().setUp()
        self.hook = DocsHook(self.serverdir, LocalFileStore(self.files_dir))
        self.tree = os.path.join(self.serverdir, "+docs", "alice", "dev", "pkg", "1.0")

    def docs(
        self, version: str = "1.0", stage: str = "alice/dev", members: dict[str, str | bytes] | None = None
    ) -> dict[str, Any]:
        data = make_zip(
            members if members is not None else {"index.html": f"<h1>{version}</h1>", "_static/s.css": "p {}"}
        )
        return version_record("pkg", version, self.store_zip(f"pkg-{version}.doc.zip", data, stage))

    def test_unpack(self) -> None:
        """A version with a doczip gets its zip unpacked, with a marker naming the zip's hash."""
        record = self.docs()
        self.hook(5, {"v/alice/dev/pkg/1.0": record})
        found = files_below(self.tree)
        self.assertEqual(found.pop("index.html"), b"<h1>1.0</h1>")
        self.assertEqual(found.pop("_static/s.css"), b"p {}")
        self.assertEqual(found, {DOCS_MARKER: record["+elinks"][0]["hashes"]["sha256"].encode()})
        self.assertEqual(os.listdir(os.path.join(self.serverdir, "+docs.tmp")), [])

    def test_replace(self) -> None:
        """A new doczip replaces the whole tree: files only the old zip had are gone."""
        self.hook(5, {"v/alice/dev/pkg/1.0": self.docs(members={"index.html": "old", "old.html": "x"})})
        self.hook(6, {"v/alice/dev/pkg/1.0": self.docs(members={"index.html": "new"})})
        found = files_below(self.tree)
        found.pop(DOCS_MARKER)
        self.assertEqual(found, {"index.html": b"new"})
        self.assertEqual(os.listdir(os.path.join(self.serverdir, "+docs.tmp")), [])

    def test_idempotent(self) -> None:
        """Running a serial again keeps the tree; an unchanged doczip is not unpacked again."""
        changes = {"v/alice/dev/pkg/1.0": self.docs()}
        self.hook(5, changes)
        before = files_below(self.tree)
        inode = os.stat(os.path.join(self.tree, "index.html")).st_ino
        self.hook(5, changes)
        self.hook(5, changes)
        self.assertEqual(files_below(self.tree), before)
        self.assertEqual(os.stat(os.path.join(self.tree, "index.html")).st_ino, inode)

    def test_version_deleted(self) -> None:
        """A deleted version loses its docs, empty parents go; other versions keep theirs."""
        self.hook(5, {"v/alice/dev/pkg/1.0": self.docs(), "v/alice/dev/pkg/2.0": self.docs("2.0")})
        self.hook(6, {"v/alice/dev/pkg/1.0": None})
        self.assertFalse(os.path.exists(self.tree))
        self.assertIn("index.html", files_below(os.path.join(self.serverdir, "+docs/alice/dev/pkg/2.0")))
        self.hook(7, {"v/alice/dev/pkg/2.0": None})
        self.hook(7, {"v/alice/dev/pkg/2.0": None})
        self.assertEqual(os.listdir(os.path.join(self.serverdir, "+docs")), [])

    def test_doczip_dropped(self) -> None:
        """A version record left without a doczip link loses its docs."""
        self.hook(5, {"v/alice/dev/pkg/1.0": self.docs()})
        release = {"rel": "releasefile", "entrypath": "alice/dev/+f/abc/def/pkg-1.0.tar.gz"}
        self.hook(6, {"v/alice/dev/pkg/1.0": version_record("pkg", "1.0", release)})
        self.assertFalse(os.path.exists(self.tree))

    def test_missing_file(self) -> None:
        """
        A doczip whose file is not there (removed by a later serial, or not
        replicated yet) leaves the docs as they are.
        """
        record = self.docs()
        os.unlink(os.path.join(self.files_dir, record["+elinks"][0]["entrypath"]))
        self.hook(5, {"v/alice/dev/pkg/1.0": record})
        self.assertFalse(os.path.exists(self.tree))
        self.hook(6, {"v/alice/dev/pkg/1.0": self.docs(members={"index.html": "kept"})})
        gone = self.docs(members={"index.html": "gone"})
        os.unlink(os.path.join(self.files_dir, gone["+elinks"][0]["entrypath"]))
        self.hook(7, {"v/alice/dev/pkg/1.0": gone})
        self.assertEqual(files_below(self.tree)["index.html"], b"kept")

    def test_index_deleted(self) -> None:
        """Deleting an index config removes that index's docs only."""
        self.hook(5, {"v/alice/dev/pkg/1.0": self.docs(), "v/alice/prod/pkg/1.0": self.docs(stage="alice/prod")})
        self.hook(6, {"i/alice/dev": None, "i/alice/other": {"type": "stage"}})
        self.assertEqual(os.listdir(os.path.join(self.serverdir, "+docs", "alice")), ["prod"])
        self.hook(7, {"i/alice/prod": None})
        self.assertEqual(os.listdir(os.path.join(self.serverdir, "+docs")), [])

    def test_malicious_zip(self) -> None:
        """
        Members with absolute paths, C{..} or backslashes that climb, drive
        letters and symlinks are left out and logged; nothing is written
        outside the version's tree.
        """
        outside = os.path.join(self.base, "abs-evil")
        members: dict[str, str | bytes] = {
            "index.html": "fine",
            "../evil": "x",
            "../../evil": "x",
            outside: "x",
            "/etc-evil": "x",
            "sub/../../../evil2": "x",
            "..\\evil3": "x",
            "C:/evil4": "x",
            "./sub//page.html": "page",
        }
        record = self.docs(members=make_zip_members(members))
        data_path = os.path.join(self.files_dir, record["+elinks"][0]["entrypath"])
        before = set(files_below(self.base))
        # a symlink to outside, then a member written "through" it
        with zipfile.ZipFile(data_path, "a") as zf:
            info = zipfile.ZipInfo("link")
            info.external_attr = (stat.S_IFLNK | 0o777) << 16
            zf.writestr(info, self.base)
            zf.writestr("link/through", "x")
        record["+elinks"][0]["hashes"]["sha256"] = "changed"
        with capturedLogs() as events:
            self.hook(5, {"v/alice/dev/pkg/1.0": record})
        written = set(files_below(self.base)) - before
        tree = os.path.relpath(self.tree, self.base)
        self.assertEqual(
            sorted(written),
            sorted(os.path.join(tree, name) for name in ("index.html", "sub/page.html", "link/through", DOCS_MARKER)),
        )
        self.assertFalse(os.path.islink(os.path.join(self.tree, "link")))
        self.assertFalse(os.path.exists(outside))
        (event,) = [e for e in events if "names" in e]
        self.assertEqual(
            sorted(event["names"]),
            sorted(
                ["../evil", "../../evil", outside, "/etc-evil", "sub/../../../evil2", "..\\evil3", "C:/evil4", "link"]
            ),
        )

    def test_clashing_members(self) -> None:
        """A member that clashes with an earlier one (file vs directory) is left out."""
        dest = os.path.join(self.base, "dest")
        os.makedirs(dest)
        path = os.path.join(self.base, "clash.zip")
        with open(path, "wb") as f:
            f.write(make_zip({"a": "file", "a/b": "x", "d/": "", "d/e": "inner", "a/": ""}))
        self.assertEqual(extract_zip(path, dest), ["a/b", "a/"])
        self.assertEqual(files_below(dest), {"a": b"file", "d/e": b"inner"})

    def test_not_a_zip(self) -> None:
        """A doczip that is no zip is logged and leaves no docs, not even older ones."""
        self.hook(5, {"v/alice/dev/pkg/1.0": self.docs()})
        record = version_record("pkg", "1.0", self.store_zip("pkg-1.0.doc.zip", b"PK-but-not-a-zip"))
        with capturedLogs() as events:
            self.hook(6, {"v/alice/dev/pkg/1.0": record})
        self.assertFalse(os.path.exists(self.tree))
        self.assertEqual([e["version"] for e in events if "reason" in e], ["1.0"])
        self.assertEqual(os.listdir(os.path.join(self.serverdir, "+docs.tmp")), [])

    def test_too_large(self) -> None:
        """A zip that would unpack to more than the limit is refused."""
        hook = DocsHook(self.serverdir, LocalFileStore(self.files_dir), max_unpacked=1000)
        with capturedLogs() as events:
            hook(5, {"v/alice/dev/pkg/1.0": self.docs(members={"index.html": b"0" * 1001})})
        self.assertFalse(os.path.exists(self.tree))
        self.assertIn("more than 1000 bytes", next(e for e in events if "reason" in e)["reason"])
        hook(6, {"v/alice/dev/pkg/1.0": self.docs(members={"index.html": b"0" * 1000})})
        self.assertEqual(len(files_below(self.tree)["index.html"]), 1000)

    def test_other_keys_ignored(self) -> None:
        """Keys other than versions and deleted indexes, and unsafe keys, change nothing."""
        record = self.docs()
        self.hook(
            5,
            {
                "m/root/pypi/pkg": {"links": []},
                "f/alice/dev/+f/abc/def/pkg-1.0.doc.zip": {"size": 1},
                "p/alice/dev/pkg": {"name": "pkg"},
                "u/alice": None,
                "i/alice/dev": {"type": "stage"},
                "v/alice/dev/../1.0": record,
                "v/alice/dev/pkg": record,
                "v/alice/dev/pkg/..": record,
                "v/alice//pkg/1.0": record,
                "v/alice/dev/pkg/2.0": ["not", "a", "record"],
            },
        )
        self.assertFalse(os.path.exists(os.path.join(self.serverdir, "+docs")))

    def test_unsafe_entrypath(self) -> None:
        """A doczip link whose entrypath climbs out of the file store is not followed."""
        with open(os.path.join(self.serverdir, "outside.zip"), "wb") as f:
            f.write(make_zip({"index.html": "x"}))
        link = {"rel": "doczip", "entrypath": "../outside.zip", "hashes": {"sha256": "0" * 64}}
        with capturedLogs() as events:
            self.hook(5, {"v/alice/dev/pkg/1.0": version_record("pkg", "1.0", link)})
        self.assertFalse(os.path.exists(self.tree))
        self.assertEqual([e["entrypath"] for e in events if "entrypath" in e], ["../outside.zip"])

    def test_leftovers_swept(self) -> None:
        """What an interrupted unpack left in the temporary directory is removed on the first serial."""
        junk = os.path.join(self.serverdir, "+docs.tmp", "tmp1234", "index.html")
        os.makedirs(os.path.dirname(junk))
        with open(junk, "w") as f:
            f.write("half")
        self.hook(5, {})
        self.assertFalse(os.path.exists(os.path.dirname(junk)))

    def test_symlink_in_place_of_docs(self) -> None:
        """A symlink where a version's docs belong is removed, never followed."""
        outside = os.path.join(self.base, "keep")
        os.makedirs(outside)
        with open(os.path.join(outside, "index.html"), "w") as f:
            f.write("keep")
        os.makedirs(os.path.dirname(self.tree))
        os.symlink(outside, self.tree)
        self.hook(5, {"v/alice/dev/pkg/1.0": None})
        self.assertFalse(os.path.lexists(self.tree))
        os.makedirs(os.path.dirname(self.tree))
        os.symlink(outside, self.tree)
        self.hook(6, {"v/alice/dev/pkg/1.0": self.docs(members={"index.html": "new"})})
        self.assertFalse(os.path.islink(self.tree))
        self.assertEqual(files_below(self.tree)["index.html"], b"new")
        self.assertEqual(files_below(outside), {"index.html": b"keep"})

    def test_tree_without_marker(self) -> None:
        """Docs of unknown origin (no marker) are replaced by the version's doczip."""
        os.makedirs(self.tree)
        with open(os.path.join(self.tree, "stray.html"), "w") as f:
            f.write("stray")
        self.hook(5, {"v/alice/dev/pkg/1.0": self.docs(members={"index.html": "zip"})})
        found = files_below(self.tree)
        found.pop(DOCS_MARKER)
        self.assertEqual(found, {"index.html": b"zip"})

    def test_unsafe_names(self) -> None:
        """Names that are not single path segments lead nowhere."""
        self.hook(5, {"v/alice/dev/pkg/1.0": self.docs()})
        self.assertEqual(doc_versions(self.serverdir, "alice", "dev", "pkg"), ["1.0"])
        self.assertEqual(doc_versions(self.serverdir, "alice", "..", "dev"), [])
        self.assertEqual(doc_versions(self.serverdir, "alice", "dev", "nothing"), [])
        for args in (("..", "dev", "pkg", "1.0"), ("alice", "dev", "pkg", ".."), ("alice", "dev", "a\\b", "1.0")):
            with self.assertRaises(NotFound):
                locate_doc(self.serverdir, *args, "index.html")
        self.assertEqual(
            locate_doc(self.serverdir, "alice", "dev", "pkg", "1.0", ""), (os.path.join(self.tree, "index.html"), False)
        )


def make_zip_members(members: dict[str, str | bytes]) -> dict[str, str | bytes]:
    """The members, checked to keep their names as given inside the zip."""
    names = [info.filename for info in zipfile.ZipFile(io.BytesIO(make_zip(members))).infolist()]
    assert names == list(members), names
    return members


class DescriptionHookTests(_HookCase):
    def setUp(self) -> None:
        super().setUp()
        self.hook = DescriptionHook(self.serverdir)

    def render(self, description: str, content_type: str, version: str = "1.0") -> str:
        record = version_record("pkg", version, description=description, description_content_type=content_type)
        self.hook(5, {f"v/alice/dev/pkg/{version}": record})
        with open(
            os.path.join(self.serverdir, "+rendered", "alice", "dev", "pkg", f"{version}.html"), encoding="utf-8"
        ) as f:
            return f.read()

    def test_rst(self) -> None:
        """reStructuredText, named or by default, becomes HTML."""
        for content_type in ("text/x-rst", "", "text/x-rst; charset=UTF-8"):
            html = self.render("Title\n=====\n\nSome *emphasis*.\n", content_type)
            self.assertIn("<h1>Title", html)
            self.assertIn("<em>emphasis</em>", html)

    def test_markdown(self) -> None:
        """Markdown renders as GFM unless the variant says CommonMark; raw script tags are escaped."""
        html = self.render("# Head\n\n~~gone~~ <script>alert(1)</script>\n", "text/markdown; charset=UTF-8")
        self.assertIn(">Head<", html)
        self.assertIn("<del>gone</del>", html)
        self.assertNotIn("<script>", html)
        common = self.render("~~kept~~\n", "text/markdown; variant=CommonMark")
        self.assertEqual(common.strip(), "<p>~~kept~~</p>")
        odd = self.render("~~x~~\n", 'text/markdown; variant="Unknown"')
        self.assertIn("<del>x</del>", odd)

    def test_plain(self) -> None:
        """Plain text is escaped, line breaks kept."""
        html = self.render("a <b> & c\nnext", "text/plain")
        self.assertEqual(html, "a &lt;b&gt; &amp; c<br>next")
        self.assertEqual(render_description("<i>", "text/html"), ("&lt;i&gt;", False))

    def test_broken_rst(self) -> None:
        """reStructuredText that fails shows as escaped plain text, and is logged."""
        source = "Title\n=====\n\n.. raw:: html\n\n   <script>x()</script>\n\n.. no-such-directive::\n"
        with capturedLogs() as events:
            html = self.render(source, "text/x-rst")
        self.assertNotIn("<script>", html)
        self.assertIn("&lt;script&gt;x()&lt;/script&gt;", html)
        self.assertIn("no-such-directive", html)
        self.assertEqual([e["version"] for e in events if "project" in e], ["1.0"])
        self.assertEqual(render_description(source, "")[1], False)

    def test_empty(self) -> None:
        """A version without description gets an empty rendering."""
        self.assertEqual(self.render("", "text/x-rst"), "")
        self.assertEqual(self.render("  \n", "text/markdown"), "")

    def test_atomic_and_idempotent(self) -> None:
        """Rendering again replaces the file in place and leaves no temporary files."""
        self.render("*one*", "")
        self.assertIn("<em>two</em>", self.render("*two*", ""))
        self.assertIn("<em>two</em>", self.render("*two*", ""))
        self.assertEqual(os.listdir(os.path.join(self.serverdir, "+rendered", "alice", "dev", "pkg")), ["1.0.html"])

    def test_deleted(self) -> None:
        """A deleted version's rendering goes; a deleted index takes all of its renderings."""
        self.render("one", "", "1.0")
        self.render("two", "", "2.0")
        self.hook(6, {"v/alice/dev/pkg/1.0": None})
        self.hook(6, {"v/alice/dev/pkg/1.0": None})
        self.assertEqual(os.listdir(os.path.join(self.serverdir, "+rendered", "alice", "dev", "pkg")), ["2.0.html"])
        self.hook(7, {"i/alice/dev": None})
        self.assertEqual(os.listdir(os.path.join(self.serverdir, "+rendered")), [])

    def test_render_crash(self) -> None:
        """A renderer that crashes (docutils recursing too deep) falls back to plain text."""
        deep = "".join(" " * (2 * i) + "x\n\n" for i in range(1000))
        html, ok = render_description(deep, "text/x-rst")
        self.assertFalse(ok)
        self.assertTrue(html.startswith("x<br><br>  x<br>"))

    def test_lone_surrogates(self) -> None:
        """Text with lone surrogates (possible in JSON) renders with replacement characters."""
        html = self.render("# a\ud800b", "text/markdown")
        self.assertIn("a?b", html)

    def test_unwritable(self) -> None:
        """When the rendering cannot be put in place the hook fails and leaves no temporary file."""
        target = os.path.join(self.serverdir, "+rendered", "alice", "dev", "pkg", "1.0.html")
        os.makedirs(target)
        with self.assertRaises(IsADirectoryError):
            self.render("text", "")
        self.assertEqual(os.listdir(os.path.dirname(target)), ["1.0.html"])


class SearchTests(_HookCase):
    def setUp(self) -> None:
        super().setUp()
        os.makedirs(self.serverdir, exist_ok=True)
        self.hook = SearchHook(SQLiteSearchIndex(self.serverdir))

    def add(self, stage: str, name: str, version: str, serial: int = 1, **metadata: Any) -> None:
        project = name.lower().replace("_", "-")
        self.hook(serial, {f"v/{stage}/{project}/{version}": version_record(name, version, **metadata)})

    def found(self, query: str, **kwargs: Any) -> list[tuple[str, str, str]]:
        return [(r["stage"], r["project"], r["version"]) for r in search(self.serverdir, query, **kwargs)]

    def test_ranking(self) -> None:
        """A match in the name ranks above one in the summary, which ranks above one in the description."""
        self.add("alice/dev", "deep", "1.0", description="Uses twisted somewhere deep inside a long text " * 5)
        self.add("alice/dev", "summed", "1.0", summary="A twisted helper")
        self.add("alice/dev", "Twisted_Web", "1.0", summary="Web things")
        self.add("alice/dev", "unrelated", "1.0", summary="nothing to see")
        self.assertEqual(
            self.found("twisted"),
            [("alice/dev", "twisted-web", "1.0"), ("alice/dev", "summed", "1.0"), ("alice/dev", "deep", "1.0")],
        )
        (first, *_) = search(self.serverdir, "twisted")
        self.assertEqual(
            first, {"stage": "alice/dev", "project": "twisted-web", "version": "1.0", "summary": "Web things"}
        )

    def test_words_all_required_and_prefixes(self) -> None:
        """Every word must match; each word matches as a prefix; keywords count, as string or list."""
        self.add("alice/dev", "alpha", "1.0", summary="fast json parser", keywords="speed, serialization")
        self.add("alice/dev", "beta", "1.0", summary="slow json parser", keywords=["yaml", "config"])
        self.assertEqual(self.found("json fast"), [("alice/dev", "alpha", "1.0")])
        self.assertEqual(self.found("seriali"), [("alice/dev", "alpha", "1.0")])
        self.assertEqual(self.found("yaml"), [("alice/dev", "beta", "1.0")])
        self.assertEqual(len(self.found("pars")), 2)
        self.assertEqual(len(self.found("JSON", limit=1)), 1)
        self.assertEqual(self.found("json", limit=0), [])

    def test_connection_kept_and_renewed(self) -> None:
        """
        The hook keeps one connection across serials (its writes become
        visible to readers at each commit), opens a new one after close(),
        and after a database error the next serial starts on a fresh
        connection, which recreates a missing schema.
        """
        self.addCleanup(self.hook.close)
        self.add("alice/dev", "first", "1.0", summary="kept")
        self.add("alice/dev", "second", "1.0", serial=2, summary="kept")
        self.assertEqual(len(self.found("kept")), 2)
        self.hook.close()
        self.add("alice/dev", "third", "1.0", serial=3, summary="kept")
        self.assertEqual(len(self.found("kept")), 3)
        other = sqlite3.connect(os.path.join(self.serverdir, SEARCH_DB), isolation_level=None)
        other.execute("DROP TABLE entries_text")
        other.execute("DROP TABLE entries")
        other.execute("PRAGMA user_version=0")
        other.close()
        with self.assertRaises(sqlite3.OperationalError):
            self.add("alice/dev", "lost", "1.0", serial=4, summary="kept")
        self.add("alice/dev", "fourth", "1.0", serial=5, summary="kept")
        self.assertEqual(self.found("kept"), [("alice/dev", "fourth", "1.0")])

    def test_update(self) -> None:
        """A changed version replaces its row: old words stop matching, the new summary is returned."""
        self.add("alice/dev", "pkg", "1.0", summary="old words")
        self.add("alice/dev", "pkg", "1.0", serial=2, summary="new text")
        self.add("alice/dev", "pkg", "1.0", serial=2, summary="new text")
        self.assertEqual(self.found("old"), [])
        self.assertEqual(
            search(self.serverdir, "new"),
            [{"stage": "alice/dev", "project": "pkg", "version": "1.0", "summary": "new text"}],
        )
        conn = open_search(self.serverdir)
        self.addCleanup(conn.close)
        self.assertEqual(conn.execute("SELECT count(*) FROM entries").fetchone()[0], 1)
        self.assertEqual(conn.execute("SELECT count(*) FROM entries_text").fetchone()[0], 1)

    def test_deletion(self) -> None:
        """Deleted versions leave the index; a deleted index takes all its rows; other stages stay."""
        for stage in ("alice/dev", "alice/prod"):
            for version in ("1.0", "2.0"):
                self.add(stage, "pkg", version, summary="searchable")
        self.hook(3, {"v/alice/dev/pkg/1.0": None, "v/alice/dev/pkg/9.9": None})
        self.assertEqual(
            sorted(self.found("searchable")),
            [("alice/dev", "pkg", "2.0"), ("alice/prod", "pkg", "1.0"), ("alice/prod", "pkg", "2.0")],
        )
        self.hook(4, {"i/alice/prod": None})
        self.hook(4, {"i/alice/prod": None})
        self.assertEqual(self.found("searchable"), [("alice/dev", "pkg", "2.0")])

    def test_odd_queries(self) -> None:
        """Any input is a valid query: FTS5 syntax is searched for as words, or ignored."""
        self.add("alice/dev", "music", "1.0", summary="rock and roll NEAR you")
        odd = [
            '"',
            "*",
            "AND",
            "OR",
            "NOT",
            "NEAR(",
            "(",
            ")",
            "^",
            "-",
            ":",
            "summary:rock",
            'a"b',
            "'",
            "\\",
            "\x00",
            "\U0001f600",
            "+",
            "{summary}",
            "rock*",
            '"rock',
            "rock AND",
            "   ",
            "",
            "a" * 5000,
            "and OR not",
        ]
        for query in odd:
            self.assertIsInstance(search(self.serverdir, query), list)
        self.assertEqual(self.found("AND"), [("alice/dev", "music", "1.0")])
        self.assertEqual(self.found("near("), [("alice/dev", "music", "1.0")])
        self.assertEqual(self.found('"rock'), [("alice/dev", "music", "1.0")])
        self.assertEqual(self.found("summary:rock"), [])
        self.assertEqual(self.found('"'), [])
        self.assertEqual(self.found("*"), [])

    def test_unicode(self) -> None:
        """Non-ASCII text is found, with and without diacritics, in any case."""
        self.add("alice/dev", "cafe", "1.0", summary="Café crème für Straße", description="日本語 の テキスト")
        for query in ("café", "CAFE", "creme", "FÜR", "straße", "日本語", "テキスト"):
            self.assertEqual(self.found(query), [("alice/dev", "cafe", "1.0")], query)

    def test_blank_query(self) -> None:
        """An empty or blank query finds nothing and needs no database."""
        self.assertEqual(search(self.serverdir, ""), [])
        self.assertEqual(search(self.serverdir, " \t\n"), [])
        self.assertFalse(os.path.exists(os.path.join(self.serverdir, "search.sqlite")))

    def test_match_expression(self) -> None:
        """Words become quoted prefix phrases; quotes are doubled; words without letters or digits go."""
        self.assertEqual(match_expression('foo "bar" AND * -'), '"foo"* """bar"""* "AND"*')
        self.assertEqual(match_expression(" \t"), "")

    def test_shared_between_processes(self) -> None:
        """The database uses WAL with a busy timeout: a reader is not blocked by an open write."""
        self.add("alice/dev", "pkg", "1.0", summary="shared")
        writer = open_search(self.serverdir)
        self.addCleanup(writer.close)
        self.assertEqual(writer.execute("PRAGMA journal_mode").fetchone()[0], "wal")
        self.assertEqual(writer.execute("PRAGMA busy_timeout").fetchone()[0], 30000)
        writer.execute("BEGIN IMMEDIATE")
        writer.execute("UPDATE entries SET summary = 'uncommitted'")
        self.assertEqual(search(self.serverdir, "shared")[0]["summary"], "shared")
        other = sqlite3.connect(os.path.join(self.serverdir, "search.sqlite"), timeout=0)
        self.addCleanup(other.close)
        with self.assertRaises(sqlite3.OperationalError):
            other.execute("BEGIN IMMEDIATE")
        writer.execute("ROLLBACK")

    def test_corrupt_database(self) -> None:
        """A search database that is no database is reported, not silently replaced."""
        with open(os.path.join(self.serverdir, "search.sqlite"), "wb") as f:
            f.write(b"not a database" * 100)
        with self.assertRaises(sqlite3.DatabaseError):
            search(self.serverdir, "anything")

    def test_lone_surrogates(self) -> None:
        """Metadata with lone surrogates is indexed with replacement characters."""
        self.add("alice/dev", "pkg", "1.0", summary="odd \udc80 text", description="x\ud800y")
        self.assertEqual(search(self.serverdir, "odd")[0]["summary"], "odd ? text")

    def test_nothing_to_index(self) -> None:
        """Serials without versions or deleted indexes leave the database alone."""
        self.hook(1, {"u/alice": {"email": "a@example.org"}, "i/alice/dev": {"type": "stage"}})
        self.assertFalse(os.path.exists(os.path.join(self.serverdir, "search.sqlite")))

    def test_failed_serial_rolls_back(self) -> None:
        """A serial that fails half way leaves the index as it was."""
        self.add("alice/dev", "pkg", "1.0", summary="before")

        class Unprintable:
            def __str__(self) -> str:
                raise ValueError("no text")

        bad = version_record("pkg", "2.0", summary=Unprintable())
        with self.assertRaises(ValueError):
            self.hook(2, {"v/alice/dev/pkg/1.0": None, "v/alice/dev/pkg/2.0": bad})
        self.assertEqual(self.found("before"), [("alice/dev", "pkg", "1.0")])


class DocRoutesTests(SynchronousTestCase):
    """
    C{+doc} and C{+search} over the in-memory API, after running the hooks
    over the store's changelog as the event processor would.
    """

    def setUp(self) -> None:
        self.h = APIHarness(self)
        self.h.login("root", "")
        self.h.create_user("alice", "secret")
        reply = self.h.request("PUT", "/alice/dev", {"bases": ""}, user="alice")
        self.assertEqual(reply.code, 200, reply.body)
        self.hooks: list[Hook] = [
            DocsHook(self.h.serverdir.path, self.h.store.files),
            DescriptionHook(self.h.serverdir.path),
            SearchHook(SQLiteSearchIndex(self.h.serverdir.path)),
        ]
        self.processed = -1

    def run_hooks(self) -> None:
        entries = self.successResultOf(self.h.store.changelog(self.processed, 1000))
        for entry in entries:
            for hook in self.hooks:
                hook(entry.serial, entry.changes)
            self.processed = entry.serial

    def upload_docs(self, name: str, version: str, members: dict[str, str | bytes]) -> None:
        reply = self.h.upload(
            "alice/dev", "alice", name, version, (f"{name}-{version}.doc.zip", make_zip(members)), action="doc_upload"
        )
        self.assertEqual(reply.code, 200, reply.phrase)

    def get(self, path: str, accept: str = "*/*", method: str = "GET") -> Any:
        return self.h.request(method, path, headers={"Accept": accept})

    def test_routes_registered(self) -> None:
        """The routes are methods of L{DocRoutes}."""
        for name in ("docs_file", "docs_noslash", "search_projects"):
            self.assertTrue(callable(getattr(DocRoutes, name)))

    def test_doc_pages(self) -> None:
        """Unpacked docs are served with their type; directories answer with index.html."""
        self.upload_docs(
            "Hello_Pkg", "1.0", {"index.html": "<h1>Hi</h1>", "_static/site.css": "p {}", "api/index.html": "API"}
        )
        self.assertEqual(self.get("/alice/dev/hello-pkg/1.0/+doc/").code, 404)
        self.run_hooks()
        page = self.get("/alice/dev/hello-pkg/1.0/+doc/")
        self.assertEqual((page.code, page.body), (200, b"<h1>Hi</h1>"))
        self.assertEqual(page.header("Content-Type"), "text/html")
        self.assertEqual(page.header("X-Content-Type-Options"), "nosniff")
        css = self.get("/alice/dev/hello-pkg/1.0/+doc/_static/site.css")
        self.assertEqual((css.body, css.header("Content-Type")), (b"p {}", "text/css"))
        self.assertEqual(self.get("/alice/dev/hello-pkg/1.0/+doc/api/").body, b"API")
        head = self.get("/alice/dev/hello-pkg/1.0/+doc/index.html", method="HEAD")
        self.assertEqual((head.code, head.body, head.header("Content-Length")), (200, b"", "11"))

    def test_redirects(self) -> None:
        """Directories without a slash, C{+doc} itself and non-normalized names redirect (302), keeping the query."""
        self.upload_docs("Hello_Pkg", "1.0", {"index.html": "top", "api/index.html": "API"})
        self.run_hooks()
        base = "http://127.0.0.1:3141/alice/dev"
        for path, location in [
            ("/alice/dev/hello-pkg/1.0/+doc", f"{base}/hello-pkg/1.0/+doc/"),
            ("/alice/dev/hello-pkg/1.0/+doc?x=1", f"{base}/hello-pkg/1.0/+doc/?x=1"),
            ("/alice/dev/hello-pkg/1.0/+doc/api", f"{base}/hello-pkg/1.0/+doc/api/"),
            ("/alice/dev/hello-pkg/1.0/+doc/api?q=a", f"{base}/hello-pkg/1.0/+doc/api/?q=a"),
            ("/alice/dev/Hello_Pkg/1.0/+doc/api/", f"{base}/hello-pkg/1.0/+doc/api/"),
            ("/alice/dev/Hello.Pkg/+latest/+doc/?q=1", f"{base}/hello-pkg/+latest/+doc/?q=1"),
        ]:
            reply = self.get(path)
            self.assertEqual((reply.code, reply.header("Location")), (302, location), path)

    def test_not_found(self) -> None:
        """Missing docs, files and versions are 404 in devpi's JSON envelope, whatever the Accept."""
        self.upload_docs("pkg", "1.0", {"index.html": "top", "nested/page.html": "page"})
        self.run_hooks()
        missing = self.get("/alice/dev/pkg/1.0/+doc/nope.html", accept="application/json")
        self.assertEqual(missing.code, 404)
        self.assertIn("nope.html", missing.json()["message"])
        text = self.get("/alice/dev/pkg/1.0/+doc/nested/", accept="text/plain")
        self.assertEqual((text.code, text.header("Content-Type")), (404, "application/json"))
        self.assertIn("nested", text.json()["message"])
        for path in (
            "/alice/dev/pkg/2.0/+doc/",
            "/alice/dev/other/1.0/+doc/",
            "/bob/dev/pkg/1.0/+doc/",
            "/alice/dev/pkg/+stable/+doc/x",
        ):
            self.assertEqual(self.get(path).code, 404, path)

    def test_traversal(self) -> None:
        """No path reaches outside the version's docs, nor the marker file."""
        self.upload_docs("pkg", "1.0", {"index.html": "top"})
        self.run_hooks()
        docs = os.path.join(self.h.serverdir.path, "+docs", "alice", "dev", "pkg", "1.0")
        os.symlink(os.path.abspath(self.h.serverdir.database), os.path.join(docs, "db"))
        for path in (
            "/alice/dev/pkg/1.0/+doc/../../../../../devpi_tx.sqlite",
            "/alice/dev/pkg/1.0/+doc/%2e%2e/%2e%2e/%2e%2e/%2e%2e/%2e%2e/devpi_tx.sqlite",
            "/alice/dev/pkg/1.0/+doc/..%2f..%2f..%2f..%2f..%2fdevpi_tx.sqlite",
            "/alice/dev/pkg/1.0/+doc//etc/passwd",
            "/alice/dev/pkg/1.0/+doc/./index.html",
            "/alice/dev/pkg/1.0/+doc/db",
            f"/alice/dev/pkg/1.0/+doc/{DOCS_MARKER}",
            "/alice/dev/pkg/../+doc/index.html",
            "/alice/dev/pkg/1.0/+doc/index.html%00",
        ):
            reply = self.get(path)
            self.assertEqual(reply.code, 404, path)
            self.assertNotIn(b"SQLite", reply.body)

    def test_latest_and_stable(self) -> None:
        """C{+latest} is the highest version with docs in PEP 440 order, C{+stable} the highest final one."""
        for version in ("1.9", "1.10", "2.0b1"):
            self.upload_docs("pkg", version, {"index.html": version})
        self.h.upload("alice/dev", "alice", "pkg", "3.0", make_sdist("pkg", "3.0"))
        self.run_hooks()
        self.assertEqual(self.get("/alice/dev/pkg/+latest/+doc/").body, b"2.0b1")
        self.assertEqual(self.get("/alice/dev/pkg/+stable/+doc/").body, b"1.10")
        self.assertEqual(self.get("/alice/dev/pkg/+stable/+doc/index.html").body, b"1.10")
        self.upload_docs("pre", "1.0a1", {"index.html": "alpha"})
        self.upload_docs("pre", "nightly", {"index.html": "nightly"})
        self.run_hooks()
        self.assertEqual(self.get("/alice/dev/pre/+latest/+doc/").body, b"alpha")
        self.assertEqual(self.get("/alice/dev/pre/+stable/+doc/").code, 404)

    def test_replace_and_delete(self) -> None:
        """New docs replace the old; deleting the version, then the index, takes them away."""
        self.upload_docs("pkg", "1.0", {"index.html": "first"})
        self.run_hooks()
        self.upload_docs("pkg", "1.0", {"index.html": "second"})
        self.run_hooks()
        self.assertEqual(self.get("/alice/dev/pkg/1.0/+doc/").body, b"second")
        self.upload_docs("pkg", "2.0", {"index.html": "two"})
        self.assertEqual(self.h.request("DELETE", "/alice/dev/pkg/1.0", user="alice").code, 200)
        self.run_hooks()
        self.assertEqual(self.get("/alice/dev/pkg/1.0/+doc/").code, 404)
        self.assertEqual(self.get("/alice/dev/pkg/+latest/+doc/").body, b"two")
        self.assertEqual(self.h.request("DELETE", "/alice/dev", user="alice").code, 201)
        self.run_hooks()
        self.assertEqual(self.get("/alice/dev/pkg/2.0/+doc/").code, 404)
        self.assertFalse(os.path.exists(os.path.join(self.h.serverdir.path, "+docs", "alice")))
        self.assertEqual(os.listdir(os.path.join(self.h.serverdir.path, "+rendered")), [])

    def test_search_route(self) -> None:
        """C{/+search?q=} answers a C{list:searchresult} envelope; odd or missing queries give an empty list."""
        self.h.upload(
            "alice/dev", "alice", "Hello_Pkg", "1.0", make_sdist("Hello_Pkg", "1.0"), summary="Greets the world"
        )
        self.run_hooks()
        reply = self.h.request("GET", "/+search?q=greets%20WORLD")
        self.assertEqual(reply.code, 200)
        self.assertEqual(reply.header("Content-Type"), "application/json")
        self.assertEqual(
            reply.json(),
            {
                "type": "list:searchresult",
                "result": [
                    {"stage": "alice/dev", "project": "hello-pkg", "version": "1.0", "summary": "Greets the world"}
                ],
            },
        )
        for path in ("/+search", "/+search?q=", "/+search?q=%22", "/+search?q=%ff%fe", "/+search?q=nothing"):
            odd = self.h.request("GET", path)
            self.assertEqual((odd.code, odd.json()["result"]), (200, []), path)
