# -*- test-case-name: tests.web.test_app -*-
"""
Klein apps belong to their classes: routes and error handlers are marked on
methods and registered on an app the class builds for itself.
"""

from __future__ import annotations

import sys
from typing import Any

from klein import Klein
from twisted.trial.unittest import SynchronousTestCase
from twisted.web.iweb import IRequest

from devpi_tx.web.api import IndexAPI
from devpi_tx.web.common import build_app, handles, route
from tests.helpers import stub_treq


class _Echo:
    @route("/<name>", methods=["GET"])
    def hello(self, request: IRequest, name: str) -> bytes:
        if name == "boom":
            raise KeyError(name)
        return f"{self.greeting} {name}".encode()

    @handles(KeyError)
    def missing(self, request: IRequest, failure: Any) -> bytes:
        request.setResponseCode(404)
        return b"no such name"

    def __init__(self, greeting: str) -> None:
        self.greeting = greeting


class _Louder(_Echo):
    @route("/<name>", methods=["GET"])
    def hello(self, request: IRequest, name: str) -> bytes:
        return f"{self.greeting.upper()} {name}!".encode()


_Echo.app = build_app(_Echo)  # type: ignore[attr-defined]
_Louder.app = build_app(_Louder)  # type: ignore[attr-defined]


class BuildAppTests(SynchronousTestCase):
    def get(self, app_owner: Any, path: str) -> tuple[int, bytes]:
        client = stub_treq(app_owner.app.resource())
        response = self.successResultOf(client.get("http://x" + path))
        return response.code, self.successResultOf(client.content(response))

    def test_own_app_per_class(self) -> None:
        """Each class has its own app; a subclass's override answers for it, its base's does not change."""
        self.assertIsNot(_Echo.app, _Louder.app)  # type: ignore[attr-defined]
        self.assertEqual(self.get(_Echo("hi"), "/bob"), (200, b"hi bob"))
        self.assertEqual(self.get(_Louder("hi"), "/bob"), (200, b"HI bob!"))

    def test_error_handlers(self) -> None:
        """Marked error handlers are registered with the routes."""
        self.assertEqual(self.get(_Echo("hi"), "/boom"), (404, b"no such name"))

    def test_no_module_app(self) -> None:
        """No web module keeps a Klein app of its own at module level."""
        for name, module in list(sys.modules.items()):
            if name.startswith("devpi_tx.web"):
                self.assertEqual([k for k, v in vars(module).items() if isinstance(v, Klein)], [], name)
        self.assertIsInstance(IndexAPI.app, Klein)
