"""
The HTTP API in memory: real SQLite files and file store, requests through
StubTreq, inline runners.
"""

from __future__ import annotations

import hashlib
import time

from twisted.trial.unittest import SynchronousTestCase

from devpi_tx.domain.auth import hash_password
from tests.helpers import APIHarness, basic, make_wheel

SIMPLE_JSON = "application/vnd.pypi.simple.v1+json"


class _Base(SynchronousTestCase):
    def setUp(self) -> None:
        self.h = APIHarness(self)
        self.h.login("root", "")
        self.h.create_user("alice", "secret")
        reply = self.h.request("PUT", "/alice/dev", {"bases": "root/pypi"}, user="alice")
        self.assertEqual(reply.code, 200, reply.body)

    def assert_no_trace(self, action, *args, **kwargs):  # type: ignore[no-untyped-def]
        """Run C{action}; assert nothing was committed or stored on disk."""
        serial = self.h.store.current_serial()
        files = self.h.stored_files()
        result = action(*args, **kwargs)
        self.assertEqual(self.h.store.current_serial(), serial)
        self.assertEqual(self.h.stored_files(), files)
        return result


class ServerTests(_Base):
    def test_headers(self) -> None:
        """Every answer carries devpi's headers (spec 0.3)."""
        reply = self.h.request("GET", "/+api")
        self.assertEqual(reply.header("X-Devpi-Api-Version"), "2")
        self.assertEqual(reply.header("X-Devpi-Uuid"), "0" * 32)
        self.assertEqual(reply.header("X-Devpi-Master-Uuid"), "0" * 32)
        self.assertEqual(reply.header("X-Devpi-Primary-Uuid"), "0" * 32)
        self.assertEqual(reply.header("X-Devpi-Serial"), str(self.h.store.current_serial()))
        self.assertEqual(reply.header("Content-Type"), "application/json")
        missing = self.h.request("GET", "/nobody/nothing/+simple/x/")
        self.assertEqual(missing.code, 404)
        self.assertEqual(missing.header("X-Devpi-Api-Version"), "2")

    def test_api_for_index(self) -> None:
        """C{/U/I/+api} names the index URLs; anonymous callers get noauth."""
        result = self.h.request("GET", "/alice/dev/+api").json()["result"]
        self.assertEqual(result["authstatus"], ["noauth", "", []])
        self.assertEqual(result["pypisubmit"], "http://127.0.0.1:3141/alice/dev/")
        self.assertEqual(result["simpleindex"], "http://127.0.0.1:3141/alice/dev/+simple/")
        self.assertIn("server-keyvalue-parsing", result["features"])
        mirror = self.h.request("GET", "/root/pypi/+api").json()["result"]
        self.assertNotIn("pypisubmit", mirror)
        self.assertEqual(self.h.request("GET", "/alice/nope/+api").code, 404)

    def test_root_pypi_defaults(self) -> None:
        """root/pypi has exactly devpi's default config (spec 3.1)."""
        config = self.h.request("GET", "/root/pypi?no_projects").json()["result"]
        self.assertEqual(
            config,
            {
                "type": "mirror",
                "volatile": False,
                "title": "PyPI",
                "mirror_url": "https://pypi.org/simple/",
                "mirror_web_url_fmt": "https://pypi.org/project/{name}/",
            },
        )

    def test_status(self) -> None:
        """C{/+status} reports the serial and version info."""
        result = self.h.request("GET", "/+status").json()["result"]
        self.assertEqual(result["serial"], self.h.store.current_serial())
        self.assertIn("devpi-server", result["versioninfo"])
        self.assertEqual(result["role"], "MASTER")


