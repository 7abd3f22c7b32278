# -*- test-case-name: tests.web.test_hardening -*-
"""
What devpi-client expects of answers, and what a hostile client sends: the
HTTP API in memory (real SQLite files, StubTreq), every refusal a 4xx in
devpi's JSON envelope with nothing stored.
"""

from __future__ import annotations

import json
import os
from typing import Any

from twisted.internet.defer import Deferred
from twisted.trial.unittest import SynchronousTestCase

from devpi_tx.model.names import MAX_DOCUMENT
from devpi_tx.web.api import PARSE_IN_WRITER
from devpi_tx.web.common import MAX_JSON_BODY, MAX_JSON_DEPTH
from tests.helpers import basic, make_wheel, multipart, upload_fields
from tests.web.test_api import _Base


class CompatibilityTests(_Base):
    def test_base_with_leading_slash(self) -> None:
        """C{bases=/root/pypi} is accepted and stored as C{root/pypi}, as devpi does."""
        reply = self.h.request("PUT", "/alice/hello", {"bases": ["/root/pypi"]}, user="alice")
        self.assertEqual(reply.code, 200, reply.body)
        self.assertEqual(reply.json()["result"]["bases"], ["root/pypi"])
        reply = self.h.request("PATCH", "/alice/hello", ["bases=/alice/dev/,/root/pypi"], user="alice")
        self.assertEqual(reply.code, 200, reply.body)
        self.assertEqual(reply.json()["result"]["bases"], ["alice/dev", "root/pypi"])

    def test_index_cannot_be_its_own_base(self) -> None:
        """A PATCH that makes an index its own base is refused and changes nothing."""
        for body in (["bases=alice/dev"], ["bases+=/alice/dev"]):
            reply = self.assert_no_trace(self.h.request, "PATCH", "/alice/dev", body, user="alice")
            self.assertEqual(reply.code, 400)
            self.assertEqual(reply.json()["message"], "index 'alice/dev' cannot be a base of itself")

    def test_user_patch_refuses_unknown_keys(self) -> None:
        """C{PATCH /user} refuses keys it does not know, as C{PUT} does."""
        reply = self.assert_no_trace(self.h.request, "PATCH", "/alice", {"foo": 1}, user="alice")
        self.assertEqual(reply.code, 400)
        self.assertEqual(reply.json()["message"], "Unknown keys in user config: foo")

    def test_errors_are_json_whatever_the_accept(self) -> None:
        """
        Errors come in devpi's envelope with C{Content-Type: application/json}
        exactly, whatever the client accepts.
        """
        for accept in ("application/json", "*/*", "text/plain", ""):
            for method, path in (
                ("GET", "/alice/dev/+f/abc/def/nothing-1.0.tar.gz"),
                ("GET", "/nobody/x"),
                ("PUT", "/x/y/z/w/v"),
            ):
                reply = self.h.request(method, path, headers={"Accept": accept})
                self.assertIn(reply.code, (404, 405), (accept, path))
                self.assertEqual(reply.header("Content-Type"), "application/json", (accept, path))
                self.assertIn("message", reply.json())

    def test_refused_toxresult_is_json(self) -> None:
        """A refused tox result upload is a 403 in the JSON envelope, for any Accept."""
        self.assertEqual(
            self.h.upload("alice/dev", "alice", "hello-pkg", "1.0", make_wheel("hello-pkg", "1.0")).code, 200
        )
        self.h.request("PATCH", "/alice/dev", ["acl_toxresult_upload=alice"], user="alice")
        link = self.h.request("GET", "/alice/dev/hello-pkg/1.0").json()["result"]["+links"][0]["href"]
        path = link.split("127.0.0.1:3141", 1)[1]
        for accept in ("application/json", "*/*"):
            reply = self.assert_no_trace(self.h.request, "POST", path, {"x": 1}, headers={"Accept": accept})
            self.assertEqual(reply.code, 403)
            self.assertEqual(reply.header("Content-Type"), "application/json")
            self.assertIn("No permission to upload tox results", reply.json()["message"])

    def test_upload_reason_phrases(self) -> None:
        """
        Without credentials an upload is C{401 Unauthorized}; a user without
        permission gets C{403 no permission to submit} (clients print the phrase).
        """
        archive = make_wheel("hello-pkg", "1.0")
        reply = self.assert_no_trace(self.h.upload, "alice/dev", None, "hello-pkg", "1.0", archive)
        self.assertEqual((reply.code, reply.phrase), (401, b"Unauthorized"))
        self.h.create_user("bob")
        reply = self.assert_no_trace(self.h.upload, "alice/dev", "bob", "hello-pkg", "1.0", archive)
        self.assertEqual((reply.code, reply.phrase), (403, b"no permission to submit"))


