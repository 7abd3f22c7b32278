# -*- test-case-name: tests.web.test_api,tests.web.test_hardening -*-
"""
The devpi REST API: server info, login, users, indexes, uploads and push
(spec sections 1-4).  Handlers parse the request, run one store transaction
and render.
"""

from __future__ import annotations

import errno
import html
import os
from collections.abc import Callable
from typing import Any, ClassVar

from klein import Klein
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.iweb import IRequest
from werkzeug.exceptions import HTTPException, MethodNotAllowed
from werkzeug.exceptions import NotFound as NoRoute

from devpi_tx import DEVPI_SERVER_VERSION, __version__
from devpi_tx.domain import push, queries, releases, users
from devpi_tx.domain.auth import hash_password
from devpi_tx.events.processor import read_event_serial
from devpi_tx.model.errors import DomainError, Forbidden, Invalid, NotAuthenticated, NotFound
from devpi_tx.model.names import metadata_from_form
from devpi_tx.model.policy import Identity
from devpi_tx.store.interfaces import StorageFull
from devpi_tx.web import render
from devpi_tx.web.common import WebConfig, build_app, handles, has_arg, header, json_body, route
from devpi_tx.web.docs import DocRoutes
from devpi_tx.web.errors import status_of
from devpi_tx.web.files import FileRoutes
from devpi_tx.web.forms import Form, parse_form
from devpi_tx.web.simple import SimpleRoutes

__all__ = ["IndexAPI", "WebConfig"]

PARSE_IN_WRITER = 1024 * 1024
"""Upload bodies up to this size are parsed in the store's writer thread, right before their commit."""

FULL_ERRNOS = (errno.ENOSPC, errno.EDQUOT)

FEATURES = ["push-no-docs", "push-only-docs", "push-register-project", "server-keyvalue-parsing"]


def _reason(message: str) -> bytes:
    text = " ".join(message.split())[:400]
    return text.encode("latin-1", "replace")