class AuthTests(_Base):
    def test_login_token_authenticates(self) -> None:
        """A login token sent as X-Devpi-Auth makes C{+api} report the user."""
        result = self.h.request("GET", "/+api", user="alice").json()["result"]
        self.assertEqual(result["authstatus"], ["ok", "alice", []])

    def test_password_works_like_token(self) -> None:
        """Basic auth with the plain password authenticates (twine, pip)."""
        reply = self.h.request("GET", "/+api", headers={"Authorization": "Basic " + basic("alice", "secret")})
        self.assertEqual(reply.json()["result"]["authstatus"][1], "alice")

    def test_wrong_login(self) -> None:
        """Wrong passwords and unknown users get 401; bad bodies 400."""
        reply = self.h.request("POST", "/+login", {"user": "alice", "password": "nope"})
        self.assertEqual(reply.code, 401)
        self.assertEqual(reply.json()["message"], "user 'alice' could not be authenticated")
        self.assertEqual(self.h.request("POST", "/+login", {"user": "ghost", "password": ""}).code, 401)
        self.assertEqual(self.h.request("POST", "/+login", {"user": "alice"}).code, 400)
        self.assertEqual(self.h.request("POST", "/+login", raw=b"{nope").code, 400)

    def test_forged_token(self) -> None:
        """A token with a wrong signature or for another user is anonymous."""
        token = self.h.auth["alice"]
        forged = token[:-3] + ("AAA" if not token.endswith("AAA") else "BBB")
        reply = self.h.request("GET", "/+api", headers={"X-Devpi-Auth": basic("alice", forged)})
        self.assertEqual(reply.json()["result"]["authstatus"][0], "noauth")
        reply = self.h.request("GET", "/+api", headers={"X-Devpi-Auth": basic("root", token)})
        self.assertEqual(reply.json()["result"]["authstatus"][0], "noauth")
        wheel = make_wheel("pkg", "1.0")
        self.h.auth["mallory"] = forged
        self.h.auth["alice"] = forged
        reply = self.assert_no_trace(self.h.upload, "alice/dev", "alice", "pkg", "1.0", wheel)
        self.assertEqual(reply.code, 401)

    def test_expired_token(self) -> None:
        """A token older than its expiration is anonymous."""
        old = self.h.api._config.signer.issue("alice", now=time.time() - 40000)
        reply = self.h.request("GET", "/+api", headers={"X-Devpi-Auth": basic("alice", old)})
        self.assertEqual(reply.json()["result"]["authstatus"][0], "noauth")

    def test_token_of_deleted_user(self) -> None:
        """A token stops working when its user is deleted."""
        self.h.create_user("carl")
        self.assertEqual(self.h.request("DELETE", "/carl", user="carl").code, 200)
        reply = self.h.request("GET", "/+api", user="carl")
        self.assertEqual(reply.json()["result"]["authstatus"][0], "noauth")


