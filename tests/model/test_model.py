"""
Tests for L{devpi_tx.model} (the pure rules of spec 0.8, 2.4, 3.2-3.6 and
4.1-4.3) and L{devpi_tx.domain.auth} (passwords, login tokens, Basic credentials and
the signing secret).
"""

from __future__ import annotations

import base64
import hashlib
import os
import stat
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from twisted.trial.unittest import SynchronousTestCase

from devpi_tx.domain.auth import (
    TOKEN_EXPIRATION,
    TokenSigner,
    hash_password,
    load_secret,
    parse_basic,
    verify_password,
)
from devpi_tx.model.errors import Conflict, DomainError, Forbidden, Invalid, NotAuthenticated, NotFound
from devpi_tx.model.ixconfig import apply_patch, validate_ixconfig
from devpi_tx.model.names import (
    ARCHIVE_SUFFIXES,
    MAX_NAME_LENGTH,
    check_filename,
    check_metadata,
    check_name,
    metadata_from_form,
    normalize_name,
)
from devpi_tx.model.policy import ANONYMOUS, Identity, Policy, mirrors_allowed, stage_resolution_order

NAME_ERROR = "contains characters that aren't allowed. Any ascii symbol besides -.@_ is blocked."

EXISTING = {("root", "pypi"), ("alice", "dev"), ("alice", "base")}


def index_exists(user: str, index: str) -> bool:
    return (user, index) in EXISTING


KIND_OF_STATUS: dict[int, type[DomainError]] = {
    400: Invalid,
    401: NotAuthenticated,
    403: Forbidden,
    404: NotFound,
    409: Conflict,
}


class _APIErrorMixin:
    """
    C{assertAPIError} for L{SynchronousTestCase} subclasses.
    """

    def assertAPIError(  # noqa: N802 (unittest spelling)
        self: Any,
        status: int,
        message: str | None,
        fn: Callable[..., object],
        *args: object,
        **kwargs: object,
    ) -> DomainError:
        """
        Call C{fn} and assert it raises the L{DomainError} that the web layer
        answers with C{status} and, unless C{None}, exactly C{message}.
        """
        error: DomainError = self.assertRaises(DomainError, fn, *args, **kwargs)
        self.assertIs(type(error), KIND_OF_STATUS[status])
        if message is not None:
            self.assertEqual(error.message, message)
        return error


# -- names --------------------------------------------------------------------


class CheckNameTests(_APIErrorMixin, SynchronousTestCase):
    """
    L{check_name} accepts user and index names as spec 0.8 describes.
    """

    def test_allowed(self) -> None:
        """
        Letters, digits, C{-}, C{.}, C{@}, C{_} and non-ASCII letters are
        accepted, as is a name of exactly the maximum length.
        """
        for name in (
            "alice",
            "Alice-2.0",
            "a.b@example.com",
            "under_score",
            "j\u00fcrgen",
            "\u65e5\u672c",
            "x" * MAX_NAME_LENGTH,
        ):
            # check_name is declared to return None; the test checks that it does
            self.assertIsNone(check_name("username", name), name)  # type: ignore[func-returns-value]

    def test_forbidden_characters(self) -> None:
        """
        Every ASCII symbol besides C{-.@_}, the space and control characters
        are rejected with devpi's message.
        """
        for char in "!\"#$%&'()*+,/:;<=>?[\\]^`{|}~ \x00\x01\t\n\x1f\x7f":
            name = f"bo{char}b"
            self.assertAPIError(400, f"username {name!r} {NAME_ERROR}", check_name, "username", name)

    def test_message_names_kind(self) -> None:
        """
        The message starts with the kind of name, as in spec 0.8's example.
        """
        self.assertAPIError(
            400,
            "username 'bo!b' contains characters that aren't allowed. Any ascii symbol besides -.@_ is blocked.",
            check_name,
            "username",
            "bo!b",
        )
        error = self.assertAPIError(400, None, check_name, "index", "d/v")
        self.assertTrue(error.message.startswith("index 'd/v' contains"), error.message)

    def test_leading_plus(self) -> None:
        """
        Names starting with C{+} (reserved by routing) are rejected.
        """
        self.assertAPIError(400, None, check_name, "index", "+simple")

    def test_dots(self) -> None:
        """
        C{.} and C{..} are rejected (they would be path segments), while dots
        inside a longer name are fine.
        """
        self.assertAPIError(400, None, check_name, "index", "..")
        self.assertAPIError(400, None, check_name, "index", ".")
        check_name("index", "...x")
        check_name("index", "a..b")

    def test_empty(self) -> None:
        """
        The empty name is rejected.
        """
        error = self.assertAPIError(400, None, check_name, "index", "")
        self.assertIn("must not be empty", error.message)

    def test_too_long(self) -> None:
        """
        A name longer than L{MAX_NAME_LENGTH} is rejected naming the limit.
        """
        error = self.assertAPIError(400, None, check_name, "index", "x" * (MAX_NAME_LENGTH + 1))
        self.assertIn(str(MAX_NAME_LENGTH), error.message)


class NormalizeNameTests(SynchronousTestCase):
    """
    L{normalize_name} is PEP 503 normalisation.
    """

    def test_normalize(self) -> None:
        """
        Runs of C{-}, C{_} and C{.} become one C{-} and letters are lowered.
        """
        self.assertEqual(normalize_name("Hello_World"), "hello-world")
        self.assertEqual(normalize_name("a..b--c__d._-e"), "a-b-c-d-e")
        self.assertEqual(normalize_name("Django"), "django")
        self.assertEqual(normalize_name("zope.interface"), "zope-interface")

    def test_idempotent(self) -> None:
        """
        Normalising a normalised name changes nothing.
        """
        for name in ("Hello_World", "a..b", "X-Y"):
            once = normalize_name(name)
            self.assertEqual(normalize_name(once), once)


# -- file names -----------------------------------------------------------------


