"""
The devpi REST API and simple pages as a Klein app (spec sections 1-4).
Handlers parse the request, run one store transaction and render.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

from klein import Klein
from twisted.internet.defer import Deferred
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.iweb import IRequest
from werkzeug.exceptions import HTTPException, MethodNotAllowed, NotFound

from devpi_tx import __version__, keys, releases, users, views
from devpi_tx.auth import TokenSigner, hash_password
from devpi_tx.files import prepare_bytes, prepare_copy
from devpi_tx.interfaces import IStore
from devpi_tx.model import (
    APIError,
    Identity,
    Policy,
    bad_request,
    metadata_from_form,
    normalize_name,
    not_found,
)
from devpi_tx.web import render
from devpi_tx.web.filesend import send_file
from devpi_tx.web.forms import parse_form
from devpi_tx.web.identity import Authenticator
from devpi_tx.web.pagecache import LIST, PageCache

FEATURES = ["push-no-docs", "push-only-docs", "push-register-project", "server-keyvalue-parsing"]
IMMUTABLE = b"max-age=365000000, immutable, public"


@dataclass
class WebConfig:
    serverdir: str
    files_dir: str
    uuid: str
    policy: Policy
    signer: TokenSigner
    outside_url: str | None = None
    host: str = "localhost"
    port: int = 3141


def _json_body(request: IRequest) -> Any:
    request.content.seek(0)
    raw = request.content.read()
    if not raw.strip():
        return {}
    try:
        return json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        raise bad_request("Bad request: could not decode json") from None


def _has_arg(request: IRequest, name: bytes) -> bool:
    """Whether the query names C{name}, with or without a value (spec 3.4)."""
    _, _, query = request.uri.partition(b"?")
    return any(item.split(b"=", 1)[0] == name for item in query.split(b"&"))


def _header(request: IRequest, name: bytes) -> str:
    value = request.getHeader(name)
    return value.decode("latin-1") if value else ""


def _check_project_segment(project: str) -> None:
    if not project.isascii():
        raise bad_request("unicode project names not allowed")


def _reason(message: str) -> bytes:
    text = " ".join(message.split())[:400]
    return text.encode("latin-1", "replace")


class IndexAPI:
    """The HTTP API of one server process."""

    app = Klein()
    # "//" must not be folded into "/" by a redirect: paths are names here
    app.url_map.merge_slashes = False
    _log = Logger()

    def __init__(
        self,
        config: WebConfig,
        store: IStore,
        run_in_thread: Callable[..., Deferred[Any]],
    ) -> None:
        self._config = config
        self._store = store
        self._policy = config.policy
        self._run = run_in_thread
        self._auth = Authenticator(store, config.signer, run_in_thread)
        self.pages = PageCache(store)
        self.started = time.time()

    # -- helpers -------------------------------------------------------------

    def _base_url(self, request: IRequest) -> str:
        outside = _header(request, b"X-Outside-URL") or self._config.outside_url
        if outside:
            return outside.rstrip("/")
        host = _header(request, b"Host") or f"{self._config.host}:{self._config.port}"
        scheme = "https" if request.isSecure() else "http"
        return f"{scheme}://{host}"

    def _url_for(self, request: IRequest) -> Callable[[str], str]:
        base = self._base_url(request)
        return lambda relpath: f"{base}/{quote(relpath, safe='/+@:')}"

    def _reply(
        self,
        request: IRequest,
        result_type: str | None = None,
        result: Any = None,
        message: str = "",
        status: int = 200,
        serial: int | None = None,
    ) -> bytes:
        request.setResponseCode(status)
        request.setHeader(b"Content-Type", render.JSON_TYPE)
        if serial is not None:
            request.setHeader(b"X-Devpi-Serial", str(serial).encode())
        return render.envelope(result_type, result, message)

    async def _write(self, request: IRequest, fn: Callable[[Any], Any]) -> Any:
        result, serial = await self._store.write(fn)
        request.setHeader(b"X-Devpi-Serial", str(serial).encode())
        return result

    # -- errors ---------------------------------------------------------------

    @app.handle_errors(APIError)
    def api_error(self, request: IRequest, failure: Failure) -> bytes:
        error = failure.value
        assert isinstance(error, APIError)
        return self._error(request, error.status, error.message)

    @app.handle_errors(HTTPException)
    def http_error(self, request: IRequest, failure: Failure) -> bytes:
        error = failure.value
        assert isinstance(error, HTTPException)
        if isinstance(error, MethodNotAllowed):
            return self._error(request, 405, "method not allowed")
        if isinstance(error, NotFound):
            return self._error(request, 404, "not found")
        return self._error(request, error.code or 400, error.description or "bad request")

    def _error(self, request: IRequest, status: int, message: str) -> bytes:
        request.setResponseCode(status)
        if render.accepts_json(_header(request, b"Accept")) or not _header(request, b"Accept"):
            request.setHeader(b"Content-Type", render.JSON_TYPE)
            return render.envelope(message=message)
        request.setHeader(b"Content-Type", b"text/plain; charset=utf-8")
        return message.encode("utf-8") + b"\n"

    # -- server ---------------------------------------------------------------

    @app.route("/+status", methods=["GET"])
    def status(self, request: IRequest) -> bytes:
        serial = self._store.current_serial()
        result = {
            "serverdir": self._config.serverdir,
            "uuid": self._config.uuid,
            "versioninfo": {"devpi-server": "6.20.3", "devpi_tx": __version__},
            "server-code": os.path.dirname(os.path.dirname(__file__)),
            "host": self._config.host,
            "port": self._config.port,
            "outside-url": self._config.outside_url,
            "serial": serial,
            "last-commit-timestamp": getattr(self._store, "last_commit_time", self.started),
            "event-serial": serial,
            "event-serial-timestamp": None,
            "event-serial-in-sync-at": None,
            "metrics": [
                ["devpi_tx_page_cache_hits", "counter", self.pages.hits],
                ["devpi_tx_page_cache_misses", "counter", self.pages.misses],
            ],
            "role": "MASTER",
            "polling_replicas": {},
        }
        return self._reply(request, "status", result)

    @app.route("/+api", methods=["GET"])
    @app.route("/<user>/+api", methods=["GET"])
    @app.route("/<user>/<index>/+api", methods=["GET"])
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
            config = await self._store.read(lambda tx: users.get_ixconfig(tx, stage))
            result["index"] = f"{base}/{stage}"
            result["simpleindex"] = f"{base}/{stage}/+simple/"
            if config.get("type") != "mirror":
                result["pypisubmit"] = f"{base}/{stage}/"
        return self._reply(request, "apiconfig", result)

    @app.route("/+authcheck")
    async def authcheck(self, request: IRequest) -> bytes:
        request.setResponseCode(200)
        return b""

    @app.route("/+login", methods=["POST"])
    async def login(self, request: IRequest) -> bytes:
        body = _json_body(request)
        if not isinstance(body, dict) or "user" not in body or "password" not in body:
            raise bad_request("Bad request: no user/password specified")
        user, password = str(body["user"]), str(body["password"])
        if not await self._auth.check_password(user, password):
            raise APIError(401, f"user {user!r} could not be authenticated")
        token = self._config.signer.issue(user)
        result = {"password": token, "expiration": self._config.signer.expiration}
        return self._reply(request, "proxyauth", result, message="login successful")

    # -- users ----------------------------------------------------------------

    @app.route("/", methods=["GET"])
    async def root(self, request: IRequest) -> bytes:
        result = await self._store.read(users.list_users)
        return self._reply(request, "list:userconfig", result)

    @app.route("/<user>", methods=["GET", "PUT", "PATCH", "DELETE"])
    @app.route("/<user>/", methods=["GET", "PUT", "PATCH", "DELETE"])
    async def user(self, request: IRequest, user: str) -> bytes:
        method = request.method
        if method == b"GET":
            view = await self._store.read(lambda tx: users.user_view(tx, user))
            return self._reply(request, "userconfig", view)
        identity = await self._auth.identify(request)
        if method == b"DELETE":
            await self._write(request, lambda tx: users.delete_user(tx, user, identity, self._policy))
            return self._reply(request, message=f"user {user!r} deleted")
        body = _json_body(request)
        if not isinstance(body, dict):
            raise bad_request("user config must be a JSON object")
        password = body.get("password")
        if password is not None and not isinstance(password, str):
            raise bad_request("password must be a string")
        pwhash = await self._run(hash_password, password) if password is not None else None
        if method == b"PUT":
            view = await self._write(
                request,
                lambda tx: users.create_user(tx, user, body, pwhash, identity, self._policy),
            )
            return self._reply(request, "userconfig", view, status=201)
        changed = await self._write(
            request, lambda tx: users.modify_user(tx, user, body, pwhash, identity, self._policy)
        )
        if changed:
            token = self._config.signer.issue(user)
            result = {"password": token, "expiration": self._config.signer.expiration}
            return self._reply(request, "userpassword", result, message="user updated, new proxy auth")
        return self._reply(request, message="user updated")

    # -- indexes --------------------------------------------------------------

    @app.route("/<user>/<index>", methods=["GET", "PUT", "PATCH", "DELETE", "POST", "PUSH"])
    @app.route("/<user>/<index>/", methods=["GET", "PUT", "PATCH", "DELETE", "POST", "PUSH"])
    async def index(self, request: IRequest, user: str, index: str) -> bytes:
        stage = f"{user}/{index}"
        method = request.method
        if method == b"GET":
            accept = _header(request, b"Accept")
            if render.wants_simple_json(accept) or (
                render.is_installer(_header(request, b"User-Agent")) and not render.accepts_json(accept)
            ):
                return await self._project_list(request, stage)
            with_projects = not _has_arg(request, b"no_projects")
            config = await self._store.read(lambda tx: views.index_view(tx, stage, with_projects))
            return self._reply(request, "indexconfig", config)
        if method == b"POST" and _header(request, b"Content-Type").startswith("multipart/"):
            return await self._legacy_upload(request, stage)
        identity = await self._auth.identify(request)
        if method in (b"POST", b"PUSH"):
            return await self._push(request, stage, identity)
        if method == b"DELETE":
            await self._write(request, lambda tx: users.delete_index(tx, stage, identity, self._policy))
            return self._reply(request, message=f"index {stage} deleted", status=201)
        body = _json_body(request)
        if method == b"PUT":
            if not isinstance(body, dict):
                raise bad_request("index config must be a JSON object")
            config = await self._write(
                request, lambda tx: users.create_index(tx, stage, body, identity, self._policy)
            )
            return self._reply(request, "indexconfig", config)
        noop = _has_arg(request, b"error_on_noop")
        config = await self._write(
            request,
            lambda tx: users.patch_index(tx, stage, body, identity, self._policy, noop),
        )
        return self._reply(request, "indexconfig", config)

    async def _push(self, request: IRequest, stage: str, identity: Identity) -> bytes:
        body = _json_body(request)
        if not isinstance(body, dict):
            raise bad_request("push body must be a JSON object")
        log = await self._write(
            request,
            lambda tx: releases.push(
                tx, stage, body, identity, self._policy, self._config.files_dir, prepare_copy
            ),
        )
        return self._reply(request, "actionlog", log)

    # -- legacy upload -------------------------------------------------------

    async def _legacy_upload(self, request: IRequest, stage: str) -> bytes:
        try:
            return await self._legacy_action(request, stage)
        except APIError as e:
            request.setResponseCode(e.status, _reason(e.message))
            if e.status == 401:
                request.setHeader(b"WWW-Authenticate", b'Basic realm="pypi"')
            request.setHeader(b"Content-Type", b"text/html; charset=utf-8")
            title = render.escape(f"{e.status} {e.message}")
            return f"<html><head><title>{title}</title></head><body><h1>{title}</h1></body></html>\n".encode()

    async def _legacy_action(self, request: IRequest, stage: str) -> bytes:
        identity = await self._auth.identify(request)
        config = await self._store.read(lambda tx: users.get_ixconfig(tx, stage))
        if config.get("type") != "stage":
            raise APIError(404, "cannot submit to mirror index")
        if not self._policy.may_upload(identity, config):
            raise APIError(401 if identity.user is None else 403, "no permission to submit")
        request.content.seek(0, 2)
        length = request.content.tell()
        request.content.seek(0)
        form = await self._run(
            parse_form, request.content, _header(request, b"Content-Type"), length, self._config.files_dir
        )
        try:
            return await self._form_action(request, stage, identity, form)
        finally:
            form.discard()

    async def _form_action(self, request: IRequest, stage: str, identity: Identity, form: Any) -> bytes:
        action = form.first(":action")
        metadata = metadata_from_form(form.fields)
        request.setHeader(b"Content-Type", b"text/html; charset=UTF-8")
        if not action:
            raise bad_request(":action field not found")
        if action == "submit":
            await self._write(
                request, lambda tx: releases.register(tx, stage, metadata, identity, self._policy)
            )
            return b""
        if action not in ("file_upload", "doc_upload"):
            raise bad_request(f"action {action!r} not supported")
        if form.content is None:
            raise bad_request("content file field not found")
        if action == "doc_upload":
            name, version = form.first("name"), form.first("version")
            result = await self._write(
                request,
                lambda tx: releases.store_doczip(
                    tx, stage, name, version, metadata, form.content, identity, self._policy
                ),
            )
        else:
            upload = releases.Upload(form.filename, form.content, form.core_metadata)
            result = await self._write(
                request,
                lambda tx: releases.store_release(tx, stage, metadata, upload, identity, self._policy),
            )
        if result.identical:
            request.setResponseCode(200, b"Upload of identical file to non volatile index.")
        return b""

    # -- simple pages ----------------------------------------------------------

    def _page_key(self, request: IRequest) -> tuple[bytes, bool, str]:
        want_json = render.wants_simple_json(_header(request, b"Accept"))
        return (request.path, want_json, self._base_url(request))

    def cached_page(self, request: IRequest) -> bytes | None:
        """
        The body of an already rendered C{+simple/} page, answered before
        routing; C{None} when the request is not for one.
        """
        if request.method != b"GET":
            return None
        parts = request.path.split(b"/")
        if len(parts) == 6 and parts[3] == b"+simple" and not parts[5]:
            group = parts[4].decode("ascii", "replace")
        elif len(parts) == 5 and parts[3] == b"+simple" and not parts[4]:
            group = LIST
        else:
            return None
        found = self.pages.get(group, self._page_key(request))
        if found is None:
            return None
        request.setHeader(b"Vary", b"Accept, User-Agent")
        request.setHeader(b"Content-Type", found[0])
        return found[1]

    async def _cached(
        self,
        request: IRequest,
        group: str,
        build: Callable[[Any, bool], tuple[bytes, bytes]],
    ) -> bytes:
        key = self._page_key(request)
        want_json = key[1]
        request.setHeader(b"Vary", b"Accept, User-Agent")
        found = self.pages.get(group, key)
        if found is None:

            def compute(tx: Any) -> tuple[int, tuple[bytes, bytes]]:
                return tx.serial, build(tx, want_json)

            serial, found = await self._store.read(compute)
            self.pages.put(group, key, serial, found)
        content_type, body = found
        request.setHeader(b"Content-Type", content_type)
        return body

    async def _project_list(self, request: IRequest, stage: str) -> bytes:
        def build(tx: Any, want_json: bool) -> tuple[bytes, bytes]:
            per_stage = views.project_names(tx, stage)
            if want_json:
                return render.SIMPLE_JSON_TYPE, render.project_list_json(per_stage)
            return render.HTML_TYPE, render.project_list_html(stage, per_stage, "")

        return await self._cached(request, LIST, build)

    @app.route("/<user>/<index>/+simple", methods=["GET"])
    async def simple_list_noslash(self, request: IRequest, user: str, index: str) -> bytes:
        accept = _header(request, b"Accept")
        if render.wants_simple_json(accept) or render.is_installer(_header(request, b"User-Agent")):
            return await self._project_list(request, f"{user}/{index}")
        request.setHeader(b"Vary", b"User-Agent")
        request.redirect(f"{self._base_url(request)}/{user}/{index}/+simple/".encode())
        return b""

    @app.route("/<user>/<index>/+simple/", methods=["GET"])
    async def simple_list(self, request: IRequest, user: str, index: str) -> bytes:
        return await self._project_list(request, f"{user}/{index}")

    @app.route("/<user>/<index>/+simple/<project>", methods=["GET", "POST"])
    @app.route("/<user>/<index>/+simple/<project>/", methods=["GET", "POST"])
    async def simple_project(self, request: IRequest, user: str, index: str, project: str) -> bytes:
        return await self._simple_page(request, f"{user}/{index}", project, "+simple/")

    async def _simple_page(self, request: IRequest, stage: str, project: str, prefix: str) -> bytes:
        _check_project_segment(project)
        normalized = normalize_name(project)
        if normalized != project and request.method == b"GET":
            request.redirect(f"{self._base_url(request)}/{stage}/{prefix}{normalized}/".encode())
            return b""
        path = request.path.decode("utf-8", "replace")

        def href(relpath: str) -> str:
            return render.relative_url(path, "/" + quote(relpath, safe="/+@:"))

        def build(tx: Any, want_json: bool) -> tuple[bytes, bytes]:
            links, versions = views.simple_links(tx, stage, normalized)
            if want_json:
                return render.SIMPLE_JSON_TYPE, render.simple_page_json(normalized, links, versions, href)
            return render.HTML_TYPE, render.simple_page_html(stage, normalized, links, href)

        return await self._cached(request, normalized, build)

    @app.route("/<user>/<index>/+simple/<project>/refresh", methods=["POST"])
    def simple_refresh(self, request: IRequest, user: str, index: str, project: str) -> bytes:
        request.redirect(f"{self._base_url(request)}/{user}/{index}/+simple/{project}/".encode())
        return b""

    # -- projects and versions -----------------------------------------------

    @app.route("/<user>/<index>/<project>", methods=["GET", "DELETE"])
    @app.route("/<user>/<index>/<project>/", methods=["GET", "DELETE"])
    async def project(self, request: IRequest, user: str, index: str, project: str) -> bytes:
        stage = f"{user}/{index}"
        accept = _header(request, b"Accept")
        if request.method == b"GET":
            if render.wants_simple_json(accept) or (
                render.is_installer(_header(request, b"User-Agent")) and not render.accepts_json(accept)
            ):
                return await self._simple_page(request, stage, project, "")
            if not render.accepts_json(accept):
                raise APIError(415, "unsupported media type, use Accept: application/json")
            normalized = normalize_name(project)
            if normalized != project:
                request.redirect(f"{self._base_url(request)}/{stage}/{normalized}".encode())
                return b""
            url_for = self._url_for(request)
            ignore = _has_arg(request, b"ignore_bases")
            result = await self._store.read(
                lambda tx: views.project_view(tx, stage, normalized, ignore, url_for)
            )
            return self._reply(request, "projectconfig", result)
        identity = await self._auth.identify(request)
        normalized = normalize_name(project)
        force = _has_arg(request, b"force")
        await self._write(
            request,
            lambda tx: releases.delete_project(tx, stage, normalized, force, identity, self._policy),
        )
        return self._reply(request, message=f"project {normalized} deleted from stage {stage}")

    @app.route("/<user>/<index>/<project>/<version>", methods=["GET", "DELETE", "PATCH"])
    @app.route("/<user>/<index>/<project>/<version>/", methods=["GET", "DELETE", "PATCH"])
    async def version(
        self, request: IRequest, user: str, index: str, project: str, version: str
    ) -> bytes:
        stage = f"{user}/{index}"
        normalized = normalize_name(project)
        if request.method == b"GET":
            if normalized != project:
                request.redirect(f"{self._base_url(request)}/{stage}/{normalized}/{version}".encode())
                return b""
            url_for = self._url_for(request)
            result = await self._store.read(
                lambda tx: views.version_view(tx, stage, normalized, version, url_for)
            )
            return self._reply(request, "versiondata", result)
        identity = await self._auth.identify(request)
        if request.method == b"PATCH":
            body = _json_body(request)
            yanked = body.get("yanked") if isinstance(body, dict) else None
            if not isinstance(yanked, (bool, str)) or set(body) != {"yanked"}:
                raise bad_request('expected {"yanked": true, false or a reason}')
            record = await self._write(
                request,
                lambda tx: releases.set_yanked(
                    tx, stage, normalized, version, yanked, identity, self._policy
                ),
            )
            return self._reply(request, "versiondata", views.versiondata_view(record, self._url_for(request)))
        force = _has_arg(request, b"force")
        await self._write(
            request,
            lambda tx: releases.delete_version(
                tx, stage, normalized, version, force, identity, self._policy
            ),
        )
        return self._reply(request, message=f"project {normalized!r} version {version!r} deleted")

    # -- files -----------------------------------------------------------------

    @app.route("/<user>/<index>/+f/<path:rest>", methods=["GET", "HEAD", "DELETE", "POST"])
    async def file(self, request: IRequest, user: str, index: str, rest: str) -> Any:
        relpath = f"{user}/{index}/+f/{rest}"
        segments = rest.split("/")
        if ".." in segments or "" in segments or "\x00" in rest:
            raise not_found("no such file")
        if request.method == b"POST":
            return await self._toxresult(request, relpath)
        if request.method == b"DELETE":
            identity = await self._auth.identify(request)
            force = _has_arg(request, b"force")
            await self._write(
                request, lambda tx: releases.delete_file(tx, relpath, force, identity, self._policy)
            )
            return self._reply(request, message=f"package {relpath!r} deleted")
        entry = await self._store.read(lambda tx: tx.get(keys.file(relpath)))
        mime = None
        if entry is None and relpath.endswith(".metadata"):
            wheel = await self._store.read(lambda tx: tx.get(keys.file(relpath[: -len(".metadata")])))
            if wheel is None or not wheel.get("core_metadata"):
                raise not_found("no such file")
            mime = b"application/octet-stream"
        elif entry is None:
            raise not_found("no such file")
        elif render.accepts_json(_header(request, b"Accept")):
            result = {
                k: entry[k] for k in ("last_modified", "hash_spec", "hashes", "project", "version") if k in entry
            }
            return self._reply(request, "releasefilemeta", result)
        else:
            request.setHeader(b"Last-Modified", entry["last_modified"].encode())
        path = os.path.join(self._config.files_dir, relpath)
        if not os.path.exists(path):
            raise not_found("no such file")
        request.setHeader(b"Cache-Control", IMMUTABLE)
        return await send_file(request, path, mime)

    async def _toxresult(self, request: IRequest, relpath: str) -> bytes:
        identity = await self._auth.identify(request)
        request.content.seek(0)
        raw = request.content.read()
        try:
            json.loads(raw)
        except (ValueError, UnicodeDecodeError):
            raise bad_request("Bad request: could not decode json") from None
        content = await self._run(prepare_bytes, self._config.files_dir, raw)
        try:
            path = await self._write(
                request,
                lambda tx: releases.store_toxresult(tx, relpath, content, identity, self._policy),
            )
        finally:
            content.discard()
        return self._reply(request, "toxresultpath", path)
