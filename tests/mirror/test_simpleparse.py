"""
Upstream simple pages: the file-name parser behind mirror links, and the
names links are listed under.
"""

from __future__ import annotations

import json

from twisted.trial.unittest import SynchronousTestCase

from devpi_tx.mirror.simpleparse import SIMPLE_JSON, parse_project_page
from devpi_tx.model.names import project_of

PAGE = "http://upstream.test/simple/pkg/"


class ProjectOfTests(SynchronousTestCase):
    def test_every_archive_kind(self) -> None:
        """Name and version come from every archive kind devpi lists."""
        cases = {
            "foo-1.0.tar.gz": ("foo", "1.0"),
            "foo-1.0.tar.bz2": ("foo", "1.0"),
            "foo-1.0.tar.xz": ("foo", "1.0"),
            "foo-1.0.tar": ("foo", "1.0"),
            "foo-1.0.tgz": ("foo", "1.0"),
            "foo-1.0.tbz": ("foo", "1.0"),
            "foo-1.0.zip": ("foo", "1.0"),
            "FOO-1.0.TAR.BZ2": ("foo", "1.0"),
            "foo-1.0-py3-none-any.whl": ("foo", "1.0"),
            "foo-1.0-py2.7.egg": ("foo", "1.0"),
            "zope.interface-4.1.0-py2.7-linux-x86_64.egg": ("zope-interface", "4.1.0"),
            "foo-1.0.win32-py2.7.exe": ("foo", "1.0"),
            "foo-1.0.win-amd64-py3.8.exe": ("foo", "1.0"),
            "foo-1.0.win32.exe": ("foo", "1.0"),
            "foo-1.0.msi": ("foo", "1.0"),
            "foo-1.0.win-amd64.msi": ("foo", "1.0"),
            "foo-1.0-1.noarch.rpm": ("foo", "1.0"),
            "foo-1.0-1.src.rpm": ("foo", "1.0"),
            "python-foo-1.0-1.el7.x86_64.rpm": ("python-foo", "1.0"),
            "foo-1.0.deb": ("foo", "1.0"),
            "python3-foo_1.0-1_all.deb": ("python3-foo", "1.0"),
            "foo-1.0.dmg": ("foo", "1.0"),
            "foo-1.0-macosx10.6.dmg": ("foo", "1.0"),
            "foo-1.0.linux-x86_64.tar.gz": ("foo", "1.0"),
        }
        for filename, expected in cases.items():
            self.assertEqual(project_of(filename), expected, filename)

    def test_names_and_versions_with_dashes(self) -> None:
        """
        The name ends at the first dash after which a version follows
        (devpi's rule); a PEP 440 version is normalised, others kept as written.
        """
        self.assertEqual(project_of("foo-bar-1.0.tar.bz2"), ("foo-bar", "1.0"))
        self.assertEqual(project_of("Foo_Bar-1.0-py3-none-any.whl"), ("foo-bar", "1.0"))
        self.assertEqual(project_of("py-3to2-1.0.tar.gz"), ("py-3to2", "1.0"))
        self.assertEqual(project_of("foo-2.0-1.tar.bz2"), ("foo", "2.0.post1"))
        self.assertEqual(project_of("foo-1.0-beta.zip"), ("foo", "1.0b0"))
        self.assertEqual(project_of("Foo-01.0.tar.bz2"), project_of("foo-1.0-py3-none-any.whl"))
        self.assertEqual(project_of("pkg-1!2017.4+devpi.zip"), ("pkg", "1!2017.4+devpi"))
        self.assertEqual(project_of("foo-1.0.dev1.tar.bz2"), ("foo", "1.0.dev1"))
        self.assertEqual(project_of("foo-r123.zip"), ("foo", "r123"))

    def test_not_archives(self) -> None:
        """Names without a version or with another suffix are not release files."""
        for filename in ("foo.tar.gz", "foo-1.0.txt", "foo-1.0.tar.gz.asc", "bad.whl", "foo.egg", "-1.0.zip"):
            self.assertIsNone(project_of(filename), filename)


class LinkNameTests(SynchronousTestCase):
    def test_html_quoted_names_unquoted(self) -> None:
        """
        HTML links are listed under their unquoted file name; a quoted
        slash cannot make a directory.
        """
        body = (
            b'<a href="../../files/pkg-1%212017.4%2Bdevpi.zip">x</a>'
            b'<a href="../../files/pkg-2.0.tar.bz2#sha256=1234">x</a>'
            b'<a href="../../files/pkg-3.0-py2.7.egg">x</a>'
            b'<a href="../../files/..%2F..%2Fpkg-4.0.zip">x</a>'
        )
        links, _ = parse_project_page(body, "text/html", PAGE, "pkg")
        found = {link.filename: (link.url, link.hashes) for link in links}
        self.assertEqual(
            found,
            {
                "pkg-1!2017.4+devpi.zip": ("http://upstream.test/files/pkg-1%212017.4%2Bdevpi.zip", {}),
                "pkg-2.0.tar.bz2": ("http://upstream.test/files/pkg-2.0.tar.bz2", {"sha256": "1234"}),
                "pkg-3.0-py2.7.egg": ("http://upstream.test/files/pkg-3.0-py2.7.egg", {}),
                "pkg-4.0.zip": ("http://upstream.test/files/..%2F..%2Fpkg-4.0.zip", {}),
            },
        )

    def test_json_quoted_names_unquoted(self) -> None:
        """A PEP 691 file whose name is given percent-quoted is listed under its unquoted name."""
        files = [
            {"filename": "pkg-1%212017.4%2Bdevpi.zip", "url": "../../files/pkg-1%212017.4%2Bdevpi.zip", "hashes": {}},
            {"filename": "pkg-2.0.tar.bz2", "url": "../../files/pkg-2.0.tar.bz2", "hashes": {"sha256": "1234"}},
            {"filename": "..%2Fpkg-3.0.zip", "url": "../../files/x", "hashes": {}},
        ]
        body = json.dumps({"meta": {"api-version": "1.1"}, "name": "pkg", "files": files}).encode()
        links, _ = parse_project_page(body, SIMPLE_JSON, PAGE, "pkg")
        self.assertEqual([link.filename for link in links], ["pkg-1!2017.4+devpi.zip", "pkg-2.0.tar.bz2"])