class CheckFilenameTests(_APIErrorMixin, SynchronousTestCase):
    """
    L{check_filename} applies spec 4.1's file name checks and keeps names
    safe to use as path segments.
    """

    def test_valid(self) -> None:
        """
        Sdists and wheels whose names start with the (normalised) project
        name and contain the version pass.
        """
        check_filename("hello_pkg-1.0.tar.gz", "hello-pkg", "1.0")
        check_filename("Hello_Pkg-1.0-py3-none-any.whl", "hello.pkg", "1.0")
        check_filename("hello-pkg-1.0.ZIP", "Hello-Pkg", "1.0")

    def test_all_archive_suffixes(self) -> None:
        """
        Each suffix of spec 4.1 is accepted, in any case.
        """
        for suffix in ARCHIVE_SUFFIXES:
            check_filename(f"pkg-1.0{suffix}", "pkg", "1.0")
            check_filename(f"pkg-1.0{suffix.upper()}", "pkg", "1.0")
        self.assertEqual(
            set(ARCHIVE_SUFFIXES),
            {".exe", ".tar.gz", ".bz2", ".rpm", ".deb", ".zip", ".tgz", ".egg", ".dmg", ".msi", ".whl"},
        )

    def test_not_an_archive(self) -> None:
        """
        Other suffixes are rejected with devpi's message.
        """
        self.assertAPIError(
            400,
            "'pkg-1.0.txt' is not a valid archive name",
            check_filename,
            "pkg-1.0.txt",
            "pkg",
            "1.0",
        )
        self.assertAPIError(400, None, check_filename, "pkg-1.0.tar", "pkg", "1.0")

    def test_escaped_version(self) -> None:
        """
        A version such as C{1.0+local} may appear in its PEP 427 escaped form
        C{1.0_local} (as in wheel names), or verbatim.
        """
        check_filename("pkg-1.0_local-py3-none-any.whl", "pkg", "1.0+local")
        check_filename("pkg-1.0+local.tar.gz", "pkg", "1.0+local")
        check_filename("pkg-1.0_a_b-py3-none-any.whl", "pkg", "1.0+a-b")

    def test_missing_version(self) -> None:
        """
        A filename without the version is rejected with devpi's message.
        """
        self.assertAPIError(
            400,
            "filename 'pkg-2.0.tar.gz' does not contain version '1.0'",
            check_filename,
            "pkg-2.0.tar.gz",
            "pkg",
            "1.0",
        )
        self.assertAPIError(400, None, check_filename, "pkg-1.0-local-py3-none-any.whl", "pkg", "1.0+local")

    def test_project_mismatch(self) -> None:
        """
        A filename that does not start with the normalised project name is
        rejected with devpi's message.
        """
        self.assertAPIError(
            400,
            "filename 'other-1.0.tar.gz' does not match project name 'pkg'",
            check_filename,
            "other-1.0.tar.gz",
            "pkg",
            "1.0",
        )

    def test_unsafe_names(self) -> None:
        """
        Path traversal, separators, NUL, hidden files, the empty name and
        over-long names are rejected before anything else.
        """
        for filename in (
            "../pkg-1.0.whl",
            "../x.whl",
            "a/pkg-1.0.whl",
            "pkg/../../pkg-1.0.whl",
            "pkg\\..\\pkg-1.0.whl",
            "pkg-1.0\x00.whl",
            ".pkg-1.0.whl",
            "",
            "pkg-1.0" + "x" * 250 + ".whl",
        ):
            self.assertAPIError(400, f"invalid filename {filename!r}", check_filename, filename, "pkg", "1.0")


# -- metadata -------------------------------------------------------------------


class MetadataTests(_APIErrorMixin, SynchronousTestCase):
    """
    L{metadata_from_form} and L{check_metadata} follow spec 4.2.
    """

    def test_from_form(self) -> None:
        """
        Known keys are taken from the form; C{UNKNOWN} becomes C{""}; list
        keys keep all non-empty values; other fields are dropped; keys absent
        from the form are absent from the result.
        """
        form = {
            "name": ["hello-pkg"],
            "version": ["1.0"],
            "summary": ["UNKNOWN"],
            "license": [],
            "classifiers": ["A :: B", "", "C :: D"],
            "requires_dist": [""],
            "filetype": ["sdist"],
            "md5_digest": ["abc"],
            ":action": ["file_upload"],
        }
        self.assertEqual(
            metadata_from_form(form),
            {
                "name": "hello-pkg",
                "version": "1.0",
                "summary": "",
                "license": "",
                "classifiers": ["A :: B", "C :: D"],
                "requires_dist": [],
            },
        )

    def test_from_form_first_value(self) -> None:
        """
        A repeated scalar key keeps its first value.
        """
        self.assertEqual(metadata_from_form({"author": ["a", "b"]}), {"author": "a"})

    def test_check_valid(self) -> None:
        """
        A name matching spec 4.2's pattern and a plain version pass.
        """
        check_metadata({"name": "Hello.Pkg_2", "version": "1.0+local"})
        check_metadata({"name": "a", "version": "1"})

    def test_check_missing(self) -> None:
        """
        Missing or empty C{name} or C{version} is a 400 naming the field.
        """
        for metadata, field in (
            ({"version": "1.0"}, "name"),
            ({"name": "", "version": "1.0"}, "name"),
            ({"name": "pkg"}, "version"),
            ({"name": "pkg", "version": ""}, "version"),
        ):
            error = self.assertAPIError(400, None, check_metadata, metadata)
            self.assertTrue(error.message.startswith("invalid metadata: Missing required field"))
            self.assertIn(field, error.message)

    def test_check_bad_name(self) -> None:
        """
        Names that do not start and end with a letter or digit, or contain
        other characters, are rejected.
        """
        for name in ("-pkg", "pkg-", ".pkg", "pk/g", "pk g", "pk%g", "p\u00e4ckage"):
            self.assertAPIError(400, None, check_metadata, {"name": name, "version": "1.0"})

    def test_check_bad_version(self) -> None:
        """
        Versions containing C{< > % # "} or slashes are rejected.
        """
        for version in ("1<2", "1>2", "1%2", "1#2", '1"2', "1/2", "..", "1 2"):
            self.assertAPIError(400, None, check_metadata, {"name": "pkg", "version": version})


# -- index configuration ----------------------------------------------------------