class UserTests(_Base):
    def test_create_view_modify(self) -> None:
        """Users are created with 201, shown without secrets, modified by PATCH."""
        view = self.h.request("GET", "/alice").json()["result"]
        self.assertEqual(view["username"], "alice")
        self.assertEqual(view["email"], "alice@example.org")
        self.assertNotIn("pwhash", view)
        self.assertIn("dev", view["indexes"])
        reply = self.h.request("PATCH", "/alice", {"email": "new@example.org", "title": "A"}, user="alice")
        self.assertEqual(reply.json()["message"], "user updated")
        view = self.h.request("GET", "/alice").json()["result"]
        self.assertEqual((view["email"], view["title"]), ("new@example.org", "A"))
        self.h.request("PATCH", "/alice", {"title": ""}, user="alice")
        self.assertNotIn("title", self.h.request("GET", "/alice").json()["result"])

    def test_password_change_gives_token(self) -> None:
        """Changing the password answers a new token; the new password logs in."""
        reply = self.h.request("PATCH", "/alice", {"password": "other"}, user="alice")
        self.assertEqual(reply.json()["type"], "userpassword")
        self.assertEqual(self.h.request("POST", "/+login", {"user": "alice", "password": "other"}).code, 200)
        self.assertEqual(self.h.request("POST", "/+login", {"user": "alice", "password": "secret"}).code, 401)

    def test_create_errors(self) -> None:
        """Bad user creations get 4xx and change nothing."""
        cases = [
            ("/alice", {"password": "x"}, 409),
            ("/bob", {"email": "x"}, 400),
            ("/bob", {"password": "x", "shoe": 1}, 400),
            ("/bo!b", {"password": "x"}, 400),
            ("/" + "b" * 201, {"password": "x"}, 400),
        ]
        for path, body, code in cases:
            reply = self.assert_no_trace(self.h.request, "PUT", path, body)
            self.assertEqual(reply.code, code, (path, reply.body))
            self.assertIn("message", reply.json())

    def test_put_ignores_indexes_and_username(self) -> None:
        """PUT /user ignores C{indexes} and C{username} (spec 12)."""
        reply = self.h.request("PUT", "/bob", {"password": "x", "indexes": {"evil": {}}, "username": "z"})
        self.assertEqual(reply.code, 201)
        self.assertEqual(reply.json()["result"]["indexes"], {})

    def test_modify_permissions(self) -> None:
        """Only the user and root may modify a user; root cannot be deleted."""
        self.h.create_user("bob")
        reply = self.h.request("PATCH", "/alice", {"email": "x"}, user="bob")
        self.assertEqual(reply.code, 403)
        self.assertNotIn("object at", reply.json()["message"])
        self.assertEqual(self.h.request("PATCH", "/alice", {"email": "x@y"}, user="root").code, 200)
        self.assertEqual(self.h.request("DELETE", "/root", user="root").code, 403)
        self.assertEqual(self.h.request("DELETE", "/alice", user="bob").code, 403)
        self.assertEqual(self.h.request("DELETE", "/nobody", user="root").code, 404)

    def test_delete_with_nonvolatile_index(self) -> None:
        """A user with a non-volatile index cannot be deleted."""
        self.h.request("PATCH", "/alice/dev", ["volatile=False"], user="alice")
        reply = self.assert_no_trace(self.h.request, "DELETE", "/alice", user="alice")
        self.assertEqual(reply.code, 403)
        self.assertEqual(reply.json()["message"], "user 'alice' has non-volatile index: dev")

    def test_delete_user_removes_files(self) -> None:
        """Deleting a user removes its indexes and their files."""
        self.h.upload("alice/dev", "alice", "pkg", "1.0", make_wheel("pkg", "1.0"))
        self.assertTrue(self.h.stored_files())
        self.assertEqual(self.h.request("DELETE", "/alice", user="alice").code, 200)
        self.assertEqual(self.h.stored_files(), [])
        self.assertEqual(self.h.request("GET", "/alice/dev").code, 404)

    def test_imported_password_hashes(self) -> None:
        """Users created with a devpi hash (argon2 PHC or legacy salted sha256) log in."""
        self.h.request("PUT", "/imp", {"password": None, "pwhash": hash_password("pw1")}, user="root")
        self.assertEqual(self.h.request("POST", "/+login", {"user": "imp", "password": "pw1"}).code, 200)
        legacy = hashlib.sha256(b"salt" + b"pw2").hexdigest()

        def legacy_user(tx):  # type: ignore[no-untyped-def]
            tx.set("u/old", {"pwhash": legacy, "pwsalt": "salt", "created": "x", "modified": "x"})

        self.successResultOf(self.h.store.write(legacy_user))
        self.assertEqual(self.h.request("POST", "/+login", {"user": "old", "password": "pw2"}).code, 200)
        self.assertEqual(self.h.request("POST", "/+login", {"user": "old", "password": "bad"}).code, 401)

    def test_list_users(self) -> None:
        """C{GET /} lists all users with their indexes."""
        result = self.h.request("GET", "/").json()
        self.assertEqual(result["type"], "list:userconfig")
        self.assertEqual(sorted(result["result"]), ["alice", "root"])
        self.assertIn("pypi", result["result"]["root"]["indexes"])


class RestrictModifyTests(SynchronousTestCase):
    def test_restrict_modify(self) -> None:
        """With --restrict-modify only the listed principals manage users and indexes."""
        h = APIHarness(self, restrict_modify=frozenset({"root"}))
        self.assertEqual(h.request("PUT", "/eve", {"password": "x"}).code, 403)
        h.login("root", "")
        self.assertEqual(h.request("PUT", "/eve", {"password": "x"}, user="root").code, 201)
        h.login("eve", "x")
        self.assertEqual(h.request("PUT", "/eve/dev", {}, user="eve").code, 403)
        self.assertEqual(h.request("PUT", "/eve/dev", {"acl_upload": "eve"}, user="root").code, 200)
        self.assertEqual(h.request("PATCH", "/eve", {"password": "y"}, user="eve").code, 200)
        self.assertEqual(h.request("PATCH", "/eve", {"email": "e@x"}, user="eve").code, 403)
        reply = h.upload("eve/dev", "eve", "pkg", "1.0", make_wheel("pkg", "1.0"))
        self.assertEqual(reply.code, 200, reply.phrase)