class BadJSONTests(_Base):
    def test_deep_nesting(self) -> None:
        """Deeply nested JSON anywhere is a 400, never a 500 or a RecursionError."""
        deep = b"[" * 1000
        deeper_than_allowed = json.dumps(
            {"custom_data": json.loads("[" * MAX_JSON_DEPTH + "]" * MAX_JSON_DEPTH), "password": "x"}
        )
        for method, path, raw, user in (
            ("POST", "/+login", deep, None),
            ("PUT", "/bob", deep, None),
            ("PATCH", "/alice", deep, "alice"),
            ("PATCH", "/alice/dev", deep, "alice"),
            ("PUT", "/bob", deeper_than_allowed.encode(), None),
            ("PUT", "/bob", b"[" * 30000 + b"]" * 30000, None),
        ):
            reply = self.assert_no_trace(self.h.request, method, path, raw=raw, user=user)
            self.assertEqual(reply.code, 400, (method, path, reply.body))
            self.assertEqual(reply.header("Content-Type"), "application/json")
            self.assertIn("JSON", reply.json()["message"])

    def test_nesting_within_limit(self) -> None:
        """JSON nested up to the limit is taken."""
        nested = json.loads("[" * (MAX_JSON_DEPTH - 1) + "]" * (MAX_JSON_DEPTH - 1))
        reply = self.h.request("PUT", "/bob", {"password": "x", "custom_data": nested})
        self.assertEqual(reply.code, 201, reply.body)

    def test_non_finite_numbers(self) -> None:
        """C{NaN} and C{Infinity} are refused: C{GET /} stays valid JSON."""
        for constant in ("NaN", "Infinity", "-Infinity"):
            raw = f'{{"password": "x", "custom_data": {constant}}}'.encode()
            reply = self.assert_no_trace(self.h.request, "PUT", "/bob", raw=raw)
            self.assertEqual(reply.code, 400, reply.body)
        body = self.h.request("GET", "/").body
        json.loads(body, parse_constant=lambda name: self.fail(f"{name} in GET /"))

    def test_large_body(self) -> None:
        """A JSON body over the limit is a 413 and nothing is stored."""
        raw = json.dumps({"password": "x", "custom_data": "a" * MAX_JSON_BODY}).encode()
        reply = self.assert_no_trace(self.h.request, "PUT", "/bob", raw=raw)
        self.assertEqual(reply.code, 413)
        self.assertIn("larger than", reply.json()["message"])

    def test_large_document(self) -> None:
        """
        A user record or index config that would grow over the document limit
        is refused, also when it grows a little at a time.
        """
        chunk = "a" * (MAX_DOCUMENT // 3)
        self.assertEqual(self.h.request("PATCH", "/alice", {"custom_data": chunk}, user="alice").code, 200)
        self.assertEqual(self.h.request("PATCH", "/alice", {"description": chunk}, user="alice").code, 200)
        reply = self.assert_no_trace(self.h.request, "PATCH", "/alice", {"title": chunk}, user="alice")
        self.assertEqual(reply.code, 400)
        self.assertIn("user config too large", reply.json()["message"])
        self.assertEqual(self.h.request("PATCH", "/alice/dev", {"description": chunk}, user="alice").code, 200)
        self.assertEqual(self.h.request("PATCH", "/alice/dev", {"title": chunk}, user="alice").code, 200)
        reply = self.assert_no_trace(
            self.h.request, "PATCH", "/alice/dev", [f"acl_upload+=u{i}{chunk[:200]}" for i in range(120)], user="alice"
        )
        self.assertEqual(reply.code, 400)
        self.assertIn("index config too large", reply.json()["message"])

    def test_bad_toxresult(self) -> None:
        """A tox result that is not JSON, too deep or not finite is a 400 and nothing is stored."""
        self.assertEqual(
            self.h.upload("alice/dev", "alice", "hello-pkg", "1.0", make_wheel("hello-pkg", "1.0")).code, 200
        )
        link = self.h.request("GET", "/alice/dev/hello-pkg/1.0").json()["result"]["+links"][0]["href"]
        path = link.split("127.0.0.1:3141", 1)[1]
        for raw in (b"{", b"[" * 5000, b'{"x": NaN}'):
            reply = self.assert_no_trace(self.h.request, "POST", path, raw=raw)
            self.assertEqual(reply.code, 400, raw[:10])
        self.assertEqual(self.h.request("POST", path, {"ok": [1, 2]}).code, 200)


class BadUploadTests(_Base):
    def test_control_characters_in_file_name(self) -> None:
        """A file name with a TAB, C{\\x01} or DEL is refused; nothing is stored."""
        _, data = make_wheel("hello-pkg", "1.0")
        for bad in (
            "hello_pkg-1.0-py3-none\tany.whl",
            "hello_pkg-1.0-py3-none-\x01any.whl",
            "hello_pkg-1.0\x7f-py3-none-any.whl",
        ):
            body, ctype = multipart(upload_fields("hello-pkg", "1.0"), [("content", bad, data)])
            reply = self.assert_no_trace(
                self.h.request, "POST", "/alice/dev/", raw=body, headers={"Content-Type": ctype}, user="alice"
            )
            self.assertEqual(reply.code, 400, repr(bad))
            self.assertIn(b"invalid filename", reply.phrase)


class RedirectTests(_Base):
    def test_location_is_percent_encoded(self) -> None:
        """Characters from the request path go into C{Location} percent-encoded."""
        self.assertEqual(
            self.h.upload("alice/dev", "alice", "hello-pkg", "1.0", make_wheel("hello-pkg", "1.0")).code, 200
        )
        cases = [
            ("/alice/dev/Hello_Pkg/1.0%22%3Cx%3E%20y", "/alice/dev/hello-pkg/1.0%22%3Cx%3E%20y"),
            ("/alice/dev/Hello_Pkg/1.0%E2%82%AC", "/alice/dev/hello-pkg/1.0%E2%82%AC"),
            ("/alice/dev/Hello_Pkg/1.0/+doc?a=%22%3C", "/alice/dev/Hello_Pkg/1.0/+doc/?a=%22%3C"),
            ("/alice/dev/Hello_Pkg/1.0/+doc/x%22y?%3Cz", "/alice/dev/hello-pkg/1.0/+doc/x%22y?%3Cz"),
        ]
        for path, expected in cases:
            reply = self.h.request("GET", path)
            self.assertIn(reply.code, (301, 302), path)
            location = reply.header("Location") or ""
            self.assertEqual(location, "http://127.0.0.1:3141" + expected, path)
            self.assertTrue(all(33 <= ord(c) < 127 and c not in '"<>\\' for c in location), location)


class UploadPermissionTests(_Base):
    """Each of the two upload permission checks, on its own."""

    def test_refused_before_the_body_is_parsed(self) -> None:
        """
        A user without upload permission is refused before the body is
        read: a malformed body still gets the 403, not a parse error.
        """
        self.h.create_user("bob")
        body = b"--x\r\nnot a multipart body"
        reply = self.assert_no_trace(
            self.h.request,
            "POST",
            "/alice/dev/",
            raw=body,
            headers={"Content-Type": "multipart/form-data; boundary=x"},
            user="bob",
        )
        self.assertEqual((reply.code, reply.phrase), (403, b"no permission to submit"))
        reply = self.h.request(
            "POST", "/alice/dev/", raw=body, headers={"Content-Type": "multipart/form-data; boundary=x"}, user="alice"
        )
        self.assertEqual(reply.code, 400, "the same body from a permitted user is a parse error")

    def test_permission_taken_away_during_the_upload(self) -> None:
        """
        When C{acl_upload} changes between the early check and the write
        transaction, the write refuses with 403 and nothing is stored.
        """
        held: list[Deferred[Any]] = []
        run = self.h.api._run

        def hold(fn: Any, *args: Any) -> Deferred[Any]:
            self.assertEqual(fn.__name__, "parse")
            d: Deferred[Any] = Deferred()
            held.append(d)
            d.addCallback(lambda _: run(fn, *args))
            return d

        self.h.api._run = hold
        archive = make_wheel("hello-pkg", "1.0", extra=os.urandom(PARSE_IN_WRITER).hex())
        self.assertGreater(len(archive[1]), PARSE_IN_WRITER)
        body, ctype = multipart(upload_fields("hello-pkg", "1.0"), [("content", *archive)])
        serial = self.h.store.current_serial()
        pending = self.h.treq.request(
            "POST",
            "http://127.0.0.1:3141/alice/dev/",
            data=body,
            headers={"Content-Type": [ctype], "X-Devpi-Auth": [basic("alice", self.h.auth["alice"])]},
        )
        self.h.flush()
        self.assertEqual(len(held), 1, "the large body is parsed in a worker before the write")

        async def revoke(tx: Any) -> None:
            config = await tx.get("i/alice/dev")
            tx.set("i/alice/dev", dict(config, acl_upload=["root"]))

        self.successResultOf(self.h.store.write(revoke))
        held[0].callback(None)
        self.h.flush(pending)
        response = self.successResultOf(pending)
        self.assertEqual((response.code, response.phrase), (403, b"no permission to submit"))
        self.assertEqual(self.h.store.current_serial(), serial + 1, "only the acl change committed")
        self.assertEqual([f for f in self.h.stored_files() if not f.startswith(".tmp")], [])
        self.assertEqual(os.listdir(os.path.join(self.h.serverdir.files, ".tmp")), [])


class ErrorMapTests(SynchronousTestCase):
    def test_every_domain_error_has_a_status(self) -> None:
        """Every kind of domain error is mapped to an HTTP status in one place, the web layer's."""
        from devpi_tx.model import errors
        from devpi_tx.web.errors import STATUS, status_of

        kinds = [v for v in vars(errors).values() if isinstance(v, type) and issubclass(v, errors.DomainError)]
        for kind in kinds:
            if kind is not errors.DomainError:
                self.assertIn(kind, STATUS, kind)
                self.assertEqual(status_of(kind("x")), STATUS[kind])

        class Narrower(errors.NotFound):
            pass

        self.assertEqual(status_of(Narrower("x")), 404)
        self.assertEqual(status_of(errors.DomainError("x")), 500)