class ValidateIxconfigTests(_APIErrorMixin, SynchronousTestCase):
    """
    L{validate_ixconfig} applies spec 3.2's defaults, parsing and errors.
    """

    def validate(self, config: Mapping[str, Any], creating: bool = True) -> dict[str, Any]:
        return validate_ixconfig(config, "alice/new", index_exists, creating=creating)

    def test_stage_defaults(self) -> None:
        """
        An empty body creates a stage with exactly the keys and values of
        spec 3.2's "Created index answer".
        """
        self.assertEqual(
            self.validate({}),
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
        self.assertEqual(self.validate({"type": "stage"}), self.validate({}))

    def test_stage_common_keys(self) -> None:
        """
        C{title}, C{description} and C{custom_data} are stored as given; the
        C{projects} and C{pypi_whitelist} keys are dropped.
        """
        config = self.validate(
            {
                "title": "T",
                "description": "D",
                "custom_data": {"x": [1]},
                "projects": ["a"],
                "pypi_whitelist": ["b"],
            }
        )
        self.assertEqual(config["title"], "T")
        self.assertEqual(config["description"], "D")
        self.assertEqual(config["custom_data"], {"x": [1]})
        self.assertNotIn("projects", config)
        self.assertNotIn("pypi_whitelist", config)

    def test_existing_stage_without_inheritance(self) -> None:
        """
        Modifying a stored stage that has no C{mirror_whitelist_inheritance}
        (made by an older devpi, where absent means C{union}) does not switch
        it to C{intersection}: the defaults of spec 3.2 apply at creation.
        """
        stored = {
            "type": "stage",
            "volatile": True,
            "bases": ["alice/base"],
            "acl_upload": ["alice"],
            "acl_toxresult_upload": [":ANONYMOUS:"],
            "mirror_whitelist": [],
            "title": "new title",
        }
        config = self.validate(stored, creating=False)
        self.assertEqual(config.get("mirror_whitelist_inheritance", "union"), "union")

    def test_mirror(self) -> None:
        """
        A new mirror gets C{volatile} and the four boolean mirror keys as
        defaults, keeps its URL and has no C{mirror_url} default.
        """
        self.assertEqual(
            self.validate({"type": "mirror", "mirror_url": "https://u:p@example.com/simple/"}),
            {
                "type": "mirror",
                "volatile": True,
                "mirror_url": "https://u:p@example.com/simple/",
                "mirror_ignore_serial_header": False,
                "mirror_no_project_list": False,
                "mirror_use_external_urls": False,
                "mirror_provides_core_metadata": False,
            },
        )
        self.assertNotIn("mirror_url", self.validate({"type": "mirror"}))

    def test_mirror_keys(self) -> None:
        """
        The mirror keys are parsed: booleans from strings, the expiry as an
        int, the web URL format as given.
        """
        config = self.validate(
            {
                "type": "mirror",
                "volatile": "no",
                "mirror_url": "http://example.com/simple/",
                "mirror_cache_expiry": "60",
                "mirror_no_project_list": "Yes",
                "mirror_use_external_urls": True,
                "mirror_web_url_fmt": "https://example.com/p/{name}/",
                "acl_toxresult_upload": "bob, :anonymous:",
            }
        )
        self.assertIs(config["volatile"], False)
        self.assertEqual(config["mirror_cache_expiry"], 60)
        self.assertIs(config["mirror_no_project_list"], True)
        self.assertIs(config["mirror_use_external_urls"], True)
        self.assertIs(config["mirror_ignore_serial_header"], False)
        self.assertEqual(config["mirror_web_url_fmt"], "https://example.com/p/{name}/")
        self.assertEqual(config["acl_toxresult_upload"], ["bob", ":ANONYMOUS:"])

    def test_mirror_modify_no_bool_defaults(self) -> None:
        """
        When modifying a mirror, absent boolean keys are not added.
        """
        config = self.validate({"type": "mirror", "mirror_url": "http://x/"}, creating=False)
        self.assertEqual(config, {"type": "mirror", "volatile": True, "mirror_url": "http://x/"})

    def test_mirror_drops_stage_keys(self) -> None:
        """
        For mirrors C{bases}, C{acl_upload}, C{mirror_whitelist} and
        C{pypi_whitelist} are dropped silently, even when invalid.
        """
        config = self.validate(
            {
                "type": "mirror",
                "mirror_url": "https://example.com/simple/",
                "bases": ["nope/nope"],
                "acl_upload": ["bob"],
                "mirror_whitelist": ["*"],
                "pypi_whitelist": ["x"],
            }
        )
        for key in ("bases", "acl_upload", "mirror_whitelist", "pypi_whitelist"):
            self.assertNotIn(key, config)

    def test_mirror_stage_only_key(self) -> None:
        """
        Stage-only keys that are not silently dropped are unknown for mirrors.
        """
        self.assertAPIError(400, None, self.validate, {"type": "mirror", "mirror_whitelist_inheritance": "union"})

    def test_mirror_url_must_be_url(self) -> None:
        """
        A C{mirror_url} not starting with C{http://} or C{https://} is refused
        with devpi's message.
        """
        for url in ("ftp://example.com/", "example.com/simple", 3):
            self.assertAPIError(
                400,
                "'mirror_url' option must be a URL.",
                self.validate,
                {"type": "mirror", "mirror_url": url},
            )

    def test_mirror_cache_expiry_int(self) -> None:
        """
        A C{mirror_cache_expiry} that is no integer is refused.
        """
        for value in ("soon", True, None, "1.5"):
            self.assertAPIError(
                400,
                "'mirror_cache_expiry' option must be an integer",
                self.validate,
                {"type": "mirror", "mirror_cache_expiry": value},
            )
        self.assertEqual(self.validate({"type": "mirror", "mirror_cache_expiry": 0})["mirror_cache_expiry"], 0)

    def test_booleans(self) -> None:
        """
        Booleans accept JSON booleans and C{true/yes/false/no} in any case.
        """
        for value, expected in (
            (True, True),
            (False, False),
            ("true", True),
            ("YES", True),
            ("False", False),
            ("no", False),
        ):
            self.assertIs(self.validate({"volatile": value})["volatile"], expected, value)

    def test_boolean_strict(self) -> None:
        """
        Anything else, including C{maybe}, C{1} and C{""}, is refused with
        devpi's message.
        """
        self.assertAPIError(400, "Unknown boolean value 'maybe'.", self.validate, {"volatile": "maybe"})
        self.assertAPIError(
            400,
            "Unknown boolean value 'maybe'.",
            self.validate,
            {"type": "mirror", "mirror_no_project_list": "maybe"},
        )
        for value in (1, 0, "", "1", None):
            self.assertAPIError(400, None, self.validate, {"volatile": value})

    def test_list_parsing(self) -> None:
        """
        Lists come from JSON lists or comma-separated strings; whitespace is
        stripped, empty items dropped, and the special ACL principals
        upper-cased.
        """
        config = self.validate(
            {
                "acl_upload": "alice, :authenticated:",
                "acl_toxresult_upload": [" bob ", "", ":Anonymous:"],
                "bases": " root/pypi ,, alice/dev ",
            }
        )
        self.assertEqual(config["acl_upload"], ["alice", ":AUTHENTICATED:"])
        self.assertEqual(config["acl_toxresult_upload"], ["bob", ":ANONYMOUS:"])
        self.assertEqual(config["bases"], ["root/pypi", "alice/dev"])

    def test_empty_acl(self) -> None:
        """
        An empty string gives an empty ACL (nobody may upload).
        """
        self.assertEqual(self.validate({"acl_upload": ""})["acl_upload"], [])

    def test_bad_list(self) -> None:
        """
        Values that are neither lists nor strings, and lists of non-strings,
        are refused.
        """
        self.assertAPIError(400, None, self.validate, {"acl_upload": 3})
        self.assertAPIError(400, None, self.validate, {"bases": [1, 2]})

    def test_bases_order_and_duplicates(self) -> None:
        """
        Base order is kept and repeated bases are stored once.
        """
        config = self.validate({"bases": ["alice/dev", "root/pypi", "alice/dev"]})
        self.assertEqual(config["bases"], ["alice/dev", "root/pypi"])

    def test_missing_base(self) -> None:
        """
        A base that does not exist is refused with devpi's message.
        """
        self.assertAPIError(
            400,
            "base index 'nope/nope' does not exist",
            self.validate,
            {"bases": ["root/pypi", "nope/nope"]},
        )

    def test_invalid_base_spec(self) -> None:
        """
        A base that is not C{user/index} is refused with devpi's message.
        """
        for spec in ("x", "a/b/c", "/b", "a/"):
            self.assertAPIError(400, f"invalid base index spec: {spec!r}", self.validate, {"bases": [spec]})

    def test_errors_joined(self) -> None:
        """
        All problems are reported at once, joined by C{", "}.
        """
        self.assertAPIError(
            400,
            "Unknown boolean value 'maybe'., base index 'nope/nope' does not exist",
            self.validate,
            {"volatile": "maybe", "bases": ["nope/nope"]},
        )

    def test_mirror_whitelist(self) -> None:
        """
        Whitelist entries are normalised as project names; C{*} is kept.
        """
        config = self.validate({"mirror_whitelist": "Hello_Pkg, *, hello.pkg"})
        self.assertEqual(config["mirror_whitelist"], ["hello-pkg", "*"])

    def test_whitelist_inheritance(self) -> None:
        """
        C{mirror_whitelist_inheritance} is lower-cased and must be
        C{intersection} or C{union}.
        """
        self.assertEqual(
            self.validate({"mirror_whitelist_inheritance": "UNION"})["mirror_whitelist_inheritance"],
            "union",
        )
        for value in ("both", 1, None):
            self.assertAPIError(400, None, self.validate, {"mirror_whitelist_inheritance": value})

    def test_unknown_keys_rejected(self) -> None:
        """
        Unknown keys are a 400 naming them.
        """
        error = self.assertAPIError(400, None, self.validate, {"foo": "bar"})
        self.assertTrue(
            error.message.startswith("indexconfig got unexpected keyword arguments: "),
            error.message,
        )
        self.assertIn("foo", error.message)
        self.assertAPIError(400, None, self.validate, {"type": "mirror", "mirror_urls": "x"})

    def test_unknown_keys_message(self) -> None:
        """
        The message for unknown keys is exactly spec 3.2's (devpi formats
        them as C{key=value} with C{%s}, no quotes).
        """
        self.assertAPIError(
            400,
            "indexconfig got unexpected keyword arguments: foo=bar",
            self.validate,
            {"foo": "bar"},
        )

    def test_unknown_type(self) -> None:
        """
        Index types other than C{stage} and C{mirror} are refused.
        """
        self.assertAPIError(400, "unknown index type 'weird'", self.validate, {"type": "weird"})


class ApplyPatchTests(_APIErrorMixin, SynchronousTestCase):
    """
    L{apply_patch} implements the three body forms of spec 3.3.
    """

    def current(self) -> dict[str, Any]:
        return validate_ixconfig(
            {"title": "T", "acl_upload": ["alice", "bob"]}, "alice/new", index_exists, creating=True
        )

    def test_dict_merges(self) -> None:
        """
        A JSON object sets the given keys and leaves the others, without
        changing the current config in place.
        """
        current = self.current()
        before = dict(current)
        new = apply_patch(current, {"volatile": False, "description": "D"})
        self.assertEqual(new, dict(before, volatile=False, description="D"))
        self.assertEqual(current, before)

    def test_wrapped_dict(self) -> None:
        """
        The GET answer form C{{"type": "indexconfig", "result": {...}}} is
        unwrapped.
        """
        current = self.current()
        new = apply_patch(current, {"type": "indexconfig", "result": dict(current, title="New")})
        self.assertEqual(new, dict(current, title="New"))

    def test_dict_type_change(self) -> None:
        """
        Changing C{type} in object form is refused; repeating it is fine.
        """
        current = self.current()
        self.assertAPIError(400, "the 'type' of an index can't be changed", apply_patch, current, {"type": "mirror"})
        self.assertAPIError(
            400,
            "the 'type' of an index can't be changed",
            apply_patch,
            current,
            {"type": "indexconfig", "result": {"type": "mirror"}},
        )
        self.assertEqual(apply_patch(current, {"type": "stage"}), current)

    def test_set(self) -> None:
        """
        C{key=value} sets the raw string (validation parses it later); the
        string is split at the first C{=}.
        """
        new = apply_patch(self.current(), ["volatile=False", "title=a=b"])
        self.assertEqual(new["volatile"], "False")
        self.assertEqual(new["title"], "a=b")
        self.assertIs(validate_ixconfig(new, "alice/new", index_exists, creating=False)["volatile"], False)

    def test_ops_in_order(self) -> None:
        """
        Operations apply in order to the same copy.
        """
        new = apply_patch(self.current(), ["title=x", "title=y"])
        self.assertEqual(new["title"], "y")

    def test_append(self) -> None:
        """
        C{key+=value} appends to a list without duplicating values, and
        normalises ACL principals.
        """
        new = apply_patch(
            self.current(),
            ["acl_upload+=carol", "acl_upload+=bob", "acl_upload+=:authenticated:"],
        )
        self.assertEqual(new["acl_upload"], ["alice", "bob", "carol", ":AUTHENTICATED:"])
        again = apply_patch(new, ["acl_upload+=carol"])
        self.assertEqual(again["acl_upload"], new["acl_upload"])

    def test_remove(self) -> None:
        """
        C{key-=value} removes the value from the list.
        """
        new = apply_patch(self.current(), ["acl_upload-=bob"])
        self.assertEqual(new["acl_upload"], ["alice"])
        new = apply_patch(self.current(), ["acl_toxresult_upload-=:anonymous:"])
        self.assertEqual(new["acl_toxresult_upload"], [])

    def test_remove_missing_value(self) -> None:
        """
        Removing a value that is not there is a 400 with devpi's message.
        """
        self.assertAPIError(
            400,
            "The 'acl_upload' setting doesn't have value 'nobody'",
            apply_patch,
            self.current(),
            ["acl_upload-=nobody"],
        )

    def test_remove_key(self) -> None:
        """
        C{key-=} removes an optional key.
        """
        new = apply_patch(self.current(), ["title-="])
        self.assertNotIn("title", new)
        new = apply_patch(self.current(), ["description-="])
        self.assertNotIn("description", new)

    def test_remove_default_key(self) -> None:
        """
        C{key-=} on a key with a default is refused.
        """
        for key in ("volatile", "bases", "acl_upload", "acl_toxresult_upload", "type"):
            self.assertAPIError(400, "Default values can't be removed.", apply_patch, self.current(), [f"{key}-="])

    def test_unknown_key_append(self) -> None:
        """
        C{unknownkey+=x} is a 400 (devpi answers 500, spec 12).
        """
        self.assertAPIError(400, None, apply_patch, self.current(), ["unknownkey+=x"])
        self.assertAPIError(400, None, apply_patch, self.current(), ["unknownkey-=x"])

    def test_append_to_scalar(self) -> None:
        """
        C{+=} and C{-=} on a key that is no list are a 400.
        """
        self.assertAPIError(400, None, apply_patch, self.current(), ["title+=x"])
        self.assertAPIError(400, None, apply_patch, self.current(), ["title-=T"])

    def test_type_change(self) -> None:
        """
        C{type=mirror} on a stage is refused; C{type=stage} is a no-op.
        """
        self.assertAPIError(
            400,
            "the 'type' of an index can't be changed",
            apply_patch,
            self.current(),
            ["type=mirror"],
        )
        self.assertEqual(apply_patch(self.current(), ["type=stage"]), self.current())

    def test_bad_bodies(self) -> None:
        """
        Bodies that are neither objects nor lists of strings, and operations
        without C{=}, are a 400.
        """
        for body in ("title=x", 3, None, ["title=x", 3]):
            self.assertAPIError(400, None, apply_patch, self.current(), body)
        self.assertAPIError(
            400,
            "invalid modification 'title', expected 'key=value'",
            apply_patch,
            self.current(),
            ["title"],
        )


# -- permissions -------------------------------------------------------------------

ROOT = Identity("root")
ALICE = Identity("alice")
BOB = Identity("bob")
ADMIN = Identity("carol", groups=("admins",))
STAGE = {"type": "stage", "acl_upload": ["alice", ":devs"], "acl_toxresult_upload": [":ANONYMOUS:"]}
MIRROR = {"type": "mirror", "acl_upload": [":ANONYMOUS:"]}


class PolicyTests(SynchronousTestCase):
    """
    L{Policy} follows the permission tables of spec 2.4, without and with
    C{--restrict-modify root,:admins}.
    """

    default = Policy()
    restricted = Policy(frozenset({"root", ":admins"}))

    def test_principals(self) -> None:
        """
        Anonymous requests are only C{:ANONYMOUS:}; users add
        C{:AUTHENTICATED:}, their name and C{:group} for each group.
        """
        self.assertEqual(ANONYMOUS.principals(), {":ANONYMOUS:"})
        self.assertEqual(ADMIN.principals(), {":ANONYMOUS:", ":AUTHENTICATED:", "carol", ":admins"})

    def test_create_user(self) -> None:
        """
        Everyone may create users by default; only SPEC principals when
        restricted.
        """
        for who in (ANONYMOUS, ALICE, ROOT):
            self.assertTrue(self.default.may_create_user(who))
        self.assertFalse(self.restricted.may_create_user(ANONYMOUS))
        self.assertFalse(self.restricted.may_create_user(ALICE))
        self.assertTrue(self.restricted.may_create_user(ROOT))
        self.assertTrue(self.restricted.may_create_user(ADMIN))

    def test_modify_user(self) -> None:
        """
        By default root and the user; restricted: SPEC principals, and the
        user only for a password-only change.
        """
        for password_only in (True, False):
            self.assertTrue(self.default.may_modify_user(ROOT, "alice", password_only))
            self.assertTrue(self.default.may_modify_user(ALICE, "alice", password_only))
            self.assertFalse(self.default.may_modify_user(BOB, "alice", password_only))
            self.assertFalse(self.default.may_modify_user(ANONYMOUS, "alice", password_only))
            self.assertTrue(self.restricted.may_modify_user(ROOT, "alice", password_only))
            self.assertTrue(self.restricted.may_modify_user(ADMIN, "alice", password_only))
            self.assertFalse(self.restricted.may_modify_user(BOB, "alice", password_only))
        self.assertTrue(self.restricted.may_modify_user(ALICE, "alice", True))
        self.assertFalse(self.restricted.may_modify_user(ALICE, "alice", False))

    def test_delete_user(self) -> None:
        """
        By default root and the user himself, nobody for root; restricted:
        SPEC principals except on their own user.
        """
        self.assertTrue(self.default.may_delete_user(ROOT, "alice"))
        self.assertTrue(self.default.may_delete_user(ALICE, "alice"))
        self.assertFalse(self.default.may_delete_user(BOB, "alice"))
        self.assertFalse(self.default.may_delete_user(ANONYMOUS, "alice"))
        self.assertFalse(self.default.may_delete_user(ROOT, "root"))
        self.assertTrue(self.restricted.may_delete_user(ROOT, "alice"))
        self.assertTrue(self.restricted.may_delete_user(ADMIN, "alice"))
        self.assertFalse(self.restricted.may_delete_user(ALICE, "alice"))
        self.assertFalse(self.restricted.may_delete_user(ADMIN, "carol"))
        self.assertFalse(self.restricted.may_delete_user(ROOT, "root"))

    def test_manage_index(self) -> None:
        """
        Index create/modify/delete: root and the owner by default; only SPEC
        principals (not the owner) when restricted.
        """
        self.assertTrue(self.default.may_manage_index(ROOT, "alice"))
        self.assertTrue(self.default.may_manage_index(ALICE, "alice"))
        self.assertFalse(self.default.may_manage_index(BOB, "alice"))
        self.assertFalse(self.default.may_manage_index(ANONYMOUS, "alice"))
        self.assertTrue(self.restricted.may_manage_index(ROOT, "alice"))
        self.assertTrue(self.restricted.may_manage_index(ADMIN, "alice"))
        self.assertFalse(self.restricted.may_manage_index(ALICE, "alice"))

    def test_root_not_implicit(self) -> None:
        """
        With a SPEC that does not name root, root has no admin rights.
        """
        policy = Policy(frozenset({":admins"}))
        self.assertFalse(policy.may_manage_index(ROOT, "alice"))
        self.assertFalse(policy.may_create_user(ROOT))
        self.assertTrue(policy.may_manage_index(ADMIN, "alice"))

    def test_upload(self) -> None:
        """
        Uploads follow C{acl_upload} (users and groups), under both policies;
        mirrors accept no uploads at all.
        """
        devs = Identity("dave", groups=("devs",))
        for policy in (self.default, self.restricted):
            self.assertTrue(policy.may_upload(ALICE, STAGE))
            self.assertTrue(policy.may_upload(devs, STAGE))
            self.assertFalse(policy.may_upload(BOB, STAGE))
            self.assertFalse(policy.may_upload(ROOT, STAGE))
            self.assertFalse(policy.may_upload(ANONYMOUS, STAGE))
            self.assertFalse(policy.may_upload(ROOT, MIRROR))
            self.assertFalse(policy.may_upload(ANONYMOUS, MIRROR))
        self.assertTrue(self.default.may_upload(ANONYMOUS, dict(STAGE, acl_upload=[":ANONYMOUS:"])))
        self.assertTrue(self.default.may_upload(BOB, dict(STAGE, acl_upload=[":AUTHENTICATED:"])))
        self.assertFalse(self.default.may_upload(ANONYMOUS, dict(STAGE, acl_upload=[":AUTHENTICATED:"])))

    def test_toxresult_upload(self) -> None:
        """
        Tox results follow C{acl_toxresult_upload}, which defaults to
        C{:ANONYMOUS:}.
        """
        self.assertTrue(self.default.may_upload_toxresult(ANONYMOUS, STAGE))
        self.assertTrue(self.default.may_upload_toxresult(ANONYMOUS, {"type": "stage"}))
        self.assertFalse(self.default.may_upload_toxresult(ANONYMOUS, dict(STAGE, acl_toxresult_upload=["bob"])))
        self.assertTrue(self.default.may_upload_toxresult(BOB, dict(STAGE, acl_toxresult_upload=["bob"])))

    def test_delete_entry(self) -> None:
        """
        Deleting projects, versions and files: C{acl_upload} plus root and the
        owner by default, C{acl_upload} plus SPEC principals when restricted.
        """
        config = dict(STAGE, acl_upload=["bob"])
        self.assertTrue(self.default.may_delete_entry(BOB, "alice", config))
        self.assertTrue(self.default.may_delete_entry(ALICE, "alice", config))
        self.assertTrue(self.default.may_delete_entry(ROOT, "alice", config))
        self.assertFalse(self.default.may_delete_entry(ADMIN, "alice", config))
        self.assertFalse(self.default.may_delete_entry(ANONYMOUS, "alice", config))
        self.assertTrue(self.restricted.may_delete_entry(BOB, "alice", config))
        self.assertTrue(self.restricted.may_delete_entry(ADMIN, "alice", config))
        self.assertFalse(self.restricted.may_delete_entry(ALICE, "alice", config))


# -- inheritance -----------------------------------------------------------------


def _stage(*bases: str, **extra: Any) -> dict[str, Any]:
    return dict({"type": "stage", "bases": list(bases), "mirror_whitelist": []}, **extra)


MIRROR_CONFIG = {"type": "mirror"}


class StageResolutionOrderTests(SynchronousTestCase):
    """
    L{stage_resolution_order} follows spec 3.5.
    """

    def sro(self, start: str, configs: Mapping[str, Mapping[str, Any]]) -> list[str]:
        return stage_resolution_order(start, configs.get)

    def test_single(self) -> None:
        """
        An index without bases is its own resolution order.
        """
        self.assertEqual(self.sro("u/a", {"u/a": _stage()}), ["u/a"])

    def test_breadth_first_mirrors_last(self) -> None:
        """
        Private stages come breadth first (C{c} before C{b}'s base C{d}),
        each once; mirrors come last, in the order met, each once.
        """
        configs = {
            "u/a": _stage("u/b", "root/pypi", "u/c"),
            "u/b": _stage("u/d"),
            "u/c": _stage("u/d", "root/other", "root/pypi"),
            "u/d": _stage("root/other"),
            "root/pypi": MIRROR_CONFIG,
            "root/other": MIRROR_CONFIG,
        }
        self.assertEqual(self.sro("u/a", configs), ["u/a", "u/b", "u/c", "u/d", "root/pypi", "root/other"])

    def test_cycle(self) -> None:
        """
        Indexes naming each other terminate, each appearing once.
        """
        configs = {"u/a": _stage("u/b"), "u/b": _stage("u/a", "u/b")}
        self.assertEqual(self.sro("u/a", configs), ["u/a", "u/b"])
        self.assertEqual(self.sro("u/b", configs), ["u/b", "u/a"])

    def test_missing_bases_skipped(self) -> None:
        """
        Bases that no longer exist are skipped; a missing start gives
        nothing.
        """
        configs = {"u/a": _stage("gone/x", "u/b"), "u/b": _stage("gone/y")}
        self.assertEqual(self.sro("u/a", configs), ["u/a", "u/b"])
        self.assertEqual(self.sro("gone/x", configs), [])

    def test_mirror_start(self) -> None:
        """
        A mirror's own resolution order is the mirror.
        """
        self.assertEqual(self.sro("root/pypi", {"root/pypi": MIRROR_CONFIG}), ["root/pypi"])


class MirrorsAllowedTests(SynchronousTestCase):
    """
    L{mirrors_allowed} applies spec 3.6's dependency-confusion protection.
    """

    def allowed(self, sro: Sequence[tuple[str, Mapping[str, Any]]], having: set[str], project: str = "pkg") -> set[str]:
        return mirrors_allowed(project, sro, lambda stage: stage in having)

    def test_no_private_hit(self) -> None:
        """
        Without a private stage having the project, every mirror is used.
        """
        sro = [("u/dev", _stage()), ("root/pypi", MIRROR_CONFIG), ("root/m", MIRROR_CONFIG)]
        self.assertEqual(self.allowed(sro, set()), {"root/pypi", "root/m"})

    def test_private_hit_blocks(self) -> None:
        """
        A private stage having the project blocks every mirror.
        """
        sro = [
            ("u/dev", _stage()),
            ("u/base", _stage()),
            ("root/pypi", MIRROR_CONFIG),
            ("root/m", MIRROR_CONFIG),
        ]
        self.assertEqual(self.allowed(sro, {"u/base"}), set())
        self.assertEqual(self.allowed(sro, {"u/dev"}), set())

    def test_whitelisted(self) -> None:
        """
        A whitelisted project (by name or C{*}) is fetched from mirrors even
        with a private hit.
        """
        for whitelist in (["pkg"], ["*"], ["other", "pkg"]):
            sro = [("u/dev", _stage(mirror_whitelist=whitelist)), ("root/pypi", MIRROR_CONFIG)]
            self.assertEqual(self.allowed(sro, {"u/dev"}), {"root/pypi"}, whitelist)
        sro = [("u/dev", _stage(mirror_whitelist=["other"])), ("root/pypi", MIRROR_CONFIG)]
        self.assertEqual(self.allowed(sro, {"u/dev"}), set())

    def _chain(self, inheritance: str | None) -> list[tuple[str, Mapping[str, Any]]]:
        extra = {} if inheritance is None else {"mirror_whitelist_inheritance": inheritance}
        return [
            ("u/dev", _stage("u/base", **extra)),
            ("u/base", _stage("root/pypi", mirror_whitelist=["pkg"])),
            ("root/pypi", MIRROR_CONFIG),
        ]

    def test_intersection(self) -> None:
        """
        With C{intersection}, a project whitelisted only in a base is not
        whitelisted for the derived index.
        """
        self.assertEqual(self.allowed(self._chain("intersection"), {"u/base"}), set())

    def test_union(self) -> None:
        """
        With C{union} (and when the key is absent) the base's whitelist
        counts.
        """
        self.assertEqual(self.allowed(self._chain("union"), {"u/base"}), {"root/pypi"})
        self.assertEqual(self.allowed(self._chain(None), {"u/base"}), {"root/pypi"})

    def test_starting_index_decides(self) -> None:
        """
        Only the starting index's C{mirror_whitelist_inheritance} counts, not
        that of its bases.
        """
        sro = [
            ("u/dev", _stage("u/base", mirror_whitelist_inheritance="union")),
            (
                "u/base",
                _stage(mirror_whitelist=["pkg"], mirror_whitelist_inheritance="intersection"),
            ),
            ("u/base2", _stage(mirror_whitelist_inheritance="intersection")),
            ("root/pypi", MIRROR_CONFIG),
        ]
        self.assertEqual(self.allowed(sro, {"u/base2"}), {"root/pypi"})
        sro[0] = ("u/dev", _stage("u/base", mirror_whitelist_inheritance="intersection"))
        sro[1] = ("u/base", _stage(mirror_whitelist=["pkg"], mirror_whitelist_inheritance="union"))
        self.assertEqual(self.allowed(sro, {"u/base2"}), set())

    def test_empty(self) -> None:
        """
        An empty resolution order allows nothing; a lone mirror is allowed.
        """
        self.assertEqual(self.allowed([], set()), set())
        self.assertEqual(self.allowed([("root/pypi", MIRROR_CONFIG)], set()), {"root/pypi"})


# -- auth ------------------------------------------------------------------------

SECRET = b"k" * 16 + b"0123456789abcdef"


class TokenSignerTests(SynchronousTestCase):
    """
    L{TokenSigner} issues and verifies stateless login tokens.
    """

    def test_valid(self) -> None:
        """
        A fresh token verifies for its user until it expires.
        """
        signer = TokenSigner(SECRET)
        token = signer.issue("alice", now=1000)
        self.assertIs(signer.verify("alice", token, now=1000), True)
        self.assertIs(signer.verify("alice", token, now=1000 + TOKEN_EXPIRATION - 1), True)
        self.assertEqual(signer.expiration, TOKEN_EXPIRATION)
        self.assertEqual(TOKEN_EXPIRATION, 36000)

    def test_expired(self) -> None:
        """
        An expired token (or one from the future) is well signed but invalid:
        C{False}.
        """
        signer = TokenSigner(SECRET, expiration=60)
        token = signer.issue("alice", now=1000)
        self.assertIs(signer.verify("alice", token, now=1060), False)
        self.assertIs(signer.verify("alice", token, now=999), False)

    def test_other_user(self) -> None:
        """
        A token of another user is C{False}.
        """
        signer = TokenSigner(SECRET)
        token = signer.issue("alice", now=1000)
        self.assertIs(signer.verify("bob", token, now=1000), False)

    def test_tampered(self) -> None:
        """
        A changed signature or payload, or a token signed with another
        secret, is no token of ours: C{None}.
        """
        signer = TokenSigner(SECRET)
        token = signer.issue("alice", now=1000)
        payload, stamp, signature = token.split(".")
        flipped = ("A" if signature[0] != "A" else "B") + signature[1:]
        self.assertIsNone(signer.verify("alice", f"{payload}.{stamp}.{flipped}", now=1000))
        other_payload = token.split(".")[0]
        bob_payload = TokenSigner(SECRET).issue("bob", now=1000).split(".")[0]
        self.assertNotEqual(other_payload, bob_payload)
        self.assertIsNone(signer.verify("bob", f"{bob_payload}.{stamp}.{signature}", now=1000))
        later = TokenSigner(SECRET).issue("alice", now=999999).split(".")[1]
        self.assertIsNone(signer.verify("alice", f"{payload}.{later}.{signature}", now=999999))
        self.assertIsNone(TokenSigner(b"x" * 32).verify("alice", token, now=1000))

    def test_garbage(self) -> None:
        """
        Strings that are not tokens (passwords) give C{None}.
        """
        signer = TokenSigner(SECRET)
        for text in ("", "secret", "a.b", "a.b.c", "a.b.c.d", "...", "p\u00e4ss.w.rd"):
            self.assertIsNone(signer.verify("alice", text, now=1000), text)

    def test_non_ascii_password(self) -> None:
        """
        A password with non-ASCII characters after its second dot is still
        no token: C{None}, not an exception (the web layer tries every
        secret as a token before checking it as a password).
        """
        signer = TokenSigner(SECRET)
        self.assertIsNone(signer.verify("alice", "pw.with.d\u00f6t", now=1000))


class PasswordTests(SynchronousTestCase):
    """
    L{hash_password} and L{verify_password} handle devpi's password records.
    """

    def test_argon2(self) -> None:
        """
        A hash from L{hash_password} is an argon2 PHC string that verifies
        the password and nothing else.
        """
        pwhash = hash_password("s3cr\u00e9t")
        self.assertTrue(pwhash.startswith("$argon2"), pwhash)
        self.assertNotIn("s3cr", pwhash)
        record = {"username": "alice", "pwhash": pwhash}
        self.assertTrue(verify_password(record, "s3cr\u00e9t"))
        self.assertFalse(verify_password(record, "s3cret"))
        self.assertFalse(verify_password(record, ""))

    def test_salted(self) -> None:
        """
        Records with C{pwsalt} (devpi before 4.0) store the hex
        C{sha256(salt + password)}.
        """
        salt = "abcdef0123456789"
        pwhash = hashlib.sha256((salt + "pw\u00e4").encode("utf-8")).hexdigest()
        record = {"pwsalt": salt, "pwhash": pwhash}
        self.assertTrue(verify_password(record, "pw\u00e4"))
        self.assertFalse(verify_password(record, "pwa"))
        self.assertFalse(verify_password({"pwsalt": "other", "pwhash": pwhash}, "pw\u00e4"))

    def test_no_or_bad_hash(self) -> None:
        """
        Records without a usable hash verify nothing.
        """
        for record in ({}, {"pwhash": ""}, {"pwhash": None}, {"pwhash": "not-a-hash"}):
            self.assertFalse(verify_password(record, ""))
            self.assertFalse(verify_password(record, "pw"))


def _basic(raw: bytes) -> bytes:
    return base64.b64encode(raw)


class ParseBasicTests(SynchronousTestCase):
    """
    L{parse_basic} decodes C{base64(user:secret)} (spec 2.2).
    """

    def test_utf8(self) -> None:
        """
        UTF-8 credentials decode, split at the first colon.
        """
        self.assertEqual(parse_basic(_basic("j\u00fcrgen:p\u00e4:ss".encode())), ("j\u00fcrgen", "p\u00e4:ss"))
        self.assertEqual(parse_basic(b"  " + _basic(b"alice:") + b"\n"), ("alice", ""))

    def test_latin1(self) -> None:
        """
        Bytes that are not UTF-8 are decoded as Latin-1.
        """
        self.assertEqual(
            parse_basic(_basic("j\u00fcrgen:p\u00e4ss".encode("latin-1"))),
            ("j\u00fcrgen", "p\u00e4ss"),
        )

    def test_no_colon(self) -> None:
        """
        Credentials without a colon are no credentials.
        """
        self.assertIsNone(parse_basic(_basic(b"alice")))

    def test_bad_base64(self) -> None:
        """
        Invalid base64 is no credentials.
        """
        self.assertIsNone(parse_basic(b"not base64!"))
        self.assertIsNone(parse_basic(b"YWxpY2U6cHc"))


class LoadSecretTests(SynchronousTestCase):
    """
    L{load_secret} reads or creates the token signing secret.
    """

    def serverdir(self) -> str:
        path: str = self.mktemp()
        os.makedirs(path)
        return path

    def write(self, content: bytes, mode: int) -> str:
        path = os.path.join(self.serverdir(), "secret")
        with open(path, "wb") as f:
            f.write(content)
        os.chmod(path, mode)
        return path

    def test_create(self) -> None:
        """
        Without a path, C{.secret} is created in the server dir, readable by
        the owner only, and the same secret is returned on the next call.
        """
        serverdir = self.serverdir()
        secret = load_secret(None, serverdir)
        path = os.path.join(serverdir, ".secret")
        self.assertEqual(stat.S_IMODE(os.stat(path).st_mode), 0o600)
        with open(path, "rb") as f:
            self.assertGreaterEqual(len(f.read().strip()), 32)
        self.assertEqual(len(secret), 32)
        self.assertEqual(load_secret(None, serverdir), secret)
        self.assertNotEqual(load_secret(None, self.serverdir()), secret)

    def test_given_path(self) -> None:
        """
        A private file with enough random data gives a secret derived from
        its contents.
        """
        path = self.write(base64.b64encode(os.urandom(32)), 0o600)
        first = load_secret(path, "/nonexistent")
        self.assertEqual(load_secret(path, "/nonexistent"), first)
        other = self.write(base64.b64encode(os.urandom(32)), 0o400)
        self.assertNotEqual(load_secret(other, "/nonexistent"), first)

    def test_group_readable(self) -> None:
        """
        A secret file readable by group or others is refused.
        """
        for mode in (0o640, 0o604, 0o660):
            path = self.write(base64.b64encode(os.urandom(32)), mode)
            self.assertRaises(ValueError, load_secret, path, "/nonexistent")

    def test_too_short(self) -> None:
        """
        A file with fewer than 32 bytes, or with hardly any distinct bytes,
        is refused.
        """
        for content in (b"short", b"x" * 31, b"ab" * 40, b""):
            path = self.write(content, 0o600)
            self.assertRaises(ValueError, load_secret, path, "/nonexistent")

    def test_missing(self) -> None:
        """
        A given path that does not exist is a L{ValueError}.
        """
        self.assertRaises(ValueError, load_secret, self.mktemp(), "/nonexistent")