class IndexAPI(SimpleRoutes, FileRoutes, DocRoutes):
    """The HTTP API of one server process; its Klein app is its own (L{build_app}, below)."""

    app: ClassVar[Klein]

    _log = Logger()

    # -- errors ---------------------------------------------------------------

    @handles(DomainError)
    def api_error(self, request: IRequest, failure: Failure) -> bytes:
        error = failure.value
        assert isinstance(error, DomainError)
        return self._error(request, status_of(error), error.message)

    @handles(HTTPException)
    def http_error(self, request: IRequest, failure: Failure) -> bytes:
        error = failure.value
        assert isinstance(error, HTTPException)
        if isinstance(error, MethodNotAllowed):
            return self._error(request, 405, "method not allowed")
        if isinstance(error, NoRoute):
            return self._error(request, 404, "not found")
        return self._error(request, error.code or 400, error.description or "bad request")

    @handles(StorageFull, OSError)
    def storage_error(self, request: IRequest, failure: Failure) -> bytes:
        error = failure.value
        if isinstance(error, StorageFull) or (isinstance(error, OSError) and error.errno in FULL_ERRNOS):
            self._log.error("write refused, storage is full: {error}", error=error)
            return self._error(request, 507, f"insufficient storage: {error}")
        answer: bytes = self.internal_error(request, failure)
        return answer

    @handles(Exception)
    def internal_error(self, request: IRequest, failure: Failure) -> bytes:
        self._log.failure("error answering {method} {path}", failure, method=request.method, path=request.path)
        return self._error(request, 500, "internal server error, see the server log")

    def _error(self, request: IRequest, status: int, message: str) -> bytes:
        """Every error answer is devpi's JSON envelope: devpi-client reads its message."""
        request.setResponseCode(status)
        request.setHeader(b"Content-Type", render.JSON_TYPE)
        return render.envelope(message=message)

    # -- server ---------------------------------------------------------------

    @route("/+status", methods=["GET"])
    def status(self, request: IRequest) -> bytes:
        serial = self._store.current_serial()
        event_serial, event_time = read_event_serial(self._config.serverdir)
        in_sync = getattr(self._events, "in_sync_at", None)
        result = {
            "serverdir": self._config.serverdir,
            "uuid": self._config.uuid,
            "versioninfo": {"devpi-server": DEVPI_SERVER_VERSION, "devpi_tx": __version__},
            "server-code": os.path.dirname(os.path.dirname(__file__)),
            "host": self._config.host,
            "port": self._config.port,
            "outside-url": self._config.outside_url,
            "serial": serial,
            "last-commit-timestamp": self._store.last_commit_time,
            "event-serial": event_serial,
            "event-serial-timestamp": event_time,
            "event-serial-in-sync-at": in_sync,
            "metrics": [
                ["devpi_tx_page_cache_hits", "counter", self.pages.hits],
                ["devpi_tx_page_cache_misses", "counter", self.pages.misses],
            ],
            "role": "MASTER",
            "pid": os.getpid(),
            "polling_replicas": {},
        }
        return self._reply(request, "status", result)

    @route("/+metrics", methods=["GET"])
    def metrics_text(self, request: IRequest) -> bytes:
        serial = self._store.current_serial()
        event_serial, _ = read_event_serial(self._config.serverdir)
        gauges = [
            ("devpi_tx_serial", "gauge", "Newest committed serial seen by this process.", serial),
            ("devpi_tx_event_serial", "gauge", "Last serial processed by the event hooks.", event_serial),
            (
                "devpi_tx_event_lag",
                "gauge",
                "Serials not yet processed by the event hooks.",
                max(0, serial - event_serial),
            ),
            ("devpi_tx_page_cache_hits_total", "counter", "Simple pages answered from the cache.", self.pages.hits),
            ("devpi_tx_page_cache_misses_total", "counter", "Simple pages rendered.", self.pages.misses),
        ]
        if self._mirror is not None:
            gauges += [
                (
                    "devpi_tx_upstream_fetches_total",
                    "counter",
                    "Requests sent upstream.",
                    self._mirror.upstream.fetches,
                ),
                (
                    "devpi_tx_mirror_fresh_hits_total",
                    "counter",
                    "Mirror pages answered without upstream.",
                    self._mirror.hits,
                ),
            ]
        if self._mirror_files is not None:
            gauges.append(
                (
                    "devpi_tx_mirror_downloads_total",
                    "counter",
                    "Files downloaded from upstream.",
                    self._mirror_files.downloads,
                )
            )
        request.setHeader(b"Content-Type", b"text/plain; version=0.0.4; charset=utf-8")
        return self.metrics.render(gauges)

    @route("/+api", methods=["GET"])
    @route("/<user>/+api", methods=["GET"])
    @route("/<user>/<index>/+api", methods=["GET"])
    async def api(self, request: IRequest, user: str = "", index: str = "") -> bytes:
        identity = await self._auth.identify(request)
        base = self._base_url(request)
        result: dict[str, Any] = {
            "login": f"{base}/+login",
            "authstatus": ["ok", identity.user, []] if identity.user else ["noauth", "", []],
            "features": FEATURES,
        }
        if index:
            stage = f"{user}/{index}"
            config = await self._ixconfig(stage)
            result["index"] = f"{base}/{stage}"
            result["simpleindex"] = f"{base}/{stage}/+simple/"
            if config.get("type") != "mirror":
                result["pypisubmit"] = f"{base}/{stage}/"
        return self._reply(request, "apiconfig", result)

    @route("/+authcheck")
    async def authcheck(self, request: IRequest) -> bytes:
        request.setResponseCode(200)
        return b""

    @route("/+login", methods=["POST"])
    async def login(self, request: IRequest) -> bytes:
        body = json_body(request)
        if not isinstance(body, dict) or "user" not in body or "password" not in body:
            raise Invalid("Bad request: no user/password specified")
        user, password = str(body["user"]), str(body["password"])
        if not await self._auth.check_password(user, password):
            raise NotAuthenticated(f"user {user!r} could not be authenticated")
        token = self._config.signer.issue(user)
        result = {"password": token, "expiration": self._config.signer.expiration}
        return self._reply(request, "proxyauth", result, message="login successful")

    # -- users ----------------------------------------------------------------

    @route("/", methods=["GET"])
    async def root(self, request: IRequest) -> bytes:
        result = await self._store.read(users.list_users)
        return self._reply(request, "list:userconfig", result)

    @route("/<user>", methods=["GET"])
    @route("/<user>/", methods=["GET"])
    async def user_get(self, request: IRequest, user: str) -> bytes:
        view = await self._store.read(lambda tx: users.user_view(tx, user))
        return self._reply(request, "userconfig", view)

    @route("/<user>", methods=["DELETE"])
    @route("/<user>/", methods=["DELETE"])
    async def user_delete(self, request: IRequest, user: str) -> bytes:
        identity = await self._auth.identify(request)
        await self._write(request, lambda tx: users.delete_user(tx, user, identity, self._policy))
        return self._reply(request, message=f"user {user!r} deleted")

    async def _user_body(self, request: IRequest) -> tuple[dict[str, Any], str | None]:
        """The JSON object of a user PUT or PATCH, and the hash of its password if it has one."""
        body = json_body(request)
        if not isinstance(body, dict):
            raise Invalid("user config must be a JSON object")
        password = body.get("password")
        if password is not None and not isinstance(password, str):
            raise Invalid("password must be a string")
        pwhash = await self._run(hash_password, password) if password is not None else None
        return body, pwhash

    @route("/<user>", methods=["PUT"])
    @route("/<user>/", methods=["PUT"])
    async def user_put(self, request: IRequest, user: str) -> bytes:
        identity = await self._auth.identify(request)
        body, pwhash = await self._user_body(request)
        view = await self._write(request, lambda tx: users.create_user(tx, user, body, pwhash, identity, self._policy))
        return self._reply(request, "userconfig", view, status=201)

    @route("/<user>", methods=["PATCH"])
    @route("/<user>/", methods=["PATCH"])
    async def user_patch(self, request: IRequest, user: str) -> bytes:
        identity = await self._auth.identify(request)
        body, pwhash = await self._user_body(request)
        changed = await self._write(
            request, lambda tx: users.modify_user(tx, user, body, pwhash, identity, self._policy)
        )
        if changed:
            token = self._config.signer.issue(user)
            result = {"password": token, "expiration": self._config.signer.expiration}
            return self._reply(request, "userpassword", result, message="user updated, new proxy auth")
        return self._reply(request, message="user updated")

    # -- indexes --------------------------------------------------------------

    @route("/<user>/<index>", methods=["GET"])
    @route("/<user>/<index>/", methods=["GET"])
    async def index_get(self, request: IRequest, user: str, index: str) -> bytes:
        stage = f"{user}/{index}"
        accept = header(request, b"Accept")
        if render.wants_simple_json(accept) or (
            render.is_installer(header(request, b"User-Agent")) and not render.accepts_json(accept)
        ):
            return await self._project_list(request, stage)
        with_projects = not has_arg(request, b"no_projects")
        config = await self._store.read(lambda tx: queries.index_view(tx, stage, with_projects))
        return self._reply(request, "indexconfig", config)

    @route("/<user>/<index>", methods=["POST", "PUSH"])
    @route("/<user>/<index>/", methods=["POST", "PUSH"])
    async def index_post(self, request: IRequest, user: str, index: str) -> bytes:
        """An upload form (the legacy upload API), or a push as JSON."""
        stage = f"{user}/{index}"
        if request.method == b"POST" and header(request, b"Content-Type").startswith("multipart/"):
            return await self._legacy_upload(request, stage)
        return await self._push(request, stage, await self._auth.identify(request))

    @route("/<user>/<index>", methods=["DELETE"])
    @route("/<user>/<index>/", methods=["DELETE"])
    async def index_delete(self, request: IRequest, user: str, index: str) -> bytes:
        stage = f"{user}/{index}"
        identity = await self._auth.identify(request)
        await self._write(request, lambda tx: users.delete_index(tx, stage, identity, self._policy))
        return self._reply(request, message=f"index {stage} deleted", status=201)

    @route("/<user>/<index>", methods=["PUT"])
    @route("/<user>/<index>/", methods=["PUT"])
    async def index_put(self, request: IRequest, user: str, index: str) -> bytes:
        stage = f"{user}/{index}"
        identity = await self._auth.identify(request)
        body = json_body(request)
        if not isinstance(body, dict):
            raise Invalid("index config must be a JSON object")
        config = await self._write(request, lambda tx: users.create_index(tx, stage, body, identity, self._policy))
        return self._reply(request, "indexconfig", config)

    @route("/<user>/<index>", methods=["PATCH"])
    @route("/<user>/<index>/", methods=["PATCH"])
    async def index_patch(self, request: IRequest, user: str, index: str) -> bytes:
        stage = f"{user}/{index}"
        identity = await self._auth.identify(request)
        body = json_body(request)
        noop = has_arg(request, b"error_on_noop")
        config = await self._write(request, lambda tx: users.patch_index(tx, stage, body, identity, self._policy, noop))
        return self._reply(request, "indexconfig", config)

    async def _push(self, request: IRequest, stage: str, identity: Identity) -> bytes:
        body = json_body(request)
        if not isinstance(body, dict):
            raise Invalid("push body must be a JSON object")
        log = await self._write(
            request,
            lambda tx: push.push(tx, stage, body, identity, self._policy, self._store.files),
        )
        return self._reply(request, "actionlog", log)

    # -- legacy upload -------------------------------------------------------

    async def _legacy_upload(self, request: IRequest, stage: str) -> bytes:
        try:
            return await self._legacy_action(request, stage)
        except DomainError as e:
            # devpi-client and twine print the reason phrase
            status = status_of(e)
            request.setResponseCode(status, b"Unauthorized" if status == 401 else _reason(e.message))
            if status == 401:
                request.setHeader(b"WWW-Authenticate", b'Basic realm="pypi"')
            request.setHeader(b"Content-Type", b"text/html; charset=utf-8")
            title = html.escape(f"{status} {e.message}")
            return f"<html><head><title>{title}</title></head><body><h1>{title}</h1></body></html>\n".encode()

    async def _legacy_action(self, request: IRequest, stage: str) -> bytes:
        identity = await self._auth.identify(request)
        config = await self._ixconfig(stage)
        if config.get("type") != "stage":
            raise NotFound("cannot submit to mirror index")
        if not self._policy.may_upload(identity, config):
            raise (NotAuthenticated if identity.user is None else Forbidden)("no permission to submit")
        request.content.seek(0, 2)
        length = request.content.tell()
        request.content.seek(0)
        content_type = header(request, b"Content-Type")
        parsed: list[Form] = []
        planned: list[Callable[[Any], Any]] = []

        def parse() -> None:
            # a bad form fails here, before the write transaction begins
            parsed.append(parse_form(request.content, content_type, length, self._store.files))
            planned.append(self._form_change(parsed[0], stage, identity))

        def change(tx: Any) -> Any:
            return planned[0](tx)

        request.setHeader(b"Content-Type", b"text/html; charset=UTF-8")
        try:
            if length <= PARSE_IN_WRITER:
                result = await self._write(request, change, prepare=parse)
            else:
                await self._run(parse)
                result = await self._write(request, change)
        finally:
            for form in parsed:
                form.discard()
        if isinstance(result, releases.StoreResult) and result.identical:
            request.setResponseCode(200, b"Upload of identical file to non volatile index.")
        return b""

    def _form_change(self, form: Form, stage: str, identity: Identity) -> Callable[[Any], Any]:
        """The store change a parsed upload form asks for."""
        action = form.first(":action")
        metadata = metadata_from_form(form.fields)
        if not action:
            raise Invalid(":action field not found")
        if action == "submit":
            return lambda tx: releases.register(tx, stage, metadata, identity, self._policy)
        if action not in ("file_upload", "doc_upload"):
            raise Invalid(f"action {action!r} not supported")
        content = form.content
        if content is None:
            raise Invalid("content file field not found")
        if action == "doc_upload":
            name, version = form.first("name"), form.first("version")
            return lambda tx: releases.store_doczip(tx, stage, name, version, metadata, content, identity, self._policy)
        upload = releases.Upload(form.filename or "", content, form.core_metadata_sha256)
        return lambda tx: releases.store_release(tx, stage, metadata, upload, identity, self._policy)


IndexAPI.app = build_app(IndexAPI)
