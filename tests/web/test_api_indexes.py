"""
Index configuration through the HTTP API in memory (spec 1.8, 3.2-3.5).
"""

from __future__ import annotations

from tests.helpers import make_wheel
from tests.web.test_api import _Base


class IndexTests(_Base):
    def test_created_defaults(self) -> None:
        """A new stage has exactly devpi's defaults (spec 3.2)."""
        reply = self.h.request("PUT", "/alice/plain", {}, user="alice")
        self.assertEqual(reply.code, 200)
        self.assertEqual(
            reply.json()["result"],
            {
                "type": "stage",
                "volatile": True,
                "bases": [],
                "acl_upload": ["alice"],
                "acl_toxresult_upload": [":ANONYMOUS:"],
                "mirror_whitelist": [],
                "mirror_whitelist_inheritance": "intersection",
            },
        )

    def test_patch_forms(self) -> None:
        """PATCH takes key=value ops, += / -=, a dict, and a wrapped GET answer."""
        r = self.h.request("PATCH", "/alice/dev", ["volatile=no", "acl_upload+=bob", "acl_upload+=bob"], user="alice")
        self.assertEqual(r.code, 200, r.body)
        self.assertEqual(r.json()["result"]["acl_upload"], ["alice", "bob"])
        self.assertIs(r.json()["result"]["volatile"], False)
        r = self.h.request("PATCH", "/alice/dev", ["acl_upload-=bob", "title=Dev"], user="alice")
        self.assertEqual((r.json()["result"]["acl_upload"], r.json()["result"]["title"]), (["alice"], "Dev"))
        r = self.h.request("PATCH", "/alice/dev", {"description": "d"}, user="alice")
        self.assertEqual(r.json()["result"]["description"], "d")
        wrapped = self.h.request("GET", "/alice/dev?no_projects").json()
        wrapped["result"]["title"] = "T2"
        r = self.h.request("PATCH", "/alice/dev", wrapped, user="alice")
        self.assertEqual(r.json()["result"]["title"], "T2")
        r = self.h.request("PATCH", "/alice/dev", ["title-="], user="alice")
        self.assertNotIn("title", r.json()["result"])

    def test_patch_errors(self) -> None:
        """Bad PATCHes get 400 with devpi's messages and change nothing."""
        cases = [
            (["volatile=maybe"], "Unknown boolean value 'maybe'."),
            (["acl_upload-=nobody"], "The 'acl_upload' setting doesn't have value 'nobody'"),
            (["volatile-="], "Default values can't be removed."),
            (["unknownkey+=x"], None),
            (["bases=nope/nope"], "base index 'nope/nope' does not exist"),
            (["bases=nope"], "invalid base index spec: 'nope'"),
            (["type=mirror"], "the 'type' of an index can't be changed"),
            ({"foo": "bar"}, "indexconfig got unexpected keyword arguments: foo=bar"),
            ("nonsense", None),
        ]
        for body, message in cases:
            reply = self.assert_no_trace(self.h.request, "PATCH", "/alice/dev", body, user="alice")
            self.assertEqual(reply.code, 400, (body, reply.body))
            if message is not None:
                self.assertEqual(reply.json()["message"], message)
        reply = self.h.request("PATCH", "/alice/dev?error_on_noop", ["volatile=True"], user="alice")
        self.assertEqual(reply.json()["message"], "The requested modifications resulted in no changes")

    def test_create_errors(self) -> None:
        """Index creation errors: exists 409, unknown user 404, others 403, bad names 400."""
        self.h.create_user("bob")
        cases = [
            ("/alice/dev", {}, "alice", 409),
            ("/ghost/dev", {}, "root", 404),
            ("/alice/other", {}, "bob", 403),
            ("/alice/other", {}, None, 403),
            ("/alice/other", {"type": "weird"}, "alice", 400),
            ("/alice/other", {"bases": ["alice/nope"]}, "alice", 400),
            ("/alice/other", {"shoe": 1}, "alice", 400),
            ("/alice/a%3Ab", {}, "alice", 400),
        ]
        for path, body, user, code in cases:
            reply = self.assert_no_trace(self.h.request, "PUT", path, body, user=user)
            self.assertEqual(reply.code, code, (path, reply.body))

    def test_mirror_config(self) -> None:
        """Mirror indexes validate their keys and drop stage-only ones."""
        reply = self.h.request(
            "PUT",
            "/alice/mirror",
            {"type": "mirror", "mirror_url": "http://127.0.0.1:1/simple/", "bases": "x", "mirror_cache_expiry": "60"},
            user="alice",
        )
        self.assertEqual(reply.code, 200, reply.body)
        result = reply.json()["result"]
        self.assertEqual(result["mirror_cache_expiry"], 60)
        self.assertNotIn("bases", result)
        bad = self.h.request("PUT", "/alice/m2", {"type": "mirror", "mirror_url": "ftp://x"}, user="alice")
        self.assertEqual(bad.json()["message"], "'mirror_url' option must be a URL.")

    def test_bases_cycle(self) -> None:
        """Two indexes naming each other as bases work (resolution terminates)."""
        self.h.request("PUT", "/alice/other", {"bases": "alice/dev"}, user="alice")
        reply = self.h.request("PATCH", "/alice/dev", ["bases=alice/other"], user="alice")
        self.assertEqual(reply.code, 200)
        self.h.upload("alice/other", "alice", "cyc", "1.0", make_wheel("cyc", "1.0"))
        page = self.h.request("GET", "/alice/dev/+simple/cyc/", headers={"Accept": "text/html"})
        self.assertEqual(page.code, 200)
        self.assertIn(b"cyc-1.0-py3-none-any.whl", page.body)

    def test_delete_index(self) -> None:
        """Volatile indexes delete with 201; non-volatile ones are refused."""
        self.h.request("PUT", "/alice/tmp", {}, user="alice")
        self.h.upload("alice/tmp", "alice", "pkg", "1.0", make_wheel("pkg", "1.0"))
        reply = self.h.request("DELETE", "/alice/tmp", user="alice")
        self.assertEqual((reply.code, reply.json()["message"]), (201, "index alice/tmp deleted"))
        self.assertEqual(self.h.stored_files(), [])
        self.h.request("PUT", "/alice/keep", {"volatile": False}, user="alice")
        reply = self.assert_no_trace(self.h.request, "DELETE", "/alice/keep", user="alice")
        self.assertEqual(reply.code, 403)

    def test_projects_listed(self) -> None:
        """GET /U/I lists this index's projects unless C{no_projects}."""
        self.h.upload("alice/dev", "alice", "Hello.Pkg", "1.0", make_wheel("Hello.Pkg", "1.0"))
        self.assertEqual(self.h.request("GET", "/alice/dev").json()["result"]["projects"], ["hello-pkg"])
        self.assertNotIn("projects", self.h.request("GET", "/alice/dev?no_projects").json()["result"])
