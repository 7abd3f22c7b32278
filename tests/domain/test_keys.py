# -*- test-case-name: tests.domain.test_keys -*-
"""
The document keys: built and parsed in one module.
"""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase

from devpi_tx.domain import keys


class ParseTests(SynchronousTestCase):
    def test_round_trip(self) -> None:
        """Every key a builder makes parses back into its parts."""
        cases = [
            (keys.user("alice"), keys.Key("user", "alice")),
            (keys.index("alice/dev"), keys.Key("index", "alice", "dev")),
            (keys.project("alice/dev", "pkg"), keys.Key("project", "alice", "dev", "pkg")),
            (keys.version("alice/dev", "pkg", "1.0"), keys.Key("version", "alice", "dev", "pkg", "1.0")),
            (keys.mirror("root/pypi", "pkg"), keys.Key("mirror", "root", "pypi", "pkg")),
            (
                keys.file("alice/dev/+f/abc/def/pkg-1.0.tar.gz"),
                keys.Key("file", "alice", "dev", relpath="alice/dev/+f/abc/def/pkg-1.0.tar.gz"),
            ),
        ]
        for key, expected in cases:
            self.assertEqual(keys.parse(key), expected, key)
        self.assertEqual(keys.parse(keys.version("alice/dev", "pkg", "1.0")).stage, "alice/dev")  # type: ignore[union-attr]

    def test_unknown_forms(self) -> None:
        """Keys of no known kind or shape parse to C{None}."""
        for key in ("", "x/alice", "u/", "i/alice", "v/alice/dev/pkg", "p/alice//pkg", "u"):
            self.assertIsNone(keys.parse(key), key)

    def test_name_in(self) -> None:
        """The name after a prefix."""
        self.assertEqual(keys.name_in(keys.user("bob"), keys.USERS), "bob")
        self.assertEqual(keys.name_in(keys.index("bob/dev"), keys.index_prefix("bob")), "dev")
