# -*- test-case-name: tests.web.test_paths -*-
"""
Request paths parsed in one place, for the answers given before routing and
for the metrics' route labels.
"""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase

from devpi_tx.web.paths import LIST, ROUTES, RequestPath, parse_path


class ParsePathTests(SynchronousTestCase):
    def test_shapes(self) -> None:
        """Each kind of URL of spec 1.1 has its route, page group or relpath."""
        cases = {
            b"/": RequestPath("root"),
            b"/alice": RequestPath("user"),
            b"/alice/dev": RequestPath("index"),
            b"/alice/dev/pkg": RequestPath("project"),
            b"/alice/dev/pkg/1.0": RequestPath("version"),
            b"/alice/dev/+simple/": RequestPath("simple_list", LIST),
            b"/alice/dev/+simple/pkg/": RequestPath("simple_project", "pkg"),
            b"/alice/dev/+simple/pkg": RequestPath("simple_project"),
            b"/alice/dev/+simple/pkg/refresh": RequestPath("simple_project"),
            b"/alice/dev/+f/abc/def/pkg%211.0.tar.gz": RequestPath(
                "file", relpath="alice/dev/+f/abc/def/pkg!1.0.tar.gz"
            ),
            b"/root/pypi/+e/https_host_files/pkg-1.0.zip": RequestPath(
                "file", relpath="root/pypi/+e/https_host_files/pkg-1.0.zip"
            ),
            b"/alice/dev/pkg/1.0/+doc/index.html": RequestPath("doc"),
            b"/+status": RequestPath("+status"),
            b"/alice/dev/+api": RequestPath("+api"),
            b'/+a"b\\c': RequestPath("other"),
            b"/a/b/c/d/e/f": RequestPath("other"),
        }
        for path, expected in cases.items():
            found = parse_path(path)
            self.assertEqual(found, expected, path)
            self.assertIn(found.route, ROUTES)
